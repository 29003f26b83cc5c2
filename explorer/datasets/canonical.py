"""One canonical cell per crystal: the same crystal always gives the same numbers.

The canonical cell is the Niggli-reduced primitive cell, written in the standard orientation of its
lattice parameters (a along x, b in the xy plane, as VESTA, ASE and POSCAR files do), with fractional
coordinates wrapped to [0, 1). What remains free after that (which lattice automorphism of the
Niggli cell to use, and which atom sits on the origin) is fixed by taking, over every proper
automorphism and every atom of the rarest species as origin, the lexicographically smallest sorted
list of (Z, x, y, z). The result does not depend on rotation, translation, atom order, supercell or
choice of cell. Mirror images (enantiomorphs) stay distinct: only proper rotations are used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import spglib
from pymatgen.core import Lattice, Structure

_KEY_RESOLUTION = 1e-4  # fractional-coordinate grid used only to compare candidate settings


@dataclass(frozen=True)
class CanonicalCell:
    """The canonical primitive cell of a crystal and its symmetry.

    lattice: (3, 3) Å, rows are lattice vectors (standard orientation).
    numbers: (n_sites,) atomic numbers, sorted with the coordinates.
    frac_coords: (n_sites, 3) fractional coordinates in [0, 1).
    """

    lattice: np.ndarray
    numbers: np.ndarray
    frac_coords: np.ndarray
    spacegroup_number: int
    spacegroup_symbol: str

    def to_structure(self) -> Structure:
        """The canonical cell as a pymatgen Structure."""
        return Structure(Lattice(self.lattice), self.numbers.tolist(), self.frac_coords)


def crystal_system(spacegroup_number: int) -> str:
    """Crystal system name of an international space-group number (1-230)."""
    bounds = [(2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
              (167, "trigonal"), (194, "hexagonal"), (230, "cubic")]
    for upper, name in bounds:
        if spacegroup_number <= upper:
            return name
    raise ValueError(f"space-group number {spacegroup_number} is outside 1-230")


def canonicalize(structure: Structure, *, symprec: float = 0.1, angle_tolerance: float = 5.0) -> CanonicalCell:
    """Canonical primitive cell and space group of an ordered structure.

    Raises ValueError (quoting the formula) when the structure is disordered.
    """
    if not structure.is_ordered:
        raise ValueError(f"{structure.composition.reduced_formula}: partial occupancies cannot be canonicalised")
    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    number, symbol, primitive = _symmetry_and_primitive(cell, symprec, angle_tolerance)
    lattice, frac = _niggli(primitive[0], primitive[1])
    numbers = np.asarray(primitive[2], dtype=np.int64)
    frac, numbers = _fix_setting(lattice, frac, numbers, symprec)
    standard = lattice_from_parameters(*Lattice(lattice).parameters)
    return CanonicalCell(lattice=standard, numbers=numbers, frac_coords=frac,
                         spacegroup_number=number, spacegroup_symbol=symbol)


def lattice_from_parameters(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """(3, 3) Å lattice, rows a, b, c, with a along x and b in the xy plane; angles in degrees."""
    cos_a, cos_b, cos_g = (np.cos(np.radians(x)) for x in (alpha, beta, gamma))
    sin_g = np.sin(np.radians(gamma))
    cx = c * cos_b
    cy = c * (cos_a - cos_b * cos_g) / sin_g
    cz_squared = c * c - cx * cx - cy * cy
    if cz_squared <= 0:
        raise ValueError(f"lattice parameters {(a, b, c, alpha, beta, gamma)} do not describe a 3D cell")
    return np.array([[a, 0.0, 0.0], [b * cos_g, b * sin_g, 0.0], [cx, cy, np.sqrt(cz_squared)]])


def _symmetry_and_primitive(cell, symprec: float, angle_tolerance: float):
    """Space group and primitive cell from spglib; P1 and the input cell when spglib finds nothing."""
    for prec in (symprec, symprec / 10, 1e-3):
        with warnings.catch_warnings():  # spglib 2.x warns about its None-returning error mode
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = spglib.get_symmetry_dataset(cell, symprec=prec, angle_tolerance=angle_tolerance)
            primitive = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=prec,
                                                angle_tolerance=angle_tolerance)
        if dataset is not None and primitive is not None:
            return int(dataset.number), str(dataset.international), primitive
    return 1, "P1", (np.asarray(cell[0]), np.asarray(cell[1]), np.asarray(cell[2]))


def _niggli(lattice: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Niggli-reduced, right-handed lattice and the coordinates expressed in it."""
    reduced = Lattice(lattice).get_niggli_reduced_lattice().matrix
    if np.linalg.det(reduced) < 0:
        reduced = -reduced
    cart = np.asarray(frac) @ lattice
    return reduced, cart @ np.linalg.inv(reduced)


def _proper_automorphisms(lattice: np.ndarray, symprec: float) -> np.ndarray:
    """Integer matrices W (acting on fractional columns, x' = W x) that map the lattice onto itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rotations = spglib.get_symmetry((lattice, [[0.0, 0.0, 0.0]], [1]), symprec=symprec)["rotations"]
    proper = [r for r in rotations if round(np.linalg.det(r)) == 1]
    return np.asarray(proper, dtype=np.float64)


def _wrap(frac: np.ndarray) -> np.ndarray:
    """Wrap to [0, 1), sending values within rounding noise of 1 to 0."""
    wrapped = np.mod(frac, 1.0)
    wrapped[np.abs(wrapped - 1.0) < 1e-8] = 0.0
    return wrapped


def _fix_setting(lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray,
                 symprec: float) -> tuple[np.ndarray, np.ndarray]:
    """Choose automorphism and origin atom that give the smallest sorted (Z, x, y, z) list."""
    species, counts = np.unique(numbers, return_counts=True)
    rarest = species[np.argmin(counts)]  # np.unique sorts, so ties go to the lowest Z
    origins = frac[numbers == rarest]
    rotations = _proper_automorphisms(lattice, symprec)
    shifted = frac[None, :, :] - origins[:, None, :]                      # (n_origin, n, 3)
    candidates = np.einsum("rij,onj->roni", rotations, shifted)            # (n_rot, n_origin, n, 3)
    candidates = _wrap(candidates.reshape(-1, len(numbers), 3))
    grid = np.mod(np.rint(candidates / _KEY_RESOLUTION).astype(np.int64), round(1 / _KEY_RESOLUTION))
    keys = np.empty((len(candidates), len(numbers) * 4), dtype=np.int64)
    orders = np.empty((len(candidates), len(numbers)), dtype=np.int64)
    for k, g in enumerate(grid):
        order = np.lexsort((g[:, 2], g[:, 1], g[:, 0], numbers))
        orders[k] = order
        keys[k] = np.column_stack([numbers[order], g[order]]).ravel()
    best = np.lexsort(keys.T[::-1])[0]
    order = orders[best]
    return candidates[best][order], numbers[order]
