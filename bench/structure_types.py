"""Do crystals of one structure type sit together? The maps of a dataset measured against structure types.

    .venv/bin/python bench/structure_types.py [--dataset known] [--subset 3000] [--max-sites 24] [--workers 2]

A crystal's structure type is its protostructure label without elements (``explorer.motifs.geometry
.structure_type``: anonymous stoichiometry, Pearson symbol, space group, Wyckoff letters). Two figures per map,
both over the 10 nearest neighbours of each crystal (euclidean, the crystal itself left out):

- **same type**: the share of the 10 nearest that have the crystal's type (the ceiling is below 100 % because most
  types have fewer than 11 members; it is printed);
- **across chemistry**: over the crystals whose type also occurs with another reduced formula, the share that find
  one of their type among the 10 nearest crystals *of other formulas* (NaCl finds KBr or MgO).

Maps compared: the crystal autoencoder's latents and their 2D UMAP (today's map), element fractions (chemistry
only), the structure map's descriptor (``explorer.motifs.geometry``, with and without its symmetry group) and its
2D projection, and a hand-made fingerprint baseline on a seeded subset of small crystals: matminer's
SiteStatsFingerprint recipe (per site CrystalNN coordination-number weights and the local order parameters of each
coordination number's target motifs, mean and standard deviation over the sites), computed here in worker
processes. Every map is also scored on that subset so the rows compare like with like.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# matminer's CrystalNNFingerprint "ops" preset: the target motifs of each coordination number
TARGET_MOTIFS = {1: ["single bond"], 2: ["L-shaped", "water-like", "bent 120 degrees", "bent 150 degrees", "linear"],
                 3: ["trigonal planar", "trigonal non-coplanar", "T-shaped"],
                 4: ["square co-planar", "tetrahedral", "rectangular see-saw-like", "see-saw-like",
                     "trigonal pyramidal"],
                 5: ["pentagonal planar", "square pyramidal", "trigonal bipyramidal"],
                 6: ["hexagonal planar", "octahedral", "pentagonal pyramidal"],
                 7: ["hexagonal pyramidal", "pentagonal bipyramidal"],
                 8: ["body-centered cubic", "hexagonal bipyramidal"], 9: ["q2", "q4", "q6"],
                 10: ["q2", "q4", "q6"], 11: ["q2", "q4", "q6"], 12: ["cuboctahedral", "q2", "q4", "q6"]}
_OP_TYPES = {"single bond": "sgl_bd", "L-shaped": "bent", "water-like": "bent", "bent 120 degrees": "bent",
             "bent 150 degrees": "bent", "linear": "bent", "trigonal planar": "tri_plan",
             "trigonal non-coplanar": "tet", "T-shaped": "T", "square co-planar": "sq_plan", "tetrahedral": "tet",
             "rectangular see-saw-like": "see_saw_rect", "see-saw-like": "see_saw_rect",
             "trigonal pyramidal": "tri_pyr", "pentagonal planar": "pent_plan", "square pyramidal": "sq_pyr",
             "trigonal bipyramidal": "tri_bipyr", "hexagonal planar": "hex_plan_max", "octahedral": "oct",
             "pentagonal pyramidal": "pent_pyr", "hexagonal pyramidal": "hex_pyr",
             "pentagonal bipyramidal": "pent_bipyr", "body-centered cubic": "bcc", "hexagonal bipyramidal": "hex_bipyr",
             "q2": "q2", "q4": "q4", "q6": "q6", "cuboctahedral": "cuboct"}
_PARAMETERS = {"L-shaped": {"TA": 0.5}, "water-like": {"TA": 104.45 / 180}, "bent 120 degrees": {"TA": 120 / 180},
               "bent 150 degrees": {"TA": 150 / 180},
               "linear": {"TA": 1.0}, "trigonal non-coplanar": {"TA": 0.75}}


def _fingerprint_one(args: tuple[str, dict]) -> tuple[str, np.ndarray | None]:
    """SiteStatsFingerprint(CrystalNNFingerprint 'ops') of one crystal: mean and std over sites."""
    from pymatgen.analysis.local_env import CrystalNN, LocalStructOrderParams, default_op_params
    from pymatgen.core import Structure

    record_id, plain = args
    warnings.simplefilter("ignore")
    structure = Structure.from_dict(plain)
    cnn = CrystalNN()
    slots = [(cn, motif) for cn in sorted(TARGET_MOTIFS) for motif in TARGET_MOTIFS[cn]]
    ops = {cn: LocalStructOrderParams([_OP_TYPES[m] for m in motifs],
                                      parameters=[{**(default_op_params[_OP_TYPES[m]] or {}), **_PARAMETERS.get(m, {})}
                                                  for m in motifs])
           for cn, motifs in TARGET_MOTIFS.items()}
    rows = []
    try:
        for index in range(len(structure)):
            data = cnn.get_nn_data(structure, index)
            row = np.zeros(len(slots))
            for cn, weight in data.cn_weights.items():
                if cn not in TARGET_MOTIFS or weight <= 0:
                    continue
                neighbours = [info["site"] for info in data.cn_nninfo[cn]]
                local = Structure.from_sites([structure[index], *neighbours], validate_proximity=False)
                values = ops[cn].get_order_parameters(local, 0, indices_neighs=list(range(1, cn + 1)))
                for k, motif in enumerate(TARGET_MOTIFS[cn]):
                    row[slots.index((cn, motif))] = weight * (values[k] or 0.0)
            rows.append(row)
    except Exception:  # noqa: BLE001 - a crystal CrystalNN cannot describe is left out of the baseline
        return record_id, None
    rows = np.asarray(rows)
    return record_id, np.concatenate([rows.mean(0), rows.std(0)])


def fingerprints(frame, workers: int) -> tuple[list[str], np.ndarray, float]:
    """(ids, (n, d) fingerprints, seconds per crystal on one core)."""
    from explorer.datasets.records import canonical_structure

    jobs = [(row["id"], canonical_structure(row).as_dict()) for _, row in frame.iterrows()]
    start = time.perf_counter()
    with Pool(workers) as pool:
        found = [r for r in pool.imap(_fingerprint_one, jobs, chunksize=8) if r[1] is not None]
    seconds = (time.perf_counter() - start) * workers / max(len(jobs), 1)
    return [r[0] for r in found], np.stack([r[1] for r in found]), seconds


def scores(vectors: np.ndarray, types: np.ndarray, formulas: np.ndarray, k: int = 10) -> dict[str, float]:
    """{"same": share of the k nearest of the same type, "across": share of the eligible crystals that find their
    type among the k nearest of other formulas, "eligible": how many were eligible, "ceiling": best "same"}."""
    from sklearn.neighbors import NearestNeighbors

    reach = min(len(vectors), 20 * k)
    _, order = NearestNeighbors(n_neighbors=reach).fit(vectors).kneighbors(vectors)
    same, hits, eligible = [], 0, 0
    groups: dict[str, set] = {}
    for t, f in zip(types, formulas, strict=True):
        groups.setdefault(t, set()).add(f)
    sizes = {t: n for t, n in zip(*np.unique(types, return_counts=True), strict=True)}
    for i, row in enumerate(order):
        others = [j for j in row if j != i]
        same.append(np.mean(types[others[:k]] == types[i]))
        if len(groups[types[i]] - {formulas[i]}) == 0:
            continue
        eligible += 1
        foreign = [j for j in others if formulas[j] != formulas[i]][:k]
        hits += bool(np.any(types[foreign] == types[i]))
    ceiling = np.mean([min(k, sizes[t] - 1) / k for t in types])
    return {"same": float(np.mean(same)), "across": hits / max(eligible, 1), "eligible": eligible,
            "ceiling": float(ceiling)}


def element_fractions(frame) -> np.ndarray:
    """(n, 118) element fractions of each material."""
    out = np.zeros((len(frame), 118))
    for k, numbers in enumerate(frame["numbers"]):
        z, counts = np.unique(np.asarray(numbers), return_counts=True)
        out[k, z - 1] = counts / counts.sum()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="known")
    parser.add_argument("--subset", type=int, default=3000, help="crystals in the fingerprint baseline's subset")
    parser.add_argument("--max-sites", type=int, default=24, help="largest cell in that subset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from explorer.atlas import fit_umap, get_atlas, umap_params
    from explorer.motifs import geometry
    from explorer.motifs import table as motif_table
    from explorer.services import materials
    from explorer.settings import Settings

    settings = Settings()
    frame = materials.table(args.dataset, settings)
    types = geometry.structure_types(args.dataset, settings, progress=True)
    environments = motif_table.compute(args.dataset, settings, progress=True)
    atlas = get_atlas(args.dataset, settings)
    start = time.perf_counter()
    ids, described, _ = geometry.descriptors(environments, frame)
    describe_s = time.perf_counter() - start
    _, geometry_only, _ = geometry.descriptors(environments, frame,
                                            weights={**geometry.GROUP_WEIGHTS, "symmetry": 0.0})
    start = time.perf_counter()
    _, described_2d = fit_umap(described, umap_params(settings))
    umap_s = time.perf_counter() - start
    kept = frame.set_index("id").loc[ids]
    position = {record_id: k for k, record_id in enumerate(atlas.ids)}
    rows = np.array([position[i] for i in ids])
    maps = {"crystal latent (today)": atlas.latents[rows], "crystal map 2D (today)": atlas.xy[rows],
            "element fractions": element_fractions(kept), "structure descriptor": described,
            "structure map 2D": described_2d, "descriptor without symmetry": geometry_only}
    labels = types.loc[ids].to_numpy()
    formulas = kept["reduced_formula"].to_numpy()
    print(f"{args.dataset}: {len(ids)} crystals with environments, {len(set(labels))} structure types; descriptor "
          f"{described.shape[1]} numbers in {describe_s:.1f} s, its UMAP {umap_s:.1f} s")

    rng = np.random.default_rng(args.seed)
    small = np.flatnonzero(kept["nsites"].to_numpy() <= args.max_sites)
    subset = np.sort(rng.choice(small, size=min(args.subset, len(small)), replace=False))
    cached = ROOT / "build" / f"fingerprints-{args.dataset}-{args.seed}-{args.subset}-{args.max_sites}.npz"
    if cached.is_file():  # the baseline does not change with our descriptor: computed once per subset
        stored = np.load(cached)
        fp_ids, fp, per_crystal = stored["ids"].tolist(), stored["fp"], float(stored["seconds"])
    else:
        fp_ids, fp, per_crystal = fingerprints(kept.iloc[subset].reset_index(), args.workers)
        cached.parent.mkdir(exist_ok=True)
        np.savez(cached, ids=np.array(fp_ids), fp=fp, seconds=per_crystal)
    inside = np.array([ids.index(i) for i in fp_ids])
    print(f"fingerprint baseline: {len(fp_ids)} crystals of <= {args.max_sites} sites, {1000 * per_crystal:.0f} ms "
          "per crystal on one core")

    print(f"\n{'map':<30} {'all: same type':>15} {'across chem.':>13}   {'subset: same':>13} {'across chem.':>13}")
    for name, vectors in [*maps.items(), ("fingerprint (baseline)", None)]:
        whole = scores(vectors, labels, formulas) if vectors is not None else None
        part = scores(vectors[inside] if vectors is not None else fp, labels[inside], formulas[inside])
        left = f"{100 * whole['same']:14.1f}% {100 * whole['across']:12.1f}%" if whole else f"{'-':>15} {'-':>13}"
        print(f"{name:<30} {left}   {100 * part['same']:12.1f}% {100 * part['across']:12.1f}%")
    whole, part = scores(described, labels, formulas), scores(fp, labels[inside], formulas[inside])
    print(f"\nceiling of 'same type': {100 * whole['ceiling']:.1f}% (all), {100 * part['ceiling']:.1f}% (subset); "
          f"'across chemistry' counts {whole['eligible']} (all) and {part['eligible']} (subset) crystals whose type "
          "occurs with another formula")


if __name__ == "__main__":
    main()
