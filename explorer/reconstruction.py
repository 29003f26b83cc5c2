"""How well the model knows each material of a map: does its latent decode back to the material?

Every known material's latent (the one on the map) is decoded the way a click decodes it (with the encoder's check,
``models.crystal.search``) and matched to the material's canonical cell with pymatgen's StructureMatcher at the
reconstruction tolerances of the model card (``models.crystal.metrics.MATCHER_TOLERANCES``, as CDVAE). The result is
stored beside the map, in its cache folder (``reconstruction-known<n>-search<v>.parquet``: id, matched, rms, decoded
formula and space group, and the known crystal the decode was made from, if any), because it depends on the same
checkpoint and table: a new checkpoint makes a new map and a new check; ``<n>`` is ``settings.known_starts``, the known
crystals each decode is also offered (never the material itself: ``models.crystal.search.KnownCells``), and ``<v>`` is
``models.crystal.search.SEARCH_VERSION``, so that a change of the search that can change a decode makes a new check too.
The check of a dataset other than the one those known crystals come from also names that map's version (``_library``).
``python -m explorer build`` computes it after the map (9 minutes for the 11k known materials on 2 cores, session 21);
the server computes a missing one in the background after its warm-up, so ``make run`` builds the
maps with ``--skip-reconstruction`` and the app is usable at once.

The app shows it in three places: the info panel of a known material ("the autoencoder reconstructs this material" or
"decodes it as <formula, space group>"), the map's colour option "reconstruction", and the end frames of an
interpolation path (an endpoint that does not come back as itself is marked).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

LOG = logging.getLogger("explorer")
FILE_NAME = "reconstruction-known{n}-search{v}.parquet"
LEGACY_FILE_NAME = "reconstruction-known{n}.parquet"
"""The name of a check made before the search had a version (removed by the next ``compute``)."""
CHUNK = 64
"""Latents decoded per request: small enough that a user's click is never queued behind seconds of this job."""

COLUMN, RMS_COLUMN = "reconstruction", "reconstruction_rms"
"""Names of the map colour options: reconstructed / not reconstructed, and the RMS displacement of matches."""

MATCHED, NOT_MATCHED = "reconstructed", "not reconstructed"


@dataclass(frozen=True)
class Reconstruction:
    """Per-material reconstruction of one map: ``frame`` has columns id, matched (bool), rms (float, NaN when
    not matched: StructureMatcher's RMS displacement normalised by (volume / atoms)^(1/3)), decoded_formula,
    decoded_spacegroup and decoded_from (the id of the known crystal whose geometry the search chose, renamed to the
    material's elements; "" for the decoder's own crystal; absent from checks made before session 19); in the map's
    id order."""

    dataset: str
    frame: pd.DataFrame

    @property
    def share(self) -> float:
        """Share of the materials that decode back to themselves."""
        return float(self.frame["matched"].mean()) if len(self.frame) else float("nan")

    def sentence(self) -> str:
        """'reconstructs 7,164 of 11,291 materials (63.4 %)', and how many of them through a known neighbour."""
        n, k = len(self.frame), int(self.frame["matched"].sum())
        said = f"the autoencoder reconstructs {k:,} of {n:,} materials of {self.dataset} ({100 * self.share:.1f} %)"
        if "decoded_from" not in self.frame:
            return said
        borrowed = int((self.frame["matched"] & (self.frame["decoded_from"] != "")).sum())
        return f"{said}, {borrowed:,} of them through the geometry of another known crystal"

    def columns(self) -> dict[str, np.ndarray]:
        """{COLUMN: 'reconstructed' / 'not reconstructed', RMS_COLUMN: RMS or NaN} per material (map order)."""
        return {COLUMN: np.where(self.frame["matched"].to_numpy(), MATCHED, NOT_MATCHED),
                RMS_COLUMN: self.frame["rms"].to_numpy(dtype=float)}

    def of(self, record_id: str) -> dict | None:
        """{"matched", "rms", "decoded_formula", "decoded_spacegroup", "decoded_from" (None when the check did not
        record it)} of one material, or None if it has none."""
        rows = self._index.get(record_id)
        if rows is None:
            return None
        row = self.frame.iloc[rows]
        rms = float(row["rms"])
        return {"matched": bool(row["matched"]), "rms": rms if np.isfinite(rms) else None,
                "decoded_formula": str(row["decoded_formula"]), "decoded_spacegroup": str(row["decoded_spacegroup"]),
                "decoded_from": str(row["decoded_from"]) if "decoded_from" in row.index else None}

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {record_id: k for k, record_id in enumerate(self.frame["id"])}


def message(entry: dict | None) -> str:
    """What the info panel says about a material's reconstruction entry (``Reconstruction.of``)."""
    if entry is None:
        return ("reconstruction not checked yet: the server checks every material of the map after it starts "
                "(or run `python -m explorer build`)")
    origin = entry.get("decoded_from")
    how = f": the search chose the geometry of known crystal {origin[:80]}, renamed to its elements" if origin else ""
    if entry["matched"]:
        return f"the autoencoder reconstructs this material (RMS {entry['rms']:.3f}){how}"
    return (f"the autoencoder decodes it as {entry['decoded_formula']}, {entry['decoded_spacegroup']} "
            f"(not a match){how}")


def space_group_of(structure: Structure) -> str:
    """'Pm-3m (221)' by spglib at 0.1 Å, or 'undetermined'."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        analyzer = SpacegroupAnalyzer(structure, symprec=0.1)
        return f"{analyzer.get_space_group_symbol()} ({analyzer.get_space_group_number()})"
    except Exception:
        return "undetermined"


def entries(decoded: list[Structure], targets: list[Structure]) -> list[dict]:
    """One entry per (decoded, target) pair: matched, rms, decoded_formula, decoded_spacegroup (the space group
    only where it is shown: for decodes that do not match), decoded_from (``properties["decoded_from"]``, or "")."""
    from explorer.services.model import decoded_from
    from models.crystal.metrics import rms_if_match  # torch: only where a check runs

    found = []
    for got, want in zip(decoded, targets, strict=True):
        rms = rms_if_match(got, want)
        found.append({"matched": rms is not None, "rms": np.nan if rms is None else rms,
                      "decoded_formula": got.composition.reduced_formula,
                      "decoded_spacegroup": "" if rms is not None else space_group_of(got),
                      "decoded_from": decoded_from(got)})
    return found


def path_of(dataset: str, settings) -> Path:
    """Where the reconstruction of ``dataset``'s current map is kept (inside the map's cache folder)."""
    from explorer.atlas import atlas_key
    from explorer.datasets.build import check_dataset_name
    from models.crystal.search import SEARCH_VERSION

    name = FILE_NAME.format(n=settings.known_starts, v=SEARCH_VERSION)
    return (Path(settings.atlas_dir) / f"{check_dataset_name(dataset)}-{atlas_key(dataset, settings)}"
            / name.replace(".parquet", f"{_library(dataset, settings)}.parquet"))


def _library(dataset: str, settings) -> str:
    """The part of a check's file name that names the known map its decodes were offered crystals from: "" for the
    known-starts dataset's own check (its folder names that map's version) and when none are offered; else
    "-with-<dataset>-<its map's key>", or "-with-none" while that map is not built (a decode then offers none,
    ``services.model.known_cells``). So a rebuilt known map makes the other datasets' checks anew."""
    from explorer.atlas import atlas_key, is_built
    from explorer.datasets.build import check_dataset_name

    library = settings.known_starts_dataset
    if settings.known_starts <= 0 or dataset == library:
        return ""
    try:
        library = check_dataset_name(library)
        return f"-with-{library}-{atlas_key(library, settings)[:16]}" if is_built(library, settings) else "-with-none"
    except (FileNotFoundError, ValueError):
        return "-with-none"


@functools.lru_cache(maxsize=16)
def _read(path: str, mtime_ns: int, dataset: str) -> Reconstruction:
    return Reconstruction(dataset=dataset, frame=pd.read_parquet(path))


def load(dataset: str, settings) -> Reconstruction | None:
    """The stored reconstruction of ``dataset``'s current map, or None when it has not been computed. It fits
    the table row for row: its folder is keyed by the table's signature, and ``compute`` checked the ids."""
    try:
        path = path_of(dataset, settings)
    except (FileNotFoundError, ValueError):
        return None
    if not path.is_file():
        return None
    return _read(str(path), path.stat().st_mtime_ns, dataset)


_COMPUTING = threading.Lock()


def check_partition(latents: np.ndarray, frame: pd.DataFrame, settings) -> list[dict]:
    """``entries`` of table rows decoded from their latents (on a Dask worker, or here)."""
    from explorer.datasets.records import canonical_structure
    from explorer.services import model

    decoded = model.decode_many(latents, settings)
    return entries([d.structure for d in decoded], [canonical_structure(r) for _, r in frame.iterrows()])


def compute(dataset: str, settings, *, progress: bool = False,
            on_progress: Callable[[int, int], None] | None = None, client=None) -> Reconstruction:
    """The reconstruction of ``dataset``'s map (stored, or computed now and stored): decode every material's
    latent in chunks of ``CHUNK`` (through the model service, so users' decodes interleave; or as partitions on the
    Dask cluster of ``client``), match each with its canonical cell. ``progress``: a bar on stderr;
    ``on_progress(done, total)`` after every chunk."""
    from tqdm import tqdm

    from explorer.atlas import get_atlas
    from explorer.jobs import run
    from explorer.services import materials
    from explorer.storage import atomic_file

    with _COMPUTING:
        stored = load(dataset, settings)
        if stored is not None:
            return stored
        the_map = get_atlas(dataset, settings)
        frame = materials.table(dataset, settings)
        if the_map.ids != frame["id"].tolist():
            raise ValueError(f"the map of {dataset!r} does not match its table: rebuild with "
                             "`python -m explorer build`")
        parts: dict[int, list[dict]] = {}
        total = len(frame)
        cells = frame[["lattice", "numbers", "frac_coords"]]
        with tqdm(total=total, desc=f"reconstructing {dataset}", unit="crystal", disable=not progress) as bar:
            def tick(items: int) -> None:
                bar.update(items)
                if on_progress is not None:
                    on_progress(bar.n, total)

            run(check_partition, ((k, len(cells.iloc[s : s + CHUNK]), (the_map.latents[s : s + CHUNK],
                                                                     cells.iloc[s : s + CHUNK], settings))
                                  for k, s in enumerate(range(0, total, CHUNK))),
                client=client, on_result=parts.__setitem__, on_progress=tick)
        found = [entry for k in sorted(parts) for entry in parts[k]]
        result = pd.DataFrame({"id": frame["id"].tolist(), **{k: [e[k] for e in found] for k in
                                                               ("matched", "rms", "decoded_formula",
                                                                "decoded_spacegroup", "decoded_from")}})
        path = path_of(dataset, settings)
        atomic_file(path, lambda tmp: result.to_parquet(tmp, index=False))
        n = settings.known_starts  # the checks of older searches (and of before the search had a version) go
        for stale in [path.parent / LEGACY_FILE_NAME.format(n=n), *path.parent.glob(FILE_NAME.format(n=n, v="*"))]:
            if stale != path:
                stale.unlink(missing_ok=True)
        return _read(str(path), path.stat().st_mtime_ns, dataset)


def compute_in_background(datasets: list[str], settings) -> threading.Thread:
    """``compute`` each dataset's missing reconstruction in a daemon thread, one after the other (the server
    answers meanwhile; a failure is logged, never raised: the info panel then says it is not checked)."""
    def run() -> None:
        for name in datasets:
            try:
                from explorer.atlas import is_built

                if is_built(name, settings) and load(name, settings) is None:
                    LOG.info("checking which materials of %s the model reconstructs", name)
                    LOG.info("%s", compute(name, settings).sentence())
            except Exception as exc:
                LOG.warning("the reconstruction check of %r failed: %s", name, exc)

    thread = threading.Thread(target=run, name="explorer-reconstruction", daemon=True)
    thread.start()
    return thread
