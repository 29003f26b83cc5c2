"""Every component id of the app, in one place (tests and callbacks import these)."""

# the page
APP_ERROR = "app-error"
APP_ERROR_ROW = "app-error-row"
APP_ERROR_CLOSE = "app-error-close"
READY_STATUS = "ready-status"
READY_TIMER = "ready-timer"

# map and its controls
DATASET = "dataset"
MAP_KIND = "map-kind"
COLOR_BY = "color-by"
COLOR_LEGEND = "color-legend"
SEARCH = "search"
SEARCH_STATUS = "search-status"
MAP = "map"
MAP_STATUS = "map-status"
MAP_MARKS = "map-marks"  # hidden: the clientside callback that draws the marks writes their count here
MAP_BUILD = "map-build"
MAP_BUILD_CANCEL = "map-build-cancel"
MAP_BUILD_PROGRESS = "map-build-progress"
FILTER_ELEMENTS = "filter-elements"
FILTER_SITES_MIN = "filter-sites-min"
FILTER_SITES_MAX = "filter-sites-max"
FILTER_PROPERTY = "filter-property"
FILTER_MIN = "filter-min"
FILTER_MAX = "filter-max"
SELECTION_STATUS = "selection-status"
SELECTION_ADD = "selection-add"

# structure panel
VIEWER = "viewer"
VIEWER_LEGEND = "viewer-legend"
VIEWER_STATUS = "viewer-status"
CHEMENV = "chemenv"  # the button of ChemEnv's finer labels in the motif panel
CHEMENV_RESULT = "chemenv-result"
VIEWER_ATOM = "viewer-atom"  # filled in the browser (assets/viewer.js) when an atom is clicked
VIEWER_SUPERCELL = "viewer-supercell"
VIEWER_STYLE = "viewer-style"
VIEWER_POLYHEDRA = "viewer-polyhedra"
VIEWER_CELL = "viewer-cell"  # conventional | primitive | model (explorer/services/cells.py)
VIEWER_CELL_INFO = "viewer-cell-info"
VIEWER_OPTIONS = "viewer-options"  # ["boundary", "images"]: atoms on the cell's faces, bonds to periodic images
VIEWER_LABELS = "viewer-labels"  # none | element | site
VIEW_A = "view-a"  # look along a, b, c; reset (assets/viewer.js reads these ids)
VIEW_B = "view-b"
VIEW_C = "view-c"
VIEW_RESET = "view-reset"
VIEWER_CAMERA = "viewer-camera"
VIEWER_MEASURE = "viewer-measure"  # what the picked atoms measure
PICKS_CLEAR = "picks-clear"
PICKS_SHOWN = "picks-shown"  # hidden: the clientside callback that rings the picked atoms writes their count here
PNG_WIDTH = "png-width"
PNG_HEIGHT = "png-height"
PNG_TRANSPARENT = "png-transparent"
PNG_SAVE = "png-save"
PNG_STATUS = "png-status"
COMPARE_PAIR = "compare-pair"
COMPARE_RUN = "compare-run"
COMPARE_LEFT = "compare-left"
COMPARE_RIGHT = "compare-right"
COMPARE_TABLE = "compare-table"
COMPARE_SHOWN = "compare-shown"  # hidden: written by the clientside callback that draws the two viewers
STRUCTURE_INFO = "structure-info"
NEAREST = "nearest"  # pattern-matching type: {"type": NEAREST, "index": record id}
SHOW_DECODE = "show-decode"  # pattern-matching type: {"type": SHOW_DECODE, "index": record id}
ENV_CRYSTAL = "env-crystal"  # pattern-matching type: {"type": ENV_CRYSTAL, "index": record id}: opens the crystal
RECONSTRUCTION = "reconstruction"

# physics of the structure on screen
PHYSICS = "physics"
NOVELTY = "novelty"
PHYSICS_MATCH = "physics-match"  # pattern-matching type: {"type": PHYSICS_MATCH, "index": record id}
RELAX = "relax"
RELAX_CANCEL = "relax-cancel"
RELAX_PROGRESS = "relax-progress"
RELAX_STATUS = "relax-status"
RELAX_TOGGLE = "relax-toggle"
PATH_ENERGY = "path-energy"
PATH_ENERGY_STATUS = "path-energy-status"

# motifs of the structure on screen
MOTIFS = "motifs"
MOTIF_SENTENCE = "motif-sentence"

# interpolation
INTERP_SET_A = "interp-set-a"
INTERP_SET_B = "interp-set-b"
INTERP_ENDPOINTS = "interp-endpoints"
INTERP_STEPS = "interp-steps"
INTERP_METHOD = "interp-method"
INTERP_RUN = "interp-run"
INTERP_STATUS = "interp-status"
INTERP_FRAME = "interp-frame"
INTERP_PLAY = "interp-play"
INTERP_TIMER = "interp-timer"
INTERP_STRIP = "interp-strip"

# export and upload
EXPORT_FORMAT = "export-format"
EXPORT_BUTTON = "export-button"
EXPORT_HTML = "export-html"
BASKET_ADD = "basket-add"
BASKET_EXPORT = "basket-export"
BASKET_CLEAR = "basket-clear"
BASKET = "basket"
PATH_EXPORT_EXTXYZ = "path-export-extxyz"
PATH_EXPORT_CIF = "path-export-cif"
EXPORT_ERROR = "export-error"
DOWNLOAD = "download"
UPLOAD = "upload"
UPLOAD_ERROR = "upload-error"

# per-session state (dcc.Store, JSON)
STORE_CURRENT = "store-current"
STORE_VIEWER = "store-viewer"
STORE_ENDPOINTS = "store-endpoints"
STORE_PATH = "store-path"
STORE_BASKET = "store-basket"
STORE_UPLOADS = "store-uploads"
STORE_MAP_VERSION = "store-map-version"
STORE_SELECTION = "store-selection"
STORE_WINDOW_REQUEST = "store-window-request"  # {"x", "y"}: the window after a zoom (assets/window.js)
STORE_WINDOW = "store-window"  # {"key": "<dataset>-<kind>", "x": [x0, x1], "y": [y0, y1]}: a big map's window
STORE_RELAX_RESULT = "store-relax-result"  # what the relaxation job returns
STORE_POLYHEDRA = "store-polyhedra"  # {"title", "polyhedra": [...]} of the structure on screen
STORE_RELAX = "store-relax"  # {"source": view, "relaxed": view}: the pair the toggle switches between
STORE_PICKS = "store-picks"  # [{"site", "cell"}]: atoms picked in the viewer (written by assets/viewer.js)
STORE_COMPARE = "store-compare"  # {"left": viewer payload, "right": viewer payload}

# the page's state in its address (explorer/ui/links.py, assets/links.js)
URL = "url"
STORE_LINK = "store-link"  # the query string of the page's state, pushed to the history by assets/links.js
STORE_NAV = "store-nav"  # {"search", "t"}: written by assets/links.js on back and forward
STORE_LINK_READY = "store-link-ready"  # True once the address the page was opened with is applied
STORE_LINK_FRAME = "store-link-frame"  # the path frame a link shows, once its path is decoded (then None)
LINK_TEXT = "link-text"
COPY_LINK = "copy-link"
LINK_STATUS = "link-status"
