"""Two structures side by side: what differs between them (composition, space group, lattice, volume per atom,
density, coordination of each element) and whether StructureMatcher calls them the same crystal.

The pairs a user has on hand (``PAIRS``): the endpoints A and B of an interpolation, the structure on screen and
its nearest known material, a relaxed structure and what it was relaxed from."""

from __future__ import annotations

import time
from collections import defaultdict

from pymatgen.core import Structure

from explorer import reconstruction
from explorer.motifs.environments import environments
from explorer.services.cells import in_cell

PAIRS = {"ab": "A and B of the interpolation", "nearest": "the structure on screen and its nearest known material",
         "relaxed": "the relaxed structure and what it was relaxed from"}


def check_pair(value: object) -> str:
    if not isinstance(value, str) or value not in PAIRS:
        raise ValueError(f"unknown comparison {str(value)[:40]!r}: choose one of {', '.join(PAIRS)}")
    return value


def coordination_by_element(structure: Structure, *, symprec: float) -> str:
    """'Sr 12, Ti 6, O 6' (CrystalNN, mean over the sites of each element, weighted by their multiplicity)."""
    try:
        found = environments(structure, symprec=symprec)
    except ValueError as exc:
        return str(exc)
    counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for entry in found:
        weight = len(entry.members) or 1
        counts[entry.element][0] += weight * entry.cn
        counts[entry.element][1] += weight
    return ", ".join(f"{element} {total / n:.3g}" for element, (total, n) in sorted(counts.items()))


def _row(structure: Structure, *, symprec: float) -> dict[str, str]:
    a, b, c, alpha, beta, gamma = structure.lattice.parameters
    return {"formula": structure.composition.reduced_formula,
            "atoms in the conventional cell": str(len(structure)),
            "space group": reconstruction.space_group_of(structure),
            "a, b, c (Å)": f"{a:.3f}, {b:.3f}, {c:.3f}",
            "α, β, γ (°)": f"{alpha:.2f}, {beta:.2f}, {gamma:.2f}",
            "volume per atom (Å³)": f"{structure.volume / len(structure):.3f}",
            "density (g/cm³)": f"{float(structure.density):.3f}",
            "coordination (CrystalNN)": coordination_by_element(structure, symprec=symprec)}


def compare(first: Structure, second: Structure, *, symprec: float = 0.1) -> dict:
    """{"rows": [[property, first's value, second's value, differs]], "verdict": a sentence, "rms": float | None,
    "ms": server time}. The cell rows are of each one's conventional standard cell (``cells.in_cell``); the
    verdict is StructureMatcher's at the tolerances of the reconstruction measures (``models.crystal.metrics``)."""
    from models.crystal.metrics import rms_if_match

    start = time.perf_counter()
    left, right = (_row(in_cell(s, "conventional", symprec=symprec)[0], symprec=symprec) for s in (first, second))
    rows = [[name, left[name], right[name], left[name] != right[name]] for name in left]
    rms = rms_if_match(first, second)
    verdict = ("StructureMatcher: the same crystal" + f" (normalised RMS displacement {rms:.4f})"
               if rms is not None else "StructureMatcher: not the same crystal")
    return {"rows": rows, "verdict": verdict, "rms": rms, "ms": round(1000 * (time.perf_counter() - start), 1)}
