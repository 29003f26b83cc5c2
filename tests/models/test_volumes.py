"""Volumes per atom fitted to known crystals (``models.crystal.volumes``) on real structure types: rock salt and
caesium chloride cells of alkali halides and the body-centred alkali metals, whose volumes add up per element."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure

from models.crystal.volumes import AtomicVolumes

VOLUME = {"Na": 20.6, "K": 34.2, "Rb": 42.4, "Cl": 31.3, "Br": 42.1, "I": 50.1}
"""Å^3 per atom, about what the known map's crystals give these elements."""


ROCK_SALT = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
             [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]
"""Fractional coordinates of rock salt's cubic cell: four cations, then four anions."""


@functools.cache
def _salts(cations=("Na", "K", "Rb"), anions=("Cl", "Br", "I")) -> tuple[Structure, ...]:
    """Every cation-anion pair as rock salt (8-atom cubic cell) and as caesium chloride (2 atoms), and each cation as a
    bcc metal (which pins the split of a salt's volume between its two elements), each cell at the sum of its atoms'
    ``VOLUME``."""
    out = [Structure(Lattice.cubic((2 * VOLUME[a]) ** (1 / 3)), [a, a], [[0, 0, 0], [0.5, 0.5, 0.5]]) for a in cations]
    for a, x in itertools.product(cations, anions):
        formula = VOLUME[a] + VOLUME[x]
        out.append(Structure(Lattice.cubic((4 * formula) ** (1 / 3)), [a] * 4 + [x] * 4, ROCK_SALT))
        out.append(Structure(Lattice.cubic(formula ** (1 / 3)), [a, x], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    return tuple(out)


def _fit(structures: tuple[Structure, ...]) -> AtomicVolumes:
    return AtomicVolumes.fit([np.array(s.atomic_numbers) for s in structures], [s.volume for s in structures])


def _z(*symbols: str) -> np.ndarray:
    return np.array([Element(s).Z for s in symbols])


def test_a_renamed_crystal_takes_the_volume_its_new_elements_add_up_to():
    volumes = _fit(_salts())
    salt = _z("Na", "Cl", "Na", "Cl")
    for new in (("K", "Br"), ("Rb", "Cl"), ("Na", "I")):
        expected = (VOLUME[new[0]] + VOLUME[new[1]]) / (VOLUME["Na"] + VOLUME["Cl"])
        assert volumes.scale(salt, _z(*new, *new)) ** 3 == pytest.approx(expected, rel=1e-9)
    assert volumes.scale(salt, salt) == 1.0  # the same elements: the crystal's own volume, exactly


def test_elements_the_library_cannot_pin_down_count_as_unchanged():
    volumes = _fit(_salts())
    salt = _z("Na", "Cl")
    # Cs is in no crystal: the Na site counts as unchanged, at the mean fitted volume of the others (Cl); Cl -> Br still
    # scales the crystal
    expected = (VOLUME["Br"] + VOLUME["Cl"]) / (VOLUME["Cl"] + VOLUME["Cl"])
    assert volumes.scale(salt, _z("Cs", "Br")) ** 3 == pytest.approx(expected, rel=1e-9)
    assert volumes.scale(_z("Cs", "Cs"), _z("Fr", "Fr")) == 1.0
    # I in two crystals only (fewer than MIN_CRYSTALS): not fitted, the rest still is
    sparse = _fit(_salts(anions=("Cl", "Br")) + _salts(cations=("Na",), anions=("I",)))
    assert np.isnan(sparse.volumes[53]) and np.isfinite(sparse.volumes[[11, 17, 19, 35, 37]]).all()
    # three crystals for two elements: too few to fit anything (a tiny library keeps every volume)
    tiny = _fit(_salts(cations=("Na",), anions=("Cl",)))
    assert np.isnan(tiny.volumes).all() and tiny.scale(salt, _z("K", "Cl")) == 1.0


def test_a_fit_refuses_what_is_not_a_crystal():
    with pytest.raises(ValueError, match="2 crystals for 1 volumes"):
        AtomicVolumes.fit([_z("Na"), _z("Cl")], [1.0])
    with pytest.raises(ValueError, match=r"crystal 1: atomic numbers must be 1-94, got \[0, 17\]"):
        AtomicVolumes.fit([_z("Na"), np.array([0, 17])], [1.0, 2.0])
    # a cell without volume (or without atoms) is left out of the fit, not fitted as zero
    salts = _salts()
    volumes = AtomicVolumes.fit([np.array(s.atomic_numbers) for s in salts] + [_z("Na", "Cl")],
                                [s.volume for s in salts] + [float("nan")])
    assert volumes.scale(_z("Na", "Cl"), _z("K", "Cl")) ** 3 == pytest.approx(
        (VOLUME["K"] + VOLUME["Cl"]) / (VOLUME["Na"] + VOLUME["Cl"]), rel=1e-9)
