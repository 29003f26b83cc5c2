"""The motifs of the structure on screen, in words ("Ti: octahedral, CN 6, corner-sharing; Sr: cuboctahedral,
CN 12"), filled by a second callback after the structure is drawn; the work is in ``explorer.motifs``."""

from __future__ import annotations

import time

from dash import ClientsideFunction, Dash, Input, Output, State, html

from explorer.motifs.environments import describe, environments, polyhedra
from explorer.services import views
from explorer.settings import Settings
from explorer.ui import ids

MAX_ATOMS = 200
"""Larger cells are described without polyhedra sharing (it needs every site's neighbours)."""


def panel() -> html.Div:
    return html.Div(id=ids.MOTIFS, className="info motifs")


def motif_info(view: dict, settings: Settings) -> tuple[list, dict]:
    """The motif block of a checked view (one line per distinct environment, with the shape measure) and the
    viewer's polyhedra {"title": the view's title, "polyhedra": ``environments.polyhedra``}."""
    start = time.perf_counter()
    structure = views.structure_of(view)
    found = environments(structure, symprec=settings.symprec)
    small = len(structure) <= MAX_ATOMS
    neighbours_of: dict = {}  # every site's neighbours per element, found once for the sentence and the polyhedra
    sentence = describe(structure, found, with_sharing=small, neighbours_of=neighbours_of)
    shapes = {"title": view["title"],
              "polyhedra": polyhedra(structure, found, neighbours_of=neighbours_of) if small else []}
    rows = [html.Tr([html.Th(f"{e.element} ({e.wyckoff})"),
                     html.Td(f"{e.motif}, CN {e.cn}" + ("" if e.csm is None else f", CShM {e.csm:.2f}") +
                             " — " + ", ".join(f"{n} {d:.2f} Å" for n, d, _, _ in e.neighbours[:12]))])
            for e in found]
    note = ("Neighbours by CrystalNN; shape: the ideal polyhedron of lowest continuous shape measure (CShM, 0 = "
            f"ideal). Server time {1000 * (time.perf_counter() - start):.0f} ms.")
    return [html.H4("Motifs"), html.P(sentence, id=ids.MOTIF_SENTENCE), html.Table(rows, className="details"),
            html.P(note, className="timing")], shapes


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


def register(app: Dash, settings: Settings) -> None:
    app.clientside_callback(ClientsideFunction(namespace="explorer_deferred", function_name="motifs"),
                            Output(ids.MOTIFS, "children", allow_duplicate=True), Input(ids.STORE_CURRENT, "data"),
                            prevent_initial_call=True)

    # After ``show`` has answered (it writes the viewer's store), as the physics panel.
    @app.callback(Output(ids.MOTIFS, "children"), Output(ids.STORE_POLYHEDRA, "data"),
                  Input(ids.STORE_VIEWER, "data"), State(ids.STORE_CURRENT, "data"))
    def fill(_shown, view):
        if not view:
            return [], None
        try:
            view = views.check_view(view, settings)
            if view["kind"] == "environment":
                return environment_info(view), None
            return motif_info(view, settings)
        except ValueError as exc:
            return [html.H4("Motifs"), html.P(str(exc)[:400], className="error")], None
