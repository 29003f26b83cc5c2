"""Held-out reconstruction quality of a checkpoint, per family, with the CDVAE protocol.

    .venv/bin/python bench/heldout.py --checkpoint models/checkpoints/default.pt \
        --split models/checkpoints/default.split.json --out heldout.json

The crystals a training run held out (its ``split.json``) are evaluated family by family: perov_5,
carbon_24 and mp_20_subset from their original CIFs in ../shared/data (when present), and the
held-out known materials (Materials Project dielectric set and AMCSD minerals) from the table's
original structures. Each family goes through ``models.crystal.evaluate.evaluate`` (match rate over all
crystals, RMSE, validity, interpolation) and the figures are printed as a table.

The search is offered the nearest known crystals of each decode's stoichiometry, as the app offers the known
map's (``models.crystal.search.KnownCells``): here the run's training crystals (the split's tables without its held-out
ids), so no held-out crystal is ever offered. ``--no-known`` measures the decoder's own candidates only; ``--known-
baseline`` also prints the nearest known crystal alone (renamed and rescaled, no decoder): what memory alone gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.crystal.checkpoint import load_checkpoint  # noqa: E402
from models.crystal.evaluate import (  # noqa: E402
    InputCrystal,
    encode_inputs,
    evaluate,
    known_training_cells,
    read_cdvae_csv,
    reconstruction_metrics,
)
from models.crystal.search import KnownCells  # noqa: E402

SHARED_FAMILIES = ("perov_5", "carbon_24", "mp_20_subset")
COLUMNS = ("n", "match_rate", "rmse", "volume_error", "composition_match_rate", "atom_count_accuracy",
           "struct_validity", "comp_validity", "interp_struct_validity", "interp_comp_validity")


def shared_rows(family: str, held_out: set[str], shared_dir: Path) -> list[InputCrystal]:
    """Held-out rows of one ../shared/data family, read from its original CIFs."""
    rows = []
    for path in sorted((shared_dir / family).glob("*.csv.gz")):
        rows += [r for r in read_cdvae_csv(path) if f"{family}:{r.material_id}" in held_out]
    return rows


def known_rows(held_out: set[str], source: str) -> list[InputCrystal]:
    """Held-out known materials of one source, from the table's original structures."""
    import pandas as pd

    from explorer.datasets.records import original_structure

    table = pd.read_parquet(ROOT / "data" / "tables" / "known.parquet")
    table = table[table["id"].isin(held_out) & (table["source"] == source)]
    return [InputCrystal(row["id"], original_structure(row)) for _, row in table.iterrows()]


def nearest_known_alone(model, rows: list[InputCrystal], known: KnownCells) -> dict:
    """The match rate of the nearest known crystal of each decode's stoichiometry, renamed and rescaled, in place of
    the decode (no decoder geometry, no encoder check)."""
    import numpy as np
    import torch

    from models.crystal.autoencoder import DecodedArrays
    from models.crystal.search import search_decode

    latents = encode_inputs(model, rows)
    found = []
    with torch.no_grad():
        for k in range(len(rows)):
            if not np.isfinite(latents[k]).all():
                found.append(None)
                continue
            cell = search_decode(model, torch.as_tensor(latents[k : k + 1], dtype=model.dtype))[0]
            found.append(DecodedArrays.from_cells((known.starts(latents[k], cell, 1) or [cell])[:1]).structure(0))
    return reconstruction_metrics(rows, found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "checkpoints" / "default.pt")
    parser.add_argument("--split", type=Path, default=ROOT / "models" / "checkpoints" / "default.split.json")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--plain", action="store_true", help="the one-pass decode, without the encoder's check")
    parser.add_argument("--no-known", action="store_true", help="no known crystals offered to the search")
    parser.add_argument("--known-baseline", action="store_true", help="also the nearest known crystal alone")
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint).model
    split = json.loads(args.split.read_text())
    held_out = set(split["val_ids"])
    known = None if args.no_known or args.plain else known_training_cells(model, args.split)
    if known is not None:
        print(f"known crystals offered to the search: the run's {len(known)} training crystals, {known.k} per decode")
    families = {}
    for family in SHARED_FAMILIES:
        if (args.shared / family).is_dir():
            families[family] = shared_rows(family, held_out, args.shared)
    for source in ("matbench_dielectric", "amcsd"):
        families[f"known/{source}"] = known_rows(held_out, source)
    results = {}
    print(f"{'family':<28}" + "".join(f"{c[:12]:>13}" for c in COLUMNS))
    for family, rows in families.items():
        if not rows:
            continue
        results[family] = evaluate(model, rows, search=not args.plain, known=known)
        print(f"{family:<28}" + "".join(f"{results[family][c]:>13.4g}" for c in COLUMNS), flush=True)
        if args.known_baseline and known is not None:
            alone = nearest_known_alone(model, rows, known)
            results[family]["nearest_known_alone"] = alone["match_rate"]
            print(f"{'  nearest known crystal alone':<28}{alone['match_rate']:>26.4g}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
