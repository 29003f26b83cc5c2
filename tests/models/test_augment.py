"""Species substitution keeps the framework and swaps whole elements for chemically similar ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CRYSTALS

from models.crystal.augment import similar_elements, substitute, substitution_map
from models.crystal.data import build_graph, collate, crystal_from_structure


def _batch(*names: str):
    graphs = [build_graph(crystal_from_structure(TINY_CRYSTALS[n](), crystal_id=n), cutoff=4.5) for n in names]
    return collate(graphs)


def test_similar_elements_are_chemical_neighbours():
    table = similar_elements()
    assert table[8] == (16,)  # O -> S
    assert set(table[38]) == {20, 56}  # Sr -> Ca, Ba
    assert {21, 23, 40} == set(table[22])  # Ti -> Sc, V (d-block neighbours), Zr (group)
    assert table[1] == () and table[2] == () and table[0] == ()  # H, He, padding stay
    assert all(z not in table[z] for z in range(len(table)))


def test_substitution_is_one_to_one_and_never_merges_elements():
    rng = np.random.default_rng(0)
    numbers = np.array([38, 22, 8, 8, 8])
    for _ in range(200):
        mapping = substitution_map(numbers, rng)
        assert mapping, "SrTiO3 always has an element to swap"
        new = [mapping.get(z, z) for z in numbers]
        assert len(set(new)) == 3 and new.count(new[2]) == 3


def test_substitute_swaps_species_and_keeps_the_framework():
    batch = _batch("SrTiO3", "NaCl", "Si")
    swapped, weight = substitute(batch, np.random.default_rng(1), probability=1.0)
    assert weight.tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(swapped.frac, batch.frac) and torch.equal(swapped.lattice, batch.lattice)
    assert torch.equal(swapped.mask, batch.mask) and torch.equal(swapped.src, batch.src)
    assert not torch.equal(swapped.species, batch.species)
    for k in range(batch.n_crystals):  # flat numbers and padded species agree, element by element
        flat = swapped.numbers[batch.batch == k].tolist()
        assert sorted(flat) == sorted(swapped.species[k][swapped.species[k] > 0].tolist())
        old = batch.numbers[batch.batch == k].tolist()
        assert len({(a, b) for a, b in zip(old, flat, strict=True)}) == len(set(old))


def test_substitute_is_seeded_and_off_at_zero():
    batch = _batch("SrTiO3", "graphite")
    a, _ = substitute(batch, np.random.default_rng(5), probability=0.5)
    b, _ = substitute(batch, np.random.default_rng(5), probability=0.5)
    assert torch.equal(a.species, b.species)
    same, weight = substitute(batch, np.random.default_rng(5), probability=0.0)
    assert same is batch and weight.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="1.5"):
        substitute(batch, np.random.default_rng(5), probability=1.5)
