"""Thin callbacks: guard (PreventUpdate), read the stores, call a service, return. No model code here."""

from __future__ import annotations

import logging
import time

from dash import ALL, ClientsideFunction, Dash, Input, Output, Patch, State, ctx, dcc, html, no_update, set_props
from dash.exceptions import PreventUpdate

from explorer import atlas, motif_map, structure_map
from explorer.services import downloads, lod, maps, materials, motif_views, readiness, views
from explorer.settings import Settings
from explorer.ui import background_jobs, components, ids, link_panel, motif_panel, physics_panel, viewer_panel
from explorer.ui.components import GRID, KNOWN, MATCHES, PATH

LOG = logging.getLogger("explorer")
SELECTION_LIMIT = 100
"""Most materials one 'Add selection to basket' adds (each carries its structure in the browser's store)."""


def _matches(dataset: str | None, query: str | None, settings: Settings, kind: str) -> tuple[dict | None, str]:
    if not dataset or not (query or "").strip():
        return None, ""
    found = materials.search_points(dataset, query, settings, kind)
    status = f"{found['count']} match{'es' if found['count'] != 1 else ''} for {query.strip()!r}"
    return found, status + (f" ({found['note']})" if found["note"] else "")


_FILTERS = (ids.FILTER_ELEMENTS, ids.FILTER_SITES_MIN, ids.FILTER_SITES_MAX, ids.FILTER_PROPERTY, ids.FILTER_MIN,
            ids.FILTER_MAX)


def _filter_states() -> list[State]:
    return [State(name, "value") for name in _FILTERS]


def _filters(elements, sites_min, sites_max, prop, prop_min, prop_max) -> dict:
    """The filter values as ``materials.filter_mask`` keywords."""
    return {"elements": elements, "sites": (sites_min, sites_max), "prop": prop, "prop_range": (prop_min, prop_max)}


def _big_map(dataset: str, kind: str, color_by, filters: dict, window: object,
             settings: Settings) -> tuple[lod.Layer, object, tuple, str] | None:
    """(layer, filter mask, window on screen, note) when the map is drawn as a density image, else None."""
    if not lod.is_big(maps.size(dataset, kind, settings), settings):
        return None
    layer = lod.layer(dataset, kind, color_by, settings)
    try:
        keep, note = lod.keep_mask(dataset, kind, layer, filters, settings), ""
    except ValueError as exc:
        keep, note = None, f"; filter not applied: {exc}"
    mine = isinstance(window, dict) and window.get("key") == f"{dataset}-{kind}"
    return layer, keep, lod.check_window(window if mine else None, layer.extent), note


def _nearest_on_big_map(dataset: str, kind: str, color_by, rest: tuple, xy: tuple[float, float],
                        settings: Settings) -> str | None:
    """The id of the point a click on a big map's density image means, or None (not big, or empty space)."""
    *filter_values, window = rest
    if materials.map_problem(dataset, settings, kind):
        return None
    big = _big_map(dataset, kind, color_by, _filters(*filter_values), window, settings)
    if big is None:
        return None
    layer, keep, window, _ = big
    found = lod.nearest(layer, keep, xy[0], xy[1], lod.click_radius(window))
    return None if found is None else str(layer.ids[found])


def _path_on(path: object, kind: str) -> dict | None:
    """The interpolation path when it was placed on the map of ``kind`` (a path of the other map is not drawn)."""
    return path if isinstance(path, dict) and path.get("map", "crystals") == kind else None


def register_map(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.COLOR_BY, "options"), Output(ids.COLOR_BY, "value"),
                  Output(ids.FILTER_PROPERTY, "options"), Input(ids.DATASET, "value"), Input(ids.MAP_KIND, "value"),
                  State(ids.COLOR_BY, "value"))
    def color_options(dataset, kind, color_by):
        """The colourings of the map shown (the motif map's points are environments: motif, centre, CN…); the
        property filter keeps the crystals' numeric properties."""
        if not dataset:
            raise PreventUpdate
        all_options = materials.map_color_options(materials.check_dataset(dataset, settings), settings)
        numeric = [{"label": o["label"], "value": o["value"]} for o in all_options
                   if o["kind"] == "continuous" and o["value"] != "nsites"]
        shown, default = (motif_map.COLOR_OPTIONS, "motif") if maps.check_kind(kind) == "motifs" else \
            (all_options, "source")
        options = [{"label": o["label"], "value": o["value"]} for o in shown]
        return options, color_by if color_by in {o["value"] for o in options} else default, numeric

    @app.callback(Output(ids.MAP, "figure"), Output(ids.COLOR_LEGEND, "children"), Output(ids.MAP_STATUS, "children"),
                  Output(f"{ids.MAP_BUILD}-row", "style"),
                  Input(ids.DATASET, "value"), Input(ids.MAP_KIND, "value"), Input(ids.COLOR_BY, "value"),
                  Input(ids.STORE_MAP_VERSION, "data"), *[Input(name, "value") for name in _FILTERS],
                  State(ids.SEARCH, "value"), State(ids.STORE_PATH, "data"), State(ids.STORE_WINDOW, "data"))
    def render_map(dataset, kind, color_by, _version, elements, sites_min, sites_max, prop, prop_min, prop_max, query,
                   path, window):
        if not dataset:
            raise PreventUpdate
        dataset, kind = materials.check_dataset(dataset, settings), maps.check_kind(kind)
        problem = materials.map_problem(dataset, settings, kind)
        if problem:
            return {}, [], problem, {} if "not built" in problem else {"display": "none"}
        filters = _filters(elements, sites_min, sites_max, prop, prop_min, prop_max)
        big = _big_map(dataset, kind, color_by, filters, window, settings)
        if big is not None:
            layer, keep, window, note = big
            shown = lod.window_view(dataset, kind, layer, keep, window, settings)
            matches, _ = _matches(dataset, query, settings, kind)
            figure = components.map_figure(shown["points"], matches=matches, path=_path_on(path, kind),
                                           revision=f"{dataset}-{kind}", kind=kind, window=window,
                                           image=shown["image"])
            return figure, components.color_legend(layer.points), shown["status"] + note, {"display": "none"}
        points = materials.map_points(dataset, color_by, settings, kind)
        total = len(materials.table(dataset, settings))
        status, shown = f"{len(points['ids'])} materials", None
        if kind == "motifs":
            matches, _ = _matches(dataset, query, settings, kind)
            figure = components.map_figure(points, matches=matches, path=_path_on(path, kind),
                                           revision=f"{dataset}-{kind}", kind=kind)
            status = (f"{len(points['ids'])} distinct environments of the sites of {total} materials (the filters "
                      "apply to the crystal maps)")
            return figure, components.color_legend(points), status, {"display": "none"}
        if len(points["ids"]) < total:
            status += f" of {total} (the others' environments could not be found)"
        if points["reconstruction"]:
            status += f"; {points['reconstruction']}"
        try:
            keep = materials.filter_mask(materials.table(dataset, settings), **filters)[points["rows"]]
            if not keep.all():
                shown = materials.filtered_points(points, keep)
                status = f"{int(keep.sum())} of {len(points['ids'])} materials shown (filters)"
        except ValueError as exc:
            status = f"{len(points['ids'])} materials; filter not applied: {exc}"
        matches, _ = _matches(dataset, query, settings, kind)
        figure = components.map_figure(points, shown=shown, matches=matches, path=_path_on(path, kind),
                                       revision=f"{dataset}-{kind}", kind=kind)
        return figure, components.color_legend(points), status, {"display": "none"}

    # plotly's relayout events become whole windows in the browser (assets/window.js): a later "autosize" event
    # must not supersede a zoom before the server has drawn it
    app.clientside_callback(ClientsideFunction(namespace="explorer_window", function_name="windowOf"),
                            Output(ids.STORE_WINDOW_REQUEST, "data"), Input(ids.MAP, "relayoutData"),
                            prevent_initial_call=True)

    @app.callback(Output(ids.MAP, "figure", allow_duplicate=True), Output(ids.STORE_WINDOW, "data"),
                  Output(ids.MAP_STATUS, "children", allow_duplicate=True), Input(ids.STORE_WINDOW_REQUEST, "data"),
                  State(ids.DATASET, "value"), State(ids.MAP_KIND, "value"), State(ids.COLOR_BY, "value"),
                  *_filter_states(), State(ids.STORE_WINDOW, "data"), prevent_initial_call=True)
    def on_window(request, dataset, kind, color_by, *rest):
        """A zoom or pan of a big map: the density image and the markers of the new window (patched: the
        overlays stay as they are)."""
        *filter_values, window = rest
        if not dataset:
            raise PreventUpdate
        dataset, kind = materials.check_dataset(dataset, settings), maps.check_kind(kind)
        if materials.map_problem(dataset, settings, kind):
            raise PreventUpdate
        big = _big_map(dataset, kind, color_by, _filters(*filter_values), window, settings)
        moved = big and lod.requested_window(request, big[0].extent)
        if not moved:
            raise PreventUpdate
        layer, keep, _, note = big
        shown = lod.window_view(dataset, kind, layer, keep, moved, settings)
        patch = Patch()
        patch["layout"]["images"] = [shown["image"]]
        patch["data"][GRID] = components.grid_trace(*moved)
        patch["data"][KNOWN] = components.known_trace(shown["points"])
        return patch, {"key": f"{dataset}-{kind}", "x": moved[0], "y": moved[1]}, shown["status"] + note

    @app.callback(Output(ids.STORE_SELECTION, "data"), Output(ids.SELECTION_STATUS, "children"),
                  Output(ids.SELECTION_ADD, "disabled"), Input(ids.MAP, "selectedData"), State(ids.DATASET, "value"),
                  State(ids.MAP_KIND, "value"), State(ids.COLOR_BY, "value"), *_filter_states(),
                  State(ids.STORE_WINDOW, "data"), prevent_initial_call=True)
    def on_select(selected, dataset, kind, color_by, *rest):
        """The known materials in a lasso or box: on a big map every point inside it (tested on the server),
        else the markers plotly reports."""
        *filter_values, window = rest
        if not dataset:
            return [], "Nothing selected.", True
        dataset, kind = materials.check_dataset(dataset, settings), maps.check_kind(kind)
        frame, count = materials.table(dataset, settings), None
        big = None if materials.map_problem(dataset, settings, kind) or kind == "motifs" else \
            _big_map(dataset, kind, color_by, _filters(*filter_values), window, settings)
        if big is not None:
            inside = lod.selected(big[0], big[1], selected)
            chosen = [] if inside is None else big[0].ids[inside[:materials.SELECTION_KEPT]].tolist()
            count = 0 if inside is None else len(inside)
        else:
            points = selected.get("points") if isinstance(selected, dict) else None
            chosen = materials.known_ids(frame, [
                p["customdata"] for p in (points if isinstance(points, list) else [])
                if isinstance(p, dict) and p.get("curveNumber") == KNOWN and isinstance(p.get("customdata"), str)])
        if not chosen:
            return [], "Nothing selected.", True
        return chosen, components.selection_summary(frame, chosen, count=count), False

    @app.callback(Output(ids.STORE_MAP_VERSION, "data"), Input(ids.MAP_BUILD, "n_clicks"),
                  State(ids.DATASET, "value"), State(ids.MAP_KIND, "value"), background=True, prevent_initial_call=True,
                  running=[(Output(ids.MAP_BUILD, "disabled"), True, False),
                           (Output(ids.MAP_BUILD_CANCEL, "disabled"), False, True)],
                  cancel=[Input(ids.MAP_BUILD_CANCEL, "n_clicks")],
                  progress=[Output(ids.MAP_BUILD_PROGRESS, "children")])
    def build_map(set_progress, _n, dataset, kind):
        if not dataset:
            raise PreventUpdate
        dataset, kind = materials.check_dataset(dataset, settings), maps.check_kind(kind)
        set_progress(f"building the map of {dataset}: encoding…")
        atlas.build_atlas(dataset, settings, on_progress=lambda done, total: set_progress(
            f"encoded {done} of {total} materials" + ("; fitting UMAP…" if done == total else "")))
        if kind == "structure":
            structure_map.build(dataset, settings, on_progress=lambda step: set_progress(f"structure map: {step}…"))
        elif kind == "motifs":
            motif_map.build(dataset, settings, on_progress=lambda step: set_progress(f"motif map: {step}…"))
        readiness.checks_in_background([dataset], settings)  # the map shows now; these follow
        set_progress("done")
        return time.time()

    @app.callback(Output(ids.MAP, "figure", allow_duplicate=True), Output(ids.SEARCH_STATUS, "children"),
                  Input(ids.SEARCH, "value"), Input(ids.STORE_PATH, "data"), State(ids.DATASET, "value"),
                  State(ids.MAP_KIND, "value"), prevent_initial_call=True)
    def overlays(query, path, dataset, kind):
        """Patch only the overlay that changed (search matches or the path); the marks are drawn in the browser."""
        kind = maps.check_kind(kind)
        if not dataset or materials.map_problem(materials.check_dataset(dataset, settings), settings, kind):
            raise PreventUpdate
        changed = {prop.split(".")[0] for prop in ctx.triggered_prop_ids}
        patch, status = Patch(), no_update
        if ids.SEARCH in changed:
            matches, status = _matches(dataset, query, settings, kind)
            patch["data"][MATCHES] = components.matches_trace(matches)
        if ids.STORE_PATH in changed:
            patch["data"][PATH] = components.path_trace(_path_on(path, kind))
        return patch, status

    # The marks (structure on screen, uploads) are HTML laid over the plot by assets/marks.js: any change of
    # the plotly figure makes plotly redraw every WebGL point, which a click should not wait for.
    app.clientside_callback(ClientsideFunction(namespace="explorer_marks", function_name="drawMarks"),
                            Output(ids.MAP_MARKS, "title"), Input(ids.STORE_CURRENT, "data"),
                            Input(ids.STORE_UPLOADS, "data"), Input(ids.MAP, "figure"))


def register_selection(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_CURRENT, "data"), Input(ids.MAP, "clickData"),
                  State(ids.DATASET, "value"), State(ids.MAP_KIND, "value"), State(ids.STORE_PATH, "data"),
                  State(ids.STORE_CURRENT, "data"), State(ids.COLOR_BY, "value"), *_filter_states(),
                  State(ids.STORE_WINDOW, "data"), prevent_initial_call=True)
    def on_map_click(click, dataset, kind, path, current, color_by, *rest):
        """The structure of the point clicked; a second click on the point on screen clears it (as Escape does).
        On a big map a click on the density image opens the nearest point within a few pixels (empty space
        beyond)."""
        points = click.get("points") if isinstance(click, dict) else None
        if not points or not isinstance(points, list) or not isinstance(points[0], dict) or not dataset:
            raise PreventUpdate
        point = points[0]
        tag = point.get("customdata")
        kind = maps.check_kind(kind)
        if tag is None and point.get("curveNumber") == GRID:
            tag = _nearest_on_big_map(materials.check_dataset(dataset, settings), kind, color_by, rest,
                                      views.map_point(point.get("x"), point.get("y")), settings)
        if isinstance(tag, str) and isinstance(current, dict) and current.get("id") == tag:
            return None
        if isinstance(tag, str) and tag.startswith("frame:"):
            return views.path_frame(path, tag.split(":", 1)[1])
        if isinstance(tag, str) and kind == "motifs":
            return motif_views.environment_view(dataset, tag, settings)
        if isinstance(tag, str):
            return views.known_view(dataset, tag, settings, kind=kind)
        return views.hypothetical_view(dataset, point.get("x"), point.get("y"), settings, kind=kind)

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Input(ids.MAP_KIND, "value"),
                  Input(ids.STORE_MAP_VERSION, "data"), State(ids.STORE_CURRENT, "data"), State(ids.DATASET, "value"),
                  prevent_initial_call=True)
    def on_map_kind(kind, _version, current, dataset):
        """The structure on screen follows to the map shown (placed there: its mark moves, nothing else changes),
        when the kind is switched or the map has just been built."""
        if not current or not dataset:
            raise PreventUpdate
        kind = maps.check_kind(kind)
        dataset = materials.check_dataset(dataset, settings)
        if materials.map_problem(dataset, settings, kind):
            raise PreventUpdate
        return views.placed(views.check_view(current, settings), dataset, kind, settings)

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True),
                  Input({"type": ids.NEAREST, "index": ALL}, "n_clicks"),
                  Input({"type": ids.SHOW_DECODE, "index": ALL}, "n_clicks"),
                  Input({"type": ids.PHYSICS_MATCH, "index": ALL}, "n_clicks"), State(ids.DATASET, "value"),
                  State(ids.MAP_KIND, "value"), prevent_initial_call=True)
    def on_material_button(_nearest, _decode, _match, dataset, kind):
        """A nearest known material or the known material a decode matches (its view), or "show the decode" of
        the material on screen."""
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        record_id = ctx.triggered_id.get("index")
        kind = maps.check_kind(kind)
        if ctx.triggered_id.get("type") == ids.SHOW_DECODE:
            return views.decode_of_known(dataset, record_id, settings, kind=kind)
        return views.known_view(dataset, record_id, settings, kind=kind)

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Output(ids.MAP_KIND, "value"),
                  Input({"type": ids.ENV_CRYSTAL, "index": ALL}, "n_clicks"), State(ids.DATASET, "value"),
                  prevent_initial_call=True)
    def on_environment_crystal(_clicks, dataset):
        """A crystal that holds the environment on screen, opened on the crystal map."""
        if not isinstance(ctx.triggered_id, dict) or not ctx.triggered or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        return views.known_view(dataset, ctx.triggered_id.get("index"), settings, kind="crystals"), "crystals"

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Output(ids.UPLOAD_ERROR, "children"),
                  Output(ids.STORE_UPLOADS, "data"), Input(ids.UPLOAD, "contents"), State(ids.UPLOAD, "filename"),
                  State(ids.DATASET, "value"), State(ids.MAP_KIND, "value"), State(ids.STORE_UPLOADS, "data"),
                  prevent_initial_call=True)
    def on_upload(contents, filename, dataset, kind, uploads):
        if not contents or not dataset:
            raise PreventUpdate
        try:
            content = views.data_url_bytes(contents, filename, max_bytes=int(settings.max_upload_mb * 1e6))
            view = views.upload_view(dataset, content, filename, settings, kind=maps.check_kind(kind))
        except ValueError as exc:
            return no_update, f"Upload failed: {exc}", no_update
        marks = [*(uploads if isinstance(uploads, list) else []),
                 {"xy": view["xy"], "formula": view["formula"], "map": view["map"]}]
        return view, "", marks

    @app.callback(Output(ids.STRUCTURE_INFO, "children"), Output(ids.STORE_VIEWER, "data"),
                  Output(ids.VIEWER_CELL_INFO, "children"), Input(ids.STORE_CURRENT, "data"),
                  Input(ids.VIEWER_CELL, "value"))
    def show(view, cell):
        if view is not None:
            view = views.check_view(view, settings)
        shown, sentence = viewer_panel.show_outputs(view, cell, settings)
        info = no_update if shown and shown.get("cause") == "cell" else components.structure_info(view)
        return info, shown, sentence


def register_interpolation(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_ENDPOINTS, "data"), Output(ids.INTERP_ENDPOINTS, "children"),
                  Input(ids.INTERP_SET_A, "n_clicks"), Input(ids.INTERP_SET_B, "n_clicks"),
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_ENDPOINTS, "data"), prevent_initial_call=True)
    def set_endpoint(_a, _b, current, endpoints):
        if not current:
            return no_update, "Show a structure first (click the map), then set it as A or B."
        current = views.check_view(current, settings)
        endpoints = {**(endpoints if isinstance(endpoints, dict) else {}),
                     "a" if ctx.triggered_id == ids.INTERP_SET_A else "b": current}
        return endpoints, components.endpoints_label(endpoints)

    @app.callback(Output(ids.STORE_PATH, "data"), Output(ids.INTERP_STATUS, "children"),
                  Output(ids.INTERP_FRAME, "max"), Output(ids.INTERP_FRAME, "value"),
                  Output(ids.INTERP_FRAME, "disabled"), Output(ids.STORE_LINK_FRAME, "data", allow_duplicate=True),
                  Input(ids.INTERP_RUN, "n_clicks"), State(ids.STORE_ENDPOINTS, "data"),
                  State(ids.INTERP_STEPS, "value"), State(ids.INTERP_METHOD, "value"), State(ids.DATASET, "value"),
                  State(ids.MAP_KIND, "value"), State(ids.STORE_LINK_FRAME, "data"), prevent_initial_call=True)
    def run(_n, endpoints, steps, method, dataset, kind, linked_frame):
        """Decode the path between A and B; open its first frame, or the frame a link named (a link that says
        ``path=1`` presses this button: ``link_panel.linked_path``)."""
        endpoints = endpoints if isinstance(endpoints, dict) else {}
        if not endpoints.get("a") or not endpoints.get("b"):
            return no_update, "Set both A and B first.", no_update, no_update, no_update, None
        try:
            path = views.interpolation(endpoints["a"], endpoints["b"], dataset, settings,
                                       steps=steps if steps is not None else 0, method=method,
                                       kind=maps.check_kind(kind))
        except ValueError as exc:
            return no_update, str(exc), no_update, no_update, no_update, None
        status = f"{len(path['frames'])} frames ({method}) decoded in {path['ms']:.0f} ms"
        missed = [end.upper() for end in ("a", "b") if not path["ends"][end]]
        if missed:
            status += (f"; the decoder does not reproduce {' or '.join(missed)}: the marked end frame is its decode, "
                       "not the structure itself")
        last = len(path["frames"]) - 1
        frame = linked_frame if isinstance(linked_frame, int) and not isinstance(linked_frame, bool) else 0
        return path, status, last, min(max(frame, 0), last), False, None

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Output(ids.INTERP_STRIP, "children"),
                  Input(ids.INTERP_FRAME, "value"), Input(ids.STORE_PATH, "data"), prevent_initial_call=True)
    def on_frame(frame, path):
        if not path or frame is None:
            raise PreventUpdate
        return views.path_frame(path, frame), components.frame_strip(path, frame)

    @app.callback(Output(ids.INTERP_TIMER, "disabled"), Output(ids.INTERP_PLAY, "children"),
                  Input(ids.INTERP_PLAY, "n_clicks"), State(ids.INTERP_TIMER, "disabled"), prevent_initial_call=True)
    def play(_n, disabled):
        return (False, "❚❚ pause") if disabled else (True, "▶ play")

    @app.callback(Output(ids.INTERP_FRAME, "value", allow_duplicate=True), Input(ids.INTERP_TIMER, "n_intervals"),
                  State(ids.INTERP_FRAME, "value"), State(ids.STORE_PATH, "data"), prevent_initial_call=True)
    def tick(_n, frame, path):
        frames = path.get("frames") if isinstance(path, dict) else None
        if not isinstance(frames, list) or not frames:
            raise PreventUpdate
        return ((frame if isinstance(frame, int) else 0) + 1) % len(frames)


def register_export(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_BASKET, "data"), Output(ids.BASKET, "children"), Input(ids.BASKET_ADD, "n_clicks"),
                  Input(ids.SELECTION_ADD, "n_clicks"), Input(ids.BASKET_CLEAR, "n_clicks"),
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_SELECTION, "data"), State(ids.DATASET, "value"),
                  State(ids.STORE_BASKET, "data"))
    def add_to_basket(n, n_selection, n_clear, current, selection, dataset, basket):
        if ctx.triggered_id == ids.BASKET_CLEAR and n_clear:
            return [], components.basket_list([])
        basket = basket if isinstance(basket, list) else []
        room = downloads.BASKET_LIMIT - len(basket)
        if ctx.triggered_id == ids.SELECTION_ADD and n_selection and selection and dataset:
            chosen = selection[:max(0, min(SELECTION_LIMIT, room))]
            basket = [*basket, *(downloads.basket_item(views.known_view(dataset, record_id, settings))
                                 for record_id in chosen)]
            note = (f"Added the first {len(chosen)} of the {len(selection)} selected materials"
                    + (f" (the basket holds at most {downloads.BASKET_LIMIT}: export it and empty it for more)."
                       if len(chosen) < min(SELECTION_LIMIT, len(selection)) else ".")
                    if len(selection) > len(chosen) else "")
            return basket, [*components.basket_list(basket), *([html.P(note, className="hint")] if note else [])]
        if ctx.triggered_id != ids.BASKET_ADD or not n or not current:
            return no_update, components.basket_list(basket)
        if room <= 0:
            return no_update, [*components.basket_list(basket), html.P(
                f"The basket holds at most {downloads.BASKET_LIMIT} structures: export it and empty it for more.",
                className="hint")]
        basket = [*basket, downloads.basket_item(views.check_view(current, settings))]
        return basket, components.basket_list(basket)

    @app.callback(Output(ids.DOWNLOAD, "data"), Output(ids.EXPORT_ERROR, "children"),
                  Input(ids.EXPORT_BUTTON, "n_clicks"), Input(ids.EXPORT_HTML, "n_clicks"),
                  Input(ids.BASKET_EXPORT, "n_clicks"), Input(ids.PATH_EXPORT_EXTXYZ, "n_clicks"),
                  Input(ids.PATH_EXPORT_CIF, "n_clicks"), State(ids.EXPORT_FORMAT, "value"),
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_BASKET, "data"), State(ids.STORE_PATH, "data"),
                  State(ids.VIEWER_SUPERCELL, "value"), State(ids.VIEWER_STYLE, "value"),
                  State(ids.VIEWER_CELL, "value"), prevent_initial_call=True)
    def export(_s, _h, _b, _x, _c, fmt, current, basket, path, supercell, style, cell):
        trigger = ctx.triggered_id
        try:
            if trigger == ids.EXPORT_BUTTON:
                name, data = downloads.structure_file(current, fmt, cell=cell, symprec=settings.symprec)
            elif trigger == ids.EXPORT_HTML:
                name, data = downloads.viewer_file(current, supercell=supercell, style=style, cell=cell,
                                                   symprec=settings.symprec)
            elif trigger == ids.BASKET_EXPORT:
                name, data = downloads.basket_file(basket, fmt)
            elif trigger in (ids.PATH_EXPORT_EXTXYZ, ids.PATH_EXPORT_CIF):
                name, data = downloads.path_file(path, "extxyz" if trigger == ids.PATH_EXPORT_EXTXYZ else "cif")
            else:
                raise PreventUpdate
        except ValueError as exc:
            return no_update, str(exc)
        return dcc.send_bytes(data, name), ""


def report_error(error: Exception) -> None:
    """The last line of defence of every callback (``Dash(on_error=...)``): the page says in words what went
    wrong, the outputs keep what the user had (no update), the server log keeps the traceback; never an HTTP
    500. Expected problems (a bad value, a missing file) carry their own message; anything else is logged."""
    if isinstance(error, ValueError | FileNotFoundError):
        message = str(error)
    elif problem := background_jobs.expected_problem(error):  # a job refused, or a bad value inside a job
        message = problem
    else:
        LOG.error("callback %s failed", ctx.triggered_id if ctx else "?", exc_info=error)
        message = (f"That request could not be handled (an unexpected {type(error).__name__}); nothing you had "
                   "is lost, and the server log has the details.")
    set_props(ids.APP_ERROR, {"children": message[:500]})
    set_props(ids.APP_ERROR_ROW, {"style": {}})


def register_readiness(app: Dash) -> None:
    @app.callback(Output(ids.READY_STATUS, "children"), Output(ids.READY_TIMER, "disabled"),
                  Input(ids.READY_TIMER, "n_intervals"))
    def ready(_n):
        state = readiness.state()
        if state["ready"]:
            return f"ready (model and maps loaded in {state['seconds']:.0f} s)", True
        return f"loading {state['step']}… clicks answer once this is done", False


def register_errors(app: Dash) -> None:
    @app.callback(Output(ids.APP_ERROR_ROW, "style", allow_duplicate=True), Input(ids.APP_ERROR_CLOSE, "n_clicks"),
                  prevent_initial_call=True)
    def close_error(_n):
        return {"display": "none"}


def register(app: Dash, settings: Settings) -> None:
    """Every callback of the app, bound to ``settings``."""
    register_errors(app)
    register_readiness(app)
    register_map(app, settings)
    register_selection(app, settings)
    register_interpolation(app, settings)
    register_export(app, settings)
    physics_panel.register(app, settings)
    motif_panel.register(app, settings)
    viewer_panel.register(app, settings)
    link_panel.register(app, settings)
