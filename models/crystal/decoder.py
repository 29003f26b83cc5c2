"""Latent -> crystal in a few forward passes: composition, atom count, lattice, then coordinates per atom.

1. The composition: with ``composition_in_latent`` (version 4) the latent ends with the crystal's element
   fractions p, which the decoder reads as they are (``latent_fractions``); an element is present when it
   holds at least half an atom (``latent_presence``). Otherwise an MLP predicts from z which elements are
   present (one yes/no per element) and the distribution p. An autoencoder's composition head has to learn
   the combinations of ~90 elements from a few ten thousand crystals: on held-out MP-style crystals the
   version-3 head got 35 % of compositions right (47 % with the encoder's check), while the rest of the
   decoder, fed the true composition, reproduced 32 % of them instead of 24 %.
2. An MLP reads the number of atoms n (a class in 1..``max_atoms``) from z and the composition; with an
   exact composition only counts giving whole atoms of every element compete (``whole_count_bonus``).
3. The species of the n atoms follow: every present element gets at least one atom and the counts
   are the whole numbers closest to n p (see ``element_counts``), so the decoded composition is
   always a whole-number multiset. (Rounding n p alone drops minority elements whenever p is less
   sharp than the true fractions: Li 0.12 and La 0.06 of a LiLaSO2 cell of 5 atoms.)
4. An MLP reads the six lattice parameters (log a, log b, log c, cos α, cos β, cos γ; standardised by
   buffers set from the training data) from z, n and the composition. ``models.crystal.lattice`` rebuilds the
   canonical matrix.
5. The n slots hold the species in ascending atomic number. Each slot gets its own token, a separate
   linear projection of z per slot, plus embeddings of its species, of the slot, of n and of the
   lattice. A transformer over the slots predicts each atom's fractional coordinates as (cos, sin)
   per axis -> atan2, bounded and periodic by construction.
6. ``n_refine`` further transformer passes see the previous coordinates (as Fourier features) and
   predict them again, so atoms can move apart.

The origin is fixed by the atoms themselves: the anchor atom (``anchor_slots``: the first atom of the
rarest species, the lightest of them on a tie) sits at (0, 0, 0), and every pass outputs positions
relative to it. The loss (``models.crystal.losses``) puts the target's origin on an atom of the same species,
so the decoder learns relative positions against a fixed reference instead of chasing an origin that
moves with its own output (overfitting 64 perovskites for 250 steps reached a coordinate loss of
0.47 Å^2 that way, and 0.019 Å^2 anchored).

Deciding the composition first, as one set-level prediction, keeps the species of the atoms
consistent with each other: per-slot species classifiers let rare element pairs drift to chemical
neighbours one atom at a time. During training the true composition, n and lattice are fed in
(teacher forcing); when decoding, the predicted ones. No sampling chain: decoding is ``1 + n_refine``
transformer passes for a whole batch at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.crystal.data import MAX_Z

NUM_SPECIES = MAX_Z + 1
"""Species classes: index = atomic number; index 0 is padding and never predicted."""

_FOURIER_ORDERS = (1, 2, 3)

WHOLE_COUNT_GAP = 3.0
"""Nats: with an exact composition in the latent, an atom count that gives whole atoms of every element wins
over the count head's first choice when the head rates it at most this much lower (``whole_count_bonus``)."""


@dataclass(frozen=True, eq=False)
class DecoderOutput:
    """What the decoder predicts for a batch.

    Attributes:
        composition_logits: (n_crystals, NUM_SPECIES) logits of the element fractions (padding at -inf).
        presence_logits: (n_crystals, NUM_SPECIES) logits of "this element is in the crystal".
        count_logits: (n_crystals, max_atoms) logits of n = 1..max_atoms.
        n_atoms: (n_crystals,) long, the atom counts the slots were built for.
        species: (n_crystals, n_max) long atomic number of each slot (ascending, 0 beyond n_atoms).
        lattice_norm: (n_crystals, 6) standardised lattice parameters (compare with ``normalize_lattice``).
        lattice_params: (n_crystals, 6) lattice parameters (log Å, cosines).
        frac: one (n_crystals, n_max, 3) tensor in [0, 1) per pass, last = final; the anchor slot at 0.
        mask: (n_crystals, n_max) bool, True on the first n_atoms slots.
        composition_given: True when the composition was read from the latent (``composition_in_latent``),
            so the composition and presence logits are not predictions to train.
    """

    composition_logits: torch.Tensor
    presence_logits: torch.Tensor
    count_logits: torch.Tensor
    n_atoms: torch.Tensor
    species: torch.Tensor
    lattice_norm: torch.Tensor
    lattice_params: torch.Tensor
    frac: list[torch.Tensor]
    mask: torch.Tensor
    composition_given: bool = False


@dataclass(frozen=True, eq=False)
class Composition:
    """The decoder's first stage for a batch (steps 1-3 of the module docstring): what it decided before placing any
    atom. ``z`` (n_crystals, latent_dim) the latents without their composition part; ``embedding`` (n_crystals,
    d_model) the embedding of the element fractions the rest of the decoder is given; the other fields as in
    ``DecoderOutput`` (``species`` ascending, 0 beyond ``n_atoms``)."""

    z: torch.Tensor
    embedding: torch.Tensor
    composition_logits: torch.Tensor
    presence_logits: torch.Tensor
    count_logits: torch.Tensor
    n_atoms: torch.Tensor
    species: torch.Tensor

    @staticmethod
    def concat(parts: list[Composition]) -> Composition:
        """One batch of several (their species padded with 0 to the widest)."""
        width = max(part.species.shape[1] for part in parts)
        species = [nn.functional.pad(part.species, (0, width - part.species.shape[1])) for part in parts]
        return Composition(**{name: torch.cat([getattr(part, name) for part in parts]) for name in
                              ("z", "embedding", "composition_logits", "presence_logits", "count_logits", "n_atoms")},
                           species=torch.cat(species))


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_hidden), nn.SiLU(),
                         nn.Linear(n_hidden, n_out))


def _transformer(*, d_model: int, n_heads: int, n_layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=2 * d_model, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)


class _CoordinateHead(nn.Module):
    """Final LayerNorm, then bounded periodic fractional coordinates of each slot."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.coords = nn.Linear(d_model, 6)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(..., 3) fractional coordinates in [0, 1)."""
        cos_sin = self.coords(self.norm(h)).unflatten(-1, (3, 2))
        angle = torch.atan2(cos_sin[..., 1], cos_sin[..., 0])  # (-pi, pi]
        return torch.remainder(angle / (2 * math.pi), 1.0)


def finite_latents(z: torch.Tensor) -> torch.Tensor:
    """(n, latent_dim) latents with NaN -> 0 and every value clipped to [-1e4, 1e4], so any input decodes."""
    return torch.nan_to_num(z, nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)


def latent_fractions(part: torch.Tensor) -> torch.Tensor:
    """(n, MAX_Z) composition part of latents (element fractions of Z = 1..MAX_Z) -> (n, NUM_SPECIES) fractions
    that sum to 1, column 0 (padding) at 0.

    An encoded crystal's part is its exact composition; any other latent (a map point, an interpolation
    frame, noise) is read as well as it can be: negative values count as 0, and a part without any positive
    value stands for its largest entry's element alone.
    """
    values = torch.nan_to_num(part, nan=0.0).clamp_min(0.0)
    empty = values.sum(dim=1) <= 1e-9
    if bool(empty.any()):
        top = torch.nn.functional.one_hot(part[empty].argmax(dim=1), part.shape[1]).to(values.dtype)
        values = values.clone()
        values[empty] = top
    values = values / values.sum(dim=1, keepdim=True)
    return torch.cat([torch.zeros_like(values[:, :1]), values], dim=1)


def whole_count_bonus(fractions: torch.Tensor, max_atoms: int, *, allowed: torch.Tensor | None = None,
                      tolerance: float = 0.2) -> torch.Tensor:
    """(n, max_atoms) logit bonus for atom counts n = 1..max_atoms at which ``fractions`` (n, NUM_SPECIES)
    give whole numbers of atoms (summed rounding error below ``tolerance`` atoms): the exact composition of an
    encoded crystal then fixes the count to a multiple of its formula (Fe2O3: 5, 10, 15 ...). Only counts
    that ``allowed`` (n, max_atoms) bool permits qualify; a row where none does (a mixture of two compositions
    on an interpolation path, whose whole counts are far larger than the count head expects) gets no bonus,
    and the count head alone decides.
    """
    counts = torch.arange(1, max_atoms + 1, dtype=fractions.dtype, device=fractions.device)
    atoms = counts.view(1, -1, 1) * fractions.unsqueeze(1)  # (n, max_atoms, NUM_SPECIES)
    error = (atoms - atoms.round()).abs().sum(dim=-1)
    whole = error < tolerance
    if allowed is not None:
        whole = whole & allowed
    bonus = torch.where(whole, 0.0, -1e4).to(fractions.dtype)
    return torch.where(whole.any(dim=1, keepdim=True), bonus, torch.zeros_like(bonus))


def latent_presence(fractions: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """(n, NUM_SPECIES) presence logits from exact fractions: an element is present when it holds at least half
    an atom of the ``n_atoms`` (n,) atoms (the most abundant element always), so traces of a mixture drop out."""
    atoms = fractions * n_atoms.to(fractions.dtype).unsqueeze(1)
    logits = 10.0 * (atoms - 0.5)
    top = fractions.argmax(dim=1, keepdim=True)
    logits = logits.scatter(1, top, logits.gather(1, top).clamp_min(1.0))
    logits[:, 0] = -1e4
    return logits


def element_counts(fractions: torch.Tensor, present: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """Whole atom counts per element: each present element at least one atom, the rest as close to
    ``n_atoms * fractions`` as whole numbers allow.

    Args:
        fractions: (n_crystals, NUM_SPECIES) predicted element fractions (rows sum to 1, column 0 is 0).
        present: (n_crystals, NUM_SPECIES) presence scores; elements scoring > 0 are present. With none
            present the most likely element is taken; with more present elements than atoms, the
            ``n_atoms`` highest-scoring ones.
        n_atoms: (n_crystals,) long.

    Returns:
        (n_crystals, NUM_SPECIES) long counts, each row summing to its n_atoms.
    """
    frac = fractions.detach().to("cpu", torch.float64).numpy()
    score = present.detach().to("cpu", torch.float64).numpy().copy()
    score[:, 0] = -np.inf
    counts = np.zeros(frac.shape, dtype=np.int64)
    for k, n in enumerate(n_atoms.tolist()):
        chosen = np.flatnonzero(score[k] > 0)
        if chosen.size == 0:
            chosen = np.array([1 + int(np.argmax(frac[k, 1:]))])
        if chosen.size > n:
            chosen = chosen[np.argsort(-score[k, chosen], kind="stable")[:n]]
        share = frac[k, chosen] + 1e-12
        target = n * share / share.sum()
        c = np.maximum(1, np.floor(target)).astype(np.int64)
        while c.sum() > n:  # take from the element most above its target (never below one atom)
            over = np.where(c > 1, c - target, -np.inf)
            c[int(np.argmax(over))] -= 1
        while c.sum() < n:  # give to the element most below its target
            c[int(np.argmax(target - c))] += 1
        counts[k, chosen] = c
    return torch.as_tensor(counts, device=fractions.device)


def slot_species(counts: torch.Tensor, n_max: int) -> torch.Tensor:
    """(n_crystals, n_max) long atomic numbers of the slots, ascending, 0 beyond each crystal's atoms."""
    cumulative = counts.cumsum(dim=1)
    slots = torch.arange(n_max, device=counts.device).expand(counts.shape[0], n_max).contiguous()
    species = torch.searchsorted(cumulative, slots, right=True)
    return species.masked_fill(slots >= cumulative[:, -1:], 0)


def anchor_slots(species: torch.Tensor) -> torch.Tensor:
    """(n_crystals,) long slot of each crystal's anchor atom: the first atom of its rarest species, the
    lightest such species on a tie (``species``: (n_crystals, n) atomic numbers, 0 on padding; any order)."""
    n = species.shape[1]
    same = (species.unsqueeze(2) == species.unsqueeze(1)).sum(dim=2)  # atoms sharing each atom's species
    key = same * (NUM_SPECIES + 1) + species  # rarest first, then lightest
    key = key.masked_fill(species == 0, (n + 1) * (NUM_SPECIES + 1))
    return key.argmin(dim=1)


def relative_to_anchor(frac: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """(n_crystals, n, 3) fractional coordinates shifted so that slot ``anchor`` (n_crystals,) is at the origin."""
    origin = frac[torch.arange(frac.shape[0], device=frac.device), anchor]
    return torch.remainder(frac - origin.unsqueeze(1), 1.0)


def element_fractions(species: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n_crystals, NUM_SPECIES) fraction of each crystal's atoms per element, from (n_crystals, n) atomic
    numbers with 0 as padding (column 0 stays 0; a crystal without atoms gets all zeros)."""
    counts = torch.zeros(species.shape[0], NUM_SPECIES, dtype=dtype, device=species.device).scatter_add_(
        1, species, torch.ones_like(species, dtype=dtype))
    counts[:, 0] = 0.0
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)


def sorted_species(species: torch.Tensor) -> torch.Tensor:
    """(n_crystals, n) atomic numbers (0 = padding, anywhere) -> ascending per row, padding last."""
    ordered = species.masked_fill(species == 0, NUM_SPECIES).sort(dim=1).values
    return ordered.masked_fill(ordered == NUM_SPECIES, 0)


class CrystalDecoder(nn.Module):
    """z -> composition, atom count, lattice and fractional coordinates of up to ``max_atoms`` atoms."""

    def __init__(self, *, latent_dim: int, max_atoms: int, d_model: int, n_heads: int, n_layers: int,
                 n_refine: int, mlp_hidden: int, composition_in_latent: bool = False) -> None:
        super().__init__()
        if max_atoms < 1 or n_refine < 0 or d_model % n_heads:
            raise ValueError(f"need max_atoms >= 1, n_refine >= 0 and d_model divisible by n_heads; got "
                             f"max_atoms={max_atoms!r}, n_refine={n_refine!r}, d_model={d_model!r}, "
                             f"n_heads={n_heads!r}")
        self.max_atoms = int(max_atoms)
        self.d_model = int(d_model)
        self.latent_dim = int(latent_dim)
        self.composition_in_latent = bool(composition_in_latent)
        if not self.composition_in_latent:  # else the composition is read from the latent itself
            self.composition_head = _mlp(latent_dim, mlp_hidden, 2 * NUM_SPECIES)
            nn.init.constant_(self.composition_head[-1].bias[NUM_SPECIES:], -4.0)  # few elements are present
        self.composition_embed = nn.Linear(NUM_SPECIES, d_model)
        self.count_head = _mlp(latent_dim + d_model, mlp_hidden, max_atoms)
        self.count_embed = nn.Embedding(max_atoms + 1, d_model)
        self.lattice_head = _mlp(latent_dim + 2 * d_model, mlp_hidden, 6)
        self.lattice_embed = nn.Linear(6, d_model)
        self.slot_proj = nn.Linear(latent_dim, max_atoms * d_model)  # a separate projection per slot
        self.slot_embed = nn.Parameter(torch.randn(max_atoms, d_model) * 0.02)
        self.species_embed = nn.Embedding(NUM_SPECIES, d_model)
        self.anchor_embed = nn.Parameter(torch.randn(d_model) * 0.02)
        self.trunk = _transformer(d_model=d_model, n_heads=n_heads, n_layers=n_layers)
        self.heads = _CoordinateHead(d_model)
        self.refiners = nn.ModuleList(_transformer(d_model=d_model, n_heads=n_heads, n_layers=n_layers)
                                      for _ in range(n_refine))
        self.refine_heads = nn.ModuleList(_CoordinateHead(d_model) for _ in range(n_refine))
        self.coord_embed = nn.Linear(6 * len(_FOURIER_ORDERS), d_model)
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

    def forward(self, z: torch.Tensor, *, species: torch.Tensor | None = None,
                lattice_params: torch.Tensor | None = None) -> DecoderOutput:
        """Decode latents.

        Args:
            z: (n_crystals, latent_dim) latents; NaN/inf are replaced, so any input gives finite output.
            species: (n_crystals, n) long true atomic numbers, 0 on padding (teacher forcing of the
                composition and the atom count); None uses the predicted ones.
            lattice_params: (n_crystals, 6) true lattice parameters (teacher forcing); None uses predicted.

        Returns:
            The ``DecoderOutput``.
        """
        return self.place(self.composition(z, species=species), lattice_params=lattice_params)

    def composition(self, z: torch.Tensor, *, species: torch.Tensor | None = None) -> Composition:
        """The first stage of ``forward`` (composition, atom count, species of the slots), without the transformer:
        a few small MLPs. ``place`` finishes it, for this batch or for several joined (``Composition.concat``)."""
        z = finite_latents(z)
        if self.composition_in_latent:
            z, latent_composition = z[:, : self.latent_dim], latent_fractions(z[:, self.latent_dim :])
            composition_logits = latent_composition.clamp_min(1e-12).log()
            composition_logits[:, 0] = -1e4
        else:
            composition_logits, presence_logits = self.composition_head(z).chunk(2, dim=-1)
            composition_logits = torch.cat([torch.full_like(composition_logits[:, :1], -1e4),
                                            composition_logits[:, 1:]], dim=-1)
        if species is None:
            fractions = composition_logits.softmax(dim=-1)
        else:
            if species.ndim != 2 or species.shape[0] != z.shape[0]:
                raise ValueError(f"species must have shape ({z.shape[0]}, n), got {tuple(species.shape)}")
            n_atoms = (species > 0).sum(dim=1)
            if bool(((n_atoms < 1) | (n_atoms > self.max_atoms)).any()) or bool((species > MAX_Z).any()):
                raise ValueError(f"each crystal needs 1..{self.max_atoms} atoms with atomic numbers <= {MAX_Z}; "
                                 f"got atom counts {n_atoms.tolist()}")
            fractions = element_fractions(species, z.dtype)
        composition = self.composition_embed(fractions)
        count_logits = self.count_head(torch.cat([z, composition], dim=-1))
        if species is None:
            if self.composition_in_latent:
                log_p = count_logits.log_softmax(dim=-1)
                plausible = log_p >= log_p.max(dim=-1, keepdim=True).values - WHOLE_COUNT_GAP
                bonus = whole_count_bonus(latent_composition, self.max_atoms, allowed=plausible)
                n_atoms = (count_logits + bonus).argmax(dim=-1) + 1
            else:
                n_atoms = count_logits.argmax(dim=-1) + 1
        if self.composition_in_latent:
            presence_logits = latent_presence(latent_composition, n_atoms)
        if species is None:
            species = slot_species(element_counts(fractions, presence_logits, n_atoms), int(n_atoms.max()))
        else:
            species = sorted_species(species)[:, : int(n_atoms.max())]
        return Composition(z=z, embedding=composition, composition_logits=composition_logits,
                           presence_logits=presence_logits, count_logits=count_logits, n_atoms=n_atoms, species=species)

    def place(self, decided: Composition, *, lattice_params: torch.Tensor | None = None) -> DecoderOutput:
        """The second stage of ``forward``: the lattice and the atoms' coordinates of crystals whose composition is
        ``decided`` (steps 4-6 of the module docstring). Each crystal is placed as it would be alone: slots beyond
        its atoms (padding of a joined batch) are masked out."""
        z, species, n_atoms = decided.z, decided.species, decided.n_atoms
        composition = decided.embedding
        count = self.count_embed(n_atoms)
        lattice_norm = self.lattice_head(torch.cat([z, count, composition], dim=-1))
        predicted_params = lattice_norm * self.lattice_std + self.lattice_mean
        lattice_in = lattice_norm if lattice_params is None else self.normalize_lattice(lattice_params)
        n_max = species.shape[1]
        mask = species > 0
        tokens = self.slot_proj(z).view(z.shape[0], self.max_atoms, self.d_model)[:, :n_max]
        tokens = tokens + self.slot_embed[:n_max] + self.species_embed(species)
        tokens = tokens + (count + composition + self.lattice_embed(lattice_in)).unsqueeze(1)
        anchor = anchor_slots(species)
        is_anchor = torch.nn.functional.one_hot(anchor, n_max).to(tokens.dtype).unsqueeze(-1)
        h = self.trunk(tokens + is_anchor * self.anchor_embed, src_key_padding_mask=~mask)
        frac = relative_to_anchor(self.heads(h), anchor)
        all_frac = [frac]
        for refiner, head in zip(self.refiners, self.refine_heads, strict=True):
            h = refiner(h + self.coord_embed(_fourier(frac)), src_key_padding_mask=~mask)
            frac = relative_to_anchor(head(h), anchor)
            all_frac.append(frac)
        return DecoderOutput(composition_logits=decided.composition_logits, presence_logits=decided.presence_logits,
                             count_logits=decided.count_logits, n_atoms=n_atoms,
                             species=species, lattice_norm=lattice_norm, lattice_params=predicted_params,
                             frac=all_frac, mask=mask, composition_given=self.composition_in_latent)


def _fourier(frac: torch.Tensor) -> torch.Tensor:
    """(..., 3) fractional coordinates -> (..., 6 * len(_FOURIER_ORDERS)) periodic features."""
    angles = torch.cat([2 * math.pi * k * frac for k in _FOURIER_ORDERS], dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
