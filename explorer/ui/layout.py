"""The page: map with its controls on the left; structure viewer, details, interpolation, export and upload
on the right. Per-session state lives in dcc.Store components (JSON, in the browser)."""

from __future__ import annotations

from dash import dcc, html

from explorer.services.export import FORMATS
from explorer.services.maps import KIND_LABELS
from explorer.ui import ids, link_panel, motif_panel, physics_panel, viewer_panel
from explorer.ui.components import structure_info


def _stores() -> list:
    return [dcc.Store(id=ids.STORE_CURRENT, storage_type="memory"), dcc.Store(id=ids.STORE_VIEWER),
            dcc.Store(id=ids.STORE_ENDPOINTS, data={}), dcc.Store(id=ids.STORE_PATH),
            dcc.Store(id=ids.STORE_BASKET, data=[]), dcc.Store(id=ids.STORE_UPLOADS, data=[]),
            dcc.Store(id=ids.STORE_MAP_VERSION, data=0), dcc.Store(id=ids.STORE_SELECTION, data=[]),
            dcc.Store(id=ids.STORE_WINDOW), dcc.Store(id=ids.STORE_WINDOW_REQUEST),
            dcc.Store(id=ids.STORE_POLYHEDRA), dcc.Store(id=ids.STORE_PICKS, data=[]),
            dcc.Download(id=ids.DOWNLOAD), dcc.Interval(id=ids.INTERP_TIMER, interval=700, disabled=True)]


def _map_panel(datasets: list[str], default: str | None) -> html.Div:
    controls = html.Div([
        html.Label(["Map ", dcc.Dropdown(id=ids.DATASET, options=[{"label": d, "value": d} for d in datasets],
                                         value=default, clearable=False, className="dropdown")]),
        html.Span(dcc.RadioItems(id=ids.MAP_KIND, options=[{"label": f" {label}", "value": value}
                                                           for value, label in KIND_LABELS.items()],
                                 value="crystals", inline=True),
                  className="map-kind",
                  title="crystals: the autoencoder's map of whole crystals; structure: crystals placed by the geometry "
                        "of their sites alone, so one structure type sits together whatever its elements; motifs: "
                        "every distinct local environment (a centre and its neighbours), placed by the motif "
                        "autoencoder"),
        html.Label(["Colour by ", dcc.Dropdown(id=ids.COLOR_BY, value="source", clearable=False,
                                               className="dropdown")]),
        html.Label(["Search ", dcc.Input(id=ids.SEARCH, type="text", debounce=True, className="search",
                                         placeholder="formula, Li-Fe-O, id or mineral")]),
        html.Span(id=ids.SEARCH_STATUS, className="status"),
    ], className="controls")
    def number(id_: str, placeholder: str) -> dcc.Input:
        return dcc.Input(id=id_, type="number", debounce=True, placeholder=placeholder, className="number")

    filters = html.Div([
        html.Label(["Contains ", dcc.Input(id=ids.FILTER_ELEMENTS, type="text", debounce=True, className="search",
                                           placeholder="elements, e.g. Li O")]),
        html.Label(["Sites ", number(ids.FILTER_SITES_MIN, "min"), "–", number(ids.FILTER_SITES_MAX, "max")]),
        html.Label(["Property ", dcc.Dropdown(id=ids.FILTER_PROPERTY, placeholder="any", className="dropdown")]),
        html.Label([number(ids.FILTER_MIN, "min"), "–", number(ids.FILTER_MAX, "max")]),
    ], className="controls filters")
    selection = html.Div([
        html.Span("Lasso or box-select points (toolbar above the map) to pick many at once.", id=ids.SELECTION_STATUS,
                  className="status"),
        html.Button("Add selection to basket", id=ids.SELECTION_ADD, disabled=True),
    ], className="controls")
    graph = dcc.Graph(id=ids.MAP, className="map", config={"displaylogo": False, "scrollZoom": True},
                      responsive=True)
    return html.Div([controls, filters, html.Div(id=ids.COLOR_LEGEND, className="legend"),
                     html.Span(id=ids.MAP_MARKS, hidden=True),
                     html.Div(id=ids.MAP_STATUS, className="status"),
                     html.Div([html.Button("Build this map", id=ids.MAP_BUILD),
                               html.Button("Cancel", id=ids.MAP_BUILD_CANCEL, disabled=True),
                               html.Span(id=ids.MAP_BUILD_PROGRESS, className="status")],
                              id=f"{ids.MAP_BUILD}-row", className="controls", style={"display": "none"}), graph,
                     selection,
                     html.P("Click a point: known material. Click empty space: decode a hypothetical structure.",
                            className="hint")], className="left")


def _interp_panel() -> html.Details:
    return html.Details([
        html.Summary("Interpolate"),
        html.Div([html.Button("Set A", id=ids.INTERP_SET_A), html.Button("Set B", id=ids.INTERP_SET_B),
                  html.Span(id=ids.INTERP_ENDPOINTS, className="status")], className="controls"),
        html.Div([html.Label(["steps ", dcc.Input(id=ids.INTERP_STEPS, type="number", min=2, max=30, step=1,
                                                  value=10, className="steps")]),
                  dcc.RadioItems(id=ids.INTERP_METHOD, options=[{"label": " linear", "value": "linear"},
                                                                {"label": " spherical", "value": "slerp"}],
                                 value="linear", inline=True),
                  html.Button("Interpolate", id=ids.INTERP_RUN), html.Button("▶ play", id=ids.INTERP_PLAY)],
                 className="controls"),
        html.Div(dcc.Slider(id=ids.INTERP_FRAME, min=0, max=1, step=1, value=0, marks=None, disabled=True,
                            tooltip={"placement": "bottom"}), className="slider"),
        html.Div(id=ids.INTERP_STRIP, className="strip"), html.Div(id=ids.INTERP_STATUS, className="status"),
        physics_panel.path_energy_graph(), html.Div(id=ids.PATH_ENERGY_STATUS, className="status"),
    ], open=True)


def _export_panel(max_upload_mb: float) -> html.Details:
    formats = [{"label": spec.label, "value": key} for key, spec in FORMATS.items()]
    return html.Details([
        html.Summary("Export and upload"),
        html.Div([dcc.Dropdown(id=ids.EXPORT_FORMAT, options=formats, value="cif", clearable=False,
                               className="dropdown small"),
                  html.Button("Export structure", id=ids.EXPORT_BUTTON),
                  html.Button("3D view (HTML)", id=ids.EXPORT_HTML)], className="controls"),
        html.Div([html.Button("Add to basket", id=ids.BASKET_ADD),
                  html.Button("Export basket (zip)", id=ids.BASKET_EXPORT),
                  html.Button("Empty basket", id=ids.BASKET_CLEAR),
                  html.Span(id=ids.BASKET, className="status")], className="controls"),
        html.Div([html.Button("Path as extxyz", id=ids.PATH_EXPORT_EXTXYZ),
                  html.Button("Path as CIF zip", id=ids.PATH_EXPORT_CIF)], className="controls"),
        html.Div(id=ids.EXPORT_ERROR, className="error"),
        dcc.Upload(id=ids.UPLOAD, children=html.Div(f"Drop a structure file here (CIF, POSCAR, extended XYZ or "
                                                    f"pymatgen JSON, up to {max_upload_mb:g} MB), or click to "
                                                    "choose one"),
                   className="upload", multiple=False, max_size=int(max_upload_mb * 1e6)),
        html.Div(id=ids.UPLOAD_ERROR, className="error", **{"data-max-bytes": str(int(max_upload_mb * 1e6))}),
    ], open=True)


def layout(datasets: list[str], default: str | None, *, max_upload_mb: float = 10.0) -> html.Div:
    """The whole page for the given built datasets (uploads up to ``max_upload_mb``)."""
    header = html.Header([html.H1("Latent Materials Explorer"),
                          html.Span("known crystals on the map of an E(3)-equivariant autoencoder", className="sub"),
                          html.Span("loading…", id=ids.READY_STATUS, className="status ready"),
                          *link_panel.elements(),
                          dcc.Interval(id=ids.READY_TIMER, interval=1000)])
    viewer = viewer_panel.panel(html.Div(structure_info(None), id=ids.STRUCTURE_INFO, className="info"),
                                motif_panel.panel(), physics_panel.panel())
    right = html.Div([viewer, _interp_panel(), viewer_panel.compare_panel(), _export_panel(max_upload_mb)],
                     className="right")
    error = html.Div([html.Span(id=ids.APP_ERROR, role="alert"), html.Button("×", id=ids.APP_ERROR_CLOSE,
                                                                             title="dismiss", className="link")],
                     id=ids.APP_ERROR_ROW, className="error banner", style={"display": "none"})
    return html.Div([header, error, html.Main([_map_panel(datasets, default), right], className="main"),
                     *_stores()])
