"""Build one Parquet table per dataset from its sources, with a report of what was kept and why not.

A table is rebuilt only when its signature (schema version, checks, and the sha256 of every input)
changes, so a second ``make run`` reuses it. Bad records never stop a build: each becomes a line of
the report with its id, reason class and a message that quotes the value.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import pandas as pd

from explorer.datasets.formats import describe
from explorer.datasets.records import SCHEMA_VERSION, Limits, RawItem, Rejected, make_record
from explorer.datasets.sandbox import map_limited
from explorer.datasets.sources import Source
from explorer.settings import Settings
from explorer.storage import atomic_file, clean_stale_temporaries


@dataclass
class SourceReport:
    """Counts for one source: read = kept + sum(rejected.values())."""

    name: str
    origin: str
    description: str = ""
    citation: str = ""
    read: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass
class DatasetReport:
    """What a build did: per-source counts and every rejected record with its reason."""

    dataset: str
    signature: str
    seconds: float
    sources: list[SourceReport]
    rejections: list[dict[str, str]]

    @property
    def kept(self) -> int:
        return sum(s.kept for s in self.sources)


DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A dataset name: also the stem of its files, so it can never hold a path separator or start with a dot."""


def is_dataset_name(name: object) -> bool:
    """True when ``name`` can name a dataset (and so be the stem of its files)."""
    return isinstance(name, str) and bool(DATASET_NAME.match(name)) and ".." not in name


def check_dataset_name(name: object) -> str:
    """``name`` if it can name a dataset; ValueError quoting it otherwise (a browser can send anything)."""
    if not is_dataset_name(name):
        raise ValueError(f"unknown dataset {str(name)[:80]!r}: a dataset name has 1-64 letters, digits, '_', '-' "
                         "or '.'")
    return name


def table_path(dataset: str, settings: Settings) -> Path:
    return settings.tables_dir / f"{check_dataset_name(dataset)}.parquet"


def report_path(dataset: str, settings: Settings) -> Path:
    return settings.tables_dir / f"{check_dataset_name(dataset)}.report.json"


def limits_of(settings: Settings) -> Limits:
    return Limits(max_sites=settings.max_sites, min_distance=settings.min_distance,
                  symprec=settings.symprec, angle_tolerance=settings.angle_tolerance)


def signature_of(sources: list[Source], limits: Limits) -> str:
    """Hash of everything a table depends on."""
    payload = {"schema": SCHEMA_VERSION, "limits": asdict(limits),
               "sources": [(s.name, s.origin, s.fingerprint()) for s in sources]}
    return sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_REPORT_KEY = b"explorer_report"


def load_report(dataset: str, settings: Settings) -> DatasetReport | None:
    """The report of a built table, or None when it was never built (parsed once per table file version:
    the map's cache key needs it on every request; do not modify it).

    It is read from the table file's own metadata, so a table and its report are always of the same build
    (the JSON beside the table is a copy for people); a table written before that falls back on the JSON.
    """
    path = table_path(dataset, settings)
    if not path.exists():
        return None
    stat = path.stat()
    return _report_of(str(path), stat.st_mtime_ns, stat.st_size, str(report_path(dataset, settings)))


@functools.lru_cache(maxsize=32)
def _report_of(path: str, mtime_ns: int, size: int, json_path: str) -> DatasetReport | None:
    import pyarrow.parquet as pq

    embedded = (pq.read_schema(path).metadata or {}).get(_REPORT_KEY)
    if embedded is not None:
        text = embedded.decode()
    elif Path(json_path).exists():
        text = Path(json_path).read_text()
    else:
        return None
    data = json.loads(text)
    data["sources"] = [SourceReport(**s) for s in data["sources"]]
    return DatasetReport(**data)


def load_table(dataset: str, settings: Settings) -> pd.DataFrame:
    """The built table of a dataset; FileNotFoundError naming the command that builds it."""
    path = table_path(dataset, settings)
    if not path.exists():
        raise FileNotFoundError(f"no table for dataset {dataset!r} at {path}: run `python -m explorer data build`")
    return pd.read_parquet(path)


def build_table(dataset: str, sources: list[Source], *, settings: Settings, force: bool = False,
                progress: bool = True, client: Any = None) -> DatasetReport:
    """Build (or reuse) the table of ``dataset`` from ``sources`` (records parsed on the Dask cluster of ``client``
    when given, see ``explorer.jobs``; here otherwise)."""
    limits = limits_of(settings)
    clean_stale_temporaries(settings.tables_dir)
    signature = signature_of(sources, limits)
    existing = load_report(dataset, settings)
    if not force and existing and existing.signature == signature and table_path(dataset, settings).exists():
        return existing
    start = time.perf_counter()
    jobs, reports, rejections = [], {}, []
    for source in sources:
        reports[source.name] = SourceReport(source.name, source.origin, source.description, source.citation)
        for item in source.items():
            if isinstance(item, Rejected):
                _reject(reports[source.name], rejections, source.name, item)
            else:
                jobs.append((item, source.name, source.origin, limits))
    records = []
    for source_name, result in _run(jobs, desc=dataset, settings=settings, progress=progress, client=client):
        report = reports[source_name]
        if isinstance(result, Rejected):
            _reject(report, rejections, source_name, result)
        else:
            report.read += 1
            report.kept += 1
            records.append(result)
    report = DatasetReport(dataset, signature, round(time.perf_counter() - start, 1), list(reports.values()),
                           rejections)
    _write(dataset, _frame(records), report, settings)
    return report


def _reject(report: SourceReport, rejections: list, source: str, rejection: Rejected) -> None:
    report.read += 1
    report.rejected[rejection.reason] = report.rejected.get(rejection.reason, 0) + 1
    key = rejection.detail.split(":", 1)[0]
    rejections.append({"id": f"{source}:{key}", "source": source, **rejection.as_dict()})


def _process(item: RawItem, source: str, origin: str, limits: Limits) -> Any:
    """One record, or the Rejected that says why not (run in a limited worker process)."""
    try:
        return make_record(item, source=source, origin=origin, limits=limits)
    except Rejected as rejection:
        return rejection
    except MemoryError:
        return Rejected("out_of_memory", f"{item.key}: reading needs more memory than the worker may take")
    except Exception as exc:  # a reader bug or an exotic input must not stop the build
        return Rejected("parse_error", f"{item.key}: {describe(exc)}")


PARSED_PER_TASK = 256


def parse_partition(jobs: list, seconds: float, memory_mb: int) -> list:
    """``_process`` of each job in a limited process of this Dask worker (time and memory limits as here)."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        raise RuntimeError("the Dask workers run as daemon processes, which may not start the limited parser "
                           "processes: start `dask worker` with DASK_DISTRIBUTED__WORKER__DAEMON=False")
    return list(map_limited(_process, ((job[0].key, job) for job in jobs), seconds=seconds, memory_mb=memory_mb,
                            workers=1))


def _run(jobs: list, *, desc: str, settings: Settings, progress: bool, client: Any = None):
    """(source, record or Rejected) per job, in order; each record is read in a worker with the time and
    memory limits of ``settings``, so one bad file costs at most ``parse_seconds`` and never the build. With a
    ``client``, partitions of ``PARSED_PER_TASK`` records go to the Dask cluster's workers."""
    from tqdm import tqdm

    from explorer.jobs import run

    bar = tqdm(total=len(jobs), desc=f"building {desc}", unit="crystal", disable=not progress, file=sys.stderr,
               mininterval=1.0)
    try:
        if client is None:
            results = map_limited(_process, ((job[0].key, job) for job in jobs), seconds=settings.parse_seconds,
                                  memory_mb=settings.parse_memory_mb, workers=settings.workers)
            for job, result in zip(jobs, results, strict=True):
                bar.update()
                yield job[1], result
            return
        parts: dict[int, list] = {}
        chunks = [jobs[k : k + PARSED_PER_TASK] for k in range(0, len(jobs), PARSED_PER_TASK)]
        run(parse_partition, ((k, len(c), (c, settings.parse_seconds, settings.parse_memory_mb))
                              for k, c in enumerate(chunks)), client=client, on_result=parts.__setitem__,
            on_progress=bar.update)
        results = [result for k in sorted(parts) for result in parts[k]]
        for job, result in zip(jobs, results, strict=True):
            yield job[1], result
    finally:
        bar.close()


def _frame(records: list[dict]) -> pd.DataFrame:
    """Records as a DataFrame with unique ids; property columns of mixed types become text."""
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        from explorer.datasets.records import RECORD_COLUMNS

        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    duplicated = frame["id"].duplicated(keep="first")
    if duplicated.any():
        counts = frame.groupby("id").cumcount() + 1
        frame.loc[duplicated, "id"] = frame.loc[duplicated, "id"] + "~" + counts[duplicated].astype(str)
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if v is not None and v == v}
            if len(kinds) > 1 and list not in kinds:
                frame[column] = [None if v is None or v != v else str(v) for v in frame[column]]
    return frame


def _write(dataset: str, frame: pd.DataFrame, report: DatasetReport, settings: Settings) -> None:
    """The table with its report in its metadata (one atomic rename), then the report's JSON copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = json.dumps(asdict(report), indent=1)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _REPORT_KEY: text.encode()})
    atomic_file(table_path(dataset, settings), lambda tmp: pq.write_table(table, tmp))
    atomic_file(report_path(dataset, settings), lambda tmp: Path(tmp).write_text(text))
