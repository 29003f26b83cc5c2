"""The reconstruction loss ignores atom order, origin and inversion, and sees real differences.

Predictions are put in the decoder's convention first: its anchor atom (``anchor_slots``) at the origin.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CRYSTALS

from models.crystal.decoder import NUM_SPECIES, anchor_slots, relative_to_anchor
from models.crystal.losses import (
    atom_losses,
    composition_divergence,
    hungarian_match,
    kl_divergence,
    periodic_sq_distance,
    presence_loss,
    short_contact_penalty,
)


def _padded(structures):
    """(frac (B, n, 3), species (B, n), mask (B, n), lengths (B, 3)) of pymatgen structures, float64."""
    n = max(len(s) for s in structures)
    frac = torch.zeros(len(structures), n, 3, dtype=torch.float64)
    species = torch.zeros(len(structures), n, dtype=torch.long)
    for b, s in enumerate(structures):
        frac[b, : len(s)] = torch.as_tensor(s.frac_coords % 1.0)
        species[b, : len(s)] = torch.as_tensor([site.specie.Z for site in s])
    lengths = torch.as_tensor([s.lattice.abc for s in structures], dtype=torch.float64)
    return frac, species, species > 0, lengths


def _anchored(frac: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Predicted positions as the decoder gives them: its anchor atom at the origin."""
    return relative_to_anchor(frac, anchor_slots(species))


def test_periodic_distance_is_periodic_and_quadratic_near_zero():
    lengths = torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64)
    a = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    shifted = a + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert periodic_sq_distance(a, shifted, lengths) < 1e-20
    small = torch.tensor([1e-3, 0.0, 0.0], dtype=torch.float64)
    assert periodic_sq_distance(a, a + small, lengths).item() == pytest.approx((4.0 * 1e-3) ** 2, rel=1e-5)


@pytest.mark.parametrize("name", sorted(TINY_CRYSTALS))
def test_loss_is_zero_for_the_crystal_moved_permuted_and_inverted(name):
    structure = TINY_CRYSTALS[name]()
    frac, species, mask, lengths = _padded([structure])
    rng = np.random.default_rng(3)
    for sign in (1.0, -1.0):
        order = torch.as_tensor(rng.permutation(len(structure)))
        moved = _anchored(torch.remainder(sign * frac[:, order] + torch.as_tensor(rng.random(3)), 1.0),
                          species[:, order])
        coords = atom_losses(pred_frac=moved, pred_species=species[:, order], target_frac=frac,
                             target_species=species, mask=mask, lengths=lengths)
        assert coords.item() < 1e-12, f"{name}: coordinate loss {coords.item():.3g} (sign {sign})"


def test_loss_grows_with_displacement():
    structure = TINY_CRYSTALS["SrTiO3"]()
    frac, species, mask, lengths = _padded([structure])
    moved = frac.clone()
    moved[0, 0, 0] += 0.05  # Sr off its site by 0.195 Å (Ti, the anchor, stays)
    coords = atom_losses(pred_frac=_anchored(moved, species), pred_species=species, target_frac=frac,
                         target_species=species, mask=mask, lengths=lengths)
    assert coords.item() == pytest.approx(0.195**2 / 5, rel=0.05)  # one of five atoms, in Å^2


def test_loss_has_gradients_and_handles_padding():
    structures = [TINY_CRYSTALS["SrTiO3"](), TINY_CRYSTALS["graphite"]()]
    frac, species, mask, lengths = _padded(structures)
    pred = torch.rand_like(frac).requires_grad_(True)
    coords = atom_losses(pred_frac=pred, pred_species=species, target_frac=frac, target_species=species, mask=mask,
                         lengths=lengths)
    coords.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1, 4:].abs().max() == 0  # padding gets no gradient
    assert pred.grad[:, :4].abs().max() > 0


def test_hungarian_match_finds_the_permutation():
    cost = torch.tensor([[[5.0, 0.0, 9.0], [0.0, 5.0, 9.0], [9.0, 9.0, 0.0]]])
    assert hungarian_match(cost, torch.tensor([3])).tolist() == [[1, 0, 2]]
    assert hungarian_match(cost, torch.tensor([2])).tolist() == [[1, 0, 2]]  # padding maps to itself


def test_kl_is_zero_for_the_prior():
    assert kl_divergence(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0.0
    assert kl_divergence(torch.ones(4, 8), torch.zeros(4, 8)).item() == pytest.approx(4.0)


def test_composition_divergence_is_zero_only_for_the_true_fractions():
    species = torch.tensor([[38, 22, 8, 8, 8], [6, 6, 0, 0, 0]])
    exact = torch.full((2, NUM_SPECIES), -1e4, dtype=torch.float64)
    exact[0, [38, 22, 8]] = torch.log(torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64))
    exact[1, 6] = 0.0
    assert composition_divergence(exact, species).item() == pytest.approx(0.0, abs=1e-9)
    swapped = exact.clone()
    swapped[0, [38, 56]] = swapped[0, [56, 38]]  # Ba instead of Sr
    assert composition_divergence(swapped, species).item() > 1.0


def test_given_species_are_matched_within_their_species():
    """Atoms of one species may trade places; atoms of two species may not."""
    perovskite = TINY_CRYSTALS["SrTiO3"]()
    frac, species, mask, lengths = _padded([perovskite])
    oxygens = frac.clone()
    oxygens[0, [2, 3, 4]] = frac[0, [4, 2, 3]]
    coords = atom_losses(pred_frac=_anchored(oxygens, species), pred_species=species, target_frac=frac,
                         target_species=species, mask=mask, lengths=lengths)
    assert coords.item() < 1e-12
    wrong = frac.clone()
    wrong[0, [0, 1]] = frac[0, [1, 0]]  # Sr and Ti swap places: no shift makes that right
    coords = atom_losses(pred_frac=_anchored(wrong, species), pred_species=species, target_frac=frac,
                         target_species=species, mask=mask, lengths=lengths)
    assert coords.item() > 0.1


def test_presence_loss_counts_each_missing_or_extra_element():
    species = torch.tensor([[38, 22, 8, 8, 8]])
    logits = torch.full((1, NUM_SPECIES), -30.0, dtype=torch.float64)
    logits[0, [38, 22, 8]] = 30.0
    assert presence_loss(logits, species).item() < 1e-10
    logits[0, 56] = 30.0  # Ba as well
    logits[0, 38] = -30.0  # and no Sr
    assert presence_loss(logits, species).item() == pytest.approx(60.0, rel=1e-6)


def test_the_anchor_is_the_first_atom_of_the_rarest_lightest_species():
    species = torch.tensor([[38, 22, 8, 8, 8],  # SrTiO3: Sr and Ti are single, Ti is lighter
                            [8, 8, 8, 22, 38],
                            [6, 6, 6, 6, 0],  # graphite, padded: the first carbon
                            [11, 17, 11, 17, 17]])  # Na2Cl3: Na is rarer
    assert anchor_slots(species).tolist() == [1, 3, 0, 0]


def test_a_prediction_off_the_anchor_convention_is_penalised():
    """The loss fixes the origin on an atom of the anchor species: a prediction shifted off it costs."""
    structure = TINY_CRYSTALS["NaCl"]()
    frac, species, mask, lengths = _padded([structure])
    kwargs = {"pred_species": species, "target_frac": frac, "target_species": species, "mask": mask,
              "lengths": lengths}
    assert atom_losses(pred_frac=_anchored(frac, species), **kwargs).item() < 1e-12
    shifted = torch.remainder(_anchored(frac, species) + 0.2, 1.0)
    assert atom_losses(pred_frac=shifted, **kwargs).item() > 0.5


def test_short_contacts_are_penalised_only_below_the_threshold():
    structure = TINY_CRYSTALS["SrTiO3"]()
    frac, species, mask, _ = _padded([structure])
    lattice = torch.tensor(structure.lattice.matrix).unsqueeze(0)
    assert short_contact_penalty(frac, lattice, mask).item() == 0.0  # shortest pair 1.95 Å
    close = frac.clone()
    close[0, 2] = frac[0, 1] + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)  # O 0.39 Å from Ti
    assert short_contact_penalty(close, lattice, mask).item() == pytest.approx((0.8 - 0.3905) ** 2, rel=1e-6)
    wrapped = frac.clone()
    wrapped[0, 2] = torch.tensor([0.98, 0.0, 0.0], dtype=torch.float64)  # 0.078 Å from Sr across the boundary
    assert short_contact_penalty(wrapped, lattice, mask).item() == pytest.approx((0.8 - 0.0781) ** 2, rel=1e-6)
    mask[0, 2] = False  # padding never counts
    assert short_contact_penalty(close, lattice, mask).item() == 0.0
