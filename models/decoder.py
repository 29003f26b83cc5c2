"""Latent -> crystal in a few forward passes: atom count, lattice, then species and coordinates per atom slot.

1. An MLP reads the number of atoms n (a class in 1..``max_atoms``) from z.
2. An MLP reads the six lattice parameters (log a, log b, log c, cos α, cos β, cos γ; standardised by
   buffers set from the training data) from z and n. ``models.lattice`` rebuilds the canonical matrix.
3. Each of the first n slots gets its own token, a separate linear projection of z per slot (one
   shared projection leaves the species at their marginal distribution), plus embeddings of the
   slot, of n and of the lattice. A transformer over the slots predicts each atom's species and its
   fractional coordinates as (cos, sin) per axis -> atan2, bounded and periodic by construction.
4. ``n_refine`` further transformer passes see the previous species and coordinates (as Fourier
   features) and predict them again, so atoms can move apart and fix their species together.

During training the true n and lattice are fed in (teacher forcing); when decoding, the predicted ones.
No sampling chain: decoding is ``1 + n_refine`` transformer passes for a whole batch at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.data import MAX_Z

NUM_SPECIES = MAX_Z + 1
"""Species classes: index = atomic number; index 0 is padding and never predicted."""

_FOURIER_ORDERS = (1, 2, 3)


@dataclass(frozen=True, eq=False)
class DecoderOutput:
    """What the decoder predicts for a batch.

    Attributes:
        count_logits: (n_crystals, max_atoms) logits of n = 1..max_atoms.
        n_atoms: (n_crystals,) long, the atom counts the slots were built for.
        lattice_norm: (n_crystals, 6) standardised lattice parameters (compare with ``normalize_lattice``).
        lattice_params: (n_crystals, 6) lattice parameters (log Å, cosines).
        species_logits: one (n_crystals, n_max, NUM_SPECIES) tensor per pass, last = final.
        frac: one (n_crystals, n_max, 3) tensor in [0, 1) per pass, last = final.
        mask: (n_crystals, n_max) bool, True on the first n_atoms slots.
    """

    count_logits: torch.Tensor
    n_atoms: torch.Tensor
    lattice_norm: torch.Tensor
    lattice_params: torch.Tensor
    species_logits: list[torch.Tensor]
    frac: list[torch.Tensor]
    mask: torch.Tensor


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_hidden), nn.SiLU(),
                         nn.Linear(n_hidden, n_out))


def _transformer(*, d_model: int, n_heads: int, n_layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=2 * d_model, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)


class _SlotHeads(nn.Module):
    """Final LayerNorm, then species logits and bounded periodic coordinates of each slot."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.species = nn.Linear(d_model, NUM_SPECIES)
        self.coords = nn.Linear(d_model, 6)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(species logits (..., NUM_SPECIES) with padding class at -inf, frac (..., 3) in [0, 1))."""
        h = self.norm(h)
        logits = self.species(h)
        logits = torch.cat([torch.full_like(logits[..., :1], -1e4), logits[..., 1:]], dim=-1)
        cos_sin = self.coords(h).unflatten(-1, (3, 2))
        angle = torch.atan2(cos_sin[..., 1], cos_sin[..., 0])  # (-pi, pi]
        frac = torch.remainder(angle / (2 * math.pi), 1.0)
        return logits, frac


class CrystalDecoder(nn.Module):
    """z -> atom count, lattice, species and fractional coordinates of up to ``max_atoms`` atoms."""

    def __init__(self, *, latent_dim: int, max_atoms: int, d_model: int, n_heads: int, n_layers: int,
                 n_refine: int, mlp_hidden: int) -> None:
        super().__init__()
        if max_atoms < 1 or n_refine < 0 or d_model % n_heads:
            raise ValueError(f"need max_atoms >= 1, n_refine >= 0 and d_model divisible by n_heads; got "
                             f"max_atoms={max_atoms!r}, n_refine={n_refine!r}, d_model={d_model!r}, "
                             f"n_heads={n_heads!r}")
        self.max_atoms = int(max_atoms)
        self.d_model = int(d_model)
        self.count_head = _mlp(latent_dim, mlp_hidden, max_atoms)
        self.count_embed = nn.Embedding(max_atoms + 1, d_model)
        self.lattice_head = _mlp(latent_dim + d_model, mlp_hidden, 6)
        self.lattice_embed = nn.Linear(6, d_model)
        self.slot_proj = nn.Linear(latent_dim, max_atoms * d_model)  # a separate projection per slot
        self.slot_embed = nn.Parameter(torch.randn(max_atoms, d_model) * 0.02)
        self.trunk = _transformer(d_model=d_model, n_heads=n_heads, n_layers=n_layers)
        self.heads = _SlotHeads(d_model)
        self.refiners = nn.ModuleList(_transformer(d_model=d_model, n_heads=n_heads, n_layers=n_layers)
                                      for _ in range(n_refine))
        self.refine_heads = nn.ModuleList(_SlotHeads(d_model) for _ in range(n_refine))
        self.coord_embed = nn.Linear(6 * len(_FOURIER_ORDERS), d_model)
        self.species_embed = nn.Linear(NUM_SPECIES, d_model, bias=False)
        self.register_buffer("lattice_mean", torch.zeros(6))
        self.register_buffer("lattice_std", torch.ones(6))

    @torch.no_grad()
    def set_lattice_statistics(self, params: torch.Tensor) -> None:
        """Standardise lattice parameters with the mean and std of ``params`` (n_crystals, 6) from training data."""
        self.lattice_mean.copy_(params.mean(dim=0))
        self.lattice_std.copy_(params.std(dim=0).clamp_min(1e-3))

    def normalize_lattice(self, params: torch.Tensor) -> torch.Tensor:
        """(n_crystals, 6) lattice parameters -> the standardised values the lattice head predicts."""
        return (params - self.lattice_mean) / self.lattice_std

    def forward(self, z: torch.Tensor, *, n_atoms: torch.Tensor | None = None,
                lattice_params: torch.Tensor | None = None) -> DecoderOutput:
        """Decode latents.

        Args:
            z: (n_crystals, latent_dim) latents; NaN/inf are replaced, so any input gives finite output.
            n_atoms: (n_crystals,) long true atom counts (teacher forcing); None uses the predicted ones.
            lattice_params: (n_crystals, 6) true lattice parameters (teacher forcing); None uses predicted.

        Returns:
            The ``DecoderOutput``.
        """
        z = torch.nan_to_num(z, nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)
        count_logits = self.count_head(z)
        if n_atoms is None:
            n_atoms = count_logits.argmax(dim=-1) + 1
        elif bool(((n_atoms < 1) | (n_atoms > self.max_atoms)).any()):
            raise ValueError(f"n_atoms must lie in 1..{self.max_atoms}, got {n_atoms.tolist()}")
        count = self.count_embed(n_atoms)
        lattice_norm = self.lattice_head(torch.cat([z, count], dim=-1))
        predicted_params = lattice_norm * self.lattice_std + self.lattice_mean
        lattice_in = lattice_norm if lattice_params is None else self.normalize_lattice(lattice_params)
        n_max = int(n_atoms.max())
        mask = torch.arange(n_max, device=z.device).unsqueeze(0) < n_atoms.unsqueeze(1)
        tokens = self.slot_proj(z).view(z.shape[0], self.max_atoms, self.d_model)[:, :n_max]
        tokens = tokens + self.slot_embed[:n_max] + (count + self.lattice_embed(lattice_in)).unsqueeze(1)
        h = self.trunk(tokens, src_key_padding_mask=~mask)
        logits, frac = self.heads(h)
        all_logits, all_frac = [logits], [frac]
        for refiner, heads in zip(self.refiners, self.refine_heads, strict=True):
            features = self.coord_embed(_fourier(frac)) + self.species_embed(logits.softmax(dim=-1))
            h = refiner(h + features, src_key_padding_mask=~mask)
            logits, frac = heads(h)
            all_logits.append(logits)
            all_frac.append(frac)
        return DecoderOutput(count_logits=count_logits, n_atoms=n_atoms, lattice_norm=lattice_norm,
                             lattice_params=predicted_params, species_logits=all_logits, frac=all_frac, mask=mask)


def _fourier(frac: torch.Tensor) -> torch.Tensor:
    """(..., 3) fractional coordinates -> (..., 6 * len(_FOURIER_ORDERS)) periodic features."""
    angles = torch.cat([2 * math.pi * k * frac for k in _FOURIER_ORDERS], dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
