"""Generate hypothetical crystals from a map and say how many are valid, unique, novel and stable.

Latents are sampled in two equal halves (seeded, per partition (``partition_size``), so the same seed gives
the same crystals wherever the job runs): points of the 2D map drawn uniformly over the area the known materials
cover (the occupied cells of a 64 × 64 grid over the map, a uniform point inside a random occupied cell, decoded
as a click there decodes it: ``Atlas.latents_at``), and midpoints of random pairs of known materials in latent
space. Each is decoded, then judged with CDVAE's definitions:

- structurally valid: no two atoms closer than 0.5 Å and a cell of at least 0.1 Å³ (``models.crystal.validity``);
- compositionally valid: charge-balanced by SMACT;
- unique: no earlier valid crystal of the set matches it. A cheap fingerprint first (reduced formula and spglib
  space group at ``settings.symprec``), ``StructureMatcher()`` only within a fingerprint's bucket: two decodes
  that StructureMatcher would match but that fall into different space groups at that tolerance count as two;
- novel: no known material of the dataset matches it (``physics.novelty``);
- stable: energy above the hull of the known materials of the map ≤ 0 and ≤ 0.1 eV/atom under CHGNet, after a
  relaxation with ``relax`` (before it otherwise; the summary says which);
- S.U.N.: stable (≤ 0.1 eV/atom), unique and novel, as a share of all ``n`` generated.

The three stages (decode and check; remove duplicates; physics of the unique valid crystals, skipped with
``physics=False``) run in partitions through ``explorer.jobs``: in this process, or on a Dask cluster. In ``DIR``:
``crystals/part-*.parquet`` (every decode: latent, cell, checks, fingerprint), ``duplicates.parquet``,
``physics-static/`` or ``physics-relax/`` (per unique crystal), then ``generated.parquet`` and ``generated.csv``
(one row per crystal, no structures), ``summary.json``, and the best ``keep`` unique valid crystals (lowest energy
above the hull first) as ``cif/<id>.cif`` (and ``<id>-relaxed.cif``) and as ``candidates.csv``, a CDVAE-style CSV
that ``python -m explorer data ingest`` reads as a dataset (a map of the candidates, coloured by their energy).
A stopped run goes on from the partitions already in ``DIR`` when started again with the same arguments.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.jobs import PartStore, Where, client_for, n_workers, run
from explorer.settings import Settings

GRID = 64
PARTITION = 2000  # at most this many latents per decode task (about 25 s of one core without the encoder's check)
MIN_PARTITION = 32
DECODE_BATCH = 256
BUCKETS_PER_TASK = 2000  # crystals per task of the duplicate search (whole buckets)
JUDGED_PER_TASK = 16  # crystals per physics task: a CHGNet relaxation takes seconds per crystal
KEEP = 10_000
MAX_N = 100_000_000
SUMMARY_KEYS = ("n", "valid", "unique", "novel", "stable_0", "stable_0.1", "sun_rate", "rediscovered")
STRUCTURE_COLUMNS = ("lattice", "numbers", "frac_coords")


def sample_latents(the_map, n: int, *, seed: int, partition: int = 0) -> tuple[np.ndarray, list[str]]:
    """(n, d) latents and a description of where each came from (see the module docstring): the first half map
    points, the rest midpoints, from a generator seeded by (seed, partition)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a whole number of at least 1, got {n!r}")
    rng = np.random.default_rng([int(seed), int(partition)])
    xy = np.asarray(the_map.xy, dtype=np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    size = np.maximum(high - low, 1e-9) / GRID
    occupied = np.unique(np.minimum(((xy - low) / size).astype(int), GRID - 1), axis=0)
    n_map = (n + 1) // 2
    points = low + (occupied[rng.integers(len(occupied), size=n_map)] + rng.random((n_map, 2))) * size
    known = len(the_map.ids)
    a = rng.integers(known, size=n - n_map)
    b = (a + rng.integers(1, known, size=n - n_map)) % known  # never a itself
    latents = np.concatenate([the_map.latents_at(points), 0.5 * (the_map.latents[a] + the_map.latents[b])])
    origins = [f"map point ({x:.3f}, {y:.3f})" for x, y in points]
    origins += [f"midpoint of {the_map.ids[i]} and {the_map.ids[j]}" for i, j in zip(a, b, strict=True)]
    return latents.astype(np.float32), origins


def partition_size(n: int) -> int:
    """Latents per decode task for a run of ``n``: about 64 tasks (so that every worker of a small cluster stays busy
    to the end), from ``MIN_PARTITION`` to ``PARTITION``. It depends on ``n`` alone, never on the cluster: each
    partition is sampled with its own seed, so the same run gives the same crystals wherever it runs."""
    return int(min(PARTITION, max(MIN_PARTITION, n // 64)))


def fingerprint(structure, symprec: float) -> tuple[str, int, int]:
    """(reduced formula, spglib space group number and atoms in the primitive cell at ``symprec``; 0, 0 when
    spglib finds no symmetry): the bucket of the duplicate search."""
    import spglib

    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    try:
        found = spglib.get_symmetry_dataset(cell, symprec=symprec)
    except Exception:  # spglib raises on degenerate cells; such a decode gets a bucket of its own kind
        found = None
    if found is None:
        return structure.composition.reduced_formula, 0, 0
    return structure.composition.reduced_formula, int(found.number), int(len(set(found.mapping_to_primitive)))


BUCKET = ["formula", "spacegroup_number", "primitive_atoms"]


def decode_partition(latents: np.ndarray, origins: list[str], ids: list[str], settings: Settings,
                     search: bool = True) -> pd.DataFrame:
    """Decode one partition (on a worker): a row per latent with its checks, fingerprint, cell and latent."""
    from explorer.services import model

    rows = []
    for begin in range(0, len(latents), DECODE_BATCH):
        batch = model.decode_many(latents[begin : begin + DECODE_BATCH], settings, search=search)
        for k, d in enumerate(batch, start=begin):
            structural, compositional = bool(d.validity["structurally_valid"]), bool(d.validity["charge_balanced"])
            formula, number, primitive = fingerprint(d.structure, settings.symprec)
            rows.append({"id": ids[k], "formula": formula, "n_atoms": d.n_atoms, "origin": origins[k],
                         "structurally_valid": structural, "compositionally_valid": compositional,
                         "valid": structural and compositional, "spacegroup_number": number,
                         "primitive_atoms": primitive,
                         "lattice": d.structure.lattice.matrix.ravel().tolist(),
                         "numbers": [site.specie.Z for site in d.structure],
                         "frac_coords": d.structure.frac_coords.ravel().tolist(),
                         "latent": d.latent.astype(np.float32).tolist()})
    return pd.DataFrame(rows)


def match_buckets(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(id, id of the earlier crystal it matches) for every duplicate among the rows of ``frame`` (whole fingerprint
    buckets, ids in order): ``StructureMatcher()`` against each bucket's distinct crystals so far (on a worker)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from explorer.datasets.records import canonical_structure

    matcher, found = StructureMatcher(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, bucket in frame.sort_values("id").groupby(BUCKET, sort=False):
            distinct: list[tuple[str, object]] = []
            for _, row in bucket.iterrows():
                structure = canonical_structure(row)
                first = next((rid for rid, other in distinct if matcher.fit(structure, other)), None)
                if first is None:
                    distinct.append((row["id"], structure))
                else:
                    found.append((row["id"], first))
    return found


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


def judge_partition(frame: pd.DataFrame, dataset: str, settings: Settings, relax_it: bool) -> pd.DataFrame:
    """Energy, hull, novelty (and relaxation) of unique valid crystals (on a worker, CHGNet loaded once there); the
    relaxed cell in ``relaxed_lattice`` / ``relaxed_numbers`` / ``relaxed_frac_coords``."""
    from explorer.datasets.records import canonical_structure

    rows = []
    for _, row in frame.iterrows():
        judged, relaxed = _judge(canonical_structure(row), dataset, settings, relax_it=relax_it)
        cell = {"relaxed_lattice": None, "relaxed_numbers": None, "relaxed_frac_coords": None}
        if relaxed is not None:
            cell = {"relaxed_lattice": relaxed.lattice.matrix.ravel().tolist(),
                    "relaxed_numbers": [site.specie.Z for site in relaxed],
                    "relaxed_frac_coords": relaxed.frac_coords.ravel().tolist()}
        rows.append({"id": row["id"], **PHYSICS_EMPTY, **judged, **cell})
    return pd.DataFrame(rows)


PHYSICS_EMPTY = {"novel": None, "match_id": None, "energy_per_atom": None, "e_above_hull": None,
                 "relaxed_energy_per_atom": None, "relaxed_e_above_hull": None, "relaxed_novel": None,
                 "relax_steps": None, "rms_displacement": None, "error": None}


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
             physics: bool = True, search: bool = True, out: Path | None = None, where: Where | None = None,
             keep: int = KEEP, on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Sample ``n`` latents of ``dataset``'s map, decode, check, remove duplicates and (``physics``) judge them,
    ``where`` the job runs; write ``out`` (a temporary folder when None). The summary: ``SUMMARY_KEYS``, the
    validity counts, "seconds", "seconds_per_crystal" and the seconds of each stage. ``on_progress(stage, done,
    total)`` after every partition."""
    import contextlib

    from explorer.atlas import get_atlas
    from explorer.services import materials, model

    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ValueError(f"--n must be a whole number from 1 to {MAX_N:,}, got {n!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"--keep must be a whole number of at least 0, got {keep!r}")
    if relax_it and not physics:
        raise ValueError("--relax needs the physics stage: drop --skip-physics")
    progress = on_progress or (lambda stage, done, total: None)
    where = where or Where()
    the_map = get_atlas(dataset, settings)
    manifest = {"dataset": dataset, "n": n, "seed": int(seed), "partition": partition_size(n), "map": the_map.key,
                "checkpoint_sha256": model.checkpoint_sha256(settings), "symprec": settings.symprec,
                "search": bool(search)}
    holder = tempfile.TemporaryDirectory() if out is None else contextlib.nullcontext(out)
    with holder as folder:
        folder = Path(folder)
        _claim(folder, manifest)
        crystals, seconds = PartStore(folder / "crystals"), {}
        with client_for(where) as client:
            workers = n_workers(client)
            clock = time.perf_counter()
            _decode_stage(the_map, n, int(seed), settings, bool(search), crystals, client, progress)
            seconds["decode"], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
            duplicates = _dedupe_stage(crystals, folder, client, progress)
            seconds["dedupe"], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
            frame = crystals.read(columns=ROW_COLUMNS)
            frame["duplicate_of"] = frame["id"].map(dict(zip(duplicates["id"], duplicates["duplicate_of"],
                                                             strict=True)))
            frame["unique"] = frame["valid"] & frame["duplicate_of"].isna()
            judged = (_physics_stage(crystals, frame.loc[frame["unique"], "id"].tolist(), dataset, settings,
                                     relax_it, folder, client, progress) if physics else None)
            seconds["physics"], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
            frame = _with_physics(frame, judged)
            kept = _write_outputs(folder, frame, crystals, judged, keep=keep, relaxed=relax_it, client=client)
            seconds["write"] = round(time.perf_counter() - clock, 2)
        summary = {**summarise(frame, relaxed=relax_it), "dataset": dataset, "seed": int(seed),
                   "physics": physics, "search": bool(search), "where": where.describe(), "workers": workers,
                   "stage_seconds": seconds, "seconds": round(time.perf_counter() - start, 1), "kept": kept}
        summary["seconds_per_crystal"] = round(summary["seconds"] / n, 5)
        (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


ROW_COLUMNS = ["id", "formula", "n_atoms", "origin", "structurally_valid", "compositionally_valid", "valid",
               "spacegroup_number", "primitive_atoms"]


def _claim(folder: Path, manifest: dict) -> None:
    """Make ``folder`` this run's (``job.json``); a folder of another run (other dataset, n, seed, model or map)
    is refused, so partitions of two runs never mix."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.json"
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
        if before != manifest:
            differs = sorted(k for k in manifest if not isinstance(before, dict) or before.get(k) != manifest[k])
            raise ValueError(f"{folder} holds another generate run (it differs in {', '.join(differs)}): give "
                             "another --out, or empty that folder")
        return
    from explorer.storage import atomic_file

    atomic_file(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))


def _decode_stage(the_map, n: int, seed: int, settings: Settings, search: bool, store: PartStore, client,
                  progress) -> None:
    width, done, size = max(5, len(str(n - 1))), store.done(), partition_size(n)
    parts = range((n + size - 1) // size)
    counted = sum(min(size, n - p * size) for p in parts if p in done)
    progress("decoded", counted, n)

    def partitions():
        for p in parts:
            if p not in done:
                items = min(size, n - p * size)
                latents, origins = sample_latents(the_map, items, seed=seed, partition=p)
                ids = [f"gen-{p * size + k:0{width}d}" for k in range(items)]
                yield p, items, (latents, origins, ids, settings, search)

    def tick(items: int) -> None:
        nonlocal counted
        counted += items
        progress("decoded", counted, n)

    run(decode_partition, partitions(), client=client, on_result=store.write, on_progress=tick)


def _dedupe_stage(store: PartStore, folder: Path, client, progress) -> pd.DataFrame:
    """(id, duplicate_of) of every valid crystal that matches an earlier one; stored as ``duplicates.parquet``."""
    path = folder / "duplicates.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    keys = store.read(columns=["id", *BUCKET, "valid"])
    keys = keys[keys["valid"]]
    shared = keys[keys.groupby(BUCKET)["id"].transform("size") > 1]
    rows = store.read(columns=["id", *BUCKET, *STRUCTURE_COLUMNS], ids=set(shared["id"]))
    tasks, current, size = [], [], 0
    for _, bucket in rows.groupby(BUCKET, sort=True):
        current.append(bucket)
        size += len(bucket)
        if size >= BUCKETS_PER_TASK:
            tasks.append(pd.concat(current))
            current, size = [], 0
    if current:
        tasks.append(pd.concat(current))
    found: list[tuple[str, str]] = []
    done = 0

    def collect(index: int, pairs: list) -> None:
        found.extend(pairs)

    def tick(items: int) -> None:
        nonlocal done
        done += items
        progress("deduplicated", done, len(rows))

    run(match_buckets, ((k, len(t), (t,)) for k, t in enumerate(tasks)), client=client, on_result=collect,
        on_progress=tick)
    frame = pd.DataFrame(sorted(found), columns=["id", "duplicate_of"])
    from explorer.storage import atomic_file

    atomic_file(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def _physics_stage(store: PartStore, ids: list[str], dataset: str, settings: Settings, relax_it: bool,
                   folder: Path, client, progress) -> pd.DataFrame:
    judged = PartStore(folder / f"physics-{'relax' if relax_it else 'static'}")
    ids, done = sorted(ids), judged.done()
    chunks = [ids[k : k + JUDGED_PER_TASK] for k in range(0, len(ids), JUDGED_PER_TASK)]
    counted = sum(len(c) for p, c in enumerate(chunks) if p in done)
    progress("judged", counted, len(ids))
    wanted = {p for p in range(len(chunks)) if p not in done}
    if wanted:
        rows = store.read(columns=["id", *STRUCTURE_COLUMNS],
                          ids={i for p in wanted for i in chunks[p]}).set_index("id")

        def partitions():
            for p in sorted(wanted):
                yield p, len(chunks[p]), (rows.loc[chunks[p]].reset_index(), dataset, settings, relax_it)

        def tick(items: int) -> None:
            nonlocal counted
            counted += items
            progress("judged", counted, len(ids))

        run(judge_partition, partitions(), client=client, on_result=judged.write, on_progress=tick)
    return judged.read()


def _with_physics(frame: pd.DataFrame, judged: pd.DataFrame | None) -> pd.DataFrame:
    """The rows with the physics columns (None where not judged)."""
    if judged is None or judged.empty:
        return frame.assign(**{k: None for k in PHYSICS_EMPTY})
    columns = ["id", *PHYSICS_EMPTY]
    merged = frame.merge(judged[columns], on="id", how="left")
    for column in PHYSICS_EMPTY:
        merged[column] = merged[column].astype(object).where(merged[column].notna(), None)
    return merged


CIFS_PER_TASK = 500


def cif_partition(cells: pd.DataFrame) -> list[tuple[str, bytes, bytes | None]]:
    """(id, CIF of the decode, CIF of its relaxation or None) per row of ``id``, the cell columns and, after a
    relaxation, ``relaxed_*`` cell columns (on a worker)."""
    from explorer.datasets.records import canonical_structure
    from explorer.services.export import structure_to_bytes

    texts = []
    for _, row in cells.iterrows():
        decoded = structure_to_bytes(canonical_structure(row), fmt="cif", title=row["id"])
        relaxed = None
        if isinstance(row.get("relaxed_lattice"), list | tuple | np.ndarray):  # None or NaN: not relaxed
            structure = canonical_structure({k: row[f"relaxed_{k}"] for k in STRUCTURE_COLUMNS})
            relaxed = structure_to_bytes(structure, fmt="cif", title=f"{row['id']} relaxed")
        texts.append((row["id"], decoded, relaxed))
    return texts


def _write_outputs(folder: Path, frame: pd.DataFrame, crystals: PartStore, judged: pd.DataFrame | None, *,
                   keep: int, relaxed: bool, client) -> int:
    """generated.parquet / .csv, and the best ``keep`` unique valid crystals as CIFs (written on the cluster's
    workers when there is one) and candidates.csv; returns how many were kept."""
    frame.to_parquet(folder / "generated.parquet", index=False)
    frame.to_csv(folder / "generated.csv", index=False)
    above = pd.to_numeric(frame["relaxed_e_above_hull" if relaxed else "e_above_hull"], errors="coerce")
    best = frame.assign(_above=above)[frame["unique"]].sort_values(["_above", "id"], na_position="last").head(keep)
    cells = crystals.read(columns=["id", *STRUCTURE_COLUMNS], ids=set(best["id"])).set_index("id").loc[
        best["id"]].reset_index()
    if judged is not None and not judged.empty:
        cells = cells.merge(judged[["id", *(f"relaxed_{k}" for k in STRUCTURE_COLUMNS)]], on="id", how="left")
    chunks = [cells.iloc[k : k + CIFS_PER_TASK] for k in range(0, len(cells), CIFS_PER_TASK)]
    texts: dict[int, list] = {}
    run(cif_partition, ((k, len(c), (c,)) for k, c in enumerate(chunks)), client=client,
        on_result=texts.__setitem__)
    (folder / "cif").mkdir(exist_ok=True)
    written = {}
    for rid, decoded, relaxed_text in (t for k in sorted(texts) for t in texts[k]):
        (folder / "cif" / f"{rid}.cif").write_bytes(decoded)
        if relaxed_text is not None:
            (folder / "cif" / f"{rid}-relaxed.cif").write_bytes(relaxed_text)
        written[rid] = (relaxed_text or decoded).decode()
    columns = ["origin", "energy_per_atom", "e_above_hull", "relaxed_e_above_hull", "novel", "match_id"]
    candidates = best[["id", *columns]].rename(columns={"id": "material_id"})
    candidates.insert(1, "cif", candidates["material_id"].map(written))
    candidates.to_csv(folder / "candidates.csv", index=False)
    return len(candidates)
