"""The environments of every material of a dataset, computed once per table and kept on disk, and the motif
queries of the map's search ("Ti octahedral", "contains a tetrahedral Si").

``compute`` runs ``environments.environments`` on every material's canonical cell in limited worker processes
(a material that takes longer than ``settings.parse_seconds`` * 10 is skipped and counted), with a progress bar,
and writes ``data/motifs/<dataset>-<table signature>-v2.parquet``: one row per symmetry-distinct site (id, site,
element, wyckoff, cn, motif, csm, neighbours [[element, distance Å]] and vectors [[x, y, z] Å] as JSON). It
depends on the table only (not on the checkpoint), so a new model keeps it. ``python -m explorer build`` computes
it after the map; the server computes a missing one in the background after its warm-up.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.datasets.build import check_dataset_name, load_report
from explorer.motifs.shapes import IDEAL_SHAPES
from explorer.settings import Settings

LOG = logging.getLogger("explorer")
MOTIF_NAMES = sorted({name for shapes in IDEAL_SHAPES.values() for name in shapes}, key=len, reverse=True)
_COMPUTING = threading.Lock()


TABLE_VERSION = 2
"""Part of the file name: version 2 added the neighbour vectors (the motif autoencoder learns from them)."""


def table_stem(dataset: str, settings: Settings) -> str:
    """'<dataset>-<table signature>': the name of what ``data/motifs/`` keeps for ``dataset``'s current table."""
    report = load_report(dataset, settings)
    if report is None:
        raise FileNotFoundError(f"dataset {dataset!r} has no built table: run `python -m explorer data build`")
    return f"{check_dataset_name(dataset)}-{report.signature[:16]}"


def path_of(dataset: str, settings: Settings) -> Path:
    """Where the environments of ``dataset``'s current table are kept."""
    return settings.data_dir / "motifs" / f"{table_stem(dataset, settings)}-v{TABLE_VERSION}.parquet"


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def load(dataset: str, settings: Settings) -> pd.DataFrame | None:
    """The stored environments of ``dataset`` (one row per distinct site), or None when not computed yet."""
    try:
        path = path_of(dataset, settings)
    except (FileNotFoundError, ValueError):
        return None
    return _read(str(path), path.stat().st_mtime_ns) if path.is_file() else None


def site_rows(record_id: str, structure, symprec: float) -> list[dict]:
    """The rows of the environment table for one structure (``environments.environments`` of its distinct sites);
    ValueError from there for a disordered or empty structure."""
    from explorer.motifs.environments import environments

    return [{"id": record_id, "site": e.site, "element": e.element, "wyckoff": e.wyckoff, "cn": e.cn,
             "motif": e.motif, "csm": np.nan if e.csm is None else e.csm,
             "neighbours": json.dumps([[n, round(d, 3)] for n, d, _, _ in e.neighbours]),
             "vectors": json.dumps([[round(v, 4) for v in row] for row in e.vectors])}
            for e in environments(structure, symprec=symprec)]


def compute(dataset: str, settings: Settings, *, progress: bool = False,
            on_progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """The environments of ``dataset`` (stored, or computed now in worker processes and stored)."""
    from tqdm import tqdm

    from explorer.datasets.records import canonical_structure
    from explorer.datasets.rejections import Rejected
    from explorer.datasets.sandbox import map_limited
    from explorer.services import materials
    from explorer.storage import atomic_file

    with _COMPUTING:
        stored = load(dataset, settings)
        if stored is not None:
            return stored
        frame = materials.table(dataset, settings)
        jobs = ((row["id"], (row["id"], canonical_structure(row), settings.symprec)) for _, row in frame.iterrows())
        rows, skipped = [], 0
        results = map_limited(site_rows, jobs, seconds=10 * settings.parse_seconds, memory_mb=settings.parse_memory_mb,
                              workers=settings.workers)
        with tqdm(total=len(frame), desc=f"motifs of {dataset}", unit="crystal", disable=not progress) as bar:
            for done, result in enumerate(results, start=1):
                if isinstance(result, Rejected) or isinstance(result, Exception):
                    skipped += 1
                else:
                    rows += result
                bar.update(1)
                if on_progress is not None and (done % 64 == 0 or done == len(frame)):
                    on_progress(done, len(frame))
        if skipped:
            LOG.warning("motifs of %s: %d materials skipped (too slow or unreadable)", dataset, skipped)
        table = pd.DataFrame(rows, columns=["id", "site", "element", "wyckoff", "cn", "motif", "csm", "neighbours",
                                            "vectors"])
        path = path_of(dataset, settings)
        atomic_file(path, lambda tmp: table.to_parquet(tmp, index=False))
        own = re.compile(rf"{re.escape(check_dataset_name(dataset))}-[0-9a-f]{{16}}(-v\d+)?\.parquet")
        for stale in path.parent.iterdir():  # this dataset's environments of older tables or versions
            if stale != path and own.fullmatch(stale.name):
                stale.unlink(missing_ok=True)
        return _read(str(path), path.stat().st_mtime_ns)


def compute_in_background(datasets: list[str], settings: Settings) -> threading.Thread:
    """``compute`` the missing environments of each dataset whose map is built (the search of a map uses them),
    in a daemon thread; failures are logged, never raised."""
    def run() -> None:
        from explorer.atlas import is_built

        for name in datasets:
            try:
                if is_built(name, settings) and load(name, settings) is None:
                    compute(name, settings)
                    LOG.info("motifs of %s computed", name)
            except Exception as exc:
                LOG.warning("the motifs of %r could not be computed: %s", name, exc)

    thread = threading.Thread(target=run, name="explorer-motifs", daemon=True)
    thread.start()
    return thread


_SYNONYMS = {"octahedron": "octahedral", "octahedra": "octahedral", "tetrahedron": "tetrahedral",
             "tetrahedra": "tetrahedral", "cuboctahedron": "cuboctahedral", "cube": "cubic",
             "trigonal prism": "trigonal prismatic", "icosahedron": "icosahedral"}
_FILLERS = {"contains", "contain", "with", "a", "an", "site", "sites", "in"}


def motif_query(query: str) -> tuple[str | None, str] | None:
    """(element or None, motif name) when ``query`` asks for a motif ('Ti octahedral', 'octahedral Ti',
    'contains a tetrahedral Si', 'cuboctahedral'), else None."""
    from pymatgen.core import Element

    text = " " + " ".join(w for w in re.split(r"[\s,]+", (query or "").lower()) if w not in _FILLERS) + " "
    for word, name in _SYNONYMS.items():
        text = re.sub(rf"\b{word}\b", name, text)
    motif = next((name for name in MOTIF_NAMES if f" {name.lower()} " in text), None)
    if motif is None:
        return None
    rest = text.replace(f" {motif.lower()} ", " ").split()
    if len(rest) > 1 or (rest and rest[0].capitalize() not in {e.symbol for e in Element}):
        return None
    return (rest[0].capitalize() if rest else None), motif


def matching_ids(environments: pd.DataFrame, element: str | None, motif: str) -> set[str]:
    """Ids of the materials with a site of ``element`` (any when None) in ``motif``."""
    hits = environments["motif"] == motif
    if element is not None:
        hits &= environments["element"] == element
    return set(environments.loc[hits, "id"])
