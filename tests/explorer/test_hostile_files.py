"""Hostile files (tests/data/hostile, manifest in tests/hostile_corpus.py) get one verdict from every entry point:
the one reader in a limited worker, the page's upload and ``data ingest`` of a folder holding all of them.

Rejections name the file and say what is wrong in words (no raw exception names), no file takes the reader
more than 5 s, and a pymatgen JSON that names a module to import never gets it imported.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from hostile_corpus import COMMITTED, EXPECTED, GENERATED, HOSTILE_DIR, MULTI_BLOCK, corpus_files, read_in_worker

from explorer.datasets.build import load_report, load_table
from explorer.datasets.catalog import ingest
from explorer.datasets.records import RawItem, read_file_structure
from explorer.datasets.rejections import REASONS, Limits, Rejected
from explorer.services import views
from explorer.settings import Settings

SECONDS = 5.0
MEMORY_MB = 2048
RAW_PYTHON = ("ZeroDivisionError", "IndexError", "KeyError", "Traceback", "Z=869", "zip() argument", "NoneType")
"""Text of Python's own exceptions that must not reach a user as the explanation of a rejection."""

REJECTED = [name for name, (verdict, _) in EXPECTED.items() if verdict == "rejected"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """File name -> path of every corpus file (the big ones written into a temporary folder)."""
    return {path.name: path for path in corpus_files(tmp_path_factory.mktemp("hostile_generated"))}


@pytest.fixture(scope="module")
def warm_pool() -> None:
    """Start the limited worker pool (the first call of a session starts a forkserver and preloads pymatgen)."""
    from explorer.datasets.sandbox import run_limited

    payload = (HOSTILE_DIR / "srtio3.cif").read_bytes()
    run_limited(read_file_structure, RawItem(key="warm.cif", kind="bytes", payload=payload), Limits(),
                key="warm.cif", seconds=120, memory_mb=MEMORY_MB)


@pytest.fixture(scope="module")
def one_reader(corpus, warm_pool):
    """name -> (verdict, seconds) of ``read_file_structure`` in a limited worker, read once per file:
    verdict ("accepted", formula, fmt, count) or ("rejected", reason, detail)."""
    from explorer.datasets.sandbox import run_limited

    found: dict[str, tuple[tuple, float]] = {}

    def verdict(name: str) -> tuple[tuple, float]:
        if name not in found:
            item = RawItem(key=name, kind="bytes", payload=corpus[name].read_bytes())
            start = time.perf_counter()
            try:
                structure, fmt, count = run_limited(read_file_structure, item, Limits(), key=name, seconds=SECONDS,
                                                    memory_mb=MEMORY_MB)
                result: tuple = ("accepted", structure.composition.reduced_formula, fmt, count)
            except Rejected as rejection:
                result = ("rejected", rejection.reason, rejection.detail)
            found[name] = (result, time.perf_counter() - start)
        return found[name]

    return verdict


@pytest.fixture(scope="module")
def ingested(corpus, warm_pool, tmp_path_factory) -> dict:
    """One ``data ingest`` of a folder holding every corpus file: {"report", "table", "files": file name ->
    [(key, verdict)]} with verdict ("accepted", formula) or ("rejected", reason, detail)."""
    root = tmp_path_factory.mktemp("hostile_ingest")
    folder = root / "corpus"
    folder.mkdir()
    for name, path in corpus.items():
        shutil.copyfile(path, folder / name)
    settings = Settings(data_dir=root / "data", shared_data_dir=root / "no-shared", workers=1,
                        parse_seconds=SECONDS, parse_memory_mb=MEMORY_MB)
    start = time.perf_counter()
    returned = ingest(folder, name="hostile", settings=settings, progress=False)
    seconds = time.perf_counter() - start
    report, table = load_report("hostile", settings), load_table("hostile", settings)
    files: dict[str, list] = {}
    for key, formula in zip(table["source_key"], table["reduced_formula"], strict=True):
        files.setdefault(key.split("#", 1)[0], []).append((key, ("accepted", formula)))
    for rejection in report.rejections:
        key = rejection["id"].removeprefix("hostile:")
        files.setdefault(key.split("#", 1)[0], []).append((key, ("rejected", rejection["reason"],
                                                                 rejection["detail"])))
    return {"report": report, "returned": returned, "table": table, "files": files, "seconds": seconds,
            "folder": folder, "settings": settings}


# ------------------------------------------------------------------------------------------------ the corpus
def test_the_manifest_names_every_corpus_file(corpus):
    committed = sorted(p.name for p in HOSTILE_DIR.iterdir() if p.is_file() and p.name != "make_corpus.py")
    assert committed == sorted(COMMITTED)
    assert len(committed) >= 38
    assert all((HOSTILE_DIR / name).stat().st_size < 20_000 for name in committed)
    assert sorted(corpus) == sorted(EXPECTED) and set(GENERATED) <= set(corpus)
    assert 200_000 < corpus["symmetry_bomb_fm3m_5000_sites.cif"].stat().st_size < 260_000
    assert corpus["p1_10368_atoms.cif"].read_text().count("\nC") == 10_368
    assert all(reason in REASONS for verdict, reason in EXPECTED.values() if verdict == "rejected")


# ---------------------------------------------------------------------------------------------- one reader
@pytest.mark.parametrize("name", list(EXPECTED))
def test_one_reader_verdict(name, one_reader):
    (verdict, value, *rest), seconds = one_reader(name)
    assert (verdict, value) == EXPECTED[name], rest
    assert seconds < SECONDS
    if verdict == "rejected":
        assert rest[0].startswith(f"{name}: ")
    else:
        assert rest[1] == (3 if name in MULTI_BLOCK else 1)


@pytest.mark.parametrize("name", REJECTED)
def test_rejections_say_what_is_wrong_in_words(name, one_reader, ingested):
    (verdict, _, *rest), _ = one_reader(name)
    assert verdict == "rejected"
    details = [rest[0]] + [entry[2] for _, entry in ingested["files"][name] if entry[0] == "rejected"]
    for detail in details:
        assert detail.startswith(name) and len(detail) > len(name) + 10
        assert not [raw for raw in RAW_PYTHON if raw in detail], detail


def test_bombs_are_refused_by_the_precheck_before_expansion(one_reader):
    for name in ("fm3m_120_general_sites.cif", "symmetry_bomb_fm3m_5000_sites.cif"):
        (_, reason, detail), _ = one_reader(name)
        assert reason == "too_many_atoms" and "192 symmetry operations give at least" in detail, detail


def test_a_module_named_in_json_is_never_imported(warm_pool):
    name = "module_this_in_properties.json"
    assert "this" not in sys.modules, "the test process imported 'this' before: this test would prove nothing"
    structure, fmt, count = read_file_structure(RawItem(key=name, kind="bytes",
                                                        payload=(HOSTILE_DIR / name).read_bytes()), Limits())
    assert (structure.composition.reduced_formula, fmt, count) == ("NaCl", "json", 1)
    assert "this" not in sys.modules
    from explorer.datasets.sandbox import run_limited

    payload = (HOSTILE_DIR / name).read_bytes()
    assert run_limited(read_in_worker, RawItem(key=name, kind="bytes", payload=payload), Limits(), key=name,
                       seconds=SECONDS, memory_mb=MEMORY_MB) == ("NaCl", False)


# -------------------------------------------------------------------------------------------------- upload
@pytest.mark.parametrize("name", list(EXPECTED))
def test_upload_gives_the_same_verdict(name, corpus, tiny_settings, warm_pool):
    verdict, value = EXPECTED[name]
    content = corpus[name].read_bytes()
    assert len(content) < tiny_settings.max_upload_mb * 1e6
    if verdict == "rejected":
        with pytest.raises(ValueError) as info:
            views.upload_view("tiny", content, name, tiny_settings)
        message = str(info.value)
        assert name in message and REASONS[value] in message, message
        assert not [raw for raw in ("Traceback", "Error:") if raw in message], message
    else:
        view = views.upload_view("tiny", content, name, tiny_settings)
        assert (view["kind"], view["formula"], view["id"]) == ("upload", value, f"upload:{name}")
        assert ("holds 3 structures" in view["note"]) == (name in MULTI_BLOCK)


# -------------------------------------------------------------------------------------------------- ingest
def test_ingest_of_the_whole_corpus_finishes_and_counts_every_file(ingested):
    report, table = ingested["report"], ingested["table"]
    assert report == ingested["returned"]
    (source,) = report.sources
    assert source.read == source.kept + sum(source.rejected.values())
    assert source.kept == len(table)
    assert sorted(ingested["files"]) == sorted(EXPECTED)
    assert all(r["message"] == REASONS[r["reason"]] for r in report.rejections)
    for name, blocks in MULTI_BLOCK.items():
        found = dict(ingested["files"][name])
        assert found == {f"{name}#{block}": ("accepted", formula) for block, formula in blocks.items()}
    assert ingested["seconds"] < 60


@pytest.mark.parametrize("name", list(EXPECTED))
def test_ingest_gives_the_same_verdict(name, ingested, one_reader):
    entries = dict(ingested["files"][name])
    if name in MULTI_BLOCK:  # every block is a record; the one reader (and the upload) read the first
        assert {k: v[:2] for k, v in entries.items()} == {f"{name}#{block}": ("accepted", formula)
                                                          for block, formula in MULTI_BLOCK[name].items()}
        key = f"{name}#{next(iter(MULTI_BLOCK[name]))}"
    else:
        assert len(entries) == 1, entries
        (key,) = entries
        assert key in (name, f"{name}#0")  # a JSON or XYZ file is read as a list of structures: its first is #0
    verdict = entries[key]
    assert verdict[:2] == EXPECTED[name], verdict
    if verdict[0] == "rejected":
        assert verdict[2].startswith(f"{key}: ")
    one, _ = one_reader(name)
    assert one[:2] == verdict[:2]


def test_data_check_gives_the_verdict_of_ingest_for_every_record(ingested, capsys, monkeypatch):
    from explorer.cli import main
    from explorer.datasets.catalog import check

    verdicts = {v["id"]: v for v in check(ingested["folder"], settings=ingested["settings"])}
    expected = {key: verdict for pairs in ingested["files"].values() for key, verdict in pairs}
    assert sorted(verdicts) == sorted(expected)
    for key, verdict in expected.items():
        if verdict[0] == "accepted":
            assert verdicts[key]["ok"] and verdicts[key]["formula"] == verdict[1], key
        else:
            assert not verdicts[key]["ok"] and verdicts[key]["reason"] == verdict[1], key
            assert verdicts[key]["detail"] == verdict[2] and verdicts[key]["message"] == REASONS[verdict[1]]
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(ingested["settings"].data_dir))
    assert main(["data", "check", str(ingested["folder"] / "srtio3.cif")]) == 0
    assert "SrTiO3 (5 sites)" in capsys.readouterr().out
    assert main(["data", "check", str(ingested["folder"] / "element_Xx.cif"), "--json"]) == 1
    (only,) = json.loads(capsys.readouterr().out)
    assert only["reason"] == "unsupported_element" and only["id"] == "element_Xx.cif"
