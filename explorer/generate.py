"""Generate hypothetical crystals from a map and say how many are valid, unique, novel and stable.

Latents are sampled in two equal halves (seeded): points of the 2D map drawn uniformly over the area the known
materials cover (the occupied cells of a 64 × 64 grid over the map, a uniform point inside a random occupied cell,
decoded as a click there decodes it: ``Atlas.latent_at``), and midpoints of random pairs of known materials in
latent space. Each is decoded, then judged with CDVAE's definitions:

- structurally valid: no two atoms closer than 0.5 Å and a cell of at least 0.1 Å³ (``models.validity``);
- compositionally valid: charge-balanced by SMACT;
- unique: no earlier valid crystal of the set matches it (``StructureMatcher()`` within a reduced formula);
- novel: no known material of the dataset matches it (``physics.novelty``);
- stable: energy above the hull of the known materials of the map ≤ 0 and ≤ 0.1 eV/atom under CHGNet, after a
  relaxation with ``relax`` (before it otherwise; the summary says which);
- S.U.N.: stable (≤ 0.1 eV/atom), unique and novel, as a share of all ``n`` generated.

Writes ``DIR/cif/<id>.cif`` for every valid crystal (and ``<id>-relaxed.cif``), ``DIR/generated.csv`` (one row
per crystal) and ``DIR/summary.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.settings import Settings

GRID = 64
SUMMARY_KEYS = ("n", "valid", "unique", "novel", "stable_0", "stable_0.1", "sun_rate", "rediscovered")


def sample_latents(the_map, n: int, *, seed: int) -> tuple[np.ndarray, list[str]]:
    """(n, d) latents and a description of where each came from (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    xy = np.asarray(the_map.xy, dtype=np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    size = np.maximum(high - low, 1e-9) / GRID
    occupied = np.unique(np.minimum(((xy - low) / size).astype(int), GRID - 1), axis=0)
    latents, origins = [], []
    n_map = (n + 1) // 2
    for _ in range(n_map):
        cell = occupied[rng.integers(len(occupied))]
        x, y = low + (cell + rng.random(2)) * size
        latents.append(the_map.latent_at(float(x), float(y)).latent)
        origins.append(f"map point ({x:.3f}, {y:.3f})")
    for _ in range(n - n_map):
        a, b = rng.choice(len(the_map.ids), size=2, replace=False)
        latents.append(0.5 * (the_map.latents[a] + the_map.latents[b]))
        origins.append(f"midpoint of {the_map.ids[a]} and {the_map.ids[b]}")
    return np.asarray(latents, dtype=np.float32), origins


def unique_flags(structures: list, keep: list[bool]) -> list[bool]:
    """True for each kept structure that matches no earlier kept one (``StructureMatcher()``, within a formula)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher, seen, flags = StructureMatcher(), {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for structure, kept in zip(structures, keep, strict=True):
            if not kept:
                flags.append(False)
                continue
            bucket = seen.setdefault(structure.composition.reduced_formula, [])
            new = not any(matcher.fit(structure, other) for other in bucket)
            flags.append(new)
            if new:
                bucket.append(structure)
    return flags


def _judge(structure, dataset: str, settings: Settings, *, relax_it: bool) -> tuple[dict, object]:
    """The physics of one valid unique crystal: (row fields, relaxed structure or None)."""
    from explorer.services import physics

    try:
        found, relaxed = physics.assess_candidate(structure, dataset, settings, relax_it=relax_it)
    except ValueError as exc:
        return {"error": str(exc)}, None
    after = found["relaxed"] or {}
    return {"energy_per_atom": found["energy_per_atom"], "e_above_hull": found["e_above_hull"],
            "novel": found["novel"], "match_id": found["match_id"],
            "relaxed_energy_per_atom": after.get("energy_per_atom"),
            "relaxed_e_above_hull": after.get("e_above_hull"), "relaxed_novel": after.get("novel"),
            "relax_steps": after.get("steps"), "rms_displacement": after.get("rms_displacement"),
            "error": found["error"]}, relaxed


def summarise(rows: pd.DataFrame, *, relaxed: bool) -> dict:
    """The summary of ``generate`` from its rows (see the module docstring for each count)."""
    n = len(rows)
    above = rows["relaxed_e_above_hull"] if relaxed else rows["e_above_hull"]
    above = pd.to_numeric(above, errors="coerce")
    novel = rows["relaxed_novel"] if relaxed else rows["novel"]  # after relaxation, the relaxed crystal counts
    unique_novel = rows["unique"] & (novel == True)  # noqa: E712 (None where not judged)
    stable_01 = above <= 0.1
    return {"n": n, "structurally_valid": int(rows["structurally_valid"].sum()),
            "compositionally_valid": int(rows["compositionally_valid"].sum()), "valid": int(rows["valid"].sum()),
            "unique": int(rows["unique"].sum()), "novel": int(unique_novel.sum()),
            "stable_0": int((above <= 0).sum()), "stable_0.1": int(stable_01.sum()),
            "sun_rate": round(float((stable_01 & unique_novel).sum()) / n, 4) if n else None,
            "rediscovered": int((rows["unique"] & (novel == False)).sum()),  # noqa: E712
            "relaxed": relaxed}


def generate(dataset: str, settings: Settings, *, n: int, seed: int = 0, relax_it: bool = False,
             out: Path | None = None, on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Sample ``n`` latents of ``dataset``'s map, decode and judge them, write ``out`` (when given); the summary
    (``SUMMARY_KEYS`` and the validity counts, "seconds", "seconds_per_crystal")."""
    from explorer.atlas import get_atlas
    from explorer.services import materials, model
    from explorer.services.export import structure_to_bytes

    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    latents, origins = sample_latents(get_atlas(dataset, settings), n, seed=seed)
    decoded = []
    for begin in range(0, n, 64):
        decoded += model.decode_many(latents[begin : begin + 64], settings)
        if on_progress:
            on_progress("decoded", len(decoded), n)
    structural = [bool(d.validity["structurally_valid"]) for d in decoded]
    compositional = [bool(d.validity["charge_balanced"]) for d in decoded]
    valid = [s and c for s, c in zip(structural, compositional, strict=True)]
    unique = unique_flags([d.structure for d in decoded], valid)
    rows, relaxed_structures = [], {}
    for k, (d, origin) in enumerate(zip(decoded, origins, strict=True)):
        row = {"id": f"gen-{k:05d}", "formula": d.formula, "n_atoms": d.n_atoms, "origin": origin,
               "structurally_valid": structural[k], "compositionally_valid": compositional[k], "valid": valid[k],
               "unique": unique[k], "novel": None, "match_id": None, "energy_per_atom": None, "e_above_hull": None,
               "relaxed_energy_per_atom": None, "relaxed_e_above_hull": None, "relaxed_novel": None,
               "relax_steps": None, "rms_displacement": None, "error": None}
        if unique[k]:
            judged, relaxed = _judge(d.structure, dataset, settings, relax_it=relax_it)
            row.update(judged)
            if relaxed is not None:
                relaxed_structures[row["id"]] = relaxed
        rows.append(row)
        if on_progress:
            on_progress("judged", k + 1, n)
    frame = pd.DataFrame(rows)
    summary = {**summarise(frame, relaxed=relax_it), "dataset": dataset, "seed": seed,
               "seconds": round(time.perf_counter() - start, 1)}
    summary["seconds_per_crystal"] = round(summary["seconds"] / n, 3)
    if out is not None:
        folder = Path(out) / "cif"
        folder.mkdir(parents=True, exist_ok=True)
        for row, d in zip(rows, decoded, strict=True):
            if row["valid"]:
                (folder / f"{row['id']}.cif").write_bytes(structure_to_bytes(d.structure, fmt="cif", title=row["id"]))
            if row["id"] in relaxed_structures:
                (folder / f"{row['id']}-relaxed.cif").write_bytes(structure_to_bytes(
                    relaxed_structures[row["id"]], fmt="cif", title=f"{row['id']} relaxed"))
        frame.to_csv(Path(out) / "generated.csv", index=False)
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
