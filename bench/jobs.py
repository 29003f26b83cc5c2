"""Many relaxations at once: N sessions press "Relax" together against the server that `make run` starts.

    .venv/bin/python bench/jobs.py [--sessions 8] [--dataset known]

Each session is a thread that sends the relax callback's request for one known material (the page's
``POST /_dash-update-component``) and then polls it every 0.5 s, as the page does, until its result (or the
server's refusal) comes back. Printed per server: the seconds from the press to the result (p50 / max), how many
were refused, and the peak memory of the server with its job processes (sampled every 0.2 s).

Two servers in the same run, one after the other, on the same requests:
- new: ``python app.py`` as configured (``EXPLORER_MAX_JOBS`` job processes at once, the next
  ``EXPLORER_MAX_WAITING_JOBS`` waiting for a slot; ``explorer.ui.background_jobs``);
- old: the same with ``EXPLORER_MAX_JOBS=64`` and no waiting list: every request starts its process at once, as
  Dash's own ``DiskcacheManager`` does (the server as it was before).
Then the ratios new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load import _dependencies, _post, click_body, dash_body, start_server, stop_server  # noqa: E402


def relax_body(url: str, view: dict) -> dict:
    output = next(d["output"] for d in _dependencies(url) if d["output"] == "store-relax-result.data")
    return dash_body(url, output, {"relax.n_clicks": 1, "store-current.data": view}, "relax.n_clicks")


def press_and_wait(url: str, body: dict, timeout: float = 900) -> tuple[float, str]:
    """(seconds from the press to the answer, "done" / "refused: ..." / "error: ...")."""
    start = time.perf_counter()
    first = _post(url, body)
    query = f"?cacheKey={urllib.parse.quote(first['cacheKey'])}&job={urllib.parse.quote(first['job'])}"
    while time.perf_counter() - start < timeout:
        time.sleep(0.5)
        request = urllib.request.Request(f"{url}/_dash-update-component{query}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            text = answer.read()
        if not text:  # 204: nothing to update yet
            continue
        reply = json.loads(text)
        result = (reply.get("response") or {}).get("store-relax-result", {}).get("data")
        if result is not None:
            return time.perf_counter() - start, ("done" if "structure" in result else f"error: {result}")
        error = ((reply.get("sideUpdate") or {}).get("app-error") or {}).get("children")
        if error:
            return time.perf_counter() - start, f"refused: {error}"
    return time.perf_counter() - start, "timed out"


def memory_of_tree(pid: int) -> float:
    """GiB resident in the process ``pid`` and all its children."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


def measure(label: str, env: dict, n_sessions: int, dataset: str, atlas) -> dict:
    process, url, ready = start_server([], env)
    try:
        views = [_post(url, click_body(url, dataset, {"x": float(atlas.xy[k, 0]), "y": float(atlas.xy[k, 1]),
                                                      "customdata": atlas.ids[k]}))["response"]["store-current"]["data"]
                 for k in range(n_sessions)]
        idle = memory_of_tree(process.pid)
        results: list[tuple[float, str]] = []
        peak, done = idle, threading.Event()

        def sample():
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, memory_of_tree(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sessions = [threading.Thread(target=lambda v=v: results.append(press_and_wait(url, relax_body(url, v))))
                    for v in views]
        start = time.perf_counter()
        for session in sessions:
            session.start()
        for session in sessions:
            session.join()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        seconds = [s for s, outcome in results if outcome == "done"]
        refused = [o for _, o in results if o.startswith("refused")]
        other = [o for _, o in results if o != "done" and not o.startswith("refused")]
        print(f"\n{label}: ready {ready:.1f} s after start; {n_sessions} relaxations pressed at once")
        print(f"  done {len(seconds)}, refused {len(refused)}, other {len(other)}; all answered in {wall:.1f} s")
        if seconds:
            print(f"  press to result: p50 {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s")
        print(f"  memory of the server and its jobs: idle {idle:.2f} GiB, peak {peak:.2f} GiB")
        for outcome in sorted(set(other))[:3]:
            print(f"  {outcome[:200]}")
        return {"wall": wall, "peak": peak, "idle": idle, "done": len(seconds),
                "p50": statistics.median(seconds) if seconds else float("nan")}
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="relaxations pressed at once (default 8)")
    parser.add_argument("--dataset", default="known", help="map whose first materials are relaxed (default: known)")
    args = parser.parse_args()
    from explorer.atlas import build_atlas
    from explorer.settings import Settings

    atlas = build_atlas(args.dataset, Settings(), progress=True)
    print(f"{args.sessions} sessions on {args.dataset}, {os.cpu_count()} CPU cores")
    env = dict(os.environ)
    new = measure(f"new: at most {Settings().max_jobs} jobs at once, {Settings().max_waiting_jobs} waiting", env,
                  args.sessions, args.dataset, atlas)
    old = measure("old: a process for every job at once", {**env, "EXPLORER_MAX_JOBS": "64",
                                                             "EXPLORER_MAX_WAITING_JOBS": "0"},
                  args.sessions, args.dataset, atlas)
    print("\nnew / old:")
    print(f"  peak memory above idle {(new['peak'] - new['idle']) / max(old['peak'] - old['idle'], 1e-9):.2f}x, "
          f"all answered {new['wall'] / old['wall']:.2f}x, press to result p50 {new['p50'] / old['p50']:.2f}x")


if __name__ == "__main__":
    main()
