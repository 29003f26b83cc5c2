"""The physics of what is on screen: the panel (energy, forces, stress, stability, novelty) that fills in after
the structure is drawn, the Relax button (a background job with progress and cancel) with its decoded /
relaxed toggle, and the energy plot of an interpolation path. Builders and thin callbacks; the work is in
``explorer.services.physics``."""

from __future__ import annotations

import plotly.graph_objects as go
from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from explorer.services import maps, materials, motif_views, physics, views
from explorer.settings import Settings
from explorer.ui import ids

DECODED, RELAXED = "source", "relaxed"


def panel() -> html.Div:
    """The physics block under the structure details (empty until something is on screen)."""
    relax = html.Div([
        html.Button("Relax", id=ids.RELAX, title="relax positions and cell with the potential (FIRE)"),
        html.Button("Cancel", id=ids.RELAX_CANCEL, disabled=True),
        html.Span(id=ids.RELAX_PROGRESS, className="status"),
        dcc.RadioItems(id=ids.RELAX_TOGGLE, options=[{"label": " as shown before", "value": DECODED},
                                                     {"label": " relaxed", "value": RELAXED}],
                       value=RELAXED, inline=True, style={"display": "none"}),
    ], className="controls")
    return html.Div([html.Div(id=ids.PHYSICS, className="physics"), relax,
                     html.Div(id=ids.RELAX_STATUS, className="status"),
                     dcc.Store(id=ids.STORE_RELAX_RESULT), dcc.Store(id=ids.STORE_RELAX)], className="info")


def path_energy_graph() -> dcc.Graph:
    """The energy-along-the-path plot under the frame strip (hidden until a path is decoded)."""
    return dcc.Graph(id=ids.PATH_ENERGY, config={"displaylogo": False, "displayModeBar": False},
                     style={"height": "220px", "display": "none"})


def _fmt(value, unit: str, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def physics_info(result: dict | None, problem: str | None = None) -> list:
    """The physics panel of ``physics.assess_view``'s result, or the problem in words."""
    from models.potential import ENERGY_SCHEME, POTENTIAL

    title = html.H4(f"Physics ({POTENTIAL})")
    if problem:
        return [title, html.P(problem[:400], className="error")]
    if not result:
        return [title, html.P("computing…", className="hint")]
    rows = [["energy", _fmt(result["energy_per_atom"], "eV/atom", 4)],
            ["largest force", _fmt(result["max_force"], "eV/Å")],
            ["stress", f"pressure {result['pressure']:.2f} GPa, largest component {result['max_stress']:.2f} GPa"],
            ["stability", result["hull"]]]
    if result.get("decomposition") and result.get("e_above_hull") is not None:
        parts = " + ".join(f"{fraction:.2f} {formula}" for _, formula, fraction in result["decomposition"])
        rows.append(["decomposes into", parts])
    children = [title, html.Table([html.Tr([html.Th(label), html.Td(value)]) for label, value in rows],
                                  className="details")]
    if "novel" in result:
        if result["novel"]:
            children.append(html.P(f"novel: no known {result['formula']} of this map matches it (StructureMatcher)",
                                   id=ids.NOVELTY, className="novel"))
        else:
            volume = physics.volume_words(result.get("match_volume_ratio"))
            children.append(html.P(["not novel: it is the known ", html.Button(
                f"{result['formula']} {result['match_id']}", className="link", n_clicks=0,
                id={"type": ids.PHYSICS_MATCH, "index": result["match_id"]}),
                f" (its structure type {volume}: StructureMatcher scales volumes; relax it to compare)" if volume
                else ""], id=ids.NOVELTY, className="known"))
    children.append(html.P(f"hull of the known materials on this map, not of every known phase; {ENERGY_SCHEME}. "
                           f"Server time {result['ms']:.0f} ms.", className="timing"))
    return children


def energy_figure(series: dict) -> go.Figure:
    """Energy per atom against the frame of a path (endpoints marked A and B), with the energy above the known
    hull on a second axis where there is one; a click on a point selects that frame."""
    index, energy = series["index"], series["energy_per_atom"]
    ends = [0, len(index) - 1]
    figure = go.Figure(go.Scatter(x=index, y=energy, mode="lines+markers", name="energy (eV/atom)",
                                  customdata=series["formula"],
                                  hovertemplate="frame %{x}: %{customdata}<br>%{y:.4f} eV/atom<extra></extra>"))
    figure.add_trace(go.Scatter(x=ends, y=[energy[k] for k in ends], mode="markers+text", text=["A", "B"],
                                textposition="top center", marker={"size": 12, "symbol": "diamond"},
                                name="endpoints", hoverinfo="skip"))
    if any(v is not None for v in series["e_above_hull"]):
        figure.add_trace(go.Scatter(x=index, y=series["e_above_hull"], mode="lines+markers", yaxis="y2",
                                    name="above known hull (eV/atom)", line={"dash": "dot"},
                                    hovertemplate="frame %{x}: %{y:.3f} eV/atom above the hull<extra></extra>"))
    figure.update_layout(margin={"l": 50, "r": 50, "t": 10, "b": 35}, xaxis={"title": "frame", "dtick": 1},
                         yaxis={"title": "eV/atom"}, legend={"orientation": "h", "y": -0.3},
                         yaxis2={"overlaying": "y", "side": "right", "title": "above hull", "showgrid": False},
                         template="plotly_white", clickmode="event")
    return figure


def relax_summary(result: dict) -> str:
    s = result["summary"]
    verdict = "converged" if s["converged"] else "stopped" if s["stopped"] else "not converged"
    return (f"Relaxed in {s['steps']} steps ({verdict}, largest force {s['max_force']:.3f} eV/Å): energy "
            f"{s['energy_before']:.4f} → {s['energy_after']:.4f} eV/atom ({1000 * s['energy_drop']:.0f} meV/atom lower)"
            f", atoms moved {s['rms_displacement']:.3f} Å RMS, space group {s['space_group_before']} → "
            f"{s['space_group_after']}.")


def register(app: Dash, settings: Settings) -> None:
    """The physics callbacks, bound to ``settings``."""
    app.clientside_callback(ClientsideFunction(namespace="explorer_deferred", function_name="physics"),
                            Output(ids.PHYSICS, "children", allow_duplicate=True), Input(ids.STORE_CURRENT, "data"),
                            prevent_initial_call=True)

    # Triggered by the viewer's store, which ``show`` writes: the panel's work starts once the structure's own
    # callback has answered, so it never competes with the click for the 2 cores.
    @app.callback(Output(ids.PHYSICS, "children"), Input(ids.STORE_VIEWER, "data"), State(ids.STORE_CURRENT, "data"),
                  State(ids.DATASET, "value"))
    def fill(shown, view, dataset):
        if not view or not dataset:
            return []
        if isinstance(shown, dict) and shown.get("cause") == "cell":  # the same structure in another cell
            raise PreventUpdate
        try:
            physics.check_assessable(view, dataset, settings)  # before the potential is loaded for it
            problem = physics.potential_problem(settings)
            if problem:
                return physics_info(None, f"The potential is not available, so there is no energy: {problem}")
            return physics_info(physics.assess_view(view, dataset, settings))
        except ValueError as exc:
            return physics_info(None, str(exc))

    @app.callback(Output(ids.STORE_RELAX_RESULT, "data"), Input(ids.RELAX, "n_clicks"),
                  State(ids.STORE_CURRENT, "data"), background=True, prevent_initial_call=True, interval=500,
                  running=[(Output(ids.RELAX, "disabled"), True, False),
                           (Output(ids.RELAX_CANCEL, "disabled"), False, True)],
                  cancel=[Input(ids.RELAX_CANCEL, "n_clicks")], progress=[Output(ids.RELAX_PROGRESS, "children")])
    def relax(set_progress, _n, view):
        if not view:
            return {"error": "Show a structure first (click the map), then relax it."}
        try:
            view = views.check_view(view, settings)
            motif_views.require_crystal(view, "relaxation")
            set_progress("loading the potential…")
            result = physics.relax(views.structure_of(view), settings, on_step=lambda s: set_progress(
                f"step {s['step']}: {s['energy_per_atom']:.4f} eV/atom, largest force {s['max_force']:.3f} eV/Å"))
        except (ValueError, RuntimeError) as exc:  # a bad structure, a blow-up, or no potential (PotentialUnavailable)
            return {"error": str(exc)}
        set_progress("")
        return {"source": view, "structure": result.structure.as_dict(), "summary": result.summary()}

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Output(ids.STORE_RELAX, "data"),
                  Output(ids.RELAX_STATUS, "children"), Output(ids.RELAX_TOGGLE, "value"),
                  Input(ids.STORE_RELAX_RESULT, "data"), State(ids.DATASET, "value"), State(ids.MAP_KIND, "value"),
                  prevent_initial_call=True)
    def relaxed(result, dataset, kind):
        if not isinstance(result, dict):
            raise PreventUpdate
        if "error" in result:
            return no_update, no_update, f"Relaxation failed: {str(result['error'])[:400]}", no_update
        try:
            source = views.check_view(result.get("source"), settings, label="relaxation source")
            structure = views.structure_of({"title": "relaxed structure", "structure": result.get("structure")})
            summary = physics.check_summary(result.get("summary"))
            relaxed_view = views.relaxed_view(source, structure, summary, dataset, settings,
                                              kind=maps.check_kind(kind))
        except ValueError as exc:
            return no_update, no_update, f"Relaxation failed: {exc}", no_update
        return relaxed_view, {DECODED: source, RELAXED: relaxed_view}, relax_summary(result | {"summary": summary}), \
            RELAXED

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Input(ids.RELAX_TOGGLE, "value"),
                  State(ids.STORE_RELAX, "data"), State(ids.STORE_CURRENT, "data"), State(ids.DATASET, "value"),
                  State(ids.MAP_KIND, "value"), prevent_initial_call=True)
    def toggle(which, pair, current, dataset, kind):
        if not isinstance(pair, dict) or which not in (DECODED, RELAXED) or not isinstance(pair.get(which), dict):
            raise PreventUpdate
        if isinstance(current, dict) and current.get("id") == pair[which].get("id"):
            raise PreventUpdate
        view = views.check_view(pair[which], settings)
        return views.placed(view, materials.check_dataset(dataset, settings), maps.check_kind(kind), settings)

    @app.callback(Output(ids.RELAX_TOGGLE, "style"), Input(ids.STORE_CURRENT, "data"), State(ids.STORE_RELAX, "data"))
    def toggle_shown(current, pair):
        """The toggle shows while one of the pair (the structure and its relaxation) is on screen."""
        shown = isinstance(current, dict) and isinstance(pair, dict) and current.get("id") in {
            (pair.get(k) or {}).get("id") for k in (DECODED, RELAXED)}
        return {} if shown else {"display": "none"}

    @app.callback(Output(ids.PATH_ENERGY, "figure"), Output(ids.PATH_ENERGY, "style"),
                  Output(ids.PATH_ENERGY_STATUS, "children"), Input(ids.STORE_PATH, "data"),
                  State(ids.DATASET, "value"), prevent_initial_call=True)
    def path_plot(path, dataset):
        hidden = {"height": "220px", "display": "none"}
        if not path:
            return no_update, hidden, ""
        try:
            physics.check_path(path, dataset, settings)  # before the potential is loaded for it
            problem = physics.potential_problem(settings)
            if problem:
                return no_update, hidden, f"No energies along the path: {problem}"
            series = physics.path_energies(path, dataset, settings)
        except ValueError as exc:
            return no_update, hidden, str(exc)
        note = f"energies of {len(series['index'])} frames in {series['ms']:.0f} ms"
        if series["problems"]:
            note += "; " + "; ".join(series["problems"])[:300]
        return energy_figure(series), {"height": "220px"}, note

    @app.callback(Output(ids.INTERP_FRAME, "value", allow_duplicate=True), Input(ids.PATH_ENERGY, "clickData"),
                  State(ids.STORE_PATH, "data"), prevent_initial_call=True)
    def pick_frame(click, path):
        points = click.get("points") if isinstance(click, dict) else None
        frames = path.get("frames") if isinstance(path, dict) else None
        if not points or not isinstance(points[0], dict) or not isinstance(frames, list):
            raise PreventUpdate
        x = points[0].get("x")
        if not isinstance(x, int | float) or isinstance(x, bool) or not 0 <= x < len(frames) or x != int(x):
            raise PreventUpdate
        return int(x)
