"""The project's generation figure: a seeded sample of the map decoded and judged (``explorer.generate``).

    .venv/bin/python bench/generate.py [--dataset known] [--n 200] [--seed 0] [--relax] [--out DIR]

Prints the summary of ``python -m explorer generate`` (valid, unique, novel, stable under CHGNet against the hull
of the map's known materials, S.U.N. rate) and the time per crystal. The energies of known materials are
computed into the data folder's cache (data/physics), as the app does, so a second run starts warm; the time of
the first run includes them.

Anchors with a different protocol (DFT, against the full Materials Project / Alexandria hull): MatterGen 38.6 %
S.U.N., CDVAE 14.0 %, FTCP 0 %. Ours is a CHGNet hull of the known materials on this map only, so fewer
competing phases: a crystal "stable" here may be above the full hull.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explorer.generate import generate  # noqa: E402
from explorer.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="known")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relax", action="store_true", help="relax every valid unique crystal first")
    parser.add_argument("--out", type=Path, default=None, help="keep the crystals, CSV and summary here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="explorer-generate-") as scratch:
        out = args.out or Path(scratch)
        summary = generate(args.dataset, Settings(), n=args.n, seed=args.seed, relax_it=args.relax, out=out)
    print(json.dumps(summary, indent=1))
    n = summary["n"]
    print(f"{n} sampled: {summary['valid']} valid ({100 * summary['valid'] / n:.1f} %), {summary['unique']} unique, "
          f"{summary['novel']} novel, {summary['stable_0.1']} within 0.1 eV/atom of the known hull "
          f"({'after' if summary['relaxed'] else 'before'} relaxation); S.U.N. {100 * summary['sun_rate']:.1f} %; "
          f"{summary['seconds_per_crystal']:.2f} s per crystal")


if __name__ == "__main__":
    main()
