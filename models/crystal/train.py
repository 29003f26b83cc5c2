"""Train the crystal autoencoder: ``python -m models.crystal.train [--tables ...] --out runs/NAME [--resume]``.

Reads built Parquet tables by path, holds out a seeded validation split (plus every row whose ``split``
column says val/test), and trains with AdamW and a warm-up + cosine learning rate. Every epoch it
appends a JSON line to ``OUT/metrics.jsonl`` and writes ``OUT/last.pt`` (model, optimizer, scheduler,
epoch and random-generator states) and, when the validation loss improves, ``OUT/best.pt``. On
``--max-minutes`` or Ctrl-C it stops cleanly: the interrupted epoch is saved as not completed and
``--resume`` runs it again from the saved weights. ``OUT/split.json`` lists the held-out ids.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from models.crystal.augment import substitute
from models.crystal.autoencoder import CrystalAutoencoder, ModelConfig
from models.crystal.checkpoint import load_checkpoint, save_checkpoint
from models.crystal.data import CrystalGraph, build_graphs, data_hash, iterate_batches, read_tables, split_train_val
from models.crystal.lattice import lattice_parameters
from models.crystal.losses import LossWeights
from models.crystal.metrics import reconstruct
from models.device import resolve_device

DEFAULT_TABLES = ("data/tables/known.parquet", "data/tables/perov_5.parquet", "data/tables/carbon_24.parquet",
                  "data/tables/mp_20_subset.parquet")
"""known.parquet always; the three shared-data tables when they have been built."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run that is not the architecture (see ``ModelConfig``)."""

    tables: tuple[str, ...]
    out: str
    epochs: int = 200
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 500
    beta: float = 1e-3
    composition_weight: float = 1.0
    substitute: float = 0.0
    val_fraction: float = 0.05
    seed: int = 0
    max_minutes: float = 0.0
    device: str = ""
    limit: int = 0
    bucket_batches: int = 32
    val_match_samples: int = 128
    resume: bool = False
    progress: bool = True
    init_from: str = ""


def default_tables() -> tuple[str, ...]:
    """The default tables that exist (known.parquet is always listed, so a missing one is reported)."""
    return tuple(t for k, t in enumerate(DEFAULT_TABLES) if k == 0 or Path(t).is_file())


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, ModelConfig]:
    """(TrainConfig, ModelConfig) from the command line."""
    parser = argparse.ArgumentParser(prog="python -m models.crystal.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=list(default_tables()), help="Parquet tables to train on")
    parser.add_argument("--out", default="runs/default", help="output directory (checkpoints, metrics.jsonl)")
    for f in fields(TrainConfig):
        if f.name in ("tables", "out", "resume", "progress", "init_from"):
            continue
        kind = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=_HELP[f.name])
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init-from", default="", metavar="CHECKPOINT",
                        help="start a new run from the weights of another checkpoint (any version) wherever their "
                             "names and shapes fit the model; the rest starts fresh and is listed")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    model_group = parser.add_argument_group("model (ignored with --resume: the checkpoint's config is used)")
    for f in fields(ModelConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.type == "bool":
            model_group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            model_group.add_argument(flag, type={"int": int, "float": float}[f.type], default=f.default)
    args = vars(parser.parse_args(argv))
    train_values = {f.name: args[f.name] for f in fields(TrainConfig) if f.name not in ("tables", "progress")}
    train = TrainConfig(**{**train_values, "tables": tuple(args["tables"]), "progress": not args["no_progress"],
                           "init_from": args["init_from"]})
    return train, ModelConfig(**{f.name: args[f.name] for f in fields(ModelConfig)})


_HELP = {
    "epochs": "epochs to train in all (a resumed run counts the epochs already done)",
    "batch_size": "crystals per batch", "lr": "peak learning rate (AdamW)", "weight_decay": "AdamW weight decay",
    "warmup_steps": "linear warm-up steps before the cosine decay", "beta": "weight of the KL term (VAE beta)",
    "composition_weight": "weight of the composition term (KL of the element fractions)",
    "substitute": "share of training crystals whose elements are swapped for similar ones each batch "
                  "(models.crystal.augment; their lattice is not a target)",
    "val_fraction": "share of crystals held out for validation (seeded)", "seed": "random seed",
    "max_minutes": "stop cleanly after this many minutes (0: no limit)",
    "device": "cpu, cuda, cuda:N (default: $EXPLORER_DEVICE, else cuda when present, else cpu)",
    "limit": "use only the first N crystals (0: all), for quick tests",
    "bucket_batches": "sort runs of this many batches by size to cut padding (0: plain shuffle)",
    "val_match_samples": "validation crystals decoded and matched each epoch (0: none)",
}


@dataclass
class RunData:
    """Graphs of the training and validation crystals and the hash of the data."""

    train: list[CrystalGraph]
    val: list[CrystalGraph]
    data_hash: str


def prepare_data(train: TrainConfig, model_config: ModelConfig) -> RunData:
    """Read the tables, split them and build the neighbour graphs; writes OUT/split.json."""
    table = read_tables(train.tables, max_atoms=model_config.max_atoms)
    crystals, held_out = table.crystals, table.held_out
    if train.limit:
        crystals, held_out = crystals[: train.limit], held_out[: train.limit]
    if not crystals:
        raise ValueError(f"no crystals with <= {model_config.max_atoms} atoms in {list(train.tables)}")
    train_idx, val_idx = split_train_val(n=len(crystals), val_fraction=train.val_fraction, seed=train.seed,
                                         held_out=held_out)
    graphs = build_graphs(crystals, cutoff=model_config.cutoff, progress=train.progress)
    out = Path(train.out)
    out.mkdir(parents=True, exist_ok=True)
    split = {"tables": list(train.tables), "skipped_too_many_atoms": table.skipped,
             "val_ids": [crystals[i].id for i in val_idx], "n_train": len(train_idx)}
    (out / "split.json").write_text(json.dumps(split, indent=1))
    return RunData(train=[graphs[i] for i in train_idx], val=[graphs[i] for i in val_idx],
                   data_hash=data_hash(crystals))


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


@dataclass
class RunState:
    """The mutable state of a run."""

    model: CrystalAutoencoder
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    epoch: int = 0
    best_val: float = math.inf
    epoch_start_rng: tuple[str, torch.Tensor] | None = None  # (numpy state JSON, torch state) of the current epoch


def build_state(train: TrainConfig, model_config: ModelConfig, data: RunData, device: torch.device) -> RunState:
    """A fresh run, or the one saved in OUT/last.pt with ``--resume``."""
    last = Path(train.out) / "last.pt"
    if train.resume and last.is_file():
        loaded = load_checkpoint(last, device=device)
        if loaded.data_hash != data.data_hash:
            raise ValueError(f"{last} was trained on data {loaded.data_hash}, these tables give {data.data_hash}")
        model = loaded.model.train()
    else:
        if train.resume:
            print(f"--resume: {last} does not exist, starting a new run")
        torch.manual_seed(train.seed)
        model = CrystalAutoencoder(config=model_config)
        lattices = torch.as_tensor(np.stack([g.crystal.lattice for g in data.train]))
        model.decoder.set_lattice_statistics(lattice_parameters(lattices).float())
        if train.init_from:
            print(initialise_from(model, train.init_from))
        model = model.to(device).train()
        loaded = None
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    steps = train.epochs * math.ceil(len(data.train) / train.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(train.warmup_steps, steps))
    state = RunState(model=model, optimizer=optimizer, scheduler=scheduler, rng=np.random.default_rng(train.seed))
    if loaded is not None and loaded.training is not None:
        saved = loaded.training
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.rng.bit_generator.state = json.loads(saved["numpy_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state.epoch, state.best_val = int(saved["epoch"]), float(saved["best_val"])
    return state


def initialise_from(model: CrystalAutoencoder, path: str | Path) -> str:
    """Copy into ``model`` every weight of the checkpoint at ``path`` (any model version; loaded with
    ``weights_only=True``) whose name and shape fit; returns a sentence naming what was left fresh.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: when the file is not a checkpoint or not a single weight fits.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from: checkpoint not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(f"--init-from: {path} is not a model checkpoint (no state_dict)")
    own = model.state_dict()
    fitting = {k: v for k, v in payload["state_dict"].items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ValueError(f"--init-from: no weight of {path} fits this model's architecture")
    model.load_state_dict(fitting, strict=False)
    fresh = sorted({k.rsplit(".", 2)[0] for k in own if k not in fitting})
    dropped = sorted({k.rsplit(".", 2)[0] for k in payload["state_dict"] if k not in fitting})
    return (f"initialised {len(fitting)} of {len(own)} tensors from {path} (version {payload.get('version')}); "
            f"fresh: {', '.join(fresh) or 'none'}; not used: {', '.join(dropped) or 'none'}")


def save_state(state: RunState, *, train: TrainConfig, data: RunData, metrics: dict, best: bool) -> None:
    """Write OUT/last.pt (with training state) and, when ``best``, OUT/best.pt."""
    # After a stop inside an epoch, the generators are saved as they were when that epoch began, so
    # --resume runs it again over the same batches.
    numpy_rng, torch_rng = state.epoch_start_rng or (json.dumps(state.rng.bit_generator.state), torch.get_rng_state())
    training = {"optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                "numpy_rng": numpy_rng, "torch_rng": torch_rng,
                "epoch": state.epoch, "best_val": state.best_val, "train_config": json.dumps(asdict(train))}
    out = Path(train.out)
    save_checkpoint(out / "last.pt", model=state.model, data_hash=data.data_hash, metrics=metrics, training=training)
    if best:
        save_checkpoint(out / "best.pt", model=state.model, data_hash=data.data_hash, metrics=metrics)


def train_epoch(state: RunState, *, train: TrainConfig, data: RunData, weights: LossWeights,
                deadline: float) -> tuple[dict[str, float], bool]:
    """One pass over the training graphs; (mean loss terms, completed) where completed is False on stop."""
    from tqdm import tqdm

    model = state.model.train()
    state.epoch_start_rng = (json.dumps(state.rng.bit_generator.state), torch.get_rng_state())
    n_batches = math.ceil(len(data.train) / train.batch_size)
    batches = iterate_batches(data.train, batch_size=train.batch_size, rng=state.rng,
                              bucket_batches=train.bucket_batches)
    bar = tqdm(batches, total=n_batches, desc=f"epoch {state.epoch + 1}", disable=not train.progress, leave=False)
    sums: dict[str, float] = {}
    norms, seen, completed = [], 0, True
    try:
        for batch in bar:
            if time.monotonic() > deadline:
                completed = False
                break
            batch, lattice_weight = substitute(batch, state.rng, probability=train.substitute)
            loss, report, mu = model.loss(batch, weights=weights, lattice_weight=lattice_weight)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            state.optimizer.step()
            state.scheduler.step()
            for name, value in report.items():
                sums[name] = sums.get(name, 0.0) + value * batch.n_crystals
            seen += batch.n_crystals
            norms.append(mu.detach().norm(dim=-1).cpu())
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", coords=f"{sums['coords_final'] / seen:.3f}")
    except KeyboardInterrupt:
        completed = False
    finally:
        bar.close()
    if norms:
        model.set_latent_norm_bound(torch.cat(norms))
    return {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}, completed


@torch.no_grad()
def evaluate(state: RunState, *, train: TrainConfig, data: RunData, weights: LossWeights) -> dict[str, float]:
    """Validation loss terms (posterior mean, teacher forcing) and the decode match rate of a sample."""
    model = state.model.eval()
    sums: dict[str, float] = {}
    for batch in iterate_batches(data.val, batch_size=2 * train.batch_size):
        _, report, _ = model.loss(batch, weights=weights, sample=False)
        for name, value in report.items():
            sums[name] = sums.get(name, 0.0) + value * batch.n_crystals
    metrics = {f"val_{k}": v / max(len(data.val), 1) for k, v in sums.items()}
    if train.val_match_samples and data.val:
        sample = data.val[: train.val_match_samples]
        result = reconstruct(model, sample)
        metrics.update(val_match_rate=result.match_rate, val_count_accuracy=result.count_accuracy)
    model.train()
    return metrics


def run(train: TrainConfig, model_config: ModelConfig) -> dict[str, float]:
    """Train until ``train.epochs`` are done or the time budget ends; returns the last epoch's metrics."""
    start = time.monotonic()
    deadline = start + train.max_minutes * 60 if train.max_minutes > 0 else math.inf
    device = resolve_device(train.device or None)
    data = prepare_data(train, model_config)
    state = build_state(train, model_config, data, device)
    weights = LossWeights(kl=train.beta, composition=train.composition_weight)
    print(f"{len(data.train)} training / {len(data.val)} validation crystals on {device}; "
          f"{sum(p.numel() for p in state.model.parameters()):,} parameters; starting at epoch {state.epoch + 1}")
    metrics: dict[str, float] = {}
    while state.epoch < train.epochs:
        epoch_start = time.monotonic()
        train_metrics, completed = train_epoch(state, train=train, data=data, weights=weights, deadline=deadline)
        if completed:
            state.epoch += 1
            state.epoch_start_rng = None
        metrics = {"epoch": state.epoch, "completed": float(completed), **train_metrics,
                   **evaluate(state, train=train, data=data, weights=weights),
                   "seconds": time.monotonic() - epoch_start, "lr": state.scheduler.get_last_lr()[0],
                   "latent_norm_bound": float(state.model.latent_norm_bound)}
        best = completed and metrics.get("val_loss", math.inf) < state.best_val
        state.best_val = metrics["val_loss"] if best else state.best_val
        save_state(state, train=train, data=data, metrics=metrics, best=best)
        with open(Path(train.out) / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        print(_summary(metrics))
        if not completed:
            print(f"stopped after {(time.monotonic() - start) / 60:.1f} min; continue with --resume")
            break
    return metrics


def _summary(metrics: dict[str, float]) -> str:
    keys = ("train_loss", "val_loss", "val_coords_final", "val_composition", "val_lattice", "val_count",
            "val_match_rate", "seconds")
    parts = [f"{k}={metrics[k]:.4g}" for k in keys if k in metrics]
    epoch = int(metrics["epoch"])
    label = f"epoch {epoch}" if metrics["completed"] else f"epoch {epoch + 1} (stopped, not counted)"
    return f"{label}: " + " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    train, model_config = parse_args(argv)
    run(train, model_config)


if __name__ == "__main__":
    main()
