"""The decoder always returns a finite, non-empty crystal with a validity report, fast and in batches."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from models.autoencoder import CrystalAutoencoder, DecodedCrystal, ModelConfig
from models.decoder import CrystalDecoder
from models.lattice import lattice_parameters, matrix_from_parameters


@pytest.fixture(scope="module")
def model() -> CrystalAutoencoder:
    torch.manual_seed(0)
    config = ModelConfig(latent_dim=32, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4, readout_hidden=32,
                         d_model=32, n_heads=2, decoder_layers=2, mlp_hidden=32)
    return CrystalAutoencoder(config=config).eval()


def _assert_sane(decoded: DecodedCrystal, max_atoms: int) -> None:
    structure = decoded.structure
    assert isinstance(structure, Structure)
    assert 1 <= len(structure) <= max_atoms
    assert np.isfinite(structure.lattice.matrix).all() and np.isfinite(structure.frac_coords).all()
    assert structure.volume > 0
    assert all(1 <= site.specie.Z <= 94 for site in structure)
    report = decoded.validity
    assert report is not None and report.n_atoms == len(structure)
    assert np.isfinite(report.min_distance) and np.isfinite(report.volume_per_atom)


@pytest.mark.parametrize("scale", [1.0, 100.0, 1e6])
def test_any_latent_decodes_to_a_crystal(model, scale):
    z = torch.randn(16, model.config.latent_dim) * scale
    decoded = model.decode(z)
    assert len(decoded) == 16
    for item in decoded:
        _assert_sane(item, model.config.max_atoms)


def test_non_finite_latents_still_decode(model):
    z = torch.full((3, model.config.latent_dim), float("nan"))
    z[1] = float("inf")
    z[2] = -float("inf")
    for item in model.decode(z):
        _assert_sane(item, model.config.max_atoms)


def test_far_latents_are_out_of_range(model):
    model.latent_norm_bound.fill_(10.0)
    try:
        near, far = model.decode(torch.stack([torch.zeros(32), torch.full((32,), 100.0)]))
    finally:
        model.latent_norm_bound.fill_(float("inf"))
    assert near.validity.in_range and not far.validity.in_range
    assert any("latent norm" in reason for reason in far.validity.reasons)


def test_one_latent_and_numpy_input(model):
    decoded = model.decode(np.zeros(model.config.latent_dim))
    assert len(decoded) == 1 and decoded[0].latent.shape == (model.config.latent_dim,)
    with pytest.raises(ValueError, match="shape"):
        model.decode_arrays(torch.zeros(2, 5))


def test_teacher_forcing_sets_the_slots():
    decoder = CrystalDecoder(latent_dim=8, max_atoms=6, d_model=16, n_heads=2, n_layers=1, n_refine=2, mlp_hidden=16)
    out = decoder(torch.randn(3, 8), n_atoms=torch.tensor([1, 6, 3]))
    assert out.mask.sum(dim=1).tolist() == [1, 6, 3]
    assert len(out.frac) == len(out.species_logits) == 3  # first pass + 2 refinements
    assert all(((f >= 0) & (f < 1)).all() for f in out.frac)
    assert (out.species_logits[-1].argmax(-1) > 0).all()  # the padding class is never predicted
    with pytest.raises(ValueError, match="n_atoms must lie in 1..6"):
        decoder(torch.randn(1, 8), n_atoms=torch.tensor([7]))


def test_lattice_parameters_round_trip():
    for params in [(3.9, 3.9, 3.9, 90, 90, 90), (4.1, 5.3, 6.2, 71, 98, 113), (2.46, 2.46, 6.71, 90, 90, 120)]:
        lattice = Lattice.from_parameters(*params)
        a, b, c, alpha, beta, gamma = lattice.parameters
        standard = Lattice.from_parameters(a, b, c, alpha, beta, gamma, vesta=True).matrix  # a along x
        rebuilt = matrix_from_parameters(lattice_parameters(torch.tensor(standard)[None]))[0].numpy()
        np.testing.assert_allclose(rebuilt, standard, atol=1e-10)


def test_lattice_from_extreme_parameters_is_finite():
    params = torch.tensor([[50.0, -50.0, 0.0, 5.0, -5.0, 0.99], [float("nan")] * 6])
    lattice = matrix_from_parameters(params)
    assert torch.isfinite(lattice).all() and (torch.linalg.det(lattice) > 0).all()


def test_decoding_one_crystal_is_fast():
    model = CrystalAutoencoder(config=ModelConfig()).eval()
    z = torch.randn(1, model.config.latent_dim)
    model.decode(z)  # warm-up
    times = []
    for _ in range(10):
        start = time.perf_counter()
        model.decode(z)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.1, f"median decode {np.median(times) * 1e3:.1f} ms"
