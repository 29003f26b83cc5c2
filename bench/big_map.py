"""The map at a million points, in headless Chromium: first paint, zoom redraws, a click to its formula, and the
server's memory, for the known map (11k points, WebGL markers) and for a synthetic map of --n points (a density
image rendered by the server, markers only in small windows: explorer/services/lod.py).

    .venv/bin/python bench/big_map.py [--n 1000000] [--runs 5] [--keep-data DIR]

The synthetic dataset is the known table repeated (new ids) to --n rows, with the known map's latents and each
copy's map coordinates jittered about its original (a few typical spacings), written as a dataset of its own in a
temporary data folder: a table, a report and a map exactly as ``python -m explorer build`` leaves them, so the
server reads it as any other. (Encoding and placing a million real crystals is ``generate`` and ``build
--workers``' job, measured by bench/scale.py; this bench measures what the page costs once the map exists.)

For each map: ``python app.py`` (as ``make run`` serves it) is started and waited for until it says 'ready'; then
- first paint: from ``page.goto`` until the map is drawn (its markers, or its density image, on screen);
- zoom redraw: ``Plotly.relayout`` to a window (a quarter, a tenth, a hundredth, a thousandth of the map's width,
  round a known point) until the page shows that window (the new image, the markers once few enough, plotly's
  redraw done): the median and the worst over --runs rounds;
- click to formula: a real mouse click on a known point until its formula is in the structure panel (on the big
  map the server resolves it to the nearest point);
- server memory: resident set of the server process and its children after the runs.
Goals (issue 15) on 2 cores: first paint <= 5 s, zoom redraw <= 1 s, click to formula <= 500 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from browser import CHROMIUM_ARGS, GRAPH, _pixel  # noqa: E402  (bench/browser.py: the same Chromium)
from load import start_server, stop_server  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

SYNTHETIC = "million"
ZOOMS = (4, 10, 100, 1000)


def synthetic_dataset(data_dir: Path, n: int) -> float:
    """Write dataset ``SYNTHETIC`` of ``n`` rows into ``data_dir`` (table, report, map with its neighbour index when
    it has more than ``umap_fit_max`` points, as ``build`` makes it); seconds it took."""
    import pandas as pd

    from explorer import atlas, neighbours
    from explorer.datasets.build import DatasetReport, SourceReport, _write
    from explorer.services import materials
    from explorer.settings import Settings

    start = time.perf_counter()
    real, settings = Settings(), Settings(data_dir=data_dir)
    known, known_map = materials.table("known", real), atlas.get_atlas("known", real)
    rows = np.array([known_map.index_of(i) for i in known["id"]])
    copies = -(-n // len(known))
    frame = pd.concat([known] * copies, ignore_index=True).iloc[:n].copy()
    copy = np.repeat(np.arange(copies), len(known))[:n]
    frame["id"] = frame["id"].to_numpy(dtype=object) + np.char.add("~", copy.astype(str)).astype(object)
    report = DatasetReport(SYNTHETIC, f"synthetic-{n}", 0.0,
                           [SourceReport("synthetic", "bench/big_map.py", "the known table repeated", "", n, n)], [])
    settings.tables_dir.mkdir(parents=True, exist_ok=True)
    _write(SYNTHETIC, frame, report, settings)
    origin = np.tile(rows, copies)[:n]
    rng = np.random.default_rng(0)
    spread = 3.0 * known_map.typical_spacing()
    xy = known_map.xy[origin] + rng.normal(scale=spread, size=(n, 2)).astype(np.float32) * (copy > 0)[:, None]
    latents = known_map.latents[origin] + rng.normal(scale=0.01, size=(n, known_map.latents.shape[1])).astype(
        np.float32) * (copy > 0)[:, None]
    index = None
    if atlas.umap_sample(n, settings) is not None:
        began = time.perf_counter()
        index = neighbours.build_index(latents, seed=settings.umap_seed)
        print(f"neighbour index of {n:,} latents built in {time.perf_counter() - began:.0f} s", flush=True)
    folder = settings.atlas_dir / f"{SYNTHETIC}-{atlas.atlas_key(SYNTHETIC, settings)}"
    atlas.write_folder(folder, dataset=SYNTHETIC, ids=frame["id"].tolist(), latents=latents,
                       xy=xy.astype(np.float32), reducer=known_map.reducer, index=index)
    return time.perf_counter() - start


def _rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def _drawn(page) -> None:
    """Until the map is on screen: markers drawn, or the density image's <image> element, and no request pending."""
    page.wait_for_function(
        f"() => {{ const g = document.querySelector('{GRAPH}'); if (!g || !g.data || g.data.length !== 4) return false;"
        " if (document.querySelector('#map[data-dash-is-loading]')) return false;"
        " return (g.layout.meta && g.layout.meta.big) ? !!g.querySelector('.imagelayer image')"
        " : g.data[1].x.length > 0 && !!g.querySelector('.gl-canvas, canvas'); }", timeout=120_000)


def _zoom(page, window: tuple[list[float], list[float]], big: bool) -> float:
    """ms from Plotly.relayout to the window drawn (the server's image of it on a big map), started once the page
    is idle (the panels of the last click answered: up to 2 minutes; the map alone after that)."""
    try:
        page.wait_for_function("() => !document.querySelector('[data-dash-is-loading]')", timeout=120_000)
    except PlaywrightTimeout:
        page.wait_for_function("() => !document.querySelector('#map[data-dash-is-loading]')")
    page.evaluate(f"() => {{ window._drawn = 0; document.querySelector('{GRAPH}').on('plotly_afterplot',"
                  " () => { window._drawn = performance.now(); }); }")
    start = time.perf_counter()
    page.evaluate(f"(w) => Plotly.relayout(document.querySelector('{GRAPH}'), "
                  "{'xaxis.range': w[0], 'yaxis.range': w[1]})", [list(window[0]), list(window[1])])
    if big:
        page.wait_for_function(f"(x) => {{ const i = document.querySelector('{GRAPH}').layout.images;"
                               " return i && i.length && Math.abs(i[0].x - x) < 1e-9 * Math.max(1, Math.abs(x))"
                               " && !document.querySelector('#map[data-dash-is-loading]'); }",
                               arg=float(window[0][0]), timeout=60_000)
        page.wait_for_function(f"() => {{ const g = document.querySelector('{GRAPH}');"
                               " const img = g.querySelector('.imagelayer image');"
                               " return img && img.getAttribute('href') === g.layout.images[0].source; }")
    page.wait_for_function("() => window._drawn > 0", timeout=60_000)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return 1000 * (time.perf_counter() - start)


def _click(page, x: float, y: float) -> float:
    """ms from a real mouse click at map point (x, y) until the structure panel shows a material's formula (the
    selection is cleared first, with Escape, so the click never lands on the structure already on screen)."""
    page.locator("header h1").click()
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('#structure-info .info-title')"
                           " && !document.querySelector('#map[data-dash-is-loading]')")
    px, py = _pixel(page, x, y)
    page.mouse.move(px - 3, py - 3)
    page.mouse.move(px, py, steps=3)
    page.wait_for_function(f"() => {{ const h = document.querySelector('{GRAPH}')._hoverdata; return h && h.length; }}")
    start = time.perf_counter()
    page.mouse.click(px, py)
    page.wait_for_function("() => { const t = document.querySelector('#structure-info .info-title');"
                           " return t && t.innerText; }", timeout=60_000)
    return 1000 * (time.perf_counter() - start)


def bench_map(browser, data_dir: Path | None, dataset: str, runs: int, screenshots: Path | None = None) -> dict:
    from explorer import atlas
    from explorer.services.lod import map_extent
    from explorer.settings import Settings

    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    the_map = atlas.get_atlas(dataset, settings)
    n, big = len(the_map.ids), len(the_map.ids) > settings.map_markers_max
    env = {**os.environ, **({"EXPLORER_DATA_DIR": str(data_dir)} if data_dir else {})}
    process, url, ready = start_server([], env, timeout=1200)
    try:
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url)
        _drawn(page)
        first_paint = time.perf_counter() - start
        extent = map_extent(the_map.xy[:, 0], the_map.xy[:, 1])
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            page.locator("#map").screenshot(path=str(screenshots / f"map-{dataset}.png"))
            x, y = (float(v) for v in np.median(the_map.xy, axis=0))
            half_x, half_y = (extent[0][1] - extent[0][0]) / 60, (extent[1][1] - extent[1][0]) / 60
            _zoom(page, ([x - half_x, x + half_x], [y - half_y, y + half_y]), big)
            page.locator("#map").screenshot(path=str(screenshots / f"map-{dataset}-zoomed.png"))
            _zoom(page, extent, big)
        rng = np.random.default_rng(1)
        zooms: dict[int, list[float]] = {z: [] for z in ZOOMS}
        clicks: list[float] = []
        for _ in range(runs):
            k = int(rng.integers(n))
            x, y = (float(v) for v in the_map.xy[k])
            for z in ZOOMS:
                half_x, half_y = (extent[0][1] - extent[0][0]) / z / 2, (extent[1][1] - extent[1][0]) / z / 2
                zooms[z].append(_zoom(page, ([x - half_x, x + half_x], [y - half_y, y + half_y]), big))
            zooms_whole = _zoom(page, extent, big)
            del zooms_whole
            clicks.append(_click(page, x, y))
        memory = _rss_mb(process.pid)
        context.close()
    finally:
        stop_server(process)
    figures = {"map": dataset, "points": n, "big": big, "ready_s": round(ready, 1),
               "first_paint_s": round(first_paint, 2),
               **{f"zoom_1/{z}_ms_median": round(statistics.median(v), 0) for z, v in zooms.items()},
               **{f"zoom_1/{z}_ms_max": round(max(v), 0) for z, v in zooms.items()},
               "click_to_formula_ms_median": round(statistics.median(clicks), 0),
               "click_to_formula_ms_max": round(max(clicks), 0), "server_rss_mb": round(memory, 0)}
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="points of the synthetic map")
    parser.add_argument("--runs", type=int, default=5, help="rounds of zooms and clicks per map")
    parser.add_argument("--keep-data", type=Path, help="write the synthetic dataset here and keep it (a second "
                        "run with the same folder and --n reuses it)")
    parser.add_argument("--only-data", action="store_true", help="write the synthetic dataset, measure nothing")
    parser.add_argument("--screenshots", type=Path, help="save the maps (whole and zoomed in) as PNGs here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from explorer import atlas
    from explorer.settings import Settings

    with tempfile.TemporaryDirectory(prefix="explorer-big-map-") as scratch:
        data_dir = (args.keep_data or Path(scratch)) / "data"
        settings = Settings(data_dir=data_dir)
        if atlas.is_built(SYNTHETIC, settings) and len(atlas.get_atlas(SYNTHETIC, settings).ids) == args.n:
            print(f"reusing the synthetic map of {args.n:,} points in {data_dir}", flush=True)
        else:
            print(f"synthetic map of {args.n:,} points written in {synthetic_dataset(data_dir, args.n):.0f} s",
                  flush=True)
        if args.only_data:
            return
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            small = bench_map(browser, None, "known", args.runs, args.screenshots)
            large = bench_map(browser, data_dir, SYNTHETIC, args.runs, args.screenshots)
            browser.close()
    for key in ("first_paint_s", "click_to_formula_ms_median", "zoom_1/10_ms_median", "server_rss_mb"):
        print(f"{key}: {small['points']:,} points {small[key]}, {large['points']:,} points {large[key]}, "
              f"ratio {large[key] / small[key]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
