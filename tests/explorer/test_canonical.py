"""Canonicalisation: the same crystal gives the same canonical cell and space group, however it is written."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_CRYSTALS, graphite, nacl, silicon, srtio3
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from explorer.datasets.canonical import canonicalize, crystal_system

EXPECTED = {  # name -> (space group, sites in the primitive cell)
    "NaCl": ("Fm-3m", 2), "Si": ("Fd-3m", 2), "SrTiO3": ("Pm-3m", 5), "graphite": ("P6_3/mmc", 4)}


def rotated(s: Structure, seed: int = 1) -> Structure:
    matrix = Rotation.random(random_state=seed).as_matrix()
    return Structure(Lattice(s.lattice.matrix @ matrix.T), s.species, s.frac_coords)


def translated(s: Structure, seed: int = 2) -> Structure:
    shift = np.random.default_rng(seed).random(3)
    return Structure(s.lattice, s.species, s.frac_coords + shift)


def permuted(s: Structure, seed: int = 3) -> Structure:
    order = np.random.default_rng(seed).permutation(len(s))
    return Structure(s.lattice, [s.species[i] for i in order], s.frac_coords[order])


def supercell(s: Structure) -> Structure:
    bigger = s.copy()
    bigger.make_supercell([[2, 0, 0], [0, 1, 0], [0, 0, 3]])
    return bigger


def other_cell(s: Structure) -> Structure:
    """The same lattice in a sheared basis (a' = a + b, c' = c - a): another valid cell choice."""
    changed = s.copy()
    changed.make_supercell([[1, 1, 0], [0, 1, 0], [-1, 0, 1]])
    return changed


TRANSFORMS = {"rotation": rotated, "translation": translated, "permutation": permuted,
              "supercell": supercell, "other cell": other_cell,
              "all at once": lambda s: permuted(translated(rotated(other_cell(supercell(s)))))}


def assert_same_cell(a, b) -> None:
    assert a.spacegroup_number == b.spacegroup_number and a.spacegroup_symbol == b.spacegroup_symbol
    np.testing.assert_allclose(a.lattice, b.lattice, atol=1e-6)
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.frac_coords, b.frac_coords, atol=1e-6)


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("name", sorted(TINY_CRYSTALS))
def test_canonical_cell_is_invariant(name, transform):
    structure = TINY_CRYSTALS[name]()
    assert_same_cell(canonicalize(structure), canonicalize(TRANSFORMS[transform](structure)))


@pytest.mark.parametrize("name", sorted(TINY_CRYSTALS))
def test_canonical_cell_is_the_primitive_cell_in_standard_form(name):
    cell = canonicalize(TINY_CRYSTALS[name]())
    symbol, sites = EXPECTED[name]
    assert (cell.spacegroup_symbol, len(cell.numbers)) == (symbol, sites)
    assert np.all(cell.frac_coords >= 0) and np.all(cell.frac_coords < 1)
    # a along x, b in the xy plane: the matrix is lower-triangular
    assert abs(cell.lattice[0, 1]) < 1e-9 and abs(cell.lattice[0, 2]) < 1e-9 and abs(cell.lattice[1, 2]) < 1e-9
    # an atom of the rarest species (lowest Z on ties) sits on the origin
    species, counts = np.unique(cell.numbers, return_counts=True)
    rarest = species[np.argmin(counts)]
    assert any(np.allclose(x, 0) for x in cell.frac_coords[cell.numbers == rarest])


def test_canonical_cell_keeps_the_crystal():
    """Volume per atom, composition and interatomic distances survive canonicalisation."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    for make in (nacl, silicon, srtio3, graphite):
        original = make()
        canonical = canonicalize(original).to_structure()
        assert canonical.composition.reduced_formula == original.composition.reduced_formula
        assert canonical.volume / len(canonical) == pytest.approx(original.volume / len(original), rel=1e-9)
        assert StructureMatcher().fit(original, canonical)


def test_mirror_images_stay_distinct():
    """Left- and right-handed quartz are different crystals (enantiomorphic space groups)."""
    right = Structure.from_spacegroup("P3_121", Lattice.hexagonal(4.913, 5.405), ["Si", "O"],
                                      [[0.4697, 0, 0], [0.4135, 0.2669, 0.1191]])
    left = Structure(right.lattice, right.species, -right.frac_coords)
    cr, cl = canonicalize(right), canonicalize(left)
    assert {cr.spacegroup_symbol, cl.spacegroup_symbol} == {"P3_121", "P3_221"}
    assert_same_cell(cr, canonicalize(rotated(translated(right))))


def test_disordered_structure_is_refused():
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="partial occupancies"):
        canonicalize(alloy)


def test_crystal_system_names():
    assert [crystal_system(n) for n in (1, 2, 3, 15, 16, 74, 75, 142, 143, 167, 168, 194, 195, 230)] == [
        "triclinic", "triclinic", "monoclinic", "monoclinic", "orthorhombic", "orthorhombic", "tetragonal",
        "tetragonal", "trigonal", "trigonal", "hexagonal", "hexagonal", "cubic", "cubic"]
    with pytest.raises(ValueError, match="231"):
        crystal_system(231)
