"""Training loss of the autoencoder, invariant to atom order, to the choice of origin and to inversion.

The composition, when the decoder predicts it (models before version 4), is compared as a distribution (KL
divergence of the predicted element fractions from the true ones) and as a set (binary cross-entropy of each
element's presence); a version-4 latent carries it exactly, so there is nothing to learn. The atom count as a
class, the lattice as standardised parameters. The decoder's atoms (slots) carry the true species
during training (teacher forcing), and their coordinates are compared with the target's atoms after

1. alignment: the decoder puts its anchor atom (the first atom of the rarest species, the lightest
   on a tie) at the origin; the target is inverted or not (mirror images share a latent, see
   ``models.crystal.encoder``) and translated so that one of its atoms of that species is at the origin; of
   these 2 m candidates (m atoms of the anchor species) the one with the smallest species-aware
   Chamfer distance to the prediction is kept (one batched matrix product, no gradient);
2. matching: the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) pairs predicted and
   target atoms on the cost "periodic squared distance (Å^2) + ``SPECIES_MISMATCH`` when the species
   differ", so atoms are matched within their species.

The periodic squared distance between fractional positions x and y in a cell with vector lengths L is
``sum_k L_k^2 (1 - cos 2π(x_k - y_k)) / (2π^2)``: equal to the squared distance (Å^2, along the axes)
for small differences, smooth, bounded and blind to whole lattice translations.

A short-contact term pushes apart decoded atoms closer than ``SHORT_CONTACT`` (minimum-image
Cartesian distance in the target cell): where the decoder is unsure it otherwise averages two atoms
onto one spot, which is not a crystal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from models.crystal.decoder import DecoderOutput, anchor_slots, element_fractions
from models.crystal.lattice import lattice_parameters

_INF = 1e9
SHORT_CONTACT = 0.8
"""Å: decoded atoms closer than this are pushed apart during training (validity fails below 0.5 Å)."""
SPECIES_MISMATCH = 1e4
"""Matching cost (Å^2) of pairing a slot with a target atom of another species: larger than any distance."""


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; ``kl`` is the VAE β, ``earlier_passes`` weighs decoder passes before the last."""

    composition: float = 1.0
    presence: float = 1.0
    count: float = 1.0
    lattice: float = 1.0
    coords: float = 1.0
    contact: float = 1.0
    kl: float = 1e-3
    earlier_passes: float = 0.5


def periodic_sq_distance(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Smooth periodic squared distance (Å^2) between fractional positions.

    Args:
        a, b: (..., 3) fractional coordinates (broadcastable).
        lengths: (..., 3) Å lattice vector lengths (broadcastable).

    Returns:
        (...) ``sum_k L_k^2 (1 - cos 2π(a_k - b_k)) / (2π^2)``.
    """
    return (lengths.square() * (1.0 - torch.cos(2 * math.pi * (a - b)))).sum(-1) / (2 * math.pi**2)


def _species_mismatch(pred_species: torch.Tensor, target_species: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, n, n) ``SPECIES_MISMATCH`` where predicted atom i and target atom j are of different species, else 0."""
    return (pred_species.unsqueeze(2) != target_species.unsqueeze(1)).to(dtype) * SPECIES_MISMATCH


def _pair_costs(pred_frac, pred_species, target_frac, target_species, lengths):
    """(B, n, n) cost[b, i, j] of predicted atom i against target atom j: distance + species mismatch."""
    dist = periodic_sq_distance(pred_frac.unsqueeze(2), target_frac.unsqueeze(1), lengths[:, None, None, :])
    return dist + _species_mismatch(pred_species, target_species, dist.dtype)


def _periodic_features(frac: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(..., 6) [L cos 2πx, L sin 2πx]: the dot product of two is sum_k L_k^2 cos 2π(x_k - y_k)."""
    angle = 2 * math.pi * frac
    return torch.cat([lengths * torch.cos(angle), lengths * torch.sin(angle)], dim=-1)


@torch.no_grad()
def align_targets(*, pred_frac: torch.Tensor, pred_species: torch.Tensor, target_frac: torch.Tensor,
                  target_species: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Targets inverted or not and shifted so that one of their anchor-species atoms is at the origin,
    where the decoder puts its anchor atom (see the module docstring and ``models.crystal.decoder.anchor_slots``).

    Args:
        pred_frac: (B, n, 3) predicted fractional coordinates, anchor atom at the origin.
        pred_species: (B, n) long atomic numbers of the predicted atoms (0 on padding).
        target_frac: (B, n, 3) target fractional coordinates.
        target_species: (B, n) long target atomic numbers (0 on padding).
        mask: (B, n) bool, real atoms (same for prediction and target: the count is teacher-forced).
        lengths: (B, 3) Å lattice vector lengths of the target cells.

    Returns:
        (B, n, 3) aligned target fractional coordinates (wrapped to [0, 1)).
    """
    batch = torch.arange(target_species.shape[0], device=target_species.device)
    anchor_species = target_species[batch, anchor_slots(target_species)]
    candidate = (target_species == anchor_species.unsqueeze(1)) & mask  # (B, j): atoms that may sit at the origin
    signs = target_frac.new_tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)
    rel_target = signs * (target_frac.unsqueeze(1) - target_frac.unsqueeze(2)).unsqueeze(1)  # (B, 2, j, k, 3)
    feat_pred = _periodic_features(pred_frac, lengths[:, None, :])  # (B, i, 6)
    feat_tgt = _periodic_features(rel_target, lengths[:, None, None, None, :])
    dot = torch.einsum("bid,bsjkd->bsjik", feat_pred, feat_tgt)
    dist = (lengths.square().sum(-1).view(-1, 1, 1, 1, 1) - dot) / (2 * math.pi**2)
    cost = dist + _species_mismatch(pred_species, target_species, dist.dtype)[:, None, None]  # (B, 2, j, i, k)
    pair_ok = (mask.unsqueeze(2) & mask.unsqueeze(1))[:, None, None]
    cost = cost.masked_fill(~pair_ok, _INF)
    to_pred = cost.min(dim=3).values.masked_fill(~mask[:, None, None], 0.0).sum(-1)  # each target k
    to_target = cost.min(dim=4).values.masked_fill(~mask[:, None, None], 0.0).sum(-1)  # each prediction i
    score = (to_pred + to_target).masked_fill(~candidate[:, None, :], float("inf"))  # (B, 2, j)
    best = score.flatten(1).argmin(dim=1)
    n = target_species.shape[1]
    return torch.remainder(rel_target[batch, best // n, best % n], 1.0)


@torch.no_grad()
def hungarian_match(cost: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """Optimal assignment per crystal.

    Args:
        cost: (B, n, n) cost[b, i, j] of predicted atom i against target atom j.
        n_atoms: (B,) real atoms per crystal (the first n_atoms rows and columns count).

    Returns:
        (B, n) long: for each target atom j, the predicted atom matched to it (padding: j itself).
    """
    cost_np = cost.detach().to("cpu", torch.float64).numpy()
    counts = n_atoms.tolist()
    order = np.tile(np.arange(cost.shape[1]), (cost.shape[0], 1))
    for b, n in enumerate(counts):
        rows, cols = linear_sum_assignment(cost_np[b, :n, :n])
        order[b, cols] = rows
    return torch.as_tensor(order, device=cost.device)


def atom_losses(*, pred_frac: torch.Tensor, pred_species: torch.Tensor, target_frac: torch.Tensor,
                target_species: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Coordinate loss in Å^2, averaged over real atoms, after alignment and matching.

    Shapes as in ``align_targets``; atoms are matched within their species.
    """
    aligned = align_targets(pred_frac=pred_frac, pred_species=pred_species, target_frac=target_frac,
                            target_species=target_species, mask=mask, lengths=lengths)
    cost = _pair_costs(pred_frac.detach(), pred_species, aligned, target_species, lengths)
    order = hungarian_match(cost, mask.sum(dim=1))
    matched_frac = torch.gather(pred_frac, 1, order.unsqueeze(-1).expand(-1, -1, 3))
    weight = mask.to(pred_frac.dtype)
    distance = periodic_sq_distance(matched_frac, aligned, lengths.unsqueeze(1))
    return (distance * weight).sum() / weight.sum().clamp_min(1.0)


def short_contact_penalty(frac: torch.Tensor, lattice: torch.Tensor, mask: torch.Tensor, *,
                          min_distance: float = SHORT_CONTACT) -> torch.Tensor:
    """Mean over crystals of sum over atom pairs of relu(min_distance - d)^2 (Å^2), d the minimum-image distance.

    Args:
        frac: (B, n, 3) predicted fractional coordinates.
        lattice: (B, 3, 3) Å cells, rows are lattice vectors.
        mask: (B, n) bool, real atoms.
        min_distance: Å; closer pairs are penalised (no real crystal has atoms closer than ~0.74 Å, H2).
    """
    diff = frac.unsqueeze(2) - frac.unsqueeze(1)
    diff = diff - torch.round(diff)  # minimum image along each axis
    distance = (torch.einsum("bijk,bkl->bijl", diff, lattice).square().sum(-1) + 1e-12).sqrt()
    n = frac.shape[1]
    pairs = mask.unsqueeze(2) & mask.unsqueeze(1) & torch.ones(n, n, dtype=torch.bool, device=frac.device).triu(1)
    overlap = torch.relu(min_distance - distance).square() * pairs
    return overlap.sum(dim=(1, 2)).mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over crystals of KL(N(mu, exp(logvar)) || N(0, 1)), summed over latent dimensions."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()


def composition_divergence(logits: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Mean over crystals of KL(true element fractions || softmax(logits)); 0 when the fractions are exact.

    Args:
        logits: (B, n_species) predicted composition logits.
        species: (B, n) long atomic numbers, 0 on padding.
    """
    fractions = element_fractions(species, logits.dtype)
    log_fractions = torch.where(fractions > 0, fractions.clamp_min(1e-12).log(), torch.zeros_like(fractions))
    return (fractions * (log_fractions - logits.log_softmax(dim=-1))).sum(-1).mean()


def presence_loss(logits: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Mean over crystals of the binary cross-entropy of "element present", summed over elements 1..n_species-1."""
    present = torch.zeros_like(logits).scatter_(1, species, 1.0)[:, 1:]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 1:], present, reduction="none")
    return bce.sum(-1).mean()


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B,) values weighted by (B,) weights (plain mean when None; 0 when all weights are 0)."""
    if weight is None:
        return values.mean()
    weight = weight.to(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def autoencoder_loss(*, output: DecoderOutput, target_species: torch.Tensor, target_frac: torch.Tensor,
                     target_lattice: torch.Tensor, lattice_norm_target: torch.Tensor, mu: torch.Tensor,
                     logvar: torch.Tensor, weights: LossWeights,
                     lattice_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms (plain floats) for one batch decoded with teacher forcing.

    Args:
        output: the decoder output for the batch (true species fed in).
        target_species: (B, n) long atomic numbers, 0 on padding.
        target_frac: (B, n, 3) fractional coordinates in [0, 1).
        target_lattice: (B, 3, 3) Å target cells.
        lattice_norm_target: (B, 6) standardised target lattice parameters.
        mu, logvar: (B, latent_dim) posterior of each crystal.
        weights: the loss weights.
        lattice_weight: (B,) weight of each crystal's lattice error (0 where the cell is not a target,
            e.g. after species substitution); None weighs all crystals 1.
    """
    mask = output.mask
    if target_species.shape != mask.shape:
        raise ValueError(f"target_species {tuple(target_species.shape)} and decoder slots {tuple(mask.shape)} differ")
    lengths = lattice_parameters(target_lattice)[:, :3].exp()
    n_true = mask.sum(dim=1)
    terms = {} if output.composition_given else {
        "composition": composition_divergence(output.composition_logits, target_species),
        "presence": presence_loss(output.presence_logits, target_species)}
    terms |= {"count": torch.nn.functional.cross_entropy(output.count_logits, n_true - 1),
             "lattice": _weighted_mean((output.lattice_norm - lattice_norm_target).square().mean(-1), lattice_weight),
             "kl": kl_divergence(mu, logvar)}
    coords = [atom_losses(pred_frac=frac, pred_species=output.species, target_frac=target_frac,
                          target_species=target_species, mask=mask, lengths=lengths) for frac in output.frac]
    pass_weights = [weights.earlier_passes] * (len(coords) - 1) + [1.0]
    terms["coords"] = sum(w * c for w, c in zip(pass_weights, coords, strict=True)) / sum(pass_weights)
    terms["contact"] = short_contact_penalty(output.frac[-1], target_lattice, mask)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    report = {name: float(value.detach()) for name, value in terms.items()}
    report["coords_final"] = float(coords[-1].detach())
    report["loss"] = float(total.detach())
    return total, report
