"""The page's state in its address bar (``services.links``): every change writes a new address (the back button
steps back through what the user looked at), an address opened or stepped back to sets the page, and "Copy link"
copies it.

Two directions without a cycle of callbacks: ``write_link`` (the controls and the structure on screen -> the
``store-link`` query string, pushed to the browser's history by assets/links.js), and ``open_link`` (the address:
``dcc.Location``'s search when the page opens, and ``store-nav``, which assets/links.js fills on back and
forward -> the controls and the structure on screen). ``open_link`` sets only what differs from the page, so an
address the page wrote itself changes nothing.
"""

from __future__ import annotations

from dash import ClientsideFunction, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from explorer.services import links, maps, materials, model
from explorer.settings import Settings
from explorer.ui import components, ids

FIELDS = [(ids.DATASET, "dataset"), (ids.MAP_KIND, "map"), (ids.COLOR_BY, "color"), (ids.SEARCH, "q"),
          (ids.FILTER_ELEMENTS, "el"), (ids.FILTER_SITES_MIN, "smin"), (ids.FILTER_SITES_MAX, "smax"),
          (ids.FILTER_PROPERTY, "prop"), (ids.FILTER_MIN, "pmin"), (ids.FILTER_MAX, "pmax"),
          (ids.INTERP_STEPS, "steps"), (ids.INTERP_METHOD, "method"), (ids.VIEWER_SUPERCELL, "cell"),
          (ids.VIEWER_STYLE, "style"), (ids.VIEWER_CELL, "uc")]
"""The controls a link holds: (component id, link key); each one's ``value``."""
RESET = {"q": "", "el": "", "smin": None, "smax": None, "prop": None, "pmin": None, "pmax": None}
"""What a control becomes when a link does not name it (the others keep their value)."""


def elements() -> list:
    """The address bar's component, the stores of both directions and the "Copy link" row."""
    return [dcc.Location(id=ids.URL, refresh=False), dcc.Store(id=ids.STORE_LINK), dcc.Store(id=ids.STORE_NAV),
            dcc.Store(id=ids.STORE_LINK_READY, data=False), dcc.Store(id=ids.STORE_LINK_FRAME),
            html.Span([dcc.Input(id=ids.LINK_TEXT, type="text", readOnly=True, className="link-text"),
                       dcc.Clipboard(target_id=ids.LINK_TEXT, id=ids.COPY_LINK, title="Copy link",
                                     className="copy-link"),
                       html.Span("Copy link", className="hint"),
                       html.Span(id=ids.LINK_STATUS, className="status")], className="link-row",
                      title="the address of what is on the page: send it, and it opens the same view")]


def _plain(value: object) -> object:
    """A control's value as a link may hold it (text cut short, finite numbers only)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value if value == value and abs(value) != float("inf") else None
    return str(value)[: links.MAX_TEXT] if isinstance(value, str) else None


def shows_path(path: object, endpoints: object, steps: object, method: object) -> bool:
    """Whether ``path`` (the page's path store) is the path between ``endpoints`` with ``steps`` frames by
    ``method``: what running the interpolation with these controls would show."""
    endpoints = endpoints if isinstance(endpoints, dict) else {}
    ends = [endpoints.get(end) for end in ("a", "b")]
    if not isinstance(path, dict) or not isinstance(path.get("frames"), list) or not all(isinstance(e, dict)
                                                                                          for e in ends):
        return False
    return (path.get("a") == ends[0].get("title") and path.get("b") == ends[1].get("title")
            and path.get("method") == method and len(path["frames"]) == steps)


def link_state(values: dict, current: object, endpoints: object, path: object = None) -> dict:
    """The link's state of the page's control ``values`` ({link key: value}), the view on screen, the
    interpolation endpoints and the path: when a frame of the path between those endpoints is on screen, ``path=1``
    and ``frame`` (the link's page decodes the path again and opens that frame)."""
    state = {key: _plain(value) for key, value in values.items()}
    state["show"] = links.spec_of(current)
    if state["show"] and state["show"].split(":")[0] in ("pt", "decode") and isinstance(current, dict):
        state["ck"] = str(current.get("checkpoint") or "")[:12]
    endpoints = endpoints if isinstance(endpoints, dict) else {}
    state["a"], state["b"] = links.spec_of(endpoints.get("a")), links.spec_of(endpoints.get("b"))
    index = current.get("index") if isinstance(current, dict) else None
    if state["a"] and state["b"] and state["show"] is None and isinstance(index, int) \
            and shows_path(path, endpoints, values.get("steps"), values.get("method")) \
            and 0 <= index < len(path["frames"]) and path["frames"][index].get("id") == current.get("id"):
        state["path"], state["frame"] = "1", index
    return state


def register(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_LINK, "data"), *[Input(c, "value") for c, _ in FIELDS],
                  Input(ids.STORE_CURRENT, "data"), Input(ids.STORE_ENDPOINTS, "data"),
                  State(ids.STORE_PATH, "data"), State(ids.STORE_LINK_READY, "data"), prevent_initial_call=True)
    def write_link(*args):
        # the path is read, not listened to: a new path always puts one of its frames on screen (``on_frame``), and
        # the address is written once, for that frame
        *values, current, endpoints, path, ready = args
        if not ready:  # the address the page was opened with is not applied yet: do not overwrite it
            raise PreventUpdate
        return links.write(link_state(dict(zip([k for _, k in FIELDS], values, strict=True)), current, endpoints,
                                      path))

    app.clientside_callback(ClientsideFunction(namespace="explorer_links", function_name="push"),
                            Output(ids.LINK_TEXT, "value"), Input(ids.STORE_LINK, "data"))

    outputs = [Output(c, "value", allow_duplicate=True) for c, _ in FIELDS]

    @app.callback(*outputs, Output(ids.STORE_CURRENT, "data", allow_duplicate=True),
                  Output(ids.STORE_ENDPOINTS, "data", allow_duplicate=True),
                  Output(ids.INTERP_ENDPOINTS, "children", allow_duplicate=True),
                  Output(ids.LINK_STATUS, "children"), Output(ids.STORE_LINK_READY, "data"),
                  Output(ids.STORE_LINK, "data", allow_duplicate=True),
                  Output(ids.STORE_UPLOADS, "data", allow_duplicate=True),
                  Output(ids.INTERP_RUN, "n_clicks", allow_duplicate=True),
                  Output(ids.STORE_LINK_FRAME, "data", allow_duplicate=True),
                  Output(ids.INTERP_FRAME, "value", allow_duplicate=True),
                  Input(ids.URL, "search"), Input(ids.STORE_NAV, "data"), *[State(c, "value") for c, _ in FIELDS],
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_ENDPOINTS, "data"),
                  State(ids.STORE_UPLOADS, "data"), State(ids.STORE_PATH, "data"), State(ids.INTERP_RUN, "n_clicks"),
                  prevent_initial_call="initial_duplicate")
    def open_link(search, nav, *args):
        *values, current, endpoints, uploads, path, runs = args
        if ctx.triggered_id == ids.STORE_NAV:
            search = nav.get("search") if isinstance(nav, dict) else None
        if search is None:  # the first call, before the address bar has said what it holds
            raise PreventUpdate
        # the address itself goes to the link store: "Copy link" has it at once, and it is already in the history
        controls = dict(zip([k for _, k in FIELDS], values, strict=True))
        outputs = apply(str(search), controls, current, endpoints, settings)
        rerun, frame = linked_path(str(search), outputs, values=controls, endpoints=endpoints, path=path,
                                   current=current)
        run = (runs if isinstance(runs, int) and runs >= 0 else 0) + 1 if rerun else no_update
        return (*outputs, str(search), upload_marks(str(search), uploads), run, frame if rerun else no_update,
                frame if not rerun and frame is not None else no_update)


def linked_path(search: str, outputs: tuple, *, values: dict, endpoints: object, path: object,
                current: object) -> tuple[bool, int | None]:
    """What the address's ``path=1`` asks of the page: (decode the path again, the frame to open). The path is
    decoded again when the page does not show it yet, then its ``frame`` (else 0) opens; when the page shows it (the
    back button stepping through frames), only a frame other than the one on screen opens. (False, None) when the
    address names no path, shows a structure (the page shows that, not a frame) or an end that could not be opened.
    ``outputs``: ``apply``'s, whose endpoints and controls are those the path is run with."""
    state = links.read(search)[0]
    if state.get("path") != "1" or state.get("show"):
        return False, None
    keys = [key for _, key in FIELDS]
    fields = dict(zip(keys, outputs[:len(keys)], strict=True))
    now = {key: values.get(key) if fields[key] is no_update else fields[key] for key in keys}
    ends = outputs[len(keys) + 1]
    ends = endpoints if ends is no_update else ends
    if not isinstance(ends, dict) or not ends.get("a") or not ends.get("b"):
        return False, None  # an end the link named could not be opened: its status line says which
    frame = state.get("frame", 0)
    if not shows_path(path, ends, now["steps"], now["method"]):
        return True, frame
    on_screen = current.get("index") if isinstance(current, dict) else None
    same = on_screen == frame and frame < len(path["frames"]) and path["frames"][frame].get("id") == current.get("id")
    return False, None if same or frame >= len(path["frames"]) else frame


def apply(search: str, values: dict, current: object, endpoints: object, settings: Settings) -> tuple:
    """The outputs of ``open_link`` for the address ``search`` on a page whose controls hold ``values``:
    a new value only where it differs, and what was ignored, in words."""
    state, ignored = links.read(search)
    new = dict(values)
    datasets = materials.datasets_with_tables(settings)
    if "dataset" in state and state["dataset"] not in datasets:
        ignored.append(f"dataset {state.pop('dataset')[:40]!r} is not on this server")
    dataset = state.get("dataset") or values.get("dataset") or (datasets[0] if datasets else None)
    new["dataset"] = dataset
    for key in ("map", "color", "steps", "method", "cell", "style", "uc"):
        if key in state:
            new[key] = state[key]
    for key, empty in RESET.items():
        new[key] = state.get(key, empty)
    view, ends = no_update, no_update
    if dataset:
        view = _view(state.get("show"), dataset, current, state, ignored, settings)
        ends = _endpoints(state, dataset, endpoints, ignored, settings)
    fields = [no_update if new[key] == values.get(key) or (new[key] in ("", None) and values.get(key) in ("", None))
              else new[key] for _, key in FIELDS]
    status = ("Not opened from the link: " + "; ".join(ignored) + ".") if ignored else ""
    label = no_update if ends is no_update else components.endpoints_label(ends)
    return (*fields, view, ends, label, status[:600], True)


def upload_marks(search: str, uploads: object):
    """The page's upload marks with the one of an upload's link added (no update when there is none to add)."""
    spec = links.read(search)[0].get("show")
    if not spec or not spec.startswith("up:"):
        return no_update
    marks = [m for m in (uploads if isinstance(uploads, list) else []) if isinstance(m, dict)]
    mark = links.upload_mark(spec)
    return no_update if mark in marks else [*marks, mark]


def _view(spec: str | None, dataset: str, current: object, state: dict, ignored: list, settings: Settings):
    """The view the link shows (no update when it is on screen already, None when the link shows nothing)."""
    if spec is None:
        return None if links.spec_of(current) is not None else no_update
    if spec == links.spec_of(current):
        return no_update
    if spec.startswith("up:"):
        mark = links.upload_mark(spec)
        ignored.append(f"the uploaded file ({mark['formula']}) itself, which a link cannot hold: its place on the "
                       f"{mark['map']} map is marked with a square")
        return None if links.spec_of(current) is not None else no_update
    try:
        view = links.view_of(spec, dataset, settings)
    except (ValueError, FileNotFoundError) as exc:
        ignored.append(f"structure {spec[:60]!r} ({str(exc)[:120]})")
        return no_update
    kind = state.get("map")
    if spec.startswith(("id:", "decode:")) and kind in maps.CRYSTAL_KINDS:
        from explorer.services import views

        view = views.placed(view, dataset, kind, settings)
    ours = model.checkpoint_sha256(settings)[:12] if spec.startswith(("pt:", "decode:")) else None
    if ours and state.get("ck") and state["ck"] != ours:
        view = {**view, "note": f"This link was made with checkpoint {state['ck']}; this explorer runs {ours}, so "
                                f"this is its decode of that point, which may differ from what the link's author "
                                f"saw. {view['note']}"}
        ignored.append(f"checkpoint {state['ck']} (this explorer runs {ours}; the structure is decoded anew)")
    return view


def _endpoints(state: dict, dataset: str, endpoints: object, ignored: list, settings: Settings):
    endpoints = endpoints if isinstance(endpoints, dict) else {}
    found = {}
    for end in ("a", "b"):
        spec = state.get(end)
        if spec is None:
            continue
        if spec == links.spec_of(endpoints.get(end)):
            found[end] = endpoints[end]
            continue
        try:
            found[end] = links.view_of(spec, dataset, settings)
        except (ValueError, FileNotFoundError) as exc:
            ignored.append(f"endpoint {end.upper()} {spec[:60]!r} ({str(exc)[:120]})")
    same = {k: links.spec_of(v) for k, v in found.items()} == {k: links.spec_of(v) for k, v in endpoints.items()
                                                               if links.spec_of(v)}
    return no_update if same else found
