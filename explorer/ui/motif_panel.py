"""The motifs of the structure on screen, in words ("Ti: octahedral, CN 6, corner-sharing; Sr: cuboctahedral,
CN 12"), filled by a second callback after the structure is drawn; the work is in ``explorer.motifs``."""

from __future__ import annotations

import time

from dash import ClientsideFunction, Dash, Input, Output, State, html
from dash.exceptions import PreventUpdate

from explorer.motifs.environments import describe, environments, polyhedra, site_labels
from explorer.services import views
from explorer.services.cells import check_cell, view_in_cell
from explorer.settings import Settings
from explorer.ui import ids

MAX_ATOMS = 200
"""Larger cells are described without polyhedra sharing (it needs every site's neighbours)."""


def panel() -> html.Div:
    return html.Div(id=ids.MOTIFS, className="info motifs")


def motif_info(view: dict, settings: Settings, *, cell: str = "model") -> tuple[list, dict]:
    """The motif block of a checked view (one line per distinct environment, with the shape measure) and the
    viewer's polyhedra and hover labels {"title": the view's title, "cell": the cell they are of (the viewer's
    choice, ``cells.in_cell``), "polyhedra": ``environments.polyhedra``, "sites": ``environments.site_labels``}."""
    start = time.perf_counter()
    structure, _ = view_in_cell(view, cell, symprec=settings.symprec)
    found = environments(structure, symprec=settings.symprec)
    small = len(structure) <= MAX_ATOMS
    neighbours_of: dict = {}  # every site's neighbours per element, found once for the sentence and the polyhedra
    sentence = describe(structure, found, with_sharing=small, neighbours_of=neighbours_of)
    shapes = {"title": view["title"], "cell": cell, "sites": site_labels(structure, found),
              "polyhedra": polyhedra(structure, found, neighbours_of=neighbours_of) if small else []}
    rows = [html.Tr([html.Th(f"{e.element} ({e.wyckoff})"),
                     html.Td(f"{e.motif}, CN {e.cn}" + ("" if e.csm is None else f", CShM {e.csm:.2f}") +
                             " — " + ", ".join(f"{n} {d:.2f} Å" for n, d, _, _ in e.neighbours[:12]))])
            for e in found]
    note = ("Neighbours by CrystalNN; shape: the ideal polyhedron of lowest continuous shape measure (CShM, 0 = "
            f"ideal). Server time {1000 * (time.perf_counter() - start):.0f} ms.")
    chemenv = html.Div([html.Button("Finer labels (ChemEnv)", id=ids.CHEMENV, n_clicks=0, className="small",
                                    title="pymatgen's ChemEnv: 65 model geometries; 0.1 to 9 s a structure"),
                        html.Div(id=ids.CHEMENV_RESULT)], className="chemenv")
    return [html.H4("Motifs"), html.P(sentence, id=ids.MOTIF_SENTENCE), html.Table(rows, className="details"),
            html.P(note, className="timing"), chemenv], shapes


def environment_info(view: dict) -> list:
    """The motif block of a checked environment view: its motif and how close it is to every ideal shape with as
    many vertices (the shape scores, lowest first: where one motif turns into another along a path)."""
    entry = view["environment"]
    sentence = f"{entry['element']}: {entry['motif']}, CN {entry['cn']}"
    measures = sorted(entry["measures"].items(), key=lambda item: item[1])
    rows = [html.Tr([html.Th(shape), html.Td(f"CShM {measure:.2f}")]) for shape, measure in measures]
    note = ("Shape scores: continuous shape measure against each ideal polyhedron with as many vertices (0 = "
            "ideal, 100 = as far as can be)." if rows else f"No ideal shape has {entry['cn']} vertices.")
    return [html.H4("Motif"), html.P(sentence, id=ids.MOTIF_SENTENCE), html.Table(rows, className="details"),
            html.P(note, className="timing")]


def chemenv_info(view: dict, settings: Settings) -> list:
    """ChemEnv's labels of a checked crystal view, computed in a limited worker (``settings.chemenv_seconds``):
    a table of one row per distinct site, or the reason in words."""
    from explorer.datasets.rejections import Rejected
    from explorer.datasets.sandbox import run_limited
    from explorer.motifs.chemenv import chemenv_labels
    from explorer.services.motif_views import require_crystal

    require_crystal(view, "ChemEnv")
    start = time.perf_counter()
    try:
        found = run_limited(chemenv_labels, views.structure_of(view), settings.symprec, key=view["title"][:80],
                            seconds=settings.chemenv_seconds, memory_mb=settings.parse_memory_mb)
    except Rejected as rejection:
        return [html.P(f"ChemEnv gave no labels: {rejection.sentence}", className="error")]
    rows = [html.Tr([html.Th(f"{r['element']} {r['site']}"),
                     html.Td("none found" if r["symbol"] is None else
                             f"{r['symbol']} {r['name']} (CSM {r['csm']:.2f}" +
                             ("" if r["fraction"] in (None, 1.0) else f", {100 * r['fraction']:.0f} %") + ")")])
            for r in found]
    return [html.Table(rows, className="details"),
            html.P(f"ChemEnv (pymatgen, simplest strategy): {1000 * (time.perf_counter() - start):.0f} ms.",
                   className="timing")]


def register(app: Dash, settings: Settings) -> None:
    app.clientside_callback(ClientsideFunction(namespace="explorer_deferred", function_name="motifs"),
                            Output(ids.MOTIFS, "children", allow_duplicate=True), Input(ids.STORE_CURRENT, "data"),
                            prevent_initial_call=True)

    # After ``show`` has answered (it writes the viewer's store), as the physics panel.
    @app.callback(Output(ids.MOTIFS, "children"), Output(ids.STORE_POLYHEDRA, "data"),
                  Input(ids.STORE_VIEWER, "data"), State(ids.STORE_CURRENT, "data"))
    def fill(shown, view):
        if not view:
            return [], None
        try:
            view = views.check_view(view, settings)
            if view["kind"] == "environment":
                return environment_info(view), None
            return motif_info(view, settings, cell=check_cell(shown.get("cell") if isinstance(shown, dict) else None))
        except ValueError as exc:
            return [html.H4("Motifs"), html.P(str(exc)[:400], className="error")], None

    @app.callback(Output(ids.CHEMENV_RESULT, "children"), Input(ids.CHEMENV, "n_clicks"),
                  State(ids.STORE_CURRENT, "data"), background=True, prevent_initial_call=True,
                  running=[(Output(ids.CHEMENV, "disabled"), True, False),
                           (Output(ids.CHEMENV, "children"), "ChemEnv is labelling the sites…",
                            "Finer labels (ChemEnv)")])
    def chemenv(n_clicks, view):
        if not n_clicks or not view:
            raise PreventUpdate
        try:
            return chemenv_info(views.check_view(view, settings), settings)
        except ValueError as exc:
            return [html.P(str(exc)[:400], className="error")]
