"""The motif map of a dataset: what building it costs, whether its neighbourhoods are of one motif, and how fast a
click answers.

    .venv/bin/python bench/motif_map.py [--dataset known] [--k 10]

- **build**: the stages of ``explorer.motif_map.build`` timed one by one (distinct environments, motif-latent
  encoding, UMAP), without touching the cached map;
- **agreement**: for every distinct environment, the share of its ``k`` nearest neighbours with the same motif
  label (and the same centre element and motif), in the motif latent, on the 2D map, and for a baseline that
  knows the shell's chemistry but not its geometry (centre element, CN and neighbour-element counts);
- **clicks**: median server time of a known environment's view, of a decode of empty space, and of a 10-frame
  path between two environments (the built map is needed: ``python -m explorer build``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def knn_agreement(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean share of each point's k nearest other points (Euclidean) with its label (scikit-learn picks a tree or
    brute force by the dimension)."""
    from sklearn.neighbors import NearestNeighbors

    _, index = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return float((labels[index[:, 1:]] == labels[:, None]).mean())


def chemistry_baseline(frame) -> np.ndarray:
    """Centre element, CN and neighbour-element counts: the shell's chemistry without its geometry."""
    from pymatgen.core import Element

    rows = np.zeros((len(frame), 2 * 95 + 1), dtype=np.float32)
    for k, (element, cn, shell) in enumerate(zip(frame["element"], frame["cn"], frame["neighbours"], strict=True)):
        rows[k, Element(element).Z] = 1.0
        for neighbour, _ in json.loads(shell):
            rows[k, 95 + Element(neighbour).Z] += 1.0 / max(int(cn), 1)
        rows[k, -1] = int(cn) / 4.0
    return rows


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="known")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from explorer import motif_map
    from explorer.atlas import fit_umap, umap_params
    from explorer.motifs import table as motif_table
    from explorer.services import materials, motif_model, motif_views, views
    from explorer.settings import Settings

    settings = Settings()
    environments = motif_table.load(args.dataset, settings)
    if environments is None:
        raise SystemExit(f"the environments of {args.dataset} are not computed: run `python -m explorer build`")
    table = materials.table(args.dataset, settings)
    start = time.perf_counter()
    rows = motif_map.distinct(environments, dict(zip(table["id"], table["reduced_formula"], strict=True)))
    t_distinct = time.perf_counter() - start
    motif_model.loaded(settings)
    start = time.perf_counter()
    latents = motif_model.encode(motif_map.as_environments(rows), settings)
    t_encode = time.perf_counter() - start
    start = time.perf_counter()
    placed = motif_map.placed_by(settings)
    _, xy = fit_umap(latents[:, :placed], umap_params(settings))
    t_umap = time.perf_counter() - start
    print(f"{args.dataset}: {len(environments)} symmetry-distinct sites of {environments['id'].nunique()} crystals -> "
          f"{len(rows)} distinct environments (1-16 neighbours, distances within {motif_map.DISTINCT_TOLERANCE} Å)")
    print(f"build: distinct {t_distinct:.1f} s, encode {t_encode:.1f} s "
          f"({1000 * t_encode / len(rows):.2f} ms per environment), UMAP {t_umap:.0f} s; "
          f"total {t_distinct + t_encode + t_umap:.0f} s")

    motif = rows["motif"].to_numpy()
    both = (rows["element"] + " " + rows["motif"]).to_numpy()
    chemistry = chemistry_baseline(rows)
    print(f"\n{args.k} nearest neighbours with the same ...   motif   centre element and motif")
    spaces = [(f"motif latent ({latents.shape[1]}-d)", latents)]
    if placed < latents.shape[1]:
        spaces.append((f"learned part + centre ({placed}-d, placed)", latents[:, :placed]))
    for name, features in (*spaces, ("motif map (2-D)", xy), ("shell chemistry only (baseline)", chemistry)):
        print(f"  {name:<34} {100 * knn_agreement(features, motif, args.k):5.1f} %   "
              f"{100 * knn_agreement(features, both, args.k):5.1f} %")

    if not motif_map.is_built(args.dataset, settings):
        print("\nclicks: the motif map is not built (python -m explorer build); skipped")
        return
    the_map = motif_map.get_motif_map(args.dataset, settings)
    the_map.warm()
    rng = np.random.default_rng(0)
    ids = [the_map.ids[k] for k in rng.choice(len(the_map.ids), size=20, replace=False)]
    cycle = iter(ids * 2)
    known = median_ms(lambda: motif_views.environment_view(args.dataset, next(cycle), settings), 20)
    low = the_map.xy.min(axis=0)
    span = the_map.xy.max(axis=0) - low
    points = iter(low + rng.random((20, 2)) * span)
    empty = median_ms(lambda: views.hypothetical_view(args.dataset, *next(points), settings, kind="motifs"), 20)
    a, b = (motif_views.environment_view(args.dataset, i, settings) for i in ids[:2])
    path = median_ms(lambda: views.interpolation(a, b, args.dataset, settings, steps=10, method="linear",
                                                 kind="motifs"), 5)
    print(f"\nclicks (median server time): an environment {known:.0f} ms, a decode of empty space {empty:.0f} ms, "
          f"a 10-frame path {path:.0f} ms")


if __name__ == "__main__":
    main()
