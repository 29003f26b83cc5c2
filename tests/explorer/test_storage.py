"""Crash windows: a killed writer leaves only a temporary that the next start removes, and a table always
comes with the report of its own build."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from explorer.datasets.build import load_report, report_path, table_path
from explorer.datasets.catalog import ingest
from explorer.settings import Settings
from explorer.storage import atomic_file, atomic_folder, clean_stale_temporaries


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_temporaries_of_dead_processes_are_cleaned(tmp_path):
    stale_dir = tmp_path / f".known-abc.{dead_pid()}.x1y2"
    stale_dir.mkdir()
    (stale_dir / "latents.npy").write_bytes(b"half written")
    stale_file = tmp_path / f".known.parquet.{dead_pid()}.q9"
    stale_file.write_bytes(b"half")
    live = tmp_path / f".known.parquet.{os.getpid()}.z7"  # a build of this very process, still writing
    live.write_bytes(b"in progress")
    kept = [tmp_path / "known.parquet", tmp_path / ".gitkeep"]
    for path in kept:
        path.write_bytes(b"ok")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale_dir, stale_file])
    assert live.exists() and all(path.exists() for path in kept)
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_atomic_writes_leave_the_old_version_when_the_writer_fails(tmp_path):
    target = tmp_path / "table.txt"
    target.write_text("old")

    def fail(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise RuntimeError("killed")

    for write in (fail,):
        try:
            atomic_file(target, write)
        except RuntimeError:
            pass
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.txt"]
    folder = tmp_path / "map"
    atomic_folder(folder, lambda tmp: (tmp / "done").write_text("ok"))
    assert (folder / "done").read_text() == "ok"


def test_a_table_carries_its_own_report(tmp_path, monkeypatch):
    from conftest import nacl, silicon
    from pymatgen.io.cif import CifWriter

    folder = tmp_path / "mine"
    folder.mkdir()
    CifWriter(nacl()).write_file(folder / "NaCl.cif")
    CifWriter(silicon()).write_file(folder / "Si.cif")
    settings = Settings(data_dir=tmp_path / "data", shared_data_dir=tmp_path / "none", workers=1)
    report = ingest(folder, name="mine", settings=settings, progress=False)
    # a crash between the table and its JSON copy: the JSON is stale, the table still knows its build
    report_path("mine", settings).write_text(json.dumps({**json.loads(report_path("mine", settings).read_text()),
                                                         "signature": "stale"}))
    assert load_report("mine", settings).signature == report.signature
    assert table_path("mine", settings).exists()
