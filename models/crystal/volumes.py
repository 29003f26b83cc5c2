"""Volumes per atom of each element, fitted to known crystals: how large a known crystal would be with other elements.

The crystal search offers known crystals renamed to a decode's elements (``models.crystal.search.KnownCells.starts``).
Such a crystal needs a volume. The decoder's own volume is its least accurate output (a median error of 5-10 % per
atom on held-out crystals); the known crystal's own volume is exact when the elements stay the same (a carbon
allotrope for a carbon decode) and close for similar ones. ``AtomicVolumes`` adjusts it for the renaming: each
element's volume is fitted to the library's crystals at once (least squares of every cell's volume on its element
counts: Vegard-like additivity, about 10 % median error on the 10,653 crystals of the known map), and a renamed crystal
is scaled by the ratio of the fitted volumes of its new and old elements. A known crystal renamed to itself keeps its
own volume exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.crystal.data import MAX_Z

MIN_CRYSTALS = 3
"""An element's volume is fitted only when it occurs in at least this many crystals of the library."""


@dataclass(frozen=True, eq=False)
class AtomicVolumes:
    """``volumes``: (MAX_Z + 1,) Å^3 per atom of each element, NaN where not fitted."""

    volumes: np.ndarray

    @classmethod
    def fit(cls, numbers: Sequence[np.ndarray], volumes: Sequence[float]) -> AtomicVolumes:
        """Fit to crystals given as their atomic numbers (each (n,) int) and cell volumes (Å^3).

        An element is fitted when it occurs in ``MIN_CRYSTALS`` crystals or more and the crystals outnumber the elements
        twice over (otherwise the least squares are not determined); a fitted volume that is not positive (an element
        only ever seen next to much larger ones) counts as not fitted.
        """
        if len(numbers) != len(volumes):
            raise ValueError(f"{len(numbers)} crystals for {len(volumes)} volumes")
        out = np.full(MAX_Z + 1, np.nan)
        counts = np.zeros((len(numbers), MAX_Z + 1))
        for row, crystal in enumerate(numbers):
            crystal = np.asarray(crystal, dtype=np.int64)
            if crystal.size and (crystal.min() < 1 or crystal.max() > MAX_Z):
                raise ValueError(f"crystal {row}: atomic numbers must be 1-{MAX_Z}, got {crystal.tolist()}")
            np.add.at(counts[row], crystal, 1.0)
        volume = np.asarray(volumes, dtype=np.float64)
        fine = np.isfinite(volume) & (volume > 0) & (counts.sum(axis=1) > 0)
        counts, volume = counts[fine], volume[fine]
        elements = np.flatnonzero((counts > 0).sum(axis=0) >= MIN_CRYSTALS)
        # crystals with an element left out are left out too: its volume would land on the others
        rows = counts[:, np.setdiff1d(np.arange(MAX_Z + 1), elements)].sum(axis=1) == 0
        if len(elements) and rows.sum() >= 2 * len(elements):
            fitted = np.linalg.lstsq(counts[np.ix_(rows, elements)], volume[rows], rcond=None)[0]
            out[elements] = np.where(fitted > 0, fitted, np.nan)
        return cls(volumes=out)

    def scale(self, numbers: np.ndarray, renamed: np.ndarray) -> float:
        """The lattice factor that takes a crystal of atoms ``numbers`` (n,) to the volume it would have with
        ``renamed`` (n,) on the same sites: the cube root of the ratio of their fitted volumes, 1.0 when the elements
        stay the same. A site whose old or new element has no fitted volume counts as unchanged, at the mean fitted
        volume of the other sites (1.0 when no site has both)."""
        old = self.volumes[np.asarray(numbers, dtype=np.int64)]
        new = self.volumes[np.asarray(renamed, dtype=np.int64)]
        fitted = np.isfinite(old) & np.isfinite(new)
        if not fitted.any():
            return 1.0
        unchanged = (~fitted).sum() * old[fitted].mean()
        return float(((new[fitted].sum() + unchanged) / (old[fitted].sum() + unchanged)) ** (1 / 3))
