"""CDVAE-protocol evaluation of a checkpoint on a CDVAE-style CSV (``material_id``, ``cif``).

    python -m models.crystal.evaluate --checkpoint C --data PATH --out metrics.json

For every crystal: encode, decode the posterior mean (with the encoder's check of the decoder's best few
compositions and site labellings, ``models.crystal.search``; ``--plain`` for the one-pass decode), and match the
decoded crystal against the input with ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``. The
match rate is over ALL crystals: an unreadable CIF, a failed decode or a structurally invalid decode
(two atoms < 0.5 Å apart or a cell < 0.1 Å^3) is a miss. RMSE is the mean normalised ``get_rms_dist`` over matches.
Interpolation: for 200 seeded random pairs, decode 9 evenly spaced latents strictly between them
and report the share of frames that are structurally / compositionally valid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from models.crystal.autoencoder import CrystalAutoencoder
from models.crystal.checkpoint import load_checkpoint
from models.crystal.metrics import rms_if_match
from models.crystal.validity import MIN_CELL_VOLUME, MIN_DISTANCE, charge_balanced, min_interatomic_distance

N_INTERPOLATION_PAIRS = 200
N_INTERPOLATION_FRAMES = 9


@dataclass(frozen=True)
class InputCrystal:
    """One row of the CSV: its id, and the parsed structure or why it could not be parsed."""

    material_id: str
    structure: Structure | None
    error: str = ""


def read_cdvae_csv(path: str | Path) -> list[InputCrystal]:
    """Rows of a CDVAE-style CSV (optionally .gz); unreadable CIFs are kept with their error."""
    import pandas as pd

    frame = pd.read_csv(path)
    for column in ("material_id", "cif"):
        if column not in frame.columns:
            raise ValueError(f"{path}: needs a {column!r} column; found {list(frame.columns)[:12]}")
    rows = []
    for material_id, cif in zip(frame["material_id"].astype(str), frame["cif"], strict=True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = Structure.from_str(str(cif), fmt="cif")
            if not structure.is_ordered or len(structure) == 0:
                raise ValueError("disordered or empty structure")
            rows.append(InputCrystal(material_id, structure))
        except Exception as exc:  # one bad row is a miss, not the end of the evaluation
            rows.append(InputCrystal(material_id, None, f"{type(exc).__name__}: {exc}"))
    return rows


def encode_inputs(model: CrystalAutoencoder, rows: list[InputCrystal], *, batch_size: int = 128) -> np.ndarray:
    """(n, latent_dim) posterior means; rows that cannot be encoded get NaN."""
    latents = np.full((len(rows), model.latent_size), np.nan)
    readable = [k for k, row in enumerate(rows) if row.structure is not None]
    for start in range(0, len(readable), batch_size):
        chunk = readable[start : start + batch_size]
        try:
            mu, _ = model.encode_structures([rows[k].structure for k in chunk])
            latents[chunk] = mu.double().cpu().numpy()
        except ValueError:  # find the bad one(s) without losing the rest of the batch
            for k in chunk:
                try:
                    latents[k] = model.encode_structures([rows[k].structure])[0][0].double().cpu().numpy()
                except ValueError:
                    continue
    return latents


def structurally_valid(structure: Structure) -> bool:
    """CDVAE structural validity: all distances >= 0.5 Å and cell volume >= 0.1 Å^3."""
    return structure.volume >= MIN_CELL_VOLUME and min_interatomic_distance(structure) >= MIN_DISTANCE


def decode_all(model: CrystalAutoencoder, latents: np.ndarray, *, batch_size: int = 256,
               search: bool = True, known=None) -> list[Structure | None]:
    """Decoded structures of finite latents (None for NaN rows); ``search`` and ``known``: see
    ``CrystalAutoencoder.decode_arrays``."""
    decoded: list[Structure | None] = [None] * len(latents)
    finite = np.flatnonzero(np.isfinite(latents).all(axis=1))
    for start in range(0, len(finite), batch_size):
        chunk = finite[start : start + batch_size]
        arrays = model.decode_arrays(latents[chunk], search=search, known=known)
        for j, k in enumerate(chunk):
            decoded[k] = arrays.structure(j)
    return decoded


def reconstruction_metrics(rows: list[InputCrystal], decoded: list[Structure | None]) -> dict[str, float]:
    """Match rate, RMSE, composition/atom-count accuracy, lattice MAE, validity and the median relative error of the
    volume per atom (``volume_error``: the match and the RMSE normalise the volume away) of decoded crystals."""
    matched, rms, same_composition, same_count, length_err, angle_err, s_valid, c_valid, volume_err = (
        [] for _ in range(9))
    for row, out in zip(rows, decoded, strict=True):
        valid = out is not None and structurally_valid(out)
        s_valid.append(valid)
        c_valid.append(out is not None and charge_balanced(out.composition))
        if row.structure is None or out is None:
            matched.append(False)
            same_composition.append(False)
            same_count.append(False)
            continue
        target = row.structure.get_primitive_structure()
        result = rms_if_match(out, target) if valid else None
        matched.append(result is not None)
        if result is not None:
            rms.append(result)
        same_composition.append(out.composition.reduced_composition == target.composition.reduced_composition)
        same_count.append(len(out) == len(target))
        volume_err.append(abs((out.volume / len(out)) / (target.volume / len(target)) - 1.0))
        got = out.lattice.get_niggli_reduced_lattice().parameters
        want = target.lattice.get_niggli_reduced_lattice().parameters
        length_err.append(np.abs(np.subtract(got[:3], want[:3])).mean())
        angle_err.append(np.abs(np.subtract(got[3:], want[3:])).mean())
    return {"n": len(rows), "match_rate": float(np.mean(matched)),
            "rmse": float(np.mean(rms)) if rms else float("nan"),
            "composition_match_rate": float(np.mean(same_composition)),
            "atom_count_accuracy": float(np.mean(same_count)),
            "lattice_mae_lengths": float(np.mean(length_err)) if length_err else float("nan"),
            "lattice_mae_angles": float(np.mean(angle_err)) if angle_err else float("nan"),
            "volume_error": float(np.median(volume_err)) if volume_err else float("nan"),
            "struct_validity": float(np.mean(s_valid)), "comp_validity": float(np.mean(c_valid)),
            "n_unreadable": sum(row.structure is None for row in rows)}


def interpolation_metrics(model: CrystalAutoencoder, latents: np.ndarray, *, seed: int = 0,
                          n_pairs: int = N_INTERPOLATION_PAIRS,
                          n_frames: int = N_INTERPOLATION_FRAMES, search: bool = True,
                          known=None) -> dict[str, float]:
    """Share of interpolation frames (linear, strictly between two crystals) that are valid."""
    finite = np.flatnonzero(np.isfinite(latents).all(axis=1))
    if len(finite) < 2:
        return {"interp_struct_validity": float("nan"), "interp_comp_validity": float("nan")}
    rng = np.random.default_rng(seed)
    pairs = [rng.choice(finite, size=2, replace=False) for _ in range(n_pairs)]
    t = np.linspace(0.0, 1.0, n_frames + 2)[1:-1]
    frames = np.concatenate([(1 - t)[:, None] * latents[a] + t[:, None] * latents[b] for a, b in pairs])
    decoded = decode_all(model, frames, search=search, known=known)
    return {"interp_struct_validity": float(np.mean([structurally_valid(s) for s in decoded])),
            "interp_comp_validity": float(np.mean([charge_balanced(s.composition) for s in decoded])),
            "interp_pairs": len(pairs), "interp_frames": len(decoded)}


def evaluate(model: CrystalAutoencoder, rows: list[InputCrystal], *, seed: int = 0,
             search: bool = True, known=None) -> dict[str, float]:
    """Every metric of the module docstring for the given rows (``search=False``: the plain one-pass decode;
    ``known``: a ``models.crystal.search.KnownCells`` of crystals the search also offers, never ones of ``rows``)."""
    start = time.perf_counter()
    with torch.no_grad():
        latents = encode_inputs(model, rows)
        decoded = decode_all(model, latents, search=search, known=known)
        metrics = reconstruction_metrics(rows, decoded)
        metrics.update(interpolation_metrics(model, latents, seed=seed, search=search, known=known))
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    return metrics


def known_training_cells(model: CrystalAutoencoder, split_path: str | Path):
    """The training crystals of a run as a ``models.crystal.search.KnownCells``: its ``split.json``'s tables without its
    held-out ids and without cells larger than the model decodes, with their latents under ``model`` (about 20 s
    for 16,000 crystals on 2 cores). ValueError naming a split file that is not one."""
    from models.crystal.data import read_tables
    from models.crystal.search import Cell, KnownCells

    split_path = Path(split_path)
    try:
        split = json.loads(split_path.read_text())
        tables, held_out = split["tables"], set(split["val_ids"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{split_path}: not a run's split.json (tables and val_ids): {exc}") from exc
    root = Path(__file__).resolve().parents[2]  # the project (tables in a split are relative to it)
    paths = [p if Path(p).is_absolute() or Path(p).exists() else root / p for p in tables]
    crystals = [c for c in read_tables(paths, max_atoms=model.config.max_atoms).crystals if c.id not in held_out]
    latents = np.zeros((0, model.latent_size), np.float32)
    if crystals:
        with torch.no_grad():
            latents = model.encode_crystals(crystals)[0].float().cpu().numpy()
    return KnownCells(latents=latents,
                      cells=[Cell(numbers=c.numbers, frac=c.frac_coords % 1.0, lattice=c.lattice) for c in crystals])


def command_parser(*, prog: str, description: str, out_help: str) -> argparse.ArgumentParser:
    """Arguments shared by ``models.crystal.evaluate`` and ``models.crystal.reconstruct``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.pt)")
    parser.add_argument("--data", required=True, type=Path, help="CDVAE-style CSV(.gz) with material_id and cif")
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: $EXPLORER_DEVICE, cuda, cpu)")
    parser.add_argument("--plain", action="store_true",
                        help="the decoder's one-pass decode, without the encoder's check (models.crystal.search)")
    parser.add_argument("--known", type=Path, default=None, metavar="SPLIT_JSON",
                        help="also offer the search the training crystals of the run of this split.json (never its "
                             "held-out ones), as the app offers its known map's crystals")
    return parser


def known_of(args: argparse.Namespace, model: CrystalAutoencoder):
    """The ``KnownCells`` of ``--known`` (None without it or with ``--plain``)."""
    return None if args.known is None or args.plain else known_training_cells(model, args.known)


def load_inputs(args: argparse.Namespace) -> tuple[CrystalAutoencoder, list[InputCrystal]] | None:
    """(model, rows) for parsed command arguments; None after printing the error of a bad path or file."""
    try:
        return load_checkpoint(args.checkpoint, device=args.device).model, read_cdvae_csv(args.data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(prog="python -m models.crystal.evaluate", description=__doc__.split("\n\n")[0],
                            out_help="where to write the metrics JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the interpolation pairs")
    args = parser.parse_args(argv)
    loaded = load_inputs(args)
    if loaded is None:
        return 2
    try:
        known = known_of(args, loaded[0])
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = evaluate(*loaded, seed=args.seed, search=not args.plain, known=known)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
