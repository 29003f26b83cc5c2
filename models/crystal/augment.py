"""Species substitution on known frameworks: more compositions for the decoder to read, same geometry.

Held-out crystals mostly fail on compositions the model never saw (a perovskite with a new pair of
cations), not on new frameworks. ``substitute`` swaps, per crystal and consistently over its atoms,
elements for chemically similar ones (``similar_elements``: the same group one period up or down;
neighbouring d-block metals of the same period; neighbouring lanthanoids or actinoids) and keeps
the cell and the fractional coordinates. A substituted crystal is a plausible hypothesis, not a
relaxed structure: its lattice is not a target (the caller masks the lattice loss with the returned
weights), its coordinates and composition are.

    batch, lattice_weight = substitute(batch, rng, probability=0.25)
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch

from models.crystal.data import MAX_Z, CrystalBatch

_NEVER = frozenset({1, 2, 10, 18, 36, 54, 86, 43, 61, 84, 85, 87, 88, 89})
"""Never substituted, nor substituted in: H, the noble gases, and the short-lived radioactive elements."""


@lru_cache(maxsize=1)
def similar_elements() -> tuple[tuple[int, ...], ...]:
    """For each atomic number 0..MAX_Z, the atomic numbers it may be swapped for (empty for 0 and ``_NEVER``)."""
    from pymatgen.core import Element

    info = {}
    for z in range(1, MAX_Z + 1):
        element = Element.from_Z(z)
        series = "ln" if 57 <= z <= 71 else "an" if 89 <= z <= 103 else ""
        info[z] = (element.group, element.row, series)
    table: list[tuple[int, ...]] = [()]
    for z in range(1, MAX_Z + 1):
        group, row, series = info[z]
        if z in _NEVER:
            table.append(())
            continue
        if series:  # lanthanoids and actinoids: neighbours in their own series
            near = [y for y in range(z - 2, z + 3) if y != z and y in info and info[y][2] == series]
        else:
            d_block = 3 <= group <= 12
            near = [y for y, (g, r, s) in info.items()
                    if not s and y != z and ((g == group and abs(r - row) == 1)
                                             or (d_block and 3 <= g <= 12 and r == row and abs(g - group) == 1))]
        table.append(tuple(sorted(y for y in near if y not in _NEVER)))
    return tuple(table)


def substitution_map(numbers: np.ndarray, rng: np.random.Generator) -> dict[int, int]:
    """A one-to-one swap of some of the distinct elements in ``numbers`` (at least one when any can be
    swapped); new elements are never ones the crystal already has, so the composition stays as distinct."""
    table = similar_elements()
    present = sorted(set(int(z) for z in numbers if z > 0))
    movable = [z for z in present if table[z]]
    if not movable:
        return {}
    chosen = [z for z in movable if rng.random() < 0.5] or [movable[int(rng.integers(len(movable)))]]
    taken = set(present)
    mapping = {}
    for z in chosen:
        options = [y for y in table[z] if y not in taken]
        if options:
            y = options[int(rng.integers(len(options)))]
            mapping[z] = y
            taken.add(y)
    return mapping


def substitute(batch: CrystalBatch, rng: np.random.Generator, *,
               probability: float) -> tuple[CrystalBatch, torch.Tensor]:
    """Each crystal's elements swapped for similar ones with ``probability``.

    Args:
        batch: the batch (CPU tensors, as ``collate`` gives them).
        rng: the run's generator (its state is saved with the checkpoint, so a resumed run repeats it).
        probability: share of crystals substituted, in [0, 1].

    Returns:
        (the batch with new ``numbers`` and ``species``, (n_crystals,) float lattice-loss weights: 0 for
        substituted crystals, 1 otherwise).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"substitution probability must be in [0, 1], got {probability!r}")
    weight = torch.ones(batch.n_crystals)
    if probability == 0.0:
        return batch, weight
    lookup = np.tile(np.arange(MAX_Z + 1), (batch.n_crystals, 1))
    species = batch.species.numpy()
    for k in np.flatnonzero(rng.random(batch.n_crystals) < probability):
        mapping = substitution_map(species[k], rng)
        for old, new in mapping.items():
            lookup[k, old] = new
        if mapping:
            weight[k] = 0.0
    rows = np.arange(batch.n_crystals)[:, None]
    numbers = lookup[batch.batch.numpy(), batch.numbers.numpy()]
    swapped = replace(batch, numbers=torch.as_tensor(numbers), species=torch.as_tensor(lookup[rows, species]))
    return swapped, weight
