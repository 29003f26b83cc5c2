"""The structure viewer and its controls (cell, supercell, style, polyhedra, atoms on the boundary, bonds to
periodic images, labels, look along an axis, PNG), the measurements of picked atoms, and the compare view of two
structures. Builders and thin callbacks: the drawing is assets/viewer.js, the work explorer/services/cells.py and
explorer/services/compare.py."""

from __future__ import annotations

from dash import ClientsideFunction, Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from explorer.services import cells, compare, views
from explorer.services.links import SUPERCELLS
from explorer.services.motif_views import require_crystal
from explorer.settings import Settings
from explorer.ui import ids

CELL_OPTIONS = [{"label": " conventional", "value": "conventional"}, {"label": " primitive", "value": "primitive"},
                {"label": " model cell", "value": "model"}]


def _options() -> list:
    cell = html.Span(["Cell ", dcc.RadioItems(id=ids.VIEWER_CELL, options=CELL_OPTIONS, value=cells.DEFAULT_CELL,
                                              inline=True)], className="inline-radio",
                     title="conventional standard cell (as the Materials Project shows crystals), primitive standard "
                           "cell (both spglib's, symmetrised at the app's symprec), or the model's own canonical "
                           "cell (what it encodes and decodes)")
    supercell = html.Label(["Supercell ", dcc.Dropdown(id=ids.VIEWER_SUPERCELL, options=list(SUPERCELLS),
                                                       value="1x1x1", clearable=False, className="dropdown tiny")])
    style = dcc.RadioItems(id=ids.VIEWER_STYLE, options=[{"label": " ball-and-stick", "value": "ball-and-stick"},
                                                         {"label": " spheres", "value": "spheres"}],
                           value="ball-and-stick", inline=True)
    toggles = dcc.Checklist(id=ids.VIEWER_POLYHEDRA, options=[{"label": " polyhedra", "value": "on"}], value=[],
                            inline=True)
    drawing = dcc.Checklist(id=ids.VIEWER_OPTIONS, inline=True, value=["boundary"], options=[
        {"label": html.Span(" atoms on the cell boundary", title="atoms on the faces, edges and corners of the cell "
                                                                 "drawn on every face they touch"),
         "value": "boundary"},
        {"label": html.Span(" bonds to periodic images", title="bonds that cross the cell's boundary, drawn with the "
                                                               "periodic image they reach (faded)"),
         "value": "images"}])
    labels = html.Span(["Labels ", dcc.RadioItems(id=ids.VIEWER_LABELS, inline=True, value="none", options=[
        {"label": " none", "value": "none"}, {"label": " element", "value": "element"},
        {"label": " site", "value": "site"}])], className="inline-radio")
    camera = html.Span([html.Span("View along ", className="hint"),
                        *(html.Button(axis, id=button, className="small", title=f"look down the {axis} axis")
                          for axis, button in (("a", ids.VIEW_A), ("b", ids.VIEW_B), ("c", ids.VIEW_C))),
                        html.Button("reset", id=ids.VIEW_RESET, className="small"),
                        html.Span(id=ids.VIEWER_CAMERA, className="status")], className="inline-radio")
    png = html.Div([html.Span("Image (width × height in pixels) ", className="hint"),
                    dcc.Input(id=ids.PNG_WIDTH, type="number", min=100, max=4000, step=1, value=1600,
                              className="number", debounce=True),
                    "×",
                    dcc.Input(id=ids.PNG_HEIGHT, type="number", min=100, max=4000, step=1, value=1200,
                              className="number", debounce=True),
                    dcc.Checklist(id=ids.PNG_TRANSPARENT, options=[{"label": " transparent", "value": "on"}],
                                  value=[], inline=True),
                    html.Button("Save PNG", id=ids.PNG_SAVE, className="small"),
                    html.Span(id=ids.PNG_STATUS, className="status")], className="controls png")
    return [html.Div([cell, supercell], className="controls"),
            html.Div([style, toggles, drawing], className="controls"), html.Div([labels, camera], className="controls"),
            png]


def panel(*extra) -> html.Div:
    """The viewer with its controls, the cell, the picked atoms and what they measure, then ``extra`` (the
    structure's details and the motif and physics panels)."""
    measure = html.Div([html.Div(id=ids.VIEWER_MEASURE, className="measure"),
                        html.Button("Clear picks", id=ids.PICKS_CLEAR, className="small"),
                        html.Span(id=ids.PICKS_SHOWN, hidden=True)], className="measure-row")
    return html.Div([html.H2("Structure", className="section"), *_options(),
                     html.Div(id=ids.VIEWER, className="viewer"),
                     html.Div(id=ids.VIEWER_LEGEND, className="legend"),
                     html.Div(id=ids.VIEWER_STATUS, className="status"),
                     html.Div(id=ids.VIEWER_CELL_INFO, className="status cell-info"),
                     html.Div("Hover an atom for its site and environment; click atoms to measure (one: its site; "
                              "two: distance; three: angle; four: dihedral).", id=ids.VIEWER_ATOM,
                              className="hint viewer-atom"),
                     measure, *extra])


def compare_panel() -> html.Details:
    pairs = [{"label": label, "value": key} for key, label in compare.PAIRS.items()]
    return html.Details([
        html.Summary("Compare two structures"),
        html.Div([dcc.Dropdown(id=ids.COMPARE_PAIR, options=pairs, value="ab", clearable=False,
                               className="dropdown compare-pair"),
                  html.Button("Compare", id=ids.COMPARE_RUN)], className="controls"),
        html.Div([html.Div(id=ids.COMPARE_LEFT, className="viewer compare"),
                  html.Div(id=ids.COMPARE_RIGHT, className="viewer compare")], className="compare-viewers"),
        html.Span(id=ids.COMPARE_SHOWN, hidden=True),
        html.Div(id=ids.COMPARE_TABLE), dcc.Store(id=ids.STORE_COMPARE)], open=False)


def _pair(which: str, endpoints: object, current: object, relax: object, dataset: object,
          settings: Settings) -> tuple[dict, dict]:
    """The two views of the comparison ``which`` (checked), or ValueError saying what is missing."""
    stored = {"ab": (endpoints, ("a", "A"), ("b", "B"), "Set A and B first (Interpolate: Set A, Set B), then compare "
                                                         "them."),
              "relaxed": (relax, ("source", "the structure before relaxation"), ("relaxed", "the relaxed structure"),
                          "Relax a structure first (Physics: Relax), then compare it with what it was relaxed from.")}
    if which in stored:
        store, (first, first_label), (second, second_label), missing = stored[which]
        store = store if isinstance(store, dict) else {}
        if not store.get(first) or not store.get(second):
            raise ValueError(missing)
        return (views.check_view(store[first], settings, label=first_label),
                views.check_view(store[second], settings, label=second_label))
    if not current:
        raise ValueError("Show a structure first (click the map), then compare it with its nearest known material.")
    first = views.check_view(current, settings)
    require_crystal(first, "the comparison")
    nearest = first.get("nearest") or []
    if not nearest:
        raise ValueError(f"{first['title'][:80]} has no nearest known material listed")
    from explorer.services import materials

    return first, views.known_view(materials.check_dataset(dataset, settings), nearest[0][0], settings)


def compare_table(first: dict, second: dict, result: dict) -> list:
    head = html.Tr([html.Th(""), html.Th(first["title"][:60]), html.Th(second["title"][:60])])
    rows = [html.Tr([html.Th(name), html.Td(a), html.Td(b)], className="differs" if differs else "")
            for name, a, b, differs in result["rows"]]
    return [html.Table([head, *rows], className="details compare-table"),
            html.P(result["verdict"], className="verdict"),
            html.P(f"Rows that differ are marked. Server time {result['ms']:.0f} ms.", className="timing")]


def register(app: Dash, settings: Settings) -> None:
    app.clientside_callback(ClientsideFunction(namespace="explorer", function_name="drawStructure"),
                            Output(ids.VIEWER_STATUS, "children"), Input(ids.STORE_VIEWER, "data"),
                            Input(ids.VIEWER_SUPERCELL, "value"), Input(ids.VIEWER_STYLE, "value"),
                            Input(ids.VIEWER_POLYHEDRA, "value"), Input(ids.STORE_POLYHEDRA, "data"),
                            Input(ids.VIEWER_OPTIONS, "value"), Input(ids.VIEWER_LABELS, "value"))
    app.clientside_callback(ClientsideFunction(namespace="explorer", function_name="showPicks"),
                            Output(ids.PICKS_SHOWN, "children"), Input(ids.STORE_PICKS, "data"))
    app.clientside_callback(ClientsideFunction(namespace="explorer", function_name="viewAlong"),
                            Output(ids.VIEWER_CAMERA, "children"), Input(ids.VIEW_A, "n_clicks"),
                            Input(ids.VIEW_B, "n_clicks"), Input(ids.VIEW_C, "n_clicks"),
                            Input(ids.VIEW_RESET, "n_clicks"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction(namespace="explorer", function_name="savePng"),
                            Output(ids.PNG_STATUS, "children"), Input(ids.PNG_SAVE, "n_clicks"),
                            State(ids.PNG_WIDTH, "value"), State(ids.PNG_HEIGHT, "value"),
                            State(ids.PNG_TRANSPARENT, "value"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction(namespace="explorer", function_name="drawCompare"),
                            Output(ids.COMPARE_SHOWN, "children"), Input(ids.STORE_COMPARE, "data"))

    @app.callback(Output(ids.VIEWER_MEASURE, "children"), Input(ids.STORE_PICKS, "data"),
                  State(ids.STORE_CURRENT, "data"), State(ids.VIEWER_CELL, "value"))
    def measure(picks, current, cell):
        """What the picked atoms measure, on the structure drawn: made again from the view on screen and the cell
        (the viewer's store is the browser's copy, so it is not trusted)."""
        if not picks or not current:
            return []
        try:
            view = views.check_view(current, settings)
            if view["kind"] == "environment":
                return []
            drawn = cells.viewer_payload(view, cell=cells.check_cell(cell), symprec=settings.symprec)
            lines = cells.measure(drawn, picks)
        except ValueError as exc:
            return html.P(str(exc)[:300], className="error")
        return [html.Div(line, className="measure-line") for line in lines]

    @app.callback(Output(ids.STORE_PICKS, "data"), Input(ids.PICKS_CLEAR, "n_clicks"), prevent_initial_call=True)
    def clear_picks(_n):
        return []

    @app.callback(Output(ids.STORE_COMPARE, "data"), Output(ids.COMPARE_TABLE, "children"),
                  Input(ids.COMPARE_RUN, "n_clicks"), State(ids.COMPARE_PAIR, "value"),
                  State(ids.STORE_ENDPOINTS, "data"), State(ids.STORE_CURRENT, "data"), State(ids.STORE_RELAX, "data"),
                  State(ids.DATASET, "value"), State(ids.VIEWER_CELL, "value"), prevent_initial_call=True)
    def run_compare(n_clicks, which, endpoints, current, relax, dataset, cell):
        if not n_clicks:
            raise PreventUpdate
        try:
            which, cell = compare.check_pair(which), cells.check_cell(cell)
            first, second = _pair(which, endpoints, current, relax, dataset, settings)
            for view in (first, second):
                require_crystal(view, "the comparison")
            result = compare.compare(views.structure_of(first), views.structure_of(second), symprec=settings.symprec)
        except ValueError as exc:
            return None, html.P(str(exc)[:400], className="error")
        pair = {"left": cells.viewer_payload(first, cell=cell, symprec=settings.symprec),
                "right": cells.viewer_payload(second, cell=cell, symprec=settings.symprec)}
        return pair, compare_table(first, second, result)


def show_outputs(view: dict | None, cell: object, settings: Settings) -> tuple:
    """The viewer's payload and its cell sentence for the checked view on screen in the chosen cell (``show``: a new
    view, or the cell changed; the payload says which, so the panels that depend on the structure alone can skip)."""
    if not view:
        return None, ""
    shown = cells.viewer_payload(view, cell=cells.check_cell(cell), symprec=settings.symprec)
    # only the cell changed (a link may change the view and the cell at once: then it is a new view)
    shown["cause"] = "cell" if set(ctx.triggered_prop_ids) == {f"{ids.VIEWER_CELL}.value"} else "view"
    return shown, shown.get("cell_text", "")

