"""Server time of the app's callbacks and its start-up time, with the committed checkpoint.

    .venv/bin/python bench/app.py [--dataset known] [--runs 50] [--skip-start]

1. Callbacks, through Dash's own HTTP endpoint (``POST /_dash-update-component`` with the payloads the
   browser sends, on Flask's test client: routing, JSON and figure patches included, network not):
   - click on a known point: ``on_map_click`` (the view) + ``show`` (info panel, viewer payload) +
     ``overlays`` (the marker on the map), one after the other;
   - decode empty space: the same chain for a map point away from the known ones;
   - 10-step interpolation: ``run`` (decode + place the frames) + ``on_frame`` (first frame) + ``show`` +
     ``overlays`` (the path on the map).
   Each is run ``--runs`` times on different points / pairs after one warm-up; p50 and p95 in ms.
   Targets (2 CPU cores): click < 150 ms, decode < 200 ms, 10-step interpolation < 1 s.
2. Start-up, in fresh processes, timed until the server answers the page and the map callback:
   - warm: ``make run`` with the tables and the map already built (the second ``make run``; target < 15 s),
     then the time until the page says "ready" and the first decode of empty space after it (goal <= 1 s);
   - cold: an empty map cache (a scratch data folder holding links to the built tables):
     ``python -m explorer build --dataset D`` then ``python app.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))


def percentiles(times_ms: list[float]) -> str:
    ordered = sorted(times_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ordered)})"


class DashClient:
    """Calls the app's callbacks as the browser does: POST /_dash-update-component."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.server.test_client()
        self.client.get("/")  # first request: Dash finalises its routes and callback list

    @staticmethod
    def _outputs(key: str) -> list[str]:
        """'id.property' of each output of a callback_map key (duplicate-output '@hash' suffixes removed)."""
        parts = key.strip(".").split("...") if key.startswith("..") else [key]
        return [p.split("@")[0] for p in parts]

    def _entry(self, outputs: list[str]) -> tuple[str, dict]:
        """The callback with exactly ``outputs``, else the one with fewest outputs that has them all (a callback
        that gains an output does not break the bench)."""
        having = [(len(self._outputs(key)), key) for key in self.app.callback_map
                  if set(outputs) <= set(self._outputs(key))]
        if not having:
            raise KeyError(f"no callback with outputs {outputs}")
        key = min(having)[1]
        return key, self.app.callback_map[key]

    def call(self, outputs: list[str], values: dict, changed: list[str]) -> dict:
        """Response {id: {property: value}} of the callback with ``outputs`` ('id.property'), given
        every input and state value by 'id.property'."""
        key, entry = self._entry(outputs)

        def spec(items):
            return [{"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
                    for i in items]

        out_specs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in self._outputs(key)]
        body = {"output": key, "outputs": out_specs if key.startswith("..") else out_specs[0],
                "inputs": spec(entry["inputs"]), "state": spec(entry["state"]), "changedPropIds": changed}
        response = self.client.post("/_dash-update-component", json=body)
        if response.status_code != 200:  # 204 too: the callback declined, so nothing was measured
            raise RuntimeError(f"{outputs}: HTTP {response.status_code}: {response.get_data(as_text=True)[:500]}")
        return json.loads(response.get_data())["response"]


def bench_callbacks(dataset: str, runs: int, *, server_threads: bool = True) -> None:
    import numpy as np

    from explorer import atlas as atlas_module
    from explorer.settings import Settings
    from explorer.ui import ids
    from explorer.ui.factory import make_app

    settings = Settings()
    if server_threads:  # as a server process runs (``python app.py``): its threads and compiled kernel
        from explorer.serving import server_process

        server_process(settings)
    start = time.perf_counter()
    atlas = atlas_module.build_atlas(dataset, settings, progress=True)
    print(f"map of {dataset}: {len(atlas.ids)} materials, loaded or built in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    client = DashClient(make_app(settings))
    for thread in threading.enumerate():  # the app warms every built map in the background, as when serving
        if thread.name == "atlas-warm":
            thread.join()
    atlas.warm()
    print(f"app created and maps warmed (UMAP transform compiled) in {time.perf_counter() - start:.1f} s\n")
    base = {f"{ids.DATASET}.value": dataset, f"{ids.SEARCH}.value": "", f"{ids.INTERP_STEPS}.value": 10,
            f"{ids.INTERP_METHOD}.value": "slerp", f"{ids.INTERP_FRAME}.value": 0}
    current_key, path_key = f"{ids.STORE_CURRENT}.data", f"{ids.STORE_PATH}.data"

    def show_and_mark(view: dict) -> None:
        client.call([f"{ids.STRUCTURE_INFO}.children", f"{ids.STORE_VIEWER}.data"], {current_key: view}, [current_key])
        client.call([f"{ids.MAP}.figure", f"{ids.SEARCH_STATUS}.children"], {**base, current_key: view}, [current_key])

    def click(point: dict) -> dict:
        values = {**base, f"{ids.MAP}.clickData": {"points": [point]}}
        view = client.call([current_key], values, [f"{ids.MAP}.clickData"])[ids.STORE_CURRENT]["data"]
        show_and_mark(view)
        return view

    rng = np.random.default_rng(0)
    picks = rng.choice(len(atlas.ids), size=runs + 1, replace=False)
    known = [{"x": float(atlas.xy[k, 0]), "y": float(atlas.xy[k, 1]), "customdata": atlas.ids[k]} for k in picks]
    low, high = atlas.xy.min(axis=0), atlas.xy.max(axis=0)
    empty = [{"x": float(x), "y": float(y)} for x, y in low + rng.random((runs + 1, 2)) * (high - low)]

    results = {}
    for label, points in (("click on a known point", known), ("decode empty space", empty)):
        click(points[0])
        times = []
        for point in points[1:]:
            t0 = time.perf_counter()
            view = click(point)
            times.append(1000 * (time.perf_counter() - t0))
            assert view["kind"] == ("known" if "customdata" in point else "hypothetical"), view["kind"]
        results[label] = times

    views = [client.call([current_key], {**base, f"{ids.MAP}.clickData": {"points": [p]}},
                         [f"{ids.MAP}.clickData"])[ids.STORE_CURRENT]["data"] for p in known]
    run_outputs = [path_key, f"{ids.INTERP_STATUS}.children", f"{ids.INTERP_FRAME}.max", f"{ids.INTERP_FRAME}.value",
                   f"{ids.INTERP_FRAME}.disabled", f"{ids.STORE_LINK_FRAME}.data"]

    def interpolate(a: dict, b: dict) -> int:
        values = {**base, f"{ids.STORE_ENDPOINTS}.data": {"a": a, "b": b}}
        path = client.call(run_outputs, values, [f"{ids.INTERP_RUN}.n_clicks"])[ids.STORE_PATH]["data"]
        frame_values = {**base, path_key: path}
        out = client.call([f"{current_key}", f"{ids.INTERP_STRIP}.children"], frame_values, [path_key])
        show_and_mark(out[ids.STORE_CURRENT]["data"])
        client.call([f"{ids.MAP}.figure", f"{ids.SEARCH_STATUS}.children"], frame_values, [path_key])
        return len(path["frames"])

    interpolate(views[0], views[1])
    times = []
    for k in range(runs):
        t0 = time.perf_counter()
        n_frames = interpolate(views[k], views[(k + 1) % len(views)])
        times.append(1000 * (time.perf_counter() - t0))
        assert n_frames == 10, n_frames
    results["10-step interpolation"] = times

    targets = {"click on a known point": 150, "decode empty space": 200, "10-step interpolation": 1000}
    print(f"callback server time on {dataset} ({len(atlas.ids)} materials), torch threads {_threads()} in the main "
          f"thread{'' if server_threads else ' (--process-threads: not as a server process runs)'}:")
    for label, times in results.items():
        verdict = "met" if statistics.median(times) < targets[label] else "NOT met"
        print(f"  {label:<24} {percentiles(times)}   target p50 < {targets[label]} ms: {verdict}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(process: subprocess.Popen, port: int, dataset: str, timeout: float) -> float:
    """Seconds until the page answers and the map callback returns the figure of ``dataset``."""
    from load import dash_body

    start = time.perf_counter()
    url = f"http://127.0.0.1:{port}"
    output = "..map.figure...color-legend.children...map-status.children...map-build-row.style.."
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            body = json.dumps(dash_body(url, output, {"dataset.value": dataset, "map-kind.value": "crystals",
                                                      "color-by.value": "source"}, "dataset.value")).encode()
            request = urllib.request.Request(f"{url}/_dash-update-component", data=body,
                                             headers={"Content-Type": "application/json"})
            answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
            status = answer["response"]["map-status"]["children"]
            if "materials" in str(status):
                return time.perf_counter() - start
            raise RuntimeError(f"the map is not ready: {status}")
        except (OSError, ConnectionError):
            time.sleep(0.2)
    raise TimeoutError(f"no map after {timeout:.0f} s")


def _serve(command: list[str], env: dict, dataset: str, timeout: float, *, first_decode: bool = False):
    """Seconds until the page and the map answer; with ``first_decode``, also (seconds until the page says
    'ready', ms of the first decode of empty space after that)."""
    from load import _post, click_body, ready_body

    port = _free_port()
    process = subprocess.Popen(command, cwd=ROOT, env={**env, "EXPLORER_PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    start = time.perf_counter()
    try:
        serving = _wait_until_serving(process, port, dataset, timeout)
        if not first_decode:
            return serving
        url = f"http://127.0.0.1:{port}"
        while not _post(url, ready_body(url))["response"]["ready-status"]["children"].startswith("ready"):
            if time.perf_counter() - start > timeout:
                raise TimeoutError("the page never said 'ready'")
            time.sleep(0.2)
        ready = time.perf_counter() - start
        t0 = time.perf_counter()
        answer = _post(url, click_body(url, dataset, {"x": -1e3, "y": -1e3, "curveNumber": 0}))
        view = answer["response"]["store-current"]["data"]
        assert view["kind"] == "hypothetical", view["kind"]
        return serving, ready, 1000 * (time.perf_counter() - t0)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def bench_start(dataset: str) -> None:
    python = str(ROOT / ".venv" / "bin" / "python")
    env = dict(os.environ)
    print("\nstart-up (fresh processes, until the page and the map callback answer):")
    seconds, ready, first = _serve(["make", "run"], env, dataset, timeout=600, first_decode=True)
    print(f"  warm: second `make run` (tables and maps built)          {seconds:6.1f} s   target < 15 s: "
          f"{'met' if seconds < 15 else 'NOT met'}")
    print(f"        the page says 'ready' (model loaded, one decode, UMAP compiled) {ready:5.1f} s after start; "
          f"the first decode of empty space then takes {first:.0f} ms (goal <= 1000 ms: "
          f"{'met' if first <= 1000 else 'NOT met'})")
    from explorer.settings import Settings

    tables = Settings().tables_dir
    with tempfile.TemporaryDirectory(prefix="explorer-cold-") as scratch:
        (Path(scratch) / "tables").symlink_to(tables, target_is_directory=True)
        cold_env = {**env, "EXPLORER_DATA_DIR": scratch}
        start = time.perf_counter()
        subprocess.run([python, "-m", "explorer", "build", "--dataset", dataset], cwd=ROOT, env=cold_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        built = time.perf_counter() - start
        served = _serve([python, "app.py"], cold_env, dataset, timeout=600)
    print(f"  cold: `python -m explorer build --dataset {dataset}` {built:6.1f} s + `python app.py` {served:5.1f} s "
          f"= {built + served:6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="known", help="map to measure on (default: known)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per callback chain")
    parser.add_argument("--skip-start", action="store_true", help="skip the cold and warm start-up measurements")
    parser.add_argument("--process-threads", action="store_true",
                        help="keep torch's and BLAS's default threads instead of a server process's one per thread")
    args = parser.parse_args()
    bench_callbacks(args.dataset, args.runs, server_threads=not args.process_threads)
    if not args.skip_start:
        bench_start(args.dataset)


if __name__ == "__main__":
    main()
