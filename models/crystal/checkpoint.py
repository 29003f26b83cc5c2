"""Checkpoints: ``{config, state_dict, version, data_hash, metrics}`` written with ``torch.save``.

Everything in a checkpoint is a plain dict, str, int, float, bool or tensor, so it loads with
``torch.load(path, map_location="cpu", weights_only=True)``. A training checkpoint adds the optimizer,
scheduler, epoch and random-generator states under ``"training"`` (same rules).
Files are written to a temporary name and renamed, so an interrupt never leaves half a checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.crystal.autoencoder import MODEL_VERSION, CrystalAutoencoder, ModelConfig
from models.device import resolve_device

REQUIRED_KEYS = ("config", "state_dict", "version", "data_hash", "metrics")


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """A loaded model with what was saved beside it."""

    model: CrystalAutoencoder
    data_hash: str
    metrics: dict[str, float]
    version: int
    training: dict[str, Any] | None


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as plain floats (numpy/torch scalars converted); ValueError names a non-numeric value."""
    plain = {}
    for name, value in metrics.items():
        try:
            plain[str(name)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r} must be a number, got {value!r}") from None
    return plain


def checkpoint_dict(*, model: CrystalAutoencoder, data_hash: str, metrics: dict[str, Any],
                    training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dict that ``save_checkpoint`` writes (state_dict moved to the CPU)."""
    payload = {
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "version": MODEL_VERSION,
        "data_hash": str(data_hash),
        "metrics": plain_metrics(metrics),
    }
    if training is not None:
        payload["training"] = training
    return payload


def save_checkpoint(path: str | Path, *, model: CrystalAutoencoder, data_hash: str, metrics: dict[str, Any],
                    training: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint_dict(model=model, data_hash=data_hash, metrics=metrics, training=training), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, device: str | torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> LoadedCheckpoint:
    """Load a checkpoint (``weights_only=True``, via the CPU) onto ``device`` (see ``resolve_device``).

    Raises:
        FileNotFoundError: naming the path.
        ValueError: on a missing key, an unknown version or a config that does not fit the weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ValueError(f"{path}: not a model checkpoint, missing {missing}")
    if payload["version"] != MODEL_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload['version']!r}, this code reads {MODEL_VERSION}")
    model = CrystalAutoencoder(config=ModelConfig.from_dict(payload["config"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit config {payload['config']}: {exc}") from None
    model = model.to(device=resolve_device(device), dtype=dtype).eval()
    metrics = {str(k): float(v) for k, v in payload["metrics"].items()}
    return LoadedCheckpoint(model=model, data_hash=payload["data_hash"], metrics=metrics,
                            version=payload["version"], training=payload.get("training"))
