"""Jobs on Dask (``explorer.jobs``): the same results in this process, on a ``LocalCluster`` and on a cluster of
real ``dask scheduler`` / ``dask worker`` processes on loopback; a killed worker loses no partition and duplicates
none; ``generate`` and ``build`` through ``--workers`` / ``--scheduler``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer import generate as gen
from explorer.cli import main
from explorer.jobs import PartStore, Where, client_for, run

ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).parent / "dask"


def _square_sum(values: list[int]) -> int:
    return sum(v * v for v in values)


def _fails(value: int) -> int:
    raise ValueError(f"partition {value} is broken")


def test_where_refuses_both_places_and_values_that_are_not_addresses():
    assert Where().in_process and Where().describe() == "this process"
    assert "2 worker" in Where(workers=2).describe()
    for bad in ({"workers": 0}, {"workers": True}, {"workers": 2, "scheduler": "tcp://127.0.0.1:8786"},
                {"scheduler": "../../etc/passwd"}, {"scheduler": "tcp://host:1; rm -rf /"}):
        with pytest.raises(ValueError):
            Where(**bad)
    assert Where(scheduler="tcp://127.0.0.1:8786").scheduler


def test_a_part_store_writes_each_partition_once_and_reads_them_in_order(tmp_path):
    store = PartStore(tmp_path / "parts")
    assert store.done() == set() and store.read(columns=["id"]).empty
    store.write(2, pd.DataFrame({"id": ["c"]}))
    store.write(0, pd.DataFrame({"id": ["a", "b"]}))
    store.write(2, pd.DataFrame({"id": ["c"]}))  # written again by a recomputed partition: replaced, not doubled
    (tmp_path / "parts" / "notes.txt").write_text("not a partition")
    assert store.done() == {0, 2}
    assert store.read()["id"].tolist() == ["a", "b", "c"]
    assert store.read(ids={"c", "a", "z"})["id"].tolist() == ["a", "c"]
    assert store.read(columns=["id"], ids=set()).empty
    with pytest.raises(ValueError, match="id"):
        store.read(columns=["valid"], ids={"a"})


def test_a_job_gives_the_same_results_here_and_on_a_local_cluster_and_reports_a_failure():
    partitions = [(k, len(v), (v,)) for k, v in enumerate([[1, 2], [3], [4, 5, 6], [7]])]
    here, there, counted = {}, {}, []
    run(_square_sum, partitions, client=None, on_result=here.__setitem__)
    with client_for(Where(workers=2)) as client:
        run(_square_sum, iter(partitions), client=client, on_result=there.__setitem__, on_progress=counted.append,
            in_flight=2)
        with pytest.raises(ValueError, match="partition 3 is broken"):
            run(_fails, [(0, 1, (3,))], client=client, on_result=lambda k, r: None)
    assert here == there == {0: 5, 1: 9, 2: 77, 3: 49} and sorted(counted) == [1, 1, 2, 3]


@pytest.fixture()
def small_partitions(monkeypatch):
    """Partitions of 8 latents, so that a small run has several."""
    monkeypatch.setattr(gen, "PARTITION", 8)


def _rows(folder: Path) -> pd.DataFrame:
    return PartStore(folder / "crystals").read().sort_values("id", ignore_index=True)


def test_generate_on_a_local_cluster_gives_the_crystals_of_the_in_process_run(tiny_settings, tmp_path,
                                                                             small_partitions):
    here = gen.generate("tiny", tiny_settings, n=30, seed=5, physics=False, out=tmp_path / "here")
    there = gen.generate("tiny", tiny_settings, n=30, seed=5, physics=False, out=tmp_path / "there",
                         where=Where(workers=2))
    assert there["workers"] == 2 and here["workers"] == 1
    assert {k: here[k] for k in gen.SUMMARY_KEYS} == {k: there[k] for k in gen.SUMMARY_KEYS}
    a, b = _rows(tmp_path / "here"), _rows(tmp_path / "there")
    assert len(a) == 30 and a["id"].is_unique and PartStore(tmp_path / "here" / "crystals").done() == {0, 1, 2, 3}
    assert np.abs(np.stack(a["latent"]) - np.stack(b["latent"])).max() <= 1e-6
    for column in ("lattice", "frac_coords"):
        pairs = zip(a[column], b[column], strict=True)
        assert max(np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in pairs) <= 1e-5
    assert a["numbers"].map(list).tolist() == b["numbers"].map(list).tolist()
    # another run in that folder is refused (a stopped run goes on: test_a_stopped_run_goes_on_from_...)
    with pytest.raises(ValueError, match="another generate run.*seed"):
        gen.generate("tiny", tiny_settings, n=30, seed=6, physics=False, out=tmp_path / "here")


def test_a_stopped_run_goes_on_from_the_partitions_it_wrote(tiny_settings, tmp_path, small_partitions):
    def stop(stage: str, done: int, total: int) -> None:
        if stage == "decoded" and done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gen.generate("tiny", tiny_settings, n=40, seed=9, physics=False, out=tmp_path / "run", on_progress=stop)
    assert PartStore(tmp_path / "run" / "crystals").done() == {0, 1}
    decoded: list[int] = []
    summary = gen.generate("tiny", tiny_settings, n=40, seed=9, physics=False, out=tmp_path / "run",
                           on_progress=lambda stage, done, total: decoded.append(done) if stage == "decoded" else None)
    assert decoded[0] == 16 and decoded[-1] == 40  # the first two partitions were not decoded again
    whole = gen.generate("tiny", tiny_settings, n=40, seed=9, physics=False, out=tmp_path / "whole")
    assert {k: summary[k] for k in gen.SUMMARY_KEYS} == {k: whole[k] for k in gen.SUMMARY_KEYS}
    assert _rows(tmp_path / "run")["id"].tolist() == _rows(tmp_path / "whole")["id"].tolist()


def test_generate_from_python(tiny_settings, tmp_path):
    from explorer.api import Explorer

    summary, rows = Explorer("tiny", settings=tiny_settings).generate(12, out=tmp_path / "api", seed=4,
                                                                     physics=False)
    assert summary["n"] == len(rows) == 12 and rows["unique"].sum() == summary["unique"]
    assert {"id", "formula", "valid", "duplicate_of", "origin"} <= set(rows.columns)


def test_duplicates_are_found_within_a_fingerprint_bucket():
    from conftest import nacl, silicon

    rows = []
    for k, structure in enumerate([nacl(), silicon(), nacl().get_primitive_structure(), nacl() * (1, 1, 2)]):
        formula, number, primitive = gen.fingerprint(structure, 0.1)
        rows.append({"id": f"gen-{k}", "formula": formula, "spacegroup_number": number, "primitive_atoms": primitive,
                     "lattice": structure.lattice.matrix.ravel().tolist(),
                     "numbers": [s.specie.Z for s in structure], "frac_coords": structure.frac_coords.ravel().tolist()})
    assert gen.fingerprint(nacl(), 0.1) == ("NaCl", 225, 2)
    assert gen.match_buckets(pd.DataFrame(rows)) == [("gen-2", "gen-0"), ("gen-3", "gen-0")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}  # the README's advice: workers that may parse files
    return subprocess.Popen([str(DASK), *args], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture()
def loopback_cluster(tmp_path):
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1: (address, worker processes)."""
    from dask.distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                    tmp_path / "scheduler.log")]
    try:
        workers = [_start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                           "--name", f"w{k}"], tmp_path / f"worker{k}.log") for k in range(2)]
        procs += workers
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_generate_and_build_through_a_scheduler_and_a_killed_worker_loses_nothing(
        tiny_settings, tmp_path, loopback_cluster, small_partitions, monkeypatch, capsys):
    address, workers = loopback_cluster
    monkeypatch.setattr("explorer.cli.Settings", lambda: tiny_settings)
    # `data ingest` and `build` of a new dataset through the scheduler: its records parsed (in limited processes)
    # and its map's latents encoded by the workers
    from conftest import graphite, nacl, silicon, srtio3

    from explorer.atlas import encode_partition, get_atlas
    from explorer.datasets.build import load_table
    from explorer.services.export import structure_to_bytes

    (tmp_path / "cifs").mkdir()
    for k, crystal in enumerate([nacl(), silicon(), srtio3(), graphite()]):
        (tmp_path / "cifs" / f"{k}.cif").write_bytes(structure_to_bytes(crystal, fmt="cif"))
    (tmp_path / "cifs" / "broken.cif").write_text("data_broken\n_cell_length_a 4\nloop_\n_atom_site_label\n")
    assert main(["data", "ingest", str(tmp_path / "cifs"), "--name", "tiny-dask", "--scheduler", address]) == 0
    assert load_table("tiny-dask", tiny_settings)["reduced_formula"].tolist() == ["NaCl", "Si", "SrTiO3", "C"]
    assert main(["build", "--dataset", "tiny-dask", "--skip-motifs", "--scheduler", address]) == 0
    printed = capsys.readouterr().out
    assert f"run on the Dask cluster at {address}" in printed and "tiny-dask: 4 materials on the map" in printed
    the_map, table = get_atlas("tiny-dask", tiny_settings), load_table("tiny-dask", tiny_settings)
    assert the_map.ids == table["id"].tolist()
    assert np.abs(the_map.latents - encode_partition(table, tiny_settings)).max() <= 1e-6
    # kill one worker once the first partition is back: its partition is computed again, and written once
    killed: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "decoded" and done and not killed:
            os.killpg(workers[0].pid, signal.SIGKILL)
            killed.append(done)

    out = tmp_path / "run"
    summary = gen.generate("tiny", tiny_settings, n=48, seed=2, physics=False, out=out,
                           where=Where(scheduler=address), on_progress=progress)
    assert killed and workers[0].wait(timeout=10) is not None
    rows = _rows(out)
    assert rows["id"].tolist() == [f"gen-{k:05d}" for k in range(48)] and summary["n"] == 48
    reference = gen.generate("tiny", tiny_settings, n=48, seed=2, physics=False, out=tmp_path / "here")
    assert {k: summary[k] for k in gen.SUMMARY_KEYS} == {k: reference[k] for k in gen.SUMMARY_KEYS}
    assert np.abs(np.stack(rows["latent"]) - np.stack(_rows(tmp_path / "here")["latent"])).max() <= 1e-6
    # the CLI through the surviving worker, and the candidates it writes read back as a dataset
    assert main(["generate", "--dataset", "tiny", "--n", "16", "--skip-physics", "--no-search",
                 "--scheduler", address, "--out", str(tmp_path / "cli")]) == 0
    written = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert written["where"] == f"the Dask cluster at {address}" and written["n"] == 16 and not written["search"]
    candidates = pd.read_csv(tmp_path / "cli" / "candidates.csv")
    assert len(candidates) == written["kept"] == written["unique"]
    assert len(list((tmp_path / "cli" / "cif").glob("gen-*.cif"))) == written["kept"]
    assert main(["data", "ingest", str(tmp_path / "cli" / "candidates.csv"), "--name", "tiny-generated"]) == 0
    assert len(load_table("tiny-generated", tiny_settings)) == written["kept"]


def test_an_unreachable_scheduler_is_a_clear_error(tiny_settings, tmp_path, monkeypatch, capsys):
    import dask

    monkeypatch.setattr("explorer.cli.Settings", lambda: tiny_settings)
    start = time.perf_counter()
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(["generate", "--dataset", "tiny", "--n", "4", "--scheduler",
                     f"tcp://127.0.0.1:{_free_port()}", "--out", str(tmp_path / "x")])
    assert code == 2 and "could not reach the Dask scheduler" in capsys.readouterr().err
    assert time.perf_counter() - start < 30
    assert main(["generate", "--dataset", "tiny", "--n", "4", "--workers", "0", "--out", str(tmp_path / "y")]) == 2
    assert "--workers must be" in capsys.readouterr().err
