"""Building tables: bad records are reported by id and reason, the rest is kept, nothing is lost."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import graphite, nacl, silicon
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from explorer.cli import main
from explorer.datasets.build import load_table, table_path
from explorer.datasets.catalog import build_all, datasets, ingest, reports
from explorer.settings import PROJECT_ROOT, Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", shared_data_dir=tmp_path / "no-shared", workers=1)


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Three good structures and five bad files, as a user might have them."""
    folder = tmp_path / "messy"
    folder.mkdir()
    CifWriter(nacl()).write_file(folder / "NaCl.cif")
    Poscar(silicon()).write_file(folder / "Si.vasp")
    CifWriter(graphite()).write_file(folder / "graphite.cif")
    (folder / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\nloop_\n_atom_site_label\n")
    (folder / "empty.cif").write_text("")
    (folder / "photo.cif").write_bytes(bytes(range(256)) * 4)
    (folder / "nan.vasp").write_text("NaN\n1.0\n4 0 0\n0 4 0\n0 0 4\nNa Cl\n1 1\nDirect\n0 0 0\nnan 0.5 0.5\n")
    grid = np.stack(np.meshgrid(*[np.arange(n) / n for n in (10, 10, 100)], indexing="ij"), -1).reshape(-1, 3)
    lines = ["huge", "1.0", "40 0 0", "0 40 0", "0 0 400", "C", str(len(grid)), "Direct"]
    (folder / "huge.vasp").write_text("\n".join(lines + [f"{x:.4f} {y:.4f} {z:.4f}" for x, y, z in grid]) + "\n")
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_bad_files_are_reported_and_the_rest_is_kept(messy_folder, settings):
    before = digest(messy_folder)
    report = ingest(messy_folder, name="messy", settings=settings, progress=False)
    source = report.sources[0]
    assert (source.name, source.origin, source.read, source.kept) == ("messy", "user", 8, 3)
    assert source.rejected == {"parse_error": 1, "empty": 1, "binary_file": 1, "non_finite": 1, "too_many_atoms": 1}
    assert source.read == source.kept + sum(source.rejected.values())
    by_id = {r["id"]: r for r in report.rejections}
    assert by_id["messy:broken.cif"]["reason"] == "parse_error"
    assert by_id["messy:empty.cif"]["detail"] == "empty.cif: the file is empty"
    assert by_id["messy:photo.cif"]["reason"] == "binary_file"
    assert by_id["messy:nan.vasp"]["reason"] == "non_finite"
    assert by_id["messy:huge.vasp"]["detail"] == "huge.vasp: 10000 sites > max_sites=500"
    assert all(r["message"] for r in report.rejections)
    assert sorted(load_table("messy", settings)["source_key"]) == ["NaCl.cif", "Si.vasp", "graphite.cif"]
    assert digest(messy_folder) == before  # the user's files are only read


def test_second_build_reuses_the_table_and_a_change_rebuilds_it(messy_folder, settings):
    ingest(messy_folder, name="messy", settings=settings, progress=False)
    path = table_path("messy", settings)
    first = path.stat().st_mtime_ns
    assert "messy" in datasets(settings)
    build_all(settings, names=["messy"], progress=False)
    assert path.stat().st_mtime_ns == first
    Poscar(nacl()).write_file(messy_folder / "POSCAR_NaCl")
    (report,) = build_all(settings, names=["messy"], progress=False)
    assert report.sources[0].kept == 4 and path.stat().st_mtime_ns != first


def test_ingest_refuses_bad_names_and_missing_paths(tmp_path, settings):
    with pytest.raises(ValueError, match="'known' is taken"):
        ingest(tmp_path, name="known", settings=settings)
    with pytest.raises(ValueError, match="dataset name 'a b/c'"):
        ingest(tmp_path, name="a b/c", settings=settings)
    with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
        ingest(tmp_path / "nowhere", name="x", settings=settings)
    with pytest.raises(ValueError, match=r"unknown dataset\(s\) \['nope'\]"):
        build_all(settings, names=["nope"])


def test_cli_info_json_and_errors(messy_folder, settings, monkeypatch, capsys):
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("EXPLORER_SHARED_DATA_DIR", str(settings.shared_data_dir))
    monkeypatch.setenv("EXPLORER_WORKERS", "1")
    assert main(["data", "ingest", str(messy_folder), "--name", "messy"]) == 0
    capsys.readouterr()
    assert main(["data", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sources"] == [{"name": "messy", "origin": "user", "dataset": "messy", "read": 8, "kept": 3,
                                "rejected": {"parse_error": 1, "empty": 1, "binary_file": 1, "non_finite": 1,
                                             "too_many_atoms": 1}}]
    assert main(["data", "info"]) == 0
    text = capsys.readouterr().out
    assert "messy" in text and "too_many_atoms" in text and "3 structures kept" in text
    assert main(["data", "info", "--rejections", "messy"]) == 0
    assert "messy:huge.vasp\ttoo_many_atoms" in capsys.readouterr().out
    assert main(["data", "ingest", str(messy_folder / "missing"), "--name", "m2"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_shared_data_sets_are_marked_as_shared(tmp_path):
    """A CDVAE-style folder in shared/ becomes its own dataset with origin 'shared'."""
    import pandas as pd

    shared = tmp_path / "shared"
    (shared / "tiny_set").mkdir(parents=True)
    frame = pd.DataFrame({"material_id": ["a", "b"], "cif": [str(CifWriter(nacl())), str(CifWriter(silicon()))]})
    frame.to_csv(shared / "tiny_set" / "train.csv.gz", index=False, compression="gzip")
    frame.iloc[:1].to_csv(shared / "tiny_set" / "val.csv.gz", index=False, compression="gzip")
    settings = Settings(data_dir=tmp_path / "data", shared_data_dir=shared, workers=1)
    (report,) = build_all(settings, names=["tiny_set"], progress=False)
    assert (report.sources[0].origin, report.sources[0].read, report.sources[0].kept) == ("shared", 3, 3)
    table = load_table("tiny_set", settings)
    assert sorted(table["split"]) == ["train", "train", "val"]
    assert [r.dataset for r in reports(settings)] == ["tiny_set"]


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "explorer", "data", "--help"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, check=False)
    assert result.returncode == 0 and "ingest" in result.stdout
