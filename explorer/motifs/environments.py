"""The local environment of every symmetry-distinct site of a crystal: its neighbours, coordination number and
the ideal polyhedron it is closest to, and how the polyhedra of one element share corners, edges or faces.

Neighbours are pymatgen's ``CrystalNN`` (Voronoi solid angles weighted by distance and electronegativity, the
choice of matminer's site fingerprints), found with periodic images, so an environment at the cell boundary has
all its neighbours. The shape is the ideal polyhedron of lowest continuous shape measure (``shapes``). One site
per Wyckoff orbit (spglib at ``symprec``), so a crystal says each distinct environment once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from explorer.motifs.shapes import best_shape

SHARING = {1: "corner-sharing", 2: "edge-sharing"}  # 3 or more shared neighbours: face-sharing


@dataclass(frozen=True)
class Environment:
    """One symmetry-distinct site: ``site`` index in the structure, ``element``, ``wyckoff`` ('4a'), ``cn``,
    ``neighbours`` [(element, distance Å, site index, image (3,) ints)] sorted by distance, ``motif`` (the closest
    ideal shape, or 'CN n' when there is none with that many vertices), ``csm`` (its continuous shape measure,
    0 = ideal; None without a shape), ``measures`` {shape: CShM} of every candidate and ``vectors`` ((cn, 3) Å,
    from the centre to each neighbour's periodic image, in the order of ``neighbours``)."""

    site: int
    element: str
    wyckoff: str
    cn: int
    neighbours: list[tuple[str, float, int, tuple[int, int, int]]]
    motif: str
    csm: float | None
    measures: dict[str, float]
    vectors: tuple[tuple[float, float, float], ...] = ()
    members: tuple[int, ...] = ()
    """Every site of the structure in this Wyckoff orbit (``site`` among them)."""

    def as_dict(self) -> dict:
        """Plain JSON: {"site", "element", "wyckoff", "cn", "motif", "score" (CShM), "neighbours": [[element,
        distance], ...]}."""
        return {"site": self.site, "element": self.element, "wyckoff": self.wyckoff, "cn": self.cn,
                "motif": self.motif, "score": self.csm,
                "neighbours": [[e, round(d, 4)] for e, d, _, _ in self.neighbours]}

    @property
    def label(self) -> str:
        """'Ti: octahedral, CN 6'."""
        return f"{self.element}: {self.motif}, CN {self.cn}"


def _neighbours(structure: Structure, index: int, cnn) -> list[tuple[str, float, int, tuple[int, int, int]]]:
    centre = structure[index].coords
    found = []
    for info in cnn.get_nn_info(structure, index):
        found.append((info["site"].specie.symbol, float(np.linalg.norm(info["site"].coords - centre)),
                      int(info["site_index"]), tuple(int(round(v)) for v in info["image"])))
    return sorted(found, key=lambda n: (n[1], n[0]))


def environments(structure: Structure, *, symprec: float = 0.1) -> list[Environment]:
    """The environment of one site per Wyckoff orbit of an ordered ``structure``, in site order.

    Raises:
        ValueError: the structure is disordered or empty (naming it).
    """
    from pymatgen.analysis.local_env import CrystalNN
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if len(structure) == 0 or not structure.is_ordered:
        raise ValueError(f"{structure.composition.reduced_formula or 'structure'}: environments need an ordered "
                         "crystal with atoms")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            symmetrized = SpacegroupAnalyzer(structure, symprec=symprec).get_symmetrized_structure()
            orbits = [(group[0], wyckoff, tuple(group)) for group, wyckoff in
                      zip(symmetrized.equivalent_indices, symmetrized.wyckoff_symbols, strict=True)]
        except Exception:  # spglib finds no symmetry: every site is its own orbit  # noqa: BLE001
            orbits = [(k, "1a", (k,)) for k in range(len(structure))]
        cnn = CrystalNN()
        found = []
        for index, wyckoff, members in sorted(orbits):
            neighbours = _neighbours(structure, index, cnn)
            vectors = _vectors(structure, index, neighbours)
            motif, csm, measures = best_shape(vectors) if len(vectors) else (None, None, {})
            found.append(Environment(site=index, element=structure[index].specie.symbol, wyckoff=wyckoff,
                                     cn=len(neighbours), neighbours=neighbours,
                                     motif=motif or f"CN {len(neighbours)}", csm=csm, measures=measures,
                                     vectors=tuple(tuple(float(v) for v in row) for row in vectors),
                                     members=tuple(int(k) for k in members)))
    return found


def _vectors(structure: Structure, index: int, neighbours: list) -> np.ndarray:
    """(cn, 3) Å from the centre to each neighbour's periodic image."""
    if not neighbours:
        return np.zeros((0, 3))
    frac = np.array([structure[k].frac_coords + np.array(image) for _, _, k, image in neighbours])
    return structure.lattice.get_cartesian_coords(frac) - structure[index].coords


def element_neighbours(structure: Structure, element: str) -> dict[int, list]:
    """{site index: CrystalNN neighbours (as ``Environment.neighbours``)} of every site of ``element``."""
    from pymatgen.analysis.local_env import CrystalNN

    cnn = CrystalNN()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: _neighbours(structure, k, cnn) for k in range(len(structure))
                if structure[k].specie.symbol == element}


def sharing(structure: Structure, environment: Environment, neighbours: dict[int, list] | None = None) -> str | None:
    """How the polyhedron of ``environment`` shares neighbours with the polyhedra of other sites of the same
    element: 'corner-sharing', 'edge-sharing' or 'face-sharing' (the most any pair shares), or None when no
    polyhedron of that element touches it. Polyhedra of the whole crystal (``element_neighbours``, computed here
    unless given), compared as sets of (site, periodic image) of their neighbours."""
    if environment.cn < 3:
        return None
    neighbours = neighbours if neighbours is not None else element_neighbours(structure, environment.element)
    mine = {(k, image) for _, _, k, image in environment.neighbours}
    most = 0
    for other, found in neighbours.items():
        theirs = [(k, np.array(image)) for _, _, k, image in found]
        for shift in _shifts(mine, theirs):
            if other == environment.site and not shift.any():
                continue
            most = max(most, sum((k, tuple(int(v) for v in image + shift)) in mine for k, image in theirs))
    return None if most == 0 else SHARING.get(most, "face-sharing")


def is_polyhedron_centre(environment: Environment) -> bool:
    """A cation-like centre with a polyhedron worth drawing: 4 to 8 neighbours (tetrahedra, octahedra, prisms,
    cubes; larger cages hide the rest of the crystal), every one more electronegative than the centre."""
    from pymatgen.core import Element

    if not 4 <= environment.cn <= 8:
        return False
    centre = Element(environment.element).X
    return all(Element(n).X > centre for n, _, _, _ in environment.neighbours)


def polyhedra(structure: Structure, found: list[Environment], *,
              neighbours_of: dict[str, dict[int, list]] | None = None) -> list[dict]:
    """The coordination polyhedra of every site whose environment is a polyhedron centre, for the viewer:
    [{"element", "site", "vertices": [[x, y, z] Å, ...] (the neighbours' periodic images), "faces": [[i, j, k],
    ...] (triangles of their convex hull; a fan for a flat polygon)}]. ``neighbours_of``: {element:
    ``element_neighbours``} already found (as ``describe`` fills it), completed here."""
    centres = {e.element for e in found if is_polyhedron_centre(e)}
    cache = neighbours_of if neighbours_of is not None else {}
    shapes = []
    for element in sorted(centres):
        if element not in cache:
            cache[element] = element_neighbours(structure, element)
        for site, neighbours in cache[element].items():
            if len(neighbours) < 4:
                continue
            vertices = _vectors(structure, site, neighbours) + structure[site].coords
            shapes.append({"element": element, "site": site, "vertices": np.round(vertices, 4).tolist(),
                           "faces": _faces(vertices)})
    return shapes


def _faces(vertices: np.ndarray) -> list[list[int]]:
    from scipy.spatial import ConvexHull, QhullError

    try:
        return ConvexHull(vertices).simplices.tolist()
    except (QhullError, ValueError):  # flat (square planar, hexagonal planar): a fan around the centroid order
        centred = vertices - vertices.mean(axis=0)
        _, _, vt = np.linalg.svd(centred)
        angles = np.arctan2(centred @ vt[1], centred @ vt[0])
        order = np.argsort(angles).tolist()
        return [[order[0], order[k], order[k + 1]] for k in range(1, len(order) - 1)]


def _shifts(mine: set, theirs: list) -> list[np.ndarray]:
    """The lattice translations that bring one of ``theirs`` onto one of ``mine`` (so they share it)."""
    shifts = {tuple(np.array(image) - t_image) for k, image in mine for k2, t_image in theirs if k == k2}
    return [np.array(s) for s in shifts]


def describe(structure: Structure, found: list[Environment], *, with_sharing: bool = True,
             neighbours_of: dict[str, dict[int, list]] | None = None) -> str:
    """'Sr: cuboctahedral, CN 12; Ti: octahedral, CN 6, corner-sharing; O: linear, CN 2' (each element's
    distinct environments once, sharing of polyhedra where defined). ``neighbours_of``: {element:
    ``element_neighbours``}, filled in as they are found, so ``polyhedra`` can reuse them."""
    parts, cache = [], neighbours_of if neighbours_of is not None else {}
    for env in found:
        text = env.label
        if with_sharing and env.cn >= 4:
            if env.element not in cache:
                cache[env.element] = element_neighbours(structure, env.element)
            mode = sharing(structure, env, cache[env.element])
            if mode:
                text += f", {mode}"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts)


CLUSTER_MARGIN = 6.0
"""Å of empty space around an environment drawn or exported on its own (no periodic image comes that close)."""


def cluster(element: str, neighbours: list[str], vectors) -> Structure:
    """One environment on its own as a Structure: the centre (site 0) in the middle of a cubic box with
    ``CLUSTER_MARGIN`` Å around its neighbours (site 1…). The box only carries it; it is not a crystal."""
    vectors = np.asarray(vectors, dtype=float).reshape(-1, 3)
    reach = float(np.abs(vectors).max()) if len(vectors) else 0.0
    side = 2 * (reach + CLUSTER_MARGIN)
    middle = np.full(3, side / 2)
    return Structure(np.eye(3) * side, [element, *neighbours], [middle, *(middle + vectors)],
                     coords_are_cartesian=True)


def centre_polyhedron(element: str, vectors, *, origin=None) -> list[dict]:
    """The polyhedron of one environment's neighbours for the viewer ([] with fewer than 4): [{"element",
    "site": 0, "vertices", "faces"}] as ``polyhedra`` gives them, the centre at ``origin`` (default 0)."""
    vertices = np.asarray(vectors, dtype=float).reshape(-1, 3) + (0.0 if origin is None else np.asarray(origin))
    if len(vertices) < 4:
        return []
    return [{"element": element, "site": 0, "vertices": np.round(vertices, 4).tolist(), "faces": _faces(vertices)}]


def site_labels(structure: Structure, found: list[Environment]) -> list[str]:
    """One line per site of ``structure`` for the viewer's hover: 'Ti 1 (1b): octahedral, CN 6 — O 1.95 Å ×6', from
    the environment of its Wyckoff orbit (a site without one: its element and index)."""
    labels = [f"{site.specie.symbol} {k}" for k, site in enumerate(structure)]
    for env in found:
        shell = shell_text([(element, distance) for element, distance, _, _ in env.neighbours])
        for k in env.members or (env.site,):
            labels[k] = f"{env.element} {k} ({env.wyckoff}): {env.motif}, CN {env.cn}" + (f" — {shell}" * bool(shell))
    return labels


def shell_text(neighbours, *, groups: int = 6) -> str:
    """'O 1.95 Å ×6, Sr 3.38 Å ×8': (element, distance Å) pairs grouped at 0.01 Å, the first ``groups`` groups."""
    counts: dict[tuple[str, float], int] = {}
    for element, distance in neighbours:
        key = (str(element), round(float(distance), 2))
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{e} {d:.2f} Å" + (f" ×{n}" if n > 1 else "") for (e, d), n in list(counts.items())[:groups])
