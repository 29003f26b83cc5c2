"""Generation at scale on Dask: crystals per second with 1 and 2 worker processes (one thread each), and the ratio.

    .venv/bin/python bench/scale.py [--dataset known] [--n 10000] [--n-search 1000] [--relax-n 0] [--million]

Runs ``explorer.generate`` without physics (decode, checks, duplicates) on a ``LocalCluster`` of 1 worker, then of
2 workers, with the same threads per worker: first with ``--no-search`` (the decoder's own guess), then ``--n-search``
crystals with the encoder's check (the app's decode). Prints, per run, crystals/s of the decode stage and of the
whole run, the seconds of each stage, and the 2-worker / 1-worker ratio (the issue's goal is >= 1.7x on 2 cores).
``--relax-n N``: also ``generate --n N --relax --workers 2`` (CHGNet relaxation of every unique valid crystal).
``--million``: also ``generate --n 1000000 --no-search --workers 2`` (hours on 2 cores: see the README's sizing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer.generate import generate  # noqa: E402
from explorer.jobs import Where  # noqa: E402
from explorer.settings import Settings  # noqa: E402


def one(dataset: str, n: int, workers: int, *, search: bool, relax: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="explorer-scale-") as scratch:
        start = time.perf_counter()
        summary = generate(dataset, Settings(), n=n, seed=0, relax_it=relax, physics=relax, search=search,
                           out=Path(scratch), where=Where(workers=workers))
        wall = time.perf_counter() - start
    stages = summary["stage_seconds"]
    row = {"n": n, "workers": workers, "search": search, "relax": relax, "wall_seconds": round(wall, 1),
           "decode_crystals_per_s": round(n / stages["decode"], 1), "crystals_per_s": round(n / wall, 1),
           "stage_seconds": stages, "valid": summary["valid"], "unique": summary["unique"]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="known")
    parser.add_argument("--n", type=int, default=10_000, help="crystals per run without the encoder's check")
    parser.add_argument("--n-search", type=int, default=1_000, help="crystals per run with the check (0: skip)")
    parser.add_argument("--relax-n", type=int, default=0, help="also a relaxed run of this many on 2 workers")
    parser.add_argument("--million", action="store_true", help="also a million crystals on 2 workers")
    args = parser.parse_args()
    for search, n in ((False, args.n), (True, args.n_search)):
        if n <= 0:
            continue
        single, double = one(args.dataset, n, 1, search=search), one(args.dataset, n, 2, search=search)
        for key in ("decode_crystals_per_s", "crystals_per_s"):
            print(f"search={search} n={n}: {key} 1 worker {single[key]}, 2 workers {double[key]}, "
                  f"ratio {double[key] / single[key]:.2f}x", flush=True)
    if args.relax_n > 0:
        one(args.dataset, args.relax_n, 2, search=True, relax=True)
    if args.million:
        one(args.dataset, 1_000_000, 2, search=False)


if __name__ == "__main__":
    main()
