"""Many users at once: N concurrent sessions x M requests against the server that `make run` starts.

    .venv/bin/python bench/load.py [--dataset known] [--sessions 50] [--requests 40] [--endpoints 100] [--skip-old]

Each session is a thread on this machine that sends, over loopback HTTP to ``python app.py``, M requests in
turn: a click on a known point, a decode of empty space, a 10-step interpolation between two different known
materials of ``--endpoints`` (one third each; points seeded per session). The server keeps recent decodes
(``EXPLORER_DECODE_CACHE``): a path's first and last frames are decodes of its ends, so they repeat when an end
is used again, as they would for a user who tries several paths from one material; a whole path repeats rarely
(13 of the 666 paths of the default run), and points of empty space never. Each request is the callback the
browser sends (``POST /_dash-update-component``: on_map_click, or the interpolation's run), timed from send to
answer.

Two servers are measured in the same run, one after the other, on the same requests:
- new: ``python app.py`` (gunicorn, one process per core with 64 request threads shared out, each process warm
  before its first request; decodes of concurrent requests batched into one pass, earliest deadline first;
  recent decodes kept);
- old: ``python app.py --dev`` with ``EXPLORER_DECODE_BATCHING=false EXPLORER_DECODE_CACHE=0`` (Flask's
  development server, every model call alone behind one lock, no decode kept: the server as #12 found it).
Printed: errors, p50 / p95 / max per request kind and requests per second, then new/old ratios.
Targets on 2 cores: 0 errors; clicks p95 <= 200 ms; decode p95 <= 2 s; interpolation p95 <= 4 s;
throughput >= 2x the old path. The sessions share the 2 cores with the server, as a browser would not.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("click", "decode", "interpolation")
TARGETS_P95_MS = {"click": 200, "decode": 2000, "interpolation": 4000}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(f"{url}/_dash-update-component", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


@functools.lru_cache(maxsize=8)
def _dependencies(url: str) -> tuple:
    """The callbacks the server declares (``GET /_dash-dependencies``, as the page reads them)."""
    with urllib.request.urlopen(f"{url}/_dash-dependencies", timeout=60) as answer:
        return tuple(json.loads(answer.read()))


def dash_body(url: str, output: str, values: dict, changed: str) -> dict:
    """The request body the page sends for the callback of ``output``: every input and state the server declares
    for it, valued from ``values`` ({"id.property": value}, None for the others), so that a callback that gains
    an argument does not break the bench."""
    spec = next(d for d in _dependencies(url) if d["output"] == output)

    def valued(items: list[dict]) -> list[dict]:
        return [{**item, "value": values.get(f"{item['id']}.{item['property']}")} for item in items]

    names = output.strip(".").split("...") if output.startswith("..") else [output]
    outputs = [{"id": n.rsplit(".", 1)[0], "property": n.rsplit(".", 1)[1]} for n in names]
    return {"output": output, "outputs": outputs if output.startswith("..") else outputs[0],
            "inputs": valued(spec["inputs"]), "state": valued(spec["state"]), "changedPropIds": [changed]}


def click_body(url: str, dataset: str, point: dict) -> dict:
    return dash_body(url, "store-current.data", {"map.clickData": {"points": [point]}, "dataset.value": dataset,
                                                 "map-kind.value": "crystals", "color-by.value": "source"},
                     "map.clickData")


def interpolation_body(url: str, dataset: str, a: dict, b: dict, steps: int = 10) -> dict:
    output = next(d["output"] for d in _dependencies(url) if "..store-path.data..." in d["output"]
                  and any(i["id"] == "interp-run" for i in d["inputs"]))
    return dash_body(url, output, {"interp-run.n_clicks": 1, "store-endpoints.data": {"a": a, "b": b},
                                   "interp-steps.value": steps, "interp-method.value": "slerp",
                                   "dataset.value": dataset, "map-kind.value": "crystals"}, "interp-run.n_clicks")


def ready_body(url: str) -> dict:
    output = next(d["output"] for d in _dependencies(url) if "ready-status.children" in d["output"])
    return dash_body(url, output, {"ready-timer.n_intervals": 1}, "ready-timer.n_intervals")


def start_server(args: list[str], env: dict, timeout: float = 600) -> tuple[subprocess.Popen, str, float]:
    """A server process, its URL, and the seconds until its warm-up said 'ready'."""
    port = _free_port()
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "app.py", *args], cwd=ROOT,
                               env={**env, "EXPLORER_PORT": str(port)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url, start = f"http://127.0.0.1:{port}", time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            status = _post(url, ready_body(url))["response"]["ready-status"]["children"]
            if status.startswith("ready"):
                return process, url, time.perf_counter() - start
        except (OSError, KeyError):
            pass
        time.sleep(0.5)
    stop_server(process)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def session_plan(atlas, n_sessions: int, n_requests: int, n_endpoints: int = 100) -> list[list[tuple[str, dict]]]:
    """Per session, its requests: (kind, click point or (a, b): two different indices of ``n_endpoints``)."""
    low, high = atlas.xy.min(axis=0), atlas.xy.max(axis=0)
    plans = []
    for s in range(n_sessions):
        rng = np.random.default_rng(1000 + s)
        plan = []
        for r in range(n_requests):
            kind = KINDS[(s + r) % 3]
            if kind == "click":
                k = int(rng.integers(len(atlas.ids)))
                plan.append((kind, {"x": float(atlas.xy[k, 0]), "y": float(atlas.xy[k, 1]),
                                    "customdata": atlas.ids[k]}))
            elif kind == "decode":
                x, y = low + rng.random(2) * (high - low)
                plan.append((kind, {"x": float(x), "y": float(y)}))
            else:
                plan.append((kind, {"pair": [int(v) for v in rng.choice(n_endpoints, size=2, replace=False)]}))
        plans.append(plan)
    return plans


def run_load(url: str, dataset: str, plans: list, endpoints: list[dict]) -> tuple[dict, float, list[str]]:
    """Every session's requests at once; {kind: [ms]}, wall seconds, error messages."""
    times = {kind: [] for kind in KINDS}
    errors: list[str] = []
    lock = threading.Lock()

    def session(plan):
        for kind, item in plan:
            body = (interpolation_body(url, dataset, endpoints[item["pair"][0]], endpoints[item["pair"][1]])
                    if kind == "interpolation" else click_body(url, dataset, item))
            t0 = time.perf_counter()
            try:
                answer = _post(url, body)["response"]
                ok = ("store-path" in answer and len(answer["store-path"]["data"]["frames"]) == 10) \
                    if kind == "interpolation" else answer["store-current"]["data"]["kind"] in ("known", "hypothetical")
                problem = None if ok else f"{kind}: unexpected answer"
            except (OSError, KeyError, TypeError, ValueError, urllib.error.HTTPError) as exc:
                problem = f"{kind}: {type(exc).__name__}: {str(exc)[:120]}"
            elapsed = 1000 * (time.perf_counter() - t0)
            with lock:
                if problem:
                    errors.append(problem)
                else:
                    times[kind].append(elapsed)

    threads = [threading.Thread(target=session, args=(plan,)) for plan in plans]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, time.perf_counter() - start, errors


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def report(label: str, times: dict, wall: float, errors: list[str]) -> dict:
    total = sum(len(v) for v in times.values()) + len(errors)
    print(f"\n{label}: {total} requests in {wall:.1f} s = {total / wall:.1f} requests/s, {len(errors)} errors")
    for message in sorted(set(errors))[:5]:
        print(f"  error: {message}")
    figures = {"rps": total / wall, "errors": len(errors)}
    for kind in KINDS:
        values = times[kind]
        p50, p95, worst = statistics.median(values) if values else float("nan"), _p(values, 0.95), max(values or [0])
        figures[kind] = (p50, p95)
        print(f"  {kind:<14} p50 {p50:8.0f} ms   p95 {p95:8.0f} ms   max {worst:8.0f} ms   (n={len(values)})"
              f"   target p95 <= {TARGETS_P95_MS[kind]} ms: {'met' if p95 <= TARGETS_P95_MS[kind] else 'NOT met'}")
    return figures


def measure(label: str, server_args: list[str], env: dict, dataset: str, plans: list, atlas) -> dict:
    process, url, ready = start_server(server_args, env)
    try:
        print(f"\n{label}: ready {ready:.1f} s after start")
        n_endpoints = 1 + max(max(item["pair"]) for plan in plans for kind, item in plan if kind == "interpolation")
        picks = np.random.default_rng(0).choice(len(atlas.ids), size=n_endpoints, replace=False)
        endpoints = [_post(url, click_body(url, dataset, {"x": float(atlas.xy[k, 0]), "y": float(atlas.xy[k, 1]),
                                                     "customdata": atlas.ids[k]}))["response"]["store-current"]["data"]
                     for k in picks]
        times, wall, errors = run_load(url, dataset, plans, endpoints)
        return report(label, times, wall, errors)
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="known", help="map to load (default: known; built if missing)")
    parser.add_argument("--sessions", type=int, default=50, help="concurrent sessions (default 50)")
    parser.add_argument("--requests", type=int, default=40, help="requests per session (default 40)")
    parser.add_argument("--endpoints", type=int, default=100, help="known materials the paths run between "
                                                                       "(default 100)")
    parser.add_argument("--skip-old", action="store_true", help="measure only the new server")
    args = parser.parse_args()
    from explorer.atlas import build_atlas
    from explorer.settings import Settings

    atlas = build_atlas(args.dataset, Settings(), progress=True)
    plans = session_plan(atlas, args.sessions, args.requests, args.endpoints)
    print(f"{args.sessions} sessions x {args.requests} requests on {args.dataset} ({len(atlas.ids)} materials), "
          f"{os.cpu_count()} CPU cores")
    env = dict(os.environ)
    new = measure("new: python app.py (gunicorn processes, batched decodes)", [], env, args.dataset, plans, atlas)
    if args.skip_old:
        return
    old = measure("old: Flask development server, one lock", ["--dev"],
                  {**env, "EXPLORER_DECODE_BATCHING": "false", "EXPLORER_DECODE_CACHE": "0"},
                  args.dataset, plans, atlas)
    print("\nnew / old:")
    print(f"  throughput {new['rps'] / old['rps']:.2f}x (target >= 2x: "
          f"{'met' if new['rps'] >= 2 * old['rps'] else 'NOT met'})")
    for kind in KINDS:
        print(f"  {kind:<14} p50 {new[kind][0] / old[kind][0]:.2f}x   p95 {new[kind][1] / old[kind][1]:.2f}x")


if __name__ == "__main__":
    main()
