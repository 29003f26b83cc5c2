"""``python app.py`` as ``make run`` starts it: gunicorn, a warm process per worker, one of them running the checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from explorer import serving
from explorer.services import materials
from explorer.storage import exclusive
from explorer.ui import ids

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _callback(url: str, output_part: str, values: dict, changed: str) -> dict:
    """POST the callback whose output names ``output_part`` as the page would, valued from ``values``
    ({"id.property": value}, None for the others); its JSON answer."""
    with urllib.request.urlopen(f"{url}/_dash-dependencies", timeout=30) as answer:
        spec = next(d for d in json.loads(answer.read()) if output_part in d["output"])

    def valued(items: list[dict]) -> list[dict]:
        return [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in items]

    names = spec["output"].strip(".").split("...") if spec["output"].startswith("..") else [spec["output"]]
    outputs = [{"id": n.rsplit(".", 1)[0], "property": n.rsplit(".", 1)[1].split("@")[0]} for n in names]
    body = {"output": spec["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": valued(spec["inputs"]), "state": valued(spec["state"]), "changedPropIds": [changed]}
    request = urllib.request.Request(f"{url}/_dash-update-component", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())["response"]


def test_worker_counts_and_threads():
    cores = os.cpu_count() or 1
    assert serving.auto_workers(3) == 3
    assert serving.auto_workers(0) == max(1, min(cores, serving.MAX_AUTO_WORKERS))
    assert serving.auto_decode_workers(3, processes=2) == 3  # as set
    # 0: the cores shared out among the processes, one thread at least, at most MAX_AUTO_DECODE_WORKERS each
    assert serving.auto_decode_workers(0, processes=cores) == 1
    assert serving.auto_decode_workers(0, processes=cores + 1) == 1
    assert serving.auto_decode_workers(0) == max(1, min(cores, serving.MAX_AUTO_DECODE_WORKERS))


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn runs on Unix")
def test_gunicorn_processes_share_the_cores_out_for_their_decodes(tiny_settings, monkeypatch):
    """Each of gunicorn's processes gets its share of the cores as decode threads (four model threads on 2 cores,
    two per process, were about a sixth slower under load than one per process)."""
    served = {}
    monkeypatch.setattr(serving, "_serve_gunicorn", lambda base, settings, **kw: served.update(settings=settings, **kw))
    serving.serve(tiny_settings, host="127.0.0.1", port=0, threads=4, workers=2, dev=False)
    assert served["workers"] == 2
    assert served["settings"].decode_workers == serving.auto_decode_workers(0, processes=2) >= 1
    assert tiny_settings.decode_workers == 0  # the caller's settings are left as they were
    served.clear()
    serving.serve(tiny_settings.model_copy(update={"decode_workers": 3}), host="127.0.0.1", port=0, threads=4,
                  workers=2, dev=False)
    assert served["settings"].decode_workers == 3  # a count that was set is kept


def test_a_server_process_computes_on_one_thread_per_thread():
    """After ``server_threads`` a thread started later runs torch on one thread and BLAS on one (each thread that ran
    torch's parallel ops on more would keep a team of its own, and two teams made every decode 2.3x slower)."""
    code = ("import threading, torch; from threadpoolctl import threadpool_info; from explorer import serving; "
            "serving.server_threads(); seen = []; "
            "t = threading.Thread(target=lambda: seen.append(torch.get_num_threads())); t.start(); t.join(); "
            "print(torch.get_num_threads(), seen[0], sorted({i['num_threads'] for i in threadpool_info() "
            "if i['user_api'] == 'blas'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1", "[1]"]


def test_one_process_holds_the_lock_of_a_job(tmp_path):
    held = exclusive(tmp_path / "locks" / "job.lock")
    assert held is not None
    code = f"from pathlib import Path; from explorer.storage import exclusive; " \
           f"print(exclusive(Path({str(tmp_path / 'locks' / 'job.lock')!r})) is None)"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "True", other.stderr  # another process must leave the job
    held.close()
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "False", again.stderr  # and takes it once the lock is free


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn runs on Unix")
def test_python_app_py_serves_from_warm_processes(tiny_settings):
    """Two worker processes under gunicorn: the page says "ready" once both are warm (each has marked itself), then
    says it whichever process answers; a decode works, and a stop ends every process."""
    materials.map_points("tiny", None, tiny_settings)  # the map on disk, as `make run` finds it after a build
    port = _free_port()
    env = {**os.environ, "EXPLORER_DATA_DIR": str(tiny_settings.data_dir),
           "EXPLORER_SHARED_DATA_DIR": str(tiny_settings.shared_data_dir),
           "EXPLORER_CHECKPOINT": str(tiny_settings.checkpoint), "EXPLORER_UMAP_N_NEIGHBORS": "5",
           "EXPLORER_BACKGROUND_CHECKS_MAX": "0", "EXPLORER_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "app.py", "--workers", "2", "--threads", "8"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(url, timeout=60) as page:
                    assert page.status == 200
                break
            except OSError:  # not listening yet
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        workers = psutil.Process(process.pid).children()
        assert len(workers) == 2

        def status() -> str:
            return _callback(url, "ready-status.children", {f"{ids.READY_TIMER}.n_intervals": 1},
                             f"{ids.READY_TIMER}.n_intervals")["ready-status"]["children"]

        while not status().startswith("ready"):
            assert time.monotonic() < deadline, "the page never said ready"
            time.sleep(0.5)
        marks = tiny_settings.cache_dir / "server-processes"
        assert sorted(m.name for m in marks.iterdir()) == sorted(f"{process.pid}.{w.pid}" for w in workers)
        assert all(status().startswith("ready") for _ in range(4))  # whichever process answers, all are warm
        points = materials.map_points("tiny", None, tiny_settings)
        click = {"points": [{"x": max(points["x"]) + 1.0, "y": max(points["y"]) + 1.0}]}
        view = _callback(url, "store-current.data", {f"{ids.MAP}.clickData": click, f"{ids.DATASET}.value": "tiny",
                                                     f"{ids.MAP_KIND}.value": "crystals"}, f"{ids.MAP}.clickData")
        assert view["store-current"]["data"]["kind"] == "hypothetical"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert "gunicorn, 2 processes" in output, output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
