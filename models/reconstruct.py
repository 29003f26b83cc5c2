"""Decode every crystal of a CDVAE-style CSV and write the result, so anyone can check the match rate.

    python -m models.reconstruct --checkpoint C --data PATH --out decoded.csv

Decoding is the default one (the encoder checks the decoder's best few candidates, ``models.search``);
``--plain`` writes the decoder's one-pass decode. One output row per input row: ``material_id`` and
``cif`` (the decoded crystal as a P1 CIF; empty when the input could not be read or encoded).
"""

from __future__ import annotations

import csv
import sys

from pymatgen.io.cif import CifWriter

from models.evaluate import command_parser, decode_all, encode_inputs, load_inputs


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(prog="python -m models.reconstruct", description=__doc__.split("\n\n")[0],
                            out_help="CSV to write (material_id, cif)")
    args = parser.parse_args(argv)
    loaded = load_inputs(args)
    if loaded is None:
        return 2
    model, rows = loaded
    decoded = decode_all(model, encode_inputs(model, rows), search=not args.plain)
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
