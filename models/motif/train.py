"""Train the motif autoencoder: ``python -m models.motif.train --table data/motifs/known-<sig>-v2.parquet
--out runs/motif [--epochs N] [--max-minutes M] [--resume]``.

Environments of held-out crystals (a seeded hash of the crystal id, ``--val-fraction``) are never trained on. With
probability ``--drop`` a training environment loses one random neighbour at the encoder's input while the target
stays whole, so the decoder learns to put a missing neighbour back. Every epoch prints a line and appends it to
``OUT/metrics.jsonl``, writes ``OUT/last.pt`` (model, optimizer, epoch and random state: ``--resume`` continues
from it) and, when the validation loss improves, ``OUT/best.pt``. Ctrl-C or ``--max-minutes`` stop cleanly after
saving. The checkpoint is ``{config, state_dict, version, metrics}`` of plain types (``weights_only=True``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.device import resolve_device
from models.motif.data import Environments, canonical, held_out, read_table
from models.motif.model import MODEL_VERSION, READABLE_VERSIONS, MotifAutoencoder, MotifConfig, loss


@dataclass(frozen=True)
class MotifTrainConfig:
    table: str
    out: str
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    drop: float = 0.3
    val_fraction: float = 0.1
    seed: int = 0
    max_minutes: float = 0.0
    limit: int = 0
    device: str = ""
    resume: bool = False
    per_environment: bool = False


def save(path: Path, model: MotifAutoencoder, metrics: dict, training: dict | None = None) -> None:
    """``{config, state_dict, version, metrics[, training]}`` written to a temporary file, then renamed."""
    payload = {"config": model.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in
                                                                 model.state_dict().items()},
               "version": MODEL_VERSION, "metrics": {k: float(v) for k, v in metrics.items()}}
    if training is not None:
        payload["training"] = training
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: str | Path, device: str | torch.device | None = None) -> tuple[MotifAutoencoder, dict]:
    """(model on ``device``, the checkpoint dict) of a motif checkpoint; ValueError naming a wrong file."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("version") not in READABLE_VERSIONS or "config" not in payload:
        raise ValueError(f"{path}: not a motif autoencoder checkpoint (versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))})")
    model = MotifAutoencoder(config=MotifConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(resolve_device(device)).eval(), payload


def batch_of(envs: Environments, targets: np.ndarray, rows: np.ndarray, rng: np.random.Generator, drop: float,
             device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors of one batch; with probability ``drop`` an environment of >= 2 neighbours loses one at the input."""
    species, vectors = envs.species[rows].copy(), envs.vectors[rows].copy()
    for i, n in enumerate(envs.count[rows]):
        if n >= 2 and rng.random() < drop:
            k = rng.integers(n)
            species[i, k], vectors[i, k] = 0, 0.0
    return {"centre": torch.as_tensor(envs.centre[rows], device=device),
            "species": torch.as_tensor(species, device=device), "vectors": torch.as_tensor(vectors, device=device),
            "target": torch.as_tensor(targets[rows], device=device),
            "target_species": torch.as_tensor(envs.species[rows], device=device),
            "count": torch.as_tensor(envs.count[rows], device=device)}


def run(config: MotifTrainConfig, model_config: MotifConfig) -> dict[str, float]:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device or None)
    torch.manual_seed(config.seed)
    envs = read_table(config.table, limit=config.limit)
    val_mask = held_out(envs.ids, config.val_fraction, config.seed)
    train, val = envs.subset(np.flatnonzero(~val_mask)), envs.subset(np.flatnonzero(val_mask))
    targets_train, targets_val = canonical(train), canonical(val)
    print(f"{len(train)} training and {len(val)} held-out environments (from {len(set(val.ids))} held-out crystals)",
          flush=True)
    (out / "split.json").write_text(json.dumps({"table": config.table, "val_ids": sorted(set(val.ids))}))
    model = MotifAutoencoder(config=model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    epoch, best, rng = 0, float("inf"), np.random.default_rng(config.seed)
    if config.resume and (out / "last.pt").is_file():
        model, payload = load(out / "last.pt", device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        optimizer.load_state_dict(payload["training"]["optimizer"])
        epoch, best = int(payload["training"]["epoch"]), float(payload["training"]["best"])
        rng = np.random.default_rng([config.seed, epoch])
        print(f"resumed {out / 'last.pt'} after epoch {epoch}", flush=True)
    start, metrics = time.perf_counter(), {}
    try:
        while epoch < config.epochs:
            scale = 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))  # cosine decay of the learning rate
            for group in optimizer.param_groups:
                group["lr"] = config.lr * max(scale, 0.02)
            model.train()
            order, parts = rng.permutation(len(train)), []
            for first in range(0, len(order), config.batch_size):
                batch = batch_of(train, targets_train, order[first:first + config.batch_size], rng, config.drop, device)
                total, parts_batch = loss(model, batch, per_environment=config.per_environment)
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                parts.append(parts_batch)
                if config.max_minutes and time.perf_counter() - start > 60 * config.max_minutes:
                    raise TimeoutError
            epoch += 1
            metrics = {f"train_{k}": float(np.mean([p[k] for p in parts])) for k in parts[0]}
            metrics.update(validate(model, val, targets_val, device))
            line = {"epoch": epoch, "minutes": round((time.perf_counter() - start) / 60, 2), **metrics}
            print(json.dumps(line), flush=True)
            with open(out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(line) + "\n")
            training = {"optimizer": optimizer.state_dict(), "epoch": epoch, "best": min(best, metrics["val_loss"])}
            save(out / "last.pt", model, metrics, training)
            if metrics["val_loss"] < best:
                best = metrics["val_loss"]
                save(out / "best.pt", model, metrics)
    except (KeyboardInterrupt, TimeoutError):
        print(f"stopped after epoch {epoch}: `--resume` continues from {out / 'last.pt'}", flush=True)
    return metrics


@torch.no_grad()
def validate(model: MotifAutoencoder, val: Environments, targets: np.ndarray, device: torch.device) -> dict:
    """{"val_loss", "val_position"} on the held-out environments (no dropped neighbours)."""
    model.eval()
    totals, positions, rng = [], [], np.random.default_rng(0)
    for first in range(0, len(val), 1024):
        batch = batch_of(val, targets, np.arange(first, min(first + 1024, len(val))), rng, 0.0, device)
        total, parts = loss(model, batch)
        totals.append(float(total) * len(batch["centre"]))
        positions.append(parts["position"] * len(batch["centre"]))
    return {"val_loss": sum(totals) / max(len(val), 1), "val_position": sum(positions) / max(len(val), 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.motif.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="an environment table (data/motifs/<dataset>-...-v2.parquet)")
    parser.add_argument("--out", required=True, help="run folder: last.pt, best.pt, metrics.jsonl, split.json")
    for field, default in (("epochs", 40), ("batch-size", 256), ("lr", 2e-3), ("drop", 0.3), ("val-fraction", 0.1),
                           ("seed", 0), ("max-minutes", 0.0), ("limit", 0)):
        parser.add_argument(f"--{field}", type=type(default), default=default)
    parser.add_argument("--device", default="")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--per-environment", action="store_true", help="average squared distances per environment "
                                                                       "first (every shell weighs the same)")
    parser.add_argument("--latent-dim", type=int, default=MotifConfig.latent_dim, help="learned latent numbers")
    parser.add_argument("--hidden", type=int, default=MotifConfig.hidden, help="width of the MLPs (the decoder's "
                                                                              "layers are twice this)")
    parser.add_argument("--refine-layers", type=int, default=0, help="transformer layers over the decoded slots")
    parser.add_argument("--lmax", type=int, default=MotifConfig.lmax, help="highest degree of the encoder's "
                                                                          "density on the sphere")
    parser.add_argument("--no-composition-in-latent", dest="composition_in_latent", action="store_false",
                        help="the version-1 latent: learned numbers only (the decoder guesses centre and shell)")
    args = vars(parser.parse_args(argv))
    model_fields = {"composition_in_latent": args.pop("composition_in_latent"), "latent_dim": args.pop("latent_dim"),
                    "hidden": args.pop("hidden"), "refine_layers": args.pop("refine_layers"),
                    "lmax": args.pop("lmax")}
    config = MotifTrainConfig(**{k.replace("-", "_"): v for k, v in args.items()})
    run(config, MotifConfig(**model_fields))


if __name__ == "__main__":
    main()
