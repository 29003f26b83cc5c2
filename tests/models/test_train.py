"""The training command: CLI, metrics per epoch, checkpoints, exact resume and the time budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_tables import real_crystals, write_table

import models.crystal.train as train_module
from models.crystal.autoencoder import ModelConfig
from models.crystal.checkpoint import load_checkpoint
from models.crystal.train import TrainConfig, parse_args, run

SMALL = ModelConfig(max_atoms=12, latent_dim=16, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4,
                    readout_hidden=16, d_model=16, n_heads=2, decoder_layers=1, mlp_hidden=16)


def _config(tmp_path: Path, out: str, **changes) -> TrainConfig:
    table = tmp_path / "crystals.parquet"
    if not table.exists():
        write_table(table, real_crystals() * 2)
    base = TrainConfig(tables=(str(table),), out=str(tmp_path / out), epochs=2, batch_size=8, warmup_steps=2,
                       val_fraction=0.2, val_match_samples=4, progress=False, device="cpu")
    return replace(base, **changes)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_help_runs():
    result = subprocess.run([sys.executable, "-m", "models.crystal.train", "--help"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[2])
    assert "--max-minutes" in result.stdout and "--resume" in result.stdout and "--cutoff" in result.stdout


def test_parse_args_builds_both_configs():
    train, model = parse_args(["--tables", "a.parquet", "--out", "x", "--epochs", "3", "--latent-dim", "8",
                               "--both-parities"])
    assert train.tables == ("a.parquet",) and train.epochs == 3 and train.out == "x"
    assert model.latent_dim == 8 and model.both_parities


def test_training_writes_metrics_and_checkpoints(tmp_path):
    config = _config(tmp_path, "run")
    metrics = run(config, SMALL)
    out = Path(config.out)
    lines = _lines(out / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [1, 2] and metrics["epoch"] == 2
    assert {"train_loss", "val_loss", "val_match_rate", "seconds", "latent_norm_bound"} <= set(lines[-1])
    split = json.loads((out / "split.json").read_text())
    assert len(split["val_ids"]) == 5 and split["n_train"] == 19
    for name in ("last.pt", "best.pt"):
        raw = torch.load(out / name, map_location="cpu", weights_only=True)
        assert raw["config"] == SMALL.to_dict() and isinstance(raw["metrics"]["val_loss"], float)
    assert torch.isfinite(load_checkpoint(out / "best.pt").model.latent_norm_bound)


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need a fixed reduction order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resume_continues_exactly(tmp_path, monkeypatch, one_thread):
    """A run stopped at an epoch boundary and resumed ends with the same weights as an uninterrupted one
    (species substitution on, so its random draws are replayed too)."""
    straight = _config(tmp_path, "straight", epochs=3, substitute=0.5)
    run(straight, SMALL)
    calls = []
    original = train_module.train_epoch

    def stop_in_third_epoch(state, *, train, data, weights, deadline):
        calls.append(1)
        return original(state, train=train, data=data, weights=weights,
                        deadline=-math.inf if len(calls) == 3 else deadline)

    interrupted = _config(tmp_path, "interrupted", epochs=3, substitute=0.5)
    monkeypatch.setattr("models.crystal.train.train_epoch", stop_in_third_epoch)
    assert run(interrupted, SMALL)["completed"] == 0.0
    monkeypatch.undo()
    run(replace(interrupted, resume=True), SMALL)
    assert [line["epoch"] for line in _lines(Path(interrupted.out) / "metrics.jsonl")] == [1, 2, 2, 3]
    a = torch.load(Path(straight.out) / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(Path(interrupted.out) / "last.pt", weights_only=True)["state_dict"]
    differing = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def test_time_budget_stops_cleanly(tmp_path):
    config = _config(tmp_path, "budget", epochs=50, max_minutes=1e-6)
    metrics = run(config, SMALL)
    assert metrics["completed"] == 0.0 and metrics["epoch"] == 0
    saved = torch.load(Path(config.out) / "last.pt", weights_only=True)
    assert saved["training"]["epoch"] == 0
    resumed = run(replace(config, max_minutes=0.0, epochs=1, resume=True), SMALL)
    assert resumed["epoch"] == 1 and resumed["completed"] == 1.0


def test_a_run_can_start_from_the_weights_of_an_older_model_version(tmp_path):
    from models.crystal.autoencoder import CrystalAutoencoder
    from models.crystal.checkpoint import save_checkpoint

    old = CrystalAutoencoder(config=replace(SMALL, composition_in_latent=False))
    old_path = save_checkpoint(tmp_path / "old.pt", model=old, data_hash="old", metrics={})
    new = CrystalAutoencoder(config=SMALL)
    said = train_module.initialise_from(new, old_path)
    assert "not used: decoder.composition_head" in said and "fresh: none" in said
    assert torch.equal(new.decoder.slot_proj.weight, old.decoder.slot_proj.weight)
    assert torch.equal(new.encoder.embedding.weight, old.encoder.embedding.weight)
    with pytest.raises(FileNotFoundError, match="not found"):
        train_module.initialise_from(new, tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model checkpoint"):
        train_module.initialise_from(new, tmp_path / "other.pt")
    config = _config(tmp_path, "warm", epochs=1, init_from=str(old_path))
    run(config, SMALL)
    assert load_checkpoint(Path(config.out) / "last.pt").model.config.composition_in_latent
