"""Decode every crystal of a CDVAE-style CSV and write the result, so anyone can check the match rate.

    python -m models.crystal.reconstruct --checkpoint C --data PATH --out decoded.csv

Decoding is the default one (the encoder checks the decoder's best few candidates, ``models.crystal.search``);
``--known SPLIT_JSON`` also offers it the training crystals of that run (as the app offers its known map's);
``--plain`` writes the decoder's one-pass decode. One output row per input row: ``material_id`` and
``cif`` (the decoded crystal as a P1 CIF; empty when the input could not be read or encoded).

``--relax`` relaxes every decode with the CHGNet potential (``models.potential``: FIRE, positions and cell,
fmax 0.1 eV/Å, at most 300 steps) and writes the relaxed crystal, with a third column ``relax_error`` (empty,
or why the relaxation was stopped: then the row holds the plain decode). Measured on held-out crystals (model
card) it helps MP-style crystals and hurts perovskites and carbon.
"""

from __future__ import annotations

import csv
import sys

from pymatgen.io.cif import CifWriter

from models.crystal.evaluate import command_parser, decode_all, encode_inputs, known_of, load_inputs


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(prog="python -m models.crystal.reconstruct", description=__doc__.split("\n\n")[0],
                            out_help="CSV to write (material_id, cif)")
    parser.add_argument("--relax", action="store_true", help="relax every decode with CHGNet before writing it")
    args = parser.parse_args(argv)
    loaded = load_inputs(args)
    if loaded is None:
        return 2
    model, rows = loaded
    try:
        known = known_of(args, model)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    decoded = decode_all(model, encode_inputs(model, rows), search=not args.plain, known=known)
    errors = [""] * len(decoded)
    if args.relax:
        from models.potential import relax

        for k, structure in enumerate(decoded):
            if structure is not None:
                try:
                    decoded[k] = relax(structure)
                except ValueError as exc:
                    errors[k] = str(exc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["material_id", "cif", *(["relax_error"] if args.relax else [])])
        for row, structure, error in zip(rows, decoded, errors, strict=True):
            writer.writerow([row.material_id, "" if structure is None else str(CifWriter(structure)),
                             *([error] if args.relax else [])])
    failed = sum(s is None for s in decoded)
    print(f"wrote {len(rows)} rows to {args.out} ({failed} could not be decoded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
