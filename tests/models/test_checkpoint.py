"""Checkpoints round-trip exactly and load with ``weights_only=True``."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_CRYSTALS

from models.crystal.autoencoder import MODEL_VERSION, CrystalAutoencoder, ModelConfig
from models.crystal.checkpoint import load_checkpoint, save_checkpoint

SMALL = ModelConfig(max_atoms=12, latent_dim=16, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4,
                    readout_hidden=16, d_model=16, n_heads=2, decoder_layers=1, mlp_hidden=16)


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = CrystalAutoencoder(config=SMALL).eval()
    model.latent_norm_bound.fill_(4.2)
    structures = [make() for make in TINY_CRYSTALS.values()]
    mu, logvar = model.encode_structures(structures)
    decoded = model.decode_arrays(mu)
    path = save_checkpoint(tmp_path / "model.pt", model=model, data_hash="abc123",
                           metrics={"val_loss": torch.tensor(1.5), "epoch": 3})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"config", "state_dict", "version", "data_hash", "metrics"}
    assert raw["config"] == SMALL.to_dict() and raw["version"] == MODEL_VERSION
    assert raw["metrics"] == {"val_loss": 1.5, "epoch": 3.0}
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.data_hash == "abc123" and float(loaded.model.latent_norm_bound) == pytest.approx(4.2)
    mu2, logvar2 = loaded.model.encode_structures(structures)
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    again = loaded.model.decode_arrays(mu2)
    for name in ("n_atoms", "numbers", "frac_coords", "lattice"):
        assert (getattr(decoded, name) == getattr(again, name)).all()


def test_bad_checkpoints_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path / "bad.pt")
    model = CrystalAutoencoder(config=SMALL)
    with pytest.raises(ValueError, match="metric 'note' must be a number"):
        save_checkpoint(tmp_path / "m.pt", model=model, data_hash="x", metrics={"note": "hello"})


def test_config_validation():
    assert ModelConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**SMALL.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="max_atoms must be > 0, got -1"):
        ModelConfig(max_atoms=-1)
    with pytest.raises(ValueError, match="latent_dim must be int"):
        ModelConfig(latent_dim=1.5)


def test_the_committed_checkpoint_loads_with_this_code():
    """models/checkpoints/default.pt must follow the current MODEL_VERSION and reconstruct SrTiO3's composition."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "models" / "checkpoints" / "default.pt"
    loaded = load_checkpoint(path, device="cpu")
    assert path.stat().st_size < 25 * 2**20
    assert loaded.version == MODEL_VERSION and loaded.model.config.max_atoms >= 24
    mu, _ = loaded.model.encode_structures([TINY_CRYSTALS["SrTiO3"]()])
    decoded = loaded.model.decode(mu)[0]
    assert decoded.structure.composition.reduced_formula == "SrTiO3"
    assert decoded.validity.valid, decoded.validity.reasons
