"""The decoder always returns a finite, non-empty crystal with a validity report, in batches (speed: bench/model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import graphite, nacl, srtio3
from pymatgen.core import Lattice, Structure

from models.crystal.autoencoder import CrystalAutoencoder, DecodedCrystal, ModelConfig
from models.crystal.data import MAX_Z, build_graphs, collate, crystal_from_structure
from models.crystal.decoder import (
    NUM_SPECIES,
    Composition,
    CrystalDecoder,
    anchor_slots,
    element_counts,
    latent_fractions,
    latent_presence,
    slot_species,
    whole_count_bonus,
)
from models.crystal.lattice import lattice_parameters, matrix_from_parameters
from models.crystal.losses import LossWeights


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
    z = torch.randn(6, model.latent_size) * scale
    decoded = model.decode(z)
    assert len(decoded) == 6
    for item in decoded:
        _assert_sane(item, model.config.max_atoms)


def test_non_finite_latents_still_decode(model):
    z = torch.full((3, model.latent_size), float("nan"))
    z[1] = float("inf")
    z[2] = -float("inf")
    for item in model.decode(z):
        _assert_sane(item, model.config.max_atoms)


def test_far_latents_are_out_of_range(model):
    model.latent_norm_bound.fill_(10.0)
    try:
        near, far = model.decode(torch.stack([torch.zeros(model.latent_size),
                                              torch.full((model.latent_size,), 100.0)]))
    finally:
        model.latent_norm_bound.fill_(float("inf"))
    assert near.validity.in_range and not far.validity.in_range
    assert any("latent norm" in reason for reason in far.validity.reasons)


def test_one_latent_and_numpy_input(model):
    decoded = model.decode(np.zeros(model.latent_size))
    assert len(decoded) == 1 and decoded[0].latent.shape == (model.latent_size,)
    with pytest.raises(ValueError, match="shape"):
        model.decode_arrays(torch.zeros(2, 5))


def test_the_two_stages_of_several_batches_joined_place_each_crystal_as_alone(model):
    """``place(Composition.concat([...]))`` of a predicted and a forced batch (of other widths) gives each crystal what
    ``forward`` gives it alone: the padding slots of the joined batch are masked out."""
    decoder = model.decoder
    z = torch.randn(3, model.latent_size) * 2
    forced = torch.tensor([[8, 8, 8, 22, 38, 0], [11, 17, 0, 0, 0, 0]])
    with torch.no_grad():
        alone = [decoder(z), decoder(z[:2], species=forced)]
        joined = decoder.place(Composition.concat([decoder.composition(z), decoder.composition(z[:2], species=forced)]))
    row = 0
    for output in alone:
        for k in range(len(output.n_atoms)):
            n = int(output.n_atoms[k])
            assert int(joined.n_atoms[row]) == n
            assert joined.species[row, :n].tolist() == output.species[k, :n].tolist()
            assert not joined.mask[row, n:].any()
            torch.testing.assert_close(joined.lattice_params[row], output.lattice_params[k])
            torch.testing.assert_close(joined.frac[-1][row, :n], output.frac[-1][k, :n], atol=1e-5, rtol=1e-5)
            row += 1


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


def test_the_latent_carries_the_exact_composition(model):
    mu, logvar = model.encode_structures([srtio3(), graphite()])
    assert mu.shape == (2, model.config.latent_dim + MAX_Z) == logvar.shape
    tail = mu[:, model.config.latent_dim :]
    assert torch.allclose(tail[0, [7, 21, 37]], torch.tensor([0.6, 0.2, 0.2]))  # O, Ti, Sr (Z - 1)
    assert tail[1, 5] == 1.0 and tail.sum(dim=1).allclose(torch.ones(2))
    fractions = latent_fractions(tail)
    assert fractions.shape == (2, NUM_SPECIES) and fractions[:, 0].eq(0).all()
    assert fractions[0, 38] == pytest.approx(0.2)


def test_any_composition_part_reads_as_fractions():
    part = torch.tensor([[0.5, 0.5, 0.0], [-1.0, -3.0, -0.5], [float("nan"), 2.0, 2.0]])
    fractions = latent_fractions(part)
    assert torch.allclose(fractions, torch.tensor([[0, 0.5, 0.5, 0], [0, 0, 0, 1.0], [0, 0, 0.5, 0.5]]))


def test_counts_that_give_whole_atoms_win_when_the_head_finds_them_plausible():
    fractions = torch.zeros(2, NUM_SPECIES)
    fractions[0, [8, 26]] = torch.tensor([0.6, 0.4])  # Fe2O3: whole at 5, 10, 15 ...
    fractions[1, [11, 17, 19, 35]] = 0.25 * torch.tensor([0.9, 1.1, 0.9, 1.1])  # a mixture: never whole
    bonus = whole_count_bonus(fractions, 12)
    assert (bonus[0, [4, 9]] == 0).all() and (bonus[0, [0, 3, 5, 11]] < -1e3).all()
    assert (bonus[1] == 0).all()
    allowed = torch.zeros(2, 12, dtype=torch.bool)
    allowed[0, 3] = True  # only n = 4 plausible: no whole count among them -> no bonus
    assert (whole_count_bonus(fractions, 12, allowed=allowed)[0] == 0).all()


def test_presence_keeps_elements_with_half_an_atom_and_always_the_main_one():
    fractions = torch.zeros(1, NUM_SPECIES)
    fractions[0, [8, 26, 29]] = torch.tensor([0.55, 0.4, 0.05])
    assert (latent_presence(fractions, torch.tensor([4]))[0] > 0).nonzero().flatten().tolist() == [8, 26]
    assert (latent_presence(fractions, torch.tensor([20]))[0] > 0).nonzero().flatten().tolist() == [8, 26, 29]
    only = torch.zeros(1, NUM_SPECIES)
    only[0, 14] = 0.01
    assert (latent_presence(only, torch.tensor([1]))[0] > 0).nonzero().flatten().tolist() == [14]


def test_a_composition_given_by_the_latent_is_not_a_loss_term(model):
    batch = collate(build_graphs([crystal_from_structure(nacl(), crystal_id="nacl")], cutoff=model.config.cutoff))
    _, report, mu = model.loss(batch, weights=LossWeights(), sample=False)
    assert "composition" not in report and "presence" not in report and "count" in report
    assert mu.shape[1] == model.latent_size
    old = CrystalAutoencoder(config=ModelConfig(latent_dim=8, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4,
                                                readout_hidden=16, d_model=16, n_heads=2, decoder_layers=1,
                                                mlp_hidden=16, composition_in_latent=False))
    assert old.latent_size == 8 and {"composition", "presence"} <= set(old.loss(batch, weights=LossWeights())[1])
