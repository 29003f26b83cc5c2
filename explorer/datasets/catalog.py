"""Which datasets (maps) exist: the default known materials, one per ../shared/data set, one per ingest.

A user dataset is remembered by a small manifest (``data/user/NAME.json``: the path it came from),
so it can be rebuilt when its files change; its table stays usable if the files go away.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from explorer.datasets.build import DatasetReport, build_table, is_dataset_name, load_report
from explorer.datasets.readers import read_path
from explorer.datasets.sources import Source, package_sources, shared_sources
from explorer.settings import Settings

DEFAULT_DATASET = "known"


def user_source(name: str, path: Path, settings: Settings) -> Source:
    """A source of every structure under ``path`` (file or folder); structure files over
    ``settings.max_upload_mb`` are rejected unread."""
    path = Path(path).resolve()
    max_bytes = int(settings.max_upload_mb * 1e6)
    return Source(name, "user", f"ingested from {path}", "", lambda: _path_fingerprint(path),
                  lambda: read_path(path, max_bytes=max_bytes))


def _path_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _manifest_dir(settings: Settings) -> Path:
    return settings.data_dir / "user"


def datasets(settings: Settings) -> dict[str, list[Source]]:
    """Dataset name -> its sources, in display order (known, shared sets, user sets)."""
    found = {DEFAULT_DATASET: package_sources(settings)}
    for source in shared_sources(settings):
        found[source.name] = [source]
    manifests = _manifest_dir(settings)
    if manifests.is_dir():
        for manifest in sorted(manifests.glob("*.json"), key=lambda p: p.stem):  # by name: "a" before "a-b"
            entry = json.loads(manifest.read_text())
            if Path(entry["path"]).exists():
                found[entry["name"]] = [user_source(entry["name"], Path(entry["path"]), settings)]
    return found


def build_all(settings: Settings, *, names: list[str] | None = None, force: bool = False,
              progress: bool = True, client=None) -> list[DatasetReport]:
    """Build every dataset (or only ``names``); unchanged ones are reused (``client``: see ``build_table``)."""
    available = datasets(settings)
    unknown = sorted(set(names or []) - set(available))
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; available: {sorted(available)}")
    return [build_table(name, sources, settings=settings, force=force, progress=progress, client=client)
            for name, sources in available.items() if not names or name in names]


def ingest(path: Path, *, name: str, settings: Settings, progress: bool = True, client=None) -> DatasetReport:
    """Read a user's file or folder into dataset ``name`` (the user's files are only read here; with a Dask
    ``client``, their records are parsed on the cluster's workers)."""
    if not is_dataset_name(name):
        raise ValueError(f"dataset name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
    if name == DEFAULT_DATASET or name in {s.name for s in shared_sources(settings)}:
        raise ValueError(f"dataset name {name!r} is taken by a built-in dataset; choose another --name")
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    report = build_table(name, [user_source(name, path, settings)], settings=settings, progress=progress,
                         client=client)
    _manifest_dir(settings).mkdir(parents=True, exist_ok=True)
    (_manifest_dir(settings) / f"{name}.json").write_text(json.dumps({"name": name, "path": str(path)}))
    return report


def reports(settings: Settings) -> list[DatasetReport]:
    """Reports of every built table, known first."""
    names = list(datasets(settings))
    stems = (p.name.removesuffix(".parquet") for p in settings.tables_dir.glob("*.parquet"))
    built = sorted(name for name in stems if is_dataset_name(name))
    ordered = [n for n in names if n in built] + [n for n in built if n not in names]
    return [r for r in (load_report(n, settings) for n in ordered) if r is not None]


def check(path: Path, *, settings: Settings) -> list[dict]:
    """The verdict of every structure under ``path`` (file or folder), as an upload or an ingest would give
    it, without building a dataset: {"id", "ok": True, "formula", "sites"} or {"id", "ok": False, "reason",
    "message", "detail"} (``read_structures``)."""
    from explorer.datasets.rejections import Rejected

    return [{"id": key, "ok": False, **result.as_dict()} if isinstance(result, Rejected) else
            {"id": key, "ok": True, "formula": result.composition.reduced_formula, "sites": len(result)}
            for key, result in read_structures(path, settings=settings)]


def read_structures(path: Path, *, settings: Settings) -> list[tuple[str, object]]:
    """(key, Structure or Rejected) of every structure under ``path`` (file or folder), read and checked as an
    upload or an ingest would read them, in limited workers (a file that hangs or is too big is a Rejected,
    the others are read); in key order."""
    from explorer.datasets.build import limits_of
    from explorer.datasets.records import read_structure
    from explorer.datasets.rejections import Rejected
    from explorer.datasets.sandbox import map_limited

    limits = limits_of(settings)
    found, jobs = [], []
    for item in read_path(Path(path), max_bytes=int(settings.max_upload_mb * 1e6)):
        if isinstance(item, Rejected):
            found.append((item.detail.split(":", 1)[0], item))
        else:
            jobs.append(item)
    results = map_limited(read_structure, ((item.key, (item, limits)) for item in jobs),
                          seconds=settings.parse_seconds, memory_mb=settings.parse_memory_mb, workers=settings.workers)
    found += [(item.key, result) for item, result in zip(jobs, results, strict=True)]
    return sorted(found, key=lambda pair: pair[0])
