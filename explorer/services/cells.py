"""The cell a structure is shown and exported in (conventional standard, primitive standard, or the model's own
cell), the bonds the viewer draws, and the distances, angles and dihedrals of atoms picked in the viewer.

The viewer draws what ``payload`` returns: lattice rows (Å), species, fractional coordinates and bonds as
``[i, j, [n1, n2, n3]]`` (site ``i`` of the cell to site ``j`` of the cell shifted by ``n``), each bond once.
Picks come back from the browser as ``{"site": i, "cell": [n1, n2, n3]}`` (the atom of site ``i`` drawn in that
cell of the supercell) and are checked before use.
"""

from __future__ import annotations

import math

import numpy as np
from pymatgen.analysis.local_env import CovalentRadius
from pymatgen.core import Element, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

CELLS = {"conventional": "conventional standard cell", "primitive": "primitive standard cell",
         "model": "the model's cell"}
DEFAULT_CELL = "conventional"
MAX_SHOWN_ATOMS = 400
"""A standard cell with more atoms than this is not drawn (the model's cell is shown instead)."""
BOND_TOLERANCE = 0.45
"""Å beyond the sum of covalent radii (Cordero et al.) within which two atoms are bonded: Jmol's rule."""
MAX_BONDS_PER_ATOM = 16
MAX_PICKS = 4
PICK_CELL_RANGE = (-1, 4)
"""A picked atom's cell: within the 3x3x3 supercell, or one cell beyond it (atoms on the boundary, bonded images)."""


def check_cell(value: object) -> str:
    """A cell choice the browser sent: one of ``CELLS`` (None: the default), else ValueError."""
    if value is None:
        return DEFAULT_CELL
    if not isinstance(value, str) or value not in CELLS:
        raise ValueError(f"unknown cell choice {str(value)[:40]!r}: choose one of {', '.join(CELLS)}")
    return value


def in_cell(structure: Structure, cell: str, *, symprec: float) -> tuple[Structure, str]:
    """``structure`` in the chosen cell, and a sentence that says which cell it is. The standard cells are
    spglib's (as the Materials Project shows them): their atoms sit on the ideal positions of the space group
    found at ``symprec``. When no standard cell can be found, or it is too large, the model's cell is returned
    and the sentence says why."""
    cell = check_cell(cell)
    if cell == "model":
        return structure, "the model's cell (the canonical cell it encodes and decodes)"
    try:
        analyzer = SpacegroupAnalyzer(structure, symprec=symprec)
        shown = (analyzer.get_conventional_standard_structure() if cell == "conventional"
                 else analyzer.get_primitive_standard_structure())
        group = f"{analyzer.get_space_group_symbol()} ({analyzer.get_space_group_number()})"
    except Exception as exc:  # spglib gives up on some decodes (overlapping or too many atoms): say so, show them
        return structure, f"the model's cell (no {CELLS[cell]}: spglib found no symmetry, {type(exc).__name__})"
    if len(shown) > MAX_SHOWN_ATOMS:
        return structure, f"the model's cell (the {CELLS[cell]} has {len(shown)} atoms, more than {MAX_SHOWN_ATOMS})"
    return shown, f"{CELLS[cell]} of {group}, symmetrised by spglib at {symprec:g} Å"


def view_in_cell(view: dict, cell: object, *, symprec: float) -> tuple[Structure, str]:
    """The crystal of a view (``views.structure_of``) in the cell ``cell`` (checked: ``check_cell``): ``in_cell``."""
    from explorer.services.views import structure_of

    return in_cell(structure_of(view), check_cell(cell), symprec=symprec)


def cell_sentence(structure: Structure) -> str:
    a, b, c, alpha, beta, gamma = structure.lattice.parameters
    return (f"a={a:.3f} b={b:.3f} c={c:.3f} Å, α={alpha:.2f}° β={beta:.2f}° γ={gamma:.2f}°, "
            f"{len(structure)} atoms, {structure.volume:.2f} Å³")


def _radius(symbol: str) -> float:
    return float(CovalentRadius.radius.get(symbol, 1.5))


def bonds(structure: Structure, *, tolerance: float = BOND_TOLERANCE) -> list[list]:
    """The bonds of ``structure`` as ``[i, j, [n1, n2, n3]]``, each once: two atoms closer than the sum of their
    covalent radii plus ``tolerance``, at most ``MAX_BONDS_PER_ATOM`` (the shortest) per atom. In a crystal that
    holds a non-metal, two metals are not bonded (Sr-Ti in SrTiO3 is within the radii, not a bond)."""
    if len(structure) == 0:
        return []
    symbols = [site.specie.symbol for site in structure]
    radii = np.array([_radius(s) for s in symbols])
    metal = np.array([Element(s).is_metal for s in symbols])
    cutoff = 2 * float(radii.max()) + tolerance
    centres, points, images, distances = structure.get_neighbor_list(r=cutoff)
    keep = (distances <= radii[centres] + radii[points] + tolerance) & (distances > 1e-3)
    if not metal.all():
        keep &= ~(metal[centres] & metal[points])
    found: dict[tuple, float] = {}
    per_atom = np.zeros(len(structure), dtype=int)
    for k in np.argsort(distances):
        if not keep[k]:
            continue
        i, j, image = int(centres[k]), int(points[k]), tuple(int(round(v)) for v in images[k])
        if (j, i, tuple(-v for v in image)) in found or (i, j, image) in found:
            continue
        if per_atom[i] >= MAX_BONDS_PER_ATOM or per_atom[j] >= MAX_BONDS_PER_ATOM:
            continue
        found[(i, j, image)] = float(distances[k])
        per_atom[i] += 1
        per_atom[j] += 1
    return [[i, j, list(image)] for i, j, image in found]


def payload(structure: Structure, *, title: str, cell: str, sentence: str) -> dict:
    """What assets/viewer.js draws for a crystal (see the module's docstring)."""
    return {"lattice": structure.lattice.matrix.tolist(), "frac": structure.frac_coords.tolist(),
            "species": [site.specie.symbol for site in structure], "title": title, "cell": cell,
            "cell_text": f"{sentence}: {cell_sentence(structure)}", "bonds": bonds(structure)}


def viewer_payload(view: dict | None, *, cell: str = DEFAULT_CELL, symprec: float = 0.1) -> dict | None:
    """What assets/viewer.js draws for a checked view: a crystal in the chosen cell (``payload``), or an environment
    of the motif map on its own ("cluster": no cell, no supercell, its centre (site 0) highlighted, with its
    polyhedron and one hover line per atom)."""
    if not view:
        return None
    from explorer.services.views import structure_of

    if view["kind"] != "environment":
        shown, sentence = view_in_cell(view, cell, symprec=symprec)
        return payload(shown, title=view["title"], cell=cell, sentence=sentence)
    structure = structure_of(view)
    from explorer.motifs.environments import centre_polyhedron

    species = [site.specie.symbol for site in structure]
    coords = structure.cart_coords
    entry = view["environment"]
    distances = np.linalg.norm(coords[1:] - coords[0], axis=1)
    sites = [f"{species[0]} (centre): {entry['motif']}, CN {len(coords) - 1}",
             *(f"{element} {k + 1}: {d:.2f} Å from the centre"
               for k, (element, d) in enumerate(zip(species[1:], distances, strict=True)))]
    return {"lattice": structure.lattice.matrix.tolist(), "frac": structure.frac_coords.tolist(), "species": species,
            "title": view["title"], "cluster": True, "sites": sites,
            "polyhedra": centre_polyhedron(species[0], coords[1:])}


def _picks(picks: object, n_sites: int) -> list[tuple[int, tuple[int, int, int]]]:
    if not isinstance(picks, list) or len(picks) > MAX_PICKS:
        raise ValueError(f"picked atoms: expected a list of at most {MAX_PICKS}, got {type(picks).__name__}")
    low, high = PICK_CELL_RANGE
    checked = []
    for pick in picks:
        site = pick.get("site") if isinstance(pick, dict) else None
        shift = pick.get("cell") if isinstance(pick, dict) else None
        if not isinstance(site, int) or isinstance(site, bool) or not 0 <= site < n_sites:
            raise ValueError(f"picked atom: site {str(site)[:20]} is not a site of the structure on screen")
        if (not isinstance(shift, list) or len(shift) != 3 or
                not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in shift)):
            raise ValueError(f"picked atom: cell {str(shift)[:40]} is not a cell of the supercell on screen")
        checked.append((site, tuple(shift)))
    return checked


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    cosine = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _dihedral(p: list[np.ndarray]) -> float:
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return math.degrees(math.atan2(float(np.dot(np.cross(b1, v), w)), float(np.dot(v, w))))


def coordination(drawn: dict, site: int) -> list[tuple[str, float]]:
    """The neighbours of ``site`` by the viewer's bonds: (element, distance in Å), shortest first."""
    lattice = np.asarray(drawn["lattice"], dtype=float)
    frac = np.asarray(drawn["frac"], dtype=float)
    found = []
    for i, j, image in drawn.get("bonds") or []:
        for a, b, sign in ((i, j, 1), (j, i, -1)):
            if a == site:
                vector = (frac[b] + sign * np.asarray(image, dtype=float) - frac[a]) @ lattice
                found.append((drawn["species"][b], float(np.linalg.norm(vector))))
    return sorted(found, key=lambda item: item[1])


def measure(drawn: dict, picks: object) -> list[str]:
    """Lines that describe the picked atoms of the structure drawn (``payload``): one atom's element, site,
    coordinates and coordination; two atoms' distance (as drawn, and to the nearest periodic image); three atoms'
    angle at the middle one; four atoms' dihedral angle. ValueError for picks that are not atoms on screen."""
    lattice = np.asarray(drawn["lattice"], dtype=float)
    frac = np.asarray(drawn["frac"], dtype=float)
    species = drawn["species"]
    chosen = _picks(picks, len(species))
    if not chosen:
        return []
    points = [(frac[site] + np.asarray(shift, dtype=float)) @ lattice for site, shift in chosen]
    names = [f"{species[site]}{site}" for site, _ in chosen]
    if len(chosen) == 1:
        site, shift = chosen[0]
        neighbours = coordination(drawn, site)
        groups: dict[tuple[str, str], int] = {}
        for element, distance in neighbours:
            groups[(element, f"{distance:.3f}")] = groups.get((element, f"{distance:.3f}"), 0) + 1
        shell = ", ".join(f"{n} {e} at {d} Å" for (e, d), n in groups.items()) or "no bonds drawn"
        return [f"{names[0]}: {species[site]}, site {site} of the cell shown (cell {list(shift)} of the supercell)",
                "fractional (" + ", ".join(f"{v:.4f}" for v in frac[site]) + "), Cartesian (" +
                ", ".join(f"{v:.4f}" for v in points[0]) + ") Å",
                f"coordination {len(neighbours)} by the bonds drawn: {shell}"]
    lines = [" – ".join(names)]
    if len(chosen) == 2:
        (i, _), (j, _) = chosen
        drawn_distance = float(np.linalg.norm(points[1] - points[0]))
        nearest, image = Lattice(lattice).get_distance_and_image(frac[i], frac[j])
        lines.append(f"distance {drawn_distance:.3f} Å as drawn; {float(nearest):.3f} Å to the nearest periodic "
                     f"image (shift {[int(v) for v in image]})")
    elif len(chosen) == 3:
        lines.append(f"angle at {names[1]}: {_angle(points[0] - points[1], points[2] - points[1]):.2f}°")
    else:
        lines.append(f"dihedral angle: {_dihedral(points):.2f}°")
    return lines
