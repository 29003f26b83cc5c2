"""The motif autoencoder on environments of crystals it never saw: reconstruction, the missing neighbour, invariance
and speed.

    .venv/bin/python bench/motif.py --checkpoint models/checkpoints/motif.pt \
        --table data/motifs/known-<signature>-v2.parquet [--split runs/motif-1/split.json] [--n 2000] \
        [--refine-steps 300] [--starts 8] [--refined 6]

The held-out environments are those of the crystals in the run's ``split.json`` (never trained on); ``--n`` of
them (seeded) are scored with ``models.motif.evaluate``: reconstructed (right centre, count and every element, RMS
<= 0.2 Å after the best rotation or reflection and assignment; every decode is of a complete environment, as on the
motif map) for the decoder alone, for its decodes refined by the encoder, for the best of the decoder's guess
and the ``--starts`` nearest known shells unrefined (the known shells: the training environments of the table, a
``models.motif.refine.Library``), and for all of them refined (what the app shows, with the dataset's environments
as its library); and the missing neighbour put back (right element within 0.5 Å), the model told that one is missing
(the task of the tensor field network paper) or left to notice it with its count head. Invariance is the largest
latent change under a random rotation, a reflection and a shuffle of the neighbours (float64). Speed is encode +
decode per environment on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.motif.data import MAX_NEIGHBOURS, read_table  # noqa: E402
from models.motif.evaluate import missing_neighbour, reconstruction  # noqa: E402
from models.motif.refine import REFINED_STARTS, STARTS, STEPS, Library  # noqa: E402
from models.motif.train import load  # noqa: E402


def invariance(model, envs) -> float:
    from scipy.spatial.transform import Rotation

    model = model.double()
    centre, species = torch.as_tensor(envs.centre), torch.as_tensor(envs.species)
    vectors = torch.as_tensor(envs.vectors, dtype=torch.float64)
    with torch.no_grad():
        z = model.encode(centre, species, vectors)
        rotation = torch.as_tensor(Rotation.random(random_state=0).as_matrix())
        order = torch.randperm(MAX_NEIGHBOURS, generator=torch.Generator().manual_seed(0))
        moved = model.encode(centre, species[:, order], (-vectors @ rotation.T)[:, order])
    model.float()
    return float((moved - z).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "checkpoints" / "motif.pt")
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--split", type=Path, default=None, help="the run's split.json (default: beside the model "
                                                                 "card, models/checkpoints/motif.split.json)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refine-steps", type=int, default=STEPS, help="the encoder's correction of the decoded "
                                                                        f"geometry (default {STEPS}; 0: none)")
    parser.add_argument("--starts", type=int, default=STARTS, help="known shells offered beside the decoder's guess "
                                                                   f"(default {STARTS}; 0: none)")
    parser.add_argument("--refined", type=int, default=REFINED_STARTS,
                        help=f"of those, refined: the closest to z as they are (default {REFINED_STARTS})")
    args = parser.parse_args()
    split = args.split or args.checkpoint.with_suffix(".split.json")
    held = set(json.loads(split.read_text())["val_ids"])
    model, payload = load(args.checkpoint, "cpu")
    envs = read_table(args.table)
    rows = np.flatnonzero([i in held for i in envs.ids])
    chosen = np.sort(np.random.default_rng(args.seed).choice(rows, size=min(args.n, len(rows)), replace=False))
    test = envs.subset(chosen)
    print(f"{args.checkpoint.name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{args.checkpoint.stat().st_size / 1e6:.1f} MB; {len(rows)} held-out environments of {len(held)} crystals, "
          f"{len(test)} scored")
    start = time.perf_counter()
    library = None
    if args.starts:
        begin = time.perf_counter()
        library = Library.encode(model, envs.subset(np.flatnonzero([i not in held for i in envs.ids])))
        print(f"library of known shells: the {len(library)} training environments "
              f"({time.perf_counter() - begin:.0f} s)")
    runs = [("decoder alone", 0, None)]
    if args.refine_steps:
        runs.append((f"decoder's guess refined by the encoder ({args.refine_steps} steps)", args.refine_steps, None))
    if library is not None:
        runs.append((f"best of the decoder's guess and {args.starts} known shells, unrefined", 0, library))
        if args.refine_steps:
            runs.append((f"decoder's guess and the {min(args.refined, args.starts)} of {args.starts} known shells "
                         f"closest to z refined ({args.refine_steps} steps, as the app decodes)", args.refine_steps,
                         library))
    for label, steps, known in runs:
        begin = time.perf_counter()
        found = reconstruction(model, test, refine_steps=steps, library=known, starts=args.starts,
                               refined=args.refined)
        print(f"{label}: reconstructed (elements right, RMS <= 0.2 Å): {100 * found['reconstructed']:.1f} %   "
              f"elements and count right: {100 * found['species_right']:.1f} %   median RMS "
              f"{found['rms_median']:.3f} Å   ({time.perf_counter() - begin:.0f} s)")
        print("    by number of neighbours: " + ", ".join(f"CN {cn} {100 * good / max(total, 1):.0f} % of {total}"
                                                     for cn, (good, total) in found["by_cn"].items()))
    # a decode with an added neighbour is never refined: the refinement and the library do not change these
    for told, how in ((True, "the model told that one is missing"), (False, "the count head must notice")):
        missing = missing_neighbour(model, test, told=told)
        print(f"missing neighbour put back (right element within 0.5 Å), {how}: "
              f"{100 * missing['recovered']:.1f} % of {missing['n']}")
    seconds = time.perf_counter() - start
    print(f"invariance (rotation + reflection + neighbour order, float64): {invariance(model, test):.2e}")
    with torch.no_grad():
        batch = test.subset(np.arange(min(512, len(test))))
        start = time.perf_counter()
        model(torch.as_tensor(batch.centre), torch.as_tensor(batch.species), torch.as_tensor(batch.vectors))
        per = (time.perf_counter() - start) / len(batch)
    print(f"encode + decode: {1000 * per:.2f} ms per environment in batches of {len(batch)}; scoring took "
          f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
