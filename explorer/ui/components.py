"""Pure builders: plain data (service output, store contents) in, Plotly figures and Dash components out.

The map figure has a fixed trace order so that overlays can be patched in place:
0 transparent click grid (clicks on empty space give x, y), 1 every known material (one Scattergl),
2 search matches, 3 interpolation path. The marks (the structure on screen, uploads) are not in the figure:
assets/marks.js lays them over the plot as HTML, because any change of the figure (even a shape) makes plotly
redraw every WebGL point (0.3-0.6 s on the 11k map after each click).
"""

from __future__ import annotations

import numpy as np
from dash import html

from explorer.services.colours import CONTINUOUS_SCALE, palette_of
from explorer.services.lod import GRID_SIZE, map_extent
from explorer.ui import ids

GRID, KNOWN, MATCHES, PATH = range(4)


def grid_trace(x_range: list[float], y_range: list[float]) -> dict:
    """The transparent click grid over a window: a click on empty space gives the (x, y) of its cell."""
    cell = max(x_range[1] - x_range[0], y_range[1] - y_range[0]) / GRID_SIZE
    decimals = max(4, 3 - int(np.floor(np.log10(cell)))) if cell > 0 else 4
    xs = np.linspace(x_range[0], x_range[1], GRID_SIZE)
    ys = np.linspace(y_range[0], y_range[1], GRID_SIZE)
    return {"type": "heatmap", "x": xs.round(decimals).tolist(), "y": ys.round(decimals).tolist(),
            "z": [[0] * GRID_SIZE] * GRID_SIZE, "colorscale": [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]],
            "showscale": False, "hoverinfo": "none", "name": "empty space"}


def known_trace(points: dict) -> dict:
    """The known points as WebGL markers (on a big map, those of the window: a continuous colouring then has the
    whole map's ``range``, so markers and density image agree). A plain plotly.js trace: plotly.py's validation of
    a go.Scattergl costs 15 ms per thousand points, which a zoom into 50k points should not wait for."""
    colour = points["colour"]
    marker = {"size": 5 if len(points["x"]) > 2000 else 10, "opacity": 0.8, "line": {"width": 0}}
    if colour["kind"] == "continuous":
        marker.update(color=[v if v is not None else float("nan") for v in colour["values"]],
                      colorscale=CONTINUOUS_SCALE, showscale=True,
                      colorbar={"title": {"text": colour["label"]}, "thickness": 12})
        if colour.get("range"):
            marker.update(cmin=colour["range"][0], cmax=colour["range"][1])
    else:
        palette = palette_of(colour["categories"])
        marker["color"] = [palette[c] for c in colour["codes"]]
    return {"type": "scattergl", "x": points["x"], "y": points["y"], "mode": "markers", "marker": marker,
            "customdata": points["ids"], "hovertext": points["hover"], "hovertemplate": "%{hovertext}<extra></extra>",
            "name": "known materials", "meta": "known"}


def matches_trace(matches: dict | None) -> dict:
    """Rings around the search matches."""
    matches = matches or {"x": [], "y": [], "ids": []}
    return {"type": "scattergl", "x": matches["x"], "y": matches["y"], "mode": "markers",
            "customdata": matches["ids"],
            "marker": {"size": 13, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#D55E00"}},
            "hoverinfo": "skip", "name": "search matches", "meta": "matches"}


def path_trace(path: dict | None) -> dict:
    """The interpolation path on the map, frames numbered (the shown frame is marked by ``marks``)."""
    xy = (path or {}).get("xy") or []
    return {"type": "scatter", "x": [p[0] for p in xy], "y": [p[1] for p in xy], "mode": "lines+markers+text",
            "text": [str(k) for k in range(len(xy))], "textposition": "top center",
            "customdata": [f"frame:{k}" for k in range(len(xy))],
            "hovertext": [f["title"] for f in (path or {}).get("frames", [])],
            "hovertemplate": "%{hovertext}<extra></extra>",
            "line": {"color": "#0072B2", "width": 2}, "marker": {"size": 9, "color": "#0072B2"},
            "name": "interpolation path", "meta": "path"}


def map_figure(points: dict, *, shown: dict | None = None, matches: dict | None = None, path: dict | None = None,
               revision: str = "", kind: str = "crystals", window: tuple | None = None,
               image: dict | None = None) -> dict:
    """The map: every known point (no down-sampling; ``shown``: the points that pass the filters) over a
    transparent click grid spanning all of them, plus overlays. ``kind`` goes into the layout's ``meta`` (the
    marks of assets/marks.js are drawn only on the map they were placed on).

    A big map (``services.lod``) passes the points of its ``window`` ((x range, y range) on screen) and the
    density ``image`` of all of them; the grid then spans the window. A plain plotly.js figure (no plotly.py
    validation of every point on each render; ``go.Figure(...)`` of it for a notebook)."""
    x_range, y_range = window or map_extent(points["x"], points["y"])
    data = [grid_trace(x_range, y_range), known_trace(shown or points), matches_trace(matches), path_trace(path)]
    axis = {"showgrid": False, "zeroline": False, "showticklabels": False, "title": None, "autorange": False}
    layout = {"margin": {"l": 10, "r": 10, "t": 10, "b": 10}, "showlegend": False, "clickmode": "event",
              "hovermode": "closest", "uirevision": revision, "plot_bgcolor": "white",
              "meta": {"kind": kind, "big": image is not None}, "images": [image] if image else [],
              "xaxis": {**axis, "range": x_range}, "yaxis": {**axis, "range": y_range}}
    return {"data": data, "layout": layout}


def color_legend(points: dict) -> list:
    """Chips naming the categories of a categorical colouring (continuous ones have a colour bar)."""
    colour = points["colour"]
    if colour["kind"] != "categorical":
        return []
    categories = colour["categories"]
    palette = palette_of(categories)
    shown = list(zip(categories, palette, strict=True))[:40]
    chips = [html.Span([html.Span(className="chip", style={"background": c}), name], className="legend-item")
             for name, c in shown]
    more = [html.Span(f"… {len(categories) - len(shown)} more")] if len(categories) > len(shown) else []
    return [html.Span(f"{colour['label']}: ", className="legend-title"), *chips, *more]


def _validity(validity: dict) -> html.Div:
    verdict = "valid" if validity.get("valid") else "not valid"
    rows = [html.Li(f"{k.replace('_', ' ')}: {_short(v)}") for k, v in validity.items()
            if k not in ("reasons", "valid")]
    reasons = [html.Li(r, className="reason") for r in validity.get("reasons", [])]
    return html.Div([html.H4(f"Validity: {verdict}"), html.Ul(reasons + rows, className="validity")])


def _short(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def structure_info(view: dict | None) -> list:
    """The panel beside the viewer: what is on screen, its details, validity and nearest known materials."""
    if not view:
        return [html.P("Click a point of the map to see a known material, or empty space to decode a "
                       "hypothetical one.", className="hint")]
    parts = [html.H3(view["title"], className="info-title")]
    if view["kind"] in ("hypothetical", "frame") or (view["kind"] == "environment"
                                                      and view["environment"]["source"] != "known"):
        parts.append(html.Div([html.Span("hypothetical", className="badge"), " " + view["note"]],
                              className="hypothetical"))
    elif view.get("note"):
        parts.append(html.P(view["note"], className="note"))
    parts.append(html.Table([html.Tr([html.Th(label), html.Td(value)]) for label, value in view["details"]],
                            className="details"))
    if view["kind"] == "known" and isinstance(view.get("reconstruction"), dict):
        parts.append(_reconstruction(view))
    if view.get("validity"):
        parts.append(_validity(view["validity"]))
    if view.get("nearest"):
        items = [html.Li(html.Button(f"{formula}  {record_id}  (d={distance:.3f})", className="link",
                                     id={"type": ids.NEAREST, "index": record_id}, n_clicks=0))
                 for record_id, formula, distance in view["nearest"]]
        parts += [html.H4("Nearest known materials (latent space)"), html.Ul(items, className="nearest")]
    if view["kind"] == "environment" and view["environment"].get("crystals"):
        parts.append(_environment_crystals(view["environment"]))
    parts.append(html.P(f"server time {view['ms']:.0f} ms", className="timing"))
    return parts


def _environment_crystals(entry: dict, shown: int = 12) -> html.Div:
    """The crystals that hold an environment, each a button that opens it on the crystal map."""
    crystals = entry["crystals"][:shown]
    count = entry.get("count", len(crystals))
    more = [html.Li(f"… and {count - len(crystals)} more", className="hint")] if count > len(crystals) else []
    items = [html.Li(html.Button(f"{formula}  {record_id}", className="link", n_clicks=0,
                                 id={"type": ids.ENV_CRYSTAL, "index": record_id})) for record_id, formula in crystals]
    return html.Div([html.H4(f"Crystals with this environment ({count}): open one on the crystal map"),
                     html.Ul(items + more, className="nearest")], className="environment-crystals")


def _reconstruction(view: dict) -> html.Div:
    """Does the autoencoder give this known material back? With the decode one click away when it does not."""
    entry = view["reconstruction"]
    matched = entry.get("matched")
    state = {True: "matched", False: "missed"}.get(matched, "unchecked") if isinstance(matched, bool | None) else ""
    children = [html.Span(str(entry.get("message", ""))[:300])]
    if matched is False and isinstance(view.get("id"), str):
        children += [" ", html.Button("show the decode", className="link", n_clicks=0,
                                      id={"type": ids.SHOW_DECODE, "index": view["id"]})]
    return html.Div(children, id=ids.RECONSTRUCTION, className=f"reconstruction {state}".strip())


def endpoints_label(endpoints: dict | None) -> str:
    endpoints = endpoints or {}
    a, b = endpoints.get("a"), endpoints.get("b")
    return f"A: {a['title'] if a else '—'}   B: {b['title'] if b else '—'}"


def frame_strip(path: dict | None, frame: int | None) -> list:
    """Formulas and atom counts of every frame; changes of composition are marked, the shown frame is bold."""
    if not path:
        return []
    items, previous = [], None
    ends = path.get("ends") if isinstance(path.get("ends"), dict) else {}
    last = len(path["frames"]) - 1
    for k, f in enumerate(path["frames"]):
        changed = previous is not None and (f["formula"], f["n_atoms"]) != previous
        valid = (f.get("validity") or {}).get("valid")
        end = "a" if k == 0 else "b" if k == last else None
        missed = end is not None and ends.get(end) is False
        classes = " ".join(c for c in ("frame", "current" if k == frame else "", "changed" if changed else "",
                                       "invalid" if not valid else "", "endpoint-missed" if missed else "") if c)
        title = "valid" if valid else "; ".join(f["validity"].get("reasons", []))
        if missed:
            title = (f"the decoder does not reproduce {end.upper()} ({str(path.get(end, ''))[:80]}): this frame "
                     f"is its decode, not {end.upper()} itself; " + title)
        items.append(html.Span(f"{k}: {f['formula']} ({f['n_atoms']})" + (" ≠ " + end.upper() if missed else ""),
                               className=classes, title=title))
        previous = (f["formula"], f["n_atoms"])
    return items


def basket_list(items: list[dict] | None) -> list:
    if not items:
        return [html.Span("basket empty", className="hint")]
    return [html.Span(f"{len(items)} in basket: "), *[html.Span(f"{i['formula']} ", className="basket-item",
                                                                title=i["id"]) for i in items]]


def selection_summary(frame, chosen: list[str], *, count: int | None = None) -> list:
    """'N materials selected: formulas…' for the lasso/box selection of known ids ``chosen`` (``count``: how
    many were inside it, when more than ``chosen`` holds)."""
    count = max(count or 0, len(chosen))
    formulas = frame.set_index("id").loc[chosen[:8], "reduced_formula"].tolist()
    more = f" … and {count - len(formulas):,} more" if count > len(formulas) else ""
    kept = [html.Span(f" (the first {len(chosen):,} are kept for the basket)", className="hint")] \
        if count > len(chosen) else []
    return [html.B(f"{count:,} material{'s' if count != 1 else ''} selected: "), ", ".join(formulas) + more, *kept]
