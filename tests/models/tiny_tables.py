"""Helpers for the model tests: real hand-built crystals and Parquet tables of the record schema."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pymatgen.core import Lattice, Structure


def write_table(path: Path, structures: list[Structure], *, prefix: str = "tiny", split=None) -> Path:
    """A Parquet table with the columns models.crystal.data reads (id, lattice, numbers, frac_coords, nsites)."""
    rows = [{"id": f"{prefix}:{k}", "lattice": s.lattice.matrix.ravel().tolist(),
             "numbers": [site.specie.Z for site in s], "frac_coords": s.frac_coords.ravel().tolist(),
             "nsites": len(s)} for k, s in enumerate(structures)]
    frame = pd.DataFrame(rows)
    if split is not None:
        frame["split"] = split
    frame.to_parquet(path)
    return path


def real_crystals() -> list[Structure]:
    """A dozen well-known crystals as primitive cells (2-10 atoms)."""
    spec = [
        ("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        ("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]),
        ("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
        ("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        ("F-43m", Lattice.cubic(5.41), ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        ("Fm-3m", Lattice.cubic(5.46), ["Ca", "F"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
        ("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3048, 0.3048, 0]]),
        ("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
        ("Im-3m", Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]]),
        ("P6_3/mmc", Lattice.hexagonal(2.46, 6.71), ["C", "C"], [[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]]),
        ("P3_221", Lattice.hexagonal(4.913, 5.405), ["Si", "O"], [[0.4697, 0, 2 / 3], [0.4135, 0.2669, 0.7858]]),
        ("R-3c", Lattice.hexagonal(4.759, 12.99), ["Al", "O"], [[0, 0, 0.352], [0.306, 0, 0.25]]),
    ]
    return [Structure.from_spacegroup(*args).get_primitive_structure() for args in spec]
