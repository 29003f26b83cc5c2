"""Known examples nearest to a latent among those with the same pattern of element counts, renamed.

Both decoders offer known examples as further starts: the crystal search (``models.crystal.search.KnownCells``: crystals
of the decode's reduced stoichiometry, AB2, ABC3, ...) and the motif refinement (``models.motif.refine.Library``: shells
with the same counts, O6; O4 S2; ...). Both keep one rule, written here once:

- the **pattern** of a set of atoms is its elements ordered by count (most first, then atomic number) and their
  counts (divided by their gcd for a crystal's reduced stoichiometry);
- the **nearest** examples of a pattern are ranked by squared latent distance to z, and an example whose latent is
  within ``SAME_LATENT`` of z is z's own, never offered: the decode of a known example stays the model's;
- a found example is **renamed** by count rank: its most numerous element becomes the decode's most numerous, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAME_LATENT = 1e-10
"""An example whose latent is within this squared distance of z is z's own: not offered."""


def count_pattern(numbers: np.ndarray, *, reduced: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """(elements ordered by count, most first, then atomic number; their counts, divided by their gcd when
    ``reduced``) of atomic numbers (zeros, i.e. padding, are left out)."""
    numbers = np.asarray(numbers)
    elements, counts = np.unique(numbers[numbers > 0], return_counts=True)
    order = np.lexsort((elements, -counts))
    counts = counts[order]
    if reduced and len(counts):
        counts = counts // np.gcd.reduce(counts)
    return elements[order], tuple(int(c) for c in counts)


def renamed(numbers: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """``numbers`` with its elements replaced by ``elements`` (ordered as ``count_pattern`` orders them) by count
    rank; padding zeros stay zeros."""
    numbers = np.asarray(numbers)
    names = dict(zip(count_pattern(numbers)[0].tolist(), np.asarray(elements).tolist(), strict=True))
    names[0] = 0
    return np.array([names[int(n)] for n in numbers.tolist()], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class PatternIndex:
    """Rows of ``latents`` (n, d) grouped by ``patterns`` (one ``count_pattern`` per row)."""

    latents: np.ndarray
    patterns: list[tuple[int, ...]]
    _groups: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, pattern in enumerate(self.patterns):
            groups.setdefault(pattern, []).append(row)
        object.__setattr__(self, "_groups", {key: np.asarray(rows) for key, rows in groups.items()})

    def nearest(self, z: np.ndarray, pattern: tuple[int, ...], k: int) -> np.ndarray:
        """Up to ``k`` rows of ``pattern``, nearest to latent ``z`` first, never one within ``SAME_LATENT`` of it."""
        rows = self._groups.get(pattern)
        if rows is None or k <= 0:
            return np.zeros(0, dtype=np.int64)
        distance = ((self.latents[rows] - np.asarray(z, dtype=self.latents.dtype)[None]) ** 2).sum(-1)
        order = np.argsort(distance, kind="stable")
        return rows[order[distance[order] > SAME_LATENT][:k]]
