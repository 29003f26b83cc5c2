"""Server time of the app's services on a real checkpoint and dataset: map build, click on a known point,
decode of empty space, a 10-step interpolation, an upload.

    .venv/bin/python bench/app_services.py --dataset mp_20_subset --checkpoint runs/default/best.pt [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def timed(label: str, fn, repeat: int = 5):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(1000 * (time.perf_counter() - start))
    print(f"{label:<38} median {statistics.median(times):8.1f} ms  (min {min(times):.1f}, first {times[0]:.1f})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mp_20_subset")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/checkpoints/default.pt"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from explorer.atlas import build_atlas
    from explorer.services import materials
    from explorer.services.export import structure_to_bytes
    from explorer.settings import Settings

    settings = Settings(checkpoint=args.checkpoint)
    start = time.perf_counter()
    atlas = build_atlas(args.dataset, settings, progress=True)
    print(f"map of {args.dataset}: {len(atlas.ids)} materials in {time.perf_counter() - start:.1f} s (cached after)")
    timed("warm (first UMAP transform)", atlas.warm, repeat=1)
    timed("map points (figure data)", lambda: materials.map_points(args.dataset, "source", settings), repeat=3)
    ids = atlas.ids
    timed("click known point", lambda: materials.known_view(args.dataset, ids[7], settings))
    x, y = (atlas.xy.min(0) + atlas.xy.max(0)) / 2
    timed("click empty space (decode)", lambda: materials.hypothetical_view(args.dataset, x, y, settings))
    a = materials.known_view(args.dataset, ids[0], settings)
    b = materials.known_view(args.dataset, ids[1], settings)
    timed("interpolate 10 steps (+ place)", lambda: materials.interpolation(a, b, args.dataset, settings, steps=10,
                                                                           method="slerp"), repeat=3)
    content = structure_to_bytes(materials.structure_of(a), fmt="cif")
    timed("upload CIF (read, encode, place)", lambda: materials.upload_view(args.dataset, content, "a.cif", settings))


if __name__ == "__main__":
    main()
