"""Thin callbacks: guard (PreventUpdate), read the stores, call a service, return. No model code here."""

from __future__ import annotations

import base64
import time

from dash import ALL, ClientsideFunction, Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from explorer import atlas
from explorer.services import downloads, materials
from explorer.settings import Settings
from explorer.ui import components, ids
from explorer.ui.components import KNOWN, MARKS, MATCHES, PATH

SELECTION_LIMIT = 100
"""Most materials one 'Add selection to basket' adds (each carries its structure in the browser's store)."""


def _matches(dataset: str | None, query: str | None, settings: Settings) -> tuple[dict | None, str]:
    if not dataset or not (query or "").strip():
        return None, ""
    found = materials.search_points(dataset, query, settings)
    return found, f"{found['count']} match{'es' if found['count'] != 1 else ''} for {query.strip()!r}"


def register_map(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.COLOR_BY, "options"), Output(ids.COLOR_BY, "value"),
                  Output(ids.FILTER_PROPERTY, "options"), Input(ids.DATASET, "value"), State(ids.COLOR_BY, "value"))
    def color_options(dataset, color_by):
        if not dataset:
            raise PreventUpdate
        all_options = materials.color_options(materials.table(dataset, settings))
        options = [{"label": o["label"], "value": o["value"]} for o in all_options]
        numeric = [{"label": o["label"], "value": o["value"]} for o in all_options
                   if o["kind"] == "continuous" and o["value"] != "nsites"]
        return options, color_by if color_by in {o["value"] for o in options} else "source", numeric

    @app.callback(Output(ids.MAP, "figure"), Output(ids.COLOR_LEGEND, "children"), Output(ids.MAP_STATUS, "children"),
                  Output(f"{ids.MAP_BUILD}-row", "style"),
                  Input(ids.DATASET, "value"), Input(ids.COLOR_BY, "value"), Input(ids.STORE_MAP_VERSION, "data"),
                  Input(ids.FILTER_ELEMENTS, "value"), Input(ids.FILTER_SITES_MIN, "value"),
                  Input(ids.FILTER_SITES_MAX, "value"), Input(ids.FILTER_PROPERTY, "value"),
                  Input(ids.FILTER_MIN, "value"), Input(ids.FILTER_MAX, "value"),
                  State(ids.SEARCH, "value"), State(ids.STORE_PATH, "data"), State(ids.INTERP_FRAME, "value"),
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_UPLOADS, "data"))
    def render_map(dataset, color_by, _version, elements, sites_min, sites_max, prop, prop_min, prop_max, query,
                   path, frame, current, uploads):
        if not dataset:
            raise PreventUpdate
        problem = materials.map_problem(dataset, settings)
        if problem:
            return {}, [], problem, {} if "not built" in problem else {"display": "none"}
        points = materials.map_points(dataset, color_by, settings)
        status, shown = f"{len(points['ids'])} materials", None
        try:
            keep = materials.filter_mask(materials.table(dataset, settings), elements=elements,
                                         sites=(sites_min, sites_max), prop=prop, prop_range=(prop_min, prop_max))
            if not keep.all():
                shown = materials.filtered_points(points, keep)
                status = f"{int(keep.sum())} of {len(points['ids'])} materials shown (filters)"
        except ValueError as exc:
            status = f"{len(points['ids'])} materials; filter not applied: {exc}"
        matches, _ = _matches(dataset, query, settings)
        figure = components.map_figure(points, shown=shown, matches=matches, path=path, frame=frame,
                                       current=current, uploads=uploads, revision=dataset)
        return figure, components.color_legend(points), status, {"display": "none"}

    @app.callback(Output(ids.STORE_SELECTION, "data"), Output(ids.SELECTION_STATUS, "children"),
                  Output(ids.SELECTION_ADD, "disabled"), Input(ids.MAP, "selectedData"), State(ids.DATASET, "value"),
                  prevent_initial_call=True)
    def on_select(selected, dataset):
        chosen = [p["customdata"] for p in (selected or {}).get("points", [])
                  if p.get("curveNumber") == KNOWN and isinstance(p.get("customdata"), str)]
        if not chosen or not dataset:
            return [], "Nothing selected.", True
        return chosen, components.selection_summary(materials.table(dataset, settings), chosen), False

    @app.callback(Output(ids.STORE_MAP_VERSION, "data"), Input(ids.MAP_BUILD, "n_clicks"),
                  State(ids.DATASET, "value"), background=True, prevent_initial_call=True,
                  running=[(Output(ids.MAP_BUILD, "disabled"), True, False),
                           (Output(ids.MAP_BUILD_CANCEL, "disabled"), False, True)],
                  cancel=[Input(ids.MAP_BUILD_CANCEL, "n_clicks")],
                  progress=[Output(ids.MAP_BUILD_PROGRESS, "children")])
    def build_map(set_progress, _n, dataset):
        if not dataset:
            raise PreventUpdate
        set_progress(f"building the map of {dataset}: encoding…")
        atlas.build_atlas(dataset, settings, on_progress=lambda done, total: set_progress(
            f"encoded {done} of {total} materials" + ("; fitting UMAP…" if done == total else "")))
        set_progress("done")
        return time.time()

    @app.callback(Output(ids.MAP, "figure", allow_duplicate=True), Output(ids.SEARCH_STATUS, "children"),
                  Input(ids.SEARCH, "value"), Input(ids.STORE_PATH, "data"), Input(ids.INTERP_FRAME, "value"),
                  Input(ids.STORE_CURRENT, "data"), Input(ids.STORE_UPLOADS, "data"), State(ids.DATASET, "value"),
                  prevent_initial_call=True)
    def overlays(query, path, frame, current, uploads, dataset):
        if not dataset or not atlas.is_built(dataset, settings):
            raise PreventUpdate
        matches, status = _matches(dataset, query, settings)
        patch = Patch()
        patch["data"][MATCHES] = components.matches_trace(matches)
        patch["data"][PATH] = components.path_trace(path, frame)
        patch["data"][MARKS] = components.marks_trace(current, uploads)
        return patch, status


def register_selection(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_CURRENT, "data"), Input(ids.MAP, "clickData"),
                  State(ids.DATASET, "value"), State(ids.STORE_PATH, "data"), prevent_initial_call=True)
    def on_map_click(click, dataset, path):
        if not click or not click.get("points") or not dataset:
            raise PreventUpdate
        point = click["points"][0]
        tag = point.get("customdata")
        if isinstance(tag, str) and tag.startswith("mark:"):
            raise PreventUpdate
        if isinstance(tag, str) and tag.startswith("frame:"):
            return path["frames"][int(tag.split(":")[1])] if path else no_update
        if isinstance(tag, str):
            return materials.known_view(dataset, tag, settings)
        return materials.hypothetical_view(dataset, point["x"], point["y"], settings)

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True),
                  Input({"type": ids.NEAREST, "index": ALL}, "n_clicks"), State(ids.DATASET, "value"),
                  prevent_initial_call=True)
    def on_nearest(clicks, dataset):
        if not ctx.triggered_id or not any(clicks) or not ctx.triggered[0]["value"]:
            raise PreventUpdate
        return materials.known_view(dataset, ctx.triggered_id["index"], settings)

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Output(ids.UPLOAD_ERROR, "children"),
                  Output(ids.STORE_UPLOADS, "data"), Input(ids.UPLOAD, "contents"), State(ids.UPLOAD, "filename"),
                  State(ids.DATASET, "value"), State(ids.STORE_UPLOADS, "data"), prevent_initial_call=True)
    def on_upload(contents, filename, dataset, uploads):
        if not contents or not dataset:
            raise PreventUpdate
        try:
            data = base64.b64decode(contents.split(",", 1)[1])
            view = materials.upload_view(dataset, data, filename or "upload", settings)
        except ValueError as exc:
            return no_update, f"Upload failed: {exc}", no_update
        marks = [*(uploads or []), {"xy": view["xy"], "formula": view["formula"]}]
        return view, "", marks

    @app.callback(Output(ids.STRUCTURE_INFO, "children"), Output(ids.STORE_VIEWER, "data"),
                  Input(ids.STORE_CURRENT, "data"))
    def show(view):
        return components.structure_info(view), components.viewer_payload(view)

    app.clientside_callback(ClientsideFunction(namespace="explorer", function_name="drawStructure"),
                            Output(ids.VIEWER_STATUS, "children"), Input(ids.STORE_VIEWER, "data"),
                            Input(ids.VIEWER_SUPERCELL, "value"), Input(ids.VIEWER_STYLE, "value"))


def register_interpolation(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_ENDPOINTS, "data"), Output(ids.INTERP_ENDPOINTS, "children"),
                  Input(ids.INTERP_SET_A, "n_clicks"), Input(ids.INTERP_SET_B, "n_clicks"),
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_ENDPOINTS, "data"), prevent_initial_call=True)
    def set_endpoint(_a, _b, current, endpoints):
        if not current:
            return no_update, "Show a structure first (click the map), then set it as A or B."
        endpoints = {**(endpoints or {}), "a" if ctx.triggered_id == ids.INTERP_SET_A else "b": current}
        return endpoints, components.endpoints_label(endpoints)

    @app.callback(Output(ids.STORE_PATH, "data"), Output(ids.INTERP_STATUS, "children"),
                  Output(ids.INTERP_FRAME, "max"), Output(ids.INTERP_FRAME, "value"),
                  Output(ids.INTERP_FRAME, "disabled"),
                  Input(ids.INTERP_RUN, "n_clicks"), State(ids.STORE_ENDPOINTS, "data"),
                  State(ids.INTERP_STEPS, "value"), State(ids.INTERP_METHOD, "value"), State(ids.DATASET, "value"),
                  prevent_initial_call=True)
    def run(_n, endpoints, steps, method, dataset):
        endpoints = endpoints or {}
        if not endpoints.get("a") or not endpoints.get("b"):
            return no_update, "Set both A and B first.", no_update, no_update, no_update
        try:
            path = materials.interpolation(endpoints["a"], endpoints["b"], dataset, settings,
                                           steps=int(steps or 0), method=method)
        except ValueError as exc:
            return no_update, str(exc), no_update, no_update, no_update
        status = f"{len(path['frames'])} frames ({method}) decoded in {path['ms']:.0f} ms"
        return path, status, len(path["frames"]) - 1, 0, False

    @app.callback(Output(ids.STORE_CURRENT, "data", allow_duplicate=True), Output(ids.INTERP_STRIP, "children"),
                  Input(ids.INTERP_FRAME, "value"), Input(ids.STORE_PATH, "data"), prevent_initial_call=True)
    def on_frame(frame, path):
        if not path or frame is None or frame >= len(path["frames"]):
            raise PreventUpdate
        return path["frames"][frame], components.frame_strip(path, frame)

    @app.callback(Output(ids.INTERP_TIMER, "disabled"), Output(ids.INTERP_PLAY, "children"),
                  Input(ids.INTERP_PLAY, "n_clicks"), State(ids.INTERP_TIMER, "disabled"), prevent_initial_call=True)
    def play(_n, disabled):
        return (False, "❚❚ pause") if disabled else (True, "▶ play")

    @app.callback(Output(ids.INTERP_FRAME, "value", allow_duplicate=True), Input(ids.INTERP_TIMER, "n_intervals"),
                  State(ids.INTERP_FRAME, "value"), State(ids.STORE_PATH, "data"), prevent_initial_call=True)
    def tick(_n, frame, path):
        if not path:
            raise PreventUpdate
        return ((frame or 0) + 1) % len(path["frames"])


def register_export(app: Dash, settings: Settings) -> None:
    @app.callback(Output(ids.STORE_BASKET, "data"), Output(ids.BASKET, "children"), Input(ids.BASKET_ADD, "n_clicks"),
                  Input(ids.SELECTION_ADD, "n_clicks"), State(ids.STORE_CURRENT, "data"),
                  State(ids.STORE_SELECTION, "data"), State(ids.DATASET, "value"), State(ids.STORE_BASKET, "data"))
    def add_to_basket(n, n_selection, current, selection, dataset, basket):
        if ctx.triggered_id == ids.SELECTION_ADD and n_selection and selection and dataset:
            chosen = selection[:SELECTION_LIMIT]
            basket = [*(basket or []), *(downloads.basket_item(materials.known_view(dataset, record_id, settings))
                                         for record_id in chosen)]
            note = (f"Added the first {SELECTION_LIMIT} of the {len(selection)} selected materials."
                    if len(selection) > SELECTION_LIMIT else "")
            return basket, [*components.basket_list(basket), *([html.P(note, className="hint")] if note else [])]
        if ctx.triggered_id != ids.BASKET_ADD or not n or not current:
            return no_update, components.basket_list(basket)
        basket = [*(basket or []), downloads.basket_item(current)]
        return basket, components.basket_list(basket)

    @app.callback(Output(ids.DOWNLOAD, "data"), Output(ids.EXPORT_ERROR, "children"),
                  Input(ids.EXPORT_BUTTON, "n_clicks"), Input(ids.EXPORT_HTML, "n_clicks"),
                  Input(ids.BASKET_EXPORT, "n_clicks"), Input(ids.PATH_EXPORT_EXTXYZ, "n_clicks"),
                  Input(ids.PATH_EXPORT_CIF, "n_clicks"), State(ids.EXPORT_FORMAT, "value"),
                  State(ids.STORE_CURRENT, "data"), State(ids.STORE_BASKET, "data"), State(ids.STORE_PATH, "data"),
                  State(ids.VIEWER_SUPERCELL, "value"), State(ids.VIEWER_STYLE, "value"), prevent_initial_call=True)
    def export(_s, _h, _b, _x, _c, fmt, current, basket, path, supercell, style):
        trigger = ctx.triggered_id
        try:
            if trigger == ids.EXPORT_BUTTON:
                name, data = downloads.structure_file(current, fmt)
            elif trigger == ids.EXPORT_HTML:
                name, data = downloads.viewer_file(current, supercell=supercell, style=style)
            elif trigger == ids.BASKET_EXPORT:
                name, data = downloads.basket_file(basket, fmt)
            elif trigger in (ids.PATH_EXPORT_EXTXYZ, ids.PATH_EXPORT_CIF):
                name, data = downloads.path_file(path, "extxyz" if trigger == ids.PATH_EXPORT_EXTXYZ else "cif")
            else:
                raise PreventUpdate
        except ValueError as exc:
            return no_update, str(exc)
        return dcc.send_bytes(data, name), ""


def register(app: Dash, settings: Settings) -> None:
    """Every callback of the app, bound to ``settings``."""
    register_map(app, settings)
    register_selection(app, settings)
    register_interpolation(app, settings)
    register_export(app, settings)
