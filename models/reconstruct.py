"""Decode every crystal of a CDVAE-style CSV and write the result, so anyone can check the match rate.

    python -m models.reconstruct --checkpoint C --data PATH --out decoded.csv

One output row per input row: ``material_id`` and ``cif`` (the decoded crystal as a P1 CIF; empty
when the input could not be read or encoded).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from pymatgen.io.cif import CifWriter

from models.checkpoint import load_checkpoint
from models.evaluate import decode_all, encode_inputs, read_cdvae_csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.reconstruct", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.pt)")
    parser.add_argument("--data", required=True, type=Path, help="CDVAE-style CSV(.gz) with material_id and cif")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write (material_id, cif)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: $EXPLORER_DEVICE, cuda, cpu)")
    args = parser.parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint, device=args.device).model
        rows = read_cdvae_csv(args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    decoded = decode_all(model, encode_inputs(model, rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["material_id", "cif"])
        for row, structure in zip(rows, decoded, strict=True):
            writer.writerow([row.material_id, "" if structure is None else str(CifWriter(structure))])
    failed = sum(s is None for s in decoded)
    print(f"wrote {len(rows)} rows to {args.out} ({failed} could not be decoded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
