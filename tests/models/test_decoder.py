"""The decoder always returns a finite, non-empty crystal with a validity report, in batches (speed: bench/model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from models.autoencoder import CrystalAutoencoder, DecodedCrystal, ModelConfig
from models.decoder import NUM_SPECIES, CrystalDecoder, anchor_slots, element_counts, slot_species
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
    species = torch.tensor([[8, 0, 0, 0, 0, 0], [8, 22, 8, 38, 8, 1], [0, 14, 14, 0, 0, 0]])
    out = decoder(torch.randn(3, 8), species=species)
    assert out.mask.sum(dim=1).tolist() == out.n_atoms.tolist() == [1, 6, 2]
    assert out.species.tolist() == [[8, 0, 0, 0, 0, 0], [1, 8, 8, 8, 22, 38], [14, 14, 0, 0, 0, 0]]
    assert len(out.frac) == 3  # first pass + 2 refinements
    assert all(((f >= 0) & (f < 1)).all() for f in out.frac)
    assert (out.composition_logits.argmax(-1) > 0).all()  # the padding class is never predicted
    anchor = anchor_slots(out.species)
    assert anchor.tolist() == [0, 0, 0]  # O alone; H (rarest, lightest); Si
    for frac in out.frac:  # every pass puts the anchor atom at the origin
        assert frac[torch.arange(3), anchor].abs().max() == 0
    with pytest.raises(ValueError, match="1..6 atoms"):
        decoder(torch.randn(1, 8), species=torch.ones(1, 7, dtype=torch.long))


def test_decoded_species_follow_the_predicted_composition():
    torch.manual_seed(0)
    decoder = CrystalDecoder(latent_dim=8, max_atoms=12, d_model=16, n_heads=2, n_layers=1, n_refine=0, mlp_hidden=16)
    with torch.no_grad():
        decoder.composition_head[-1].bias[NUM_SPECIES + 1:NUM_SPECIES + 10] = 4.0  # H..F present, whatever z
    out = decoder(torch.randn(64, 8) * 3)
    present = out.presence_logits > 0
    for k in range(64):
        n = int(out.n_atoms[k])
        row = out.species[k]
        assert (row[:n] > 0).all() and (row[n:] == 0).all() and (row[:n].diff() >= 0).all()
        elements = set(row[:n].tolist())
        wanted = set(torch.nonzero(present[k]).flatten().tolist()) - {0}
        assert elements == wanted if len(wanted) <= n else (len(elements) == n and elements <= wanted)


@pytest.mark.parametrize(("fractions", "present", "n", "expected"), [
    ({8: 0.6, 22: 0.2, 38: 0.2}, {8, 22, 38}, 5, {8: 3, 22: 1, 38: 1}),
    # p less sharp than the truth (LiLaSO2): plain rounding of 5 p would give O3 S Li and lose La
    ({8: 0.457, 16: 0.249, 3: 0.124, 57: 0.056, 78: 0.01}, {3, 8, 16, 57}, 5, {3: 1, 8: 2, 16: 1, 57: 1}),
    ({6: 1.0}, {6}, 7, {6: 7}),
    ({3: 0.5, 9: 0.5}, {3, 9}, 3, {3: 2, 9: 1}),
    ({3: 0.5, 9: 0.5}, set(), 2, {3: 2}),  # nothing present: the most likely element
    ({3: 0.4, 9: 0.3, 11: 0.3}, {3, 9, 11}, 2, {3: 1, 9: 1}),  # more elements than atoms: the likeliest
])
def test_element_counts_round_to_whole_atoms(fractions, present, n, expected):
    row = torch.zeros(1, NUM_SPECIES, dtype=torch.float64)
    score = torch.full((1, NUM_SPECIES), -5.0, dtype=torch.float64)
    for z, f in fractions.items():
        row[0, z] = f
        score[0, z] = 5.0 * f if z in present else -1.0
    counts = element_counts(row, score, torch.tensor([n]))[0]
    assert {z: int(c) for z, c in enumerate(counts) if c} == expected
    assert slot_species(counts[None], n + 2)[0].tolist() == sorted(
        z for z, c in expected.items() for _ in range(c)) + [0, 0]


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
