"""The motif autoencoder: a local environment (a centre and up to 16 neighbours) to an invariant latent and back.

Encoder (O(3)-equivariant, e3nn): every neighbour i contributes a learned, species- and distance-dependent weight
per channel and degree to a density on the sphere around the centre,

    A[l, c, m] = sum_i  w_c,l(Z_centre, Z_i, |r_i|) * Y_lm(r_i / |r_i|)          (l = 0..lmax, e3nn irreps)

which rotates with the environment and does not depend on the neighbours' order. Its invariants are the power
spectrum (sum over m of A[l, c, m] A[l, d, m]) and e3nn tensor products into even scalars (0e) of triples (A x A ->
irreps, x A -> 0e: a learned bispectrum). An MLP of them and the centre's species gives the latent, invariant to
rotation, reflection and neighbour order by construction (tested to 1e-5).

The latent's shell part (version 2, ``composition_in_latent``): after the learned numbers, the centre's element
(one-hot, ``N_SPECIES``) and how many neighbours of each element the shell holds (``N_SPECIES`` counts), so the
decoder is told what the environment is made of and the learned numbers are left to its geometry. Version 1
guessed the count from 32 learned numbers and got it right for 71 % of held-out environments; the count was its
largest failure. Between two environments (map points, interpolation frames) the shell part is a mixture, read as
counts by ``shell_of`` (largest remainders to a whole total). The decoder's own count head still says when an
input looks incomplete (``--drop`` trains it); a decode adds neighbours to the shell only when asked to
(``evaluate.decoded_points``, ``missing``: putting back a removed neighbour), as every environment of a map is whole.

Decoder (plain MLP): the latent to the centre's species, the number of neighbours and 16 slots of (species,
position Å) in the canonical frame of ``data.canonical_frame``. The loss matches slots to neighbours without order
(Hungarian assignment on distance and species, per environment), so equivalent orientations of a symmetric shape
cost nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from e3nn import o3
from torch import nn

from models.motif.data import MAX_NEIGHBOURS, N_SPECIES

MODEL_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class MotifConfig:
    """Architecture of the motif autoencoder (saved in its checkpoint)."""

    latent_dim: int = 32
    embed: int = 32
    channels: int = 12
    lmax: int = 3
    mid_channels: int = 4
    n_radial: int = 8
    cutoff: float = 6.0
    hidden: int = 256
    composition_in_latent: bool = False  # version 1 checkpoints have none; new runs set it (train.py)
    refine_layers: int = 0  # transformer layers over the 16 slots after the MLP (0: the MLP's slots as they are)
    refine_width: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MotifConfig:
        def typed(name, value):
            default = getattr(cls, name, None)
            return bool(value) if isinstance(default, bool) else float(value) if isinstance(default, float) \
                else int(value)

        return cls(**{k: typed(k, v) for k, v in values.items()})


def _irreps(mul: int, lmax: int) -> o3.Irreps:
    return o3.Irreps([(mul, (degree, (-1) ** degree)) for degree in range(lmax + 1)])


class MotifAutoencoder(nn.Module):
    """Encode environments to (n, latent_dim) latents and decode them (see the module docstring)."""

    def __init__(self, *, config: MotifConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(N_SPECIES, c.embed)
        self.irreps_sh = o3.Irreps.spherical_harmonics(c.lmax)
        self.irreps_a = _irreps(c.channels, c.lmax)
        self.radial = nn.Sequential(nn.Linear(2 * c.embed + c.n_radial, c.hidden), nn.SiLU(),
                                    nn.Linear(c.hidden, c.channels * (c.lmax + 1)))
        self.square = o3.FullyConnectedTensorProduct(self.irreps_a, self.irreps_a, _irreps(c.mid_channels, c.lmax))
        self.triples = o3.FullyConnectedTensorProduct(_irreps(c.mid_channels, c.lmax), self.irreps_a,
                                                      f"{c.hidden // 4}x0e")
        n_power = c.channels * (c.channels + 1) // 2 * (c.lmax + 1)
        self.to_latent = nn.Sequential(nn.Linear(n_power + c.hidden // 4 + c.embed, c.hidden), nn.SiLU(),
                                       nn.Linear(c.hidden, c.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(self.latent_size, c.hidden), nn.SiLU(),
                                     nn.Linear(c.hidden, 2 * c.hidden), nn.SiLU(),
                                     nn.Linear(2 * c.hidden, 2 * c.hidden), nn.SiLU(),
                                     nn.Linear(2 * c.hidden, N_SPECIES + MAX_NEIGHBOURS
                                               + MAX_NEIGHBOURS * (3 + N_SPECIES)))
        if c.refine_layers:
            self.slot_context = nn.Linear(2 * c.hidden, c.refine_width)
            self.slot_position = nn.Linear(3, c.refine_width)
            self.slot_index = nn.Parameter(torch.randn(MAX_NEIGHBOURS, c.refine_width) * 0.02)
            layer = nn.TransformerEncoderLayer(c.refine_width, nhead=4, dim_feedforward=2 * c.refine_width,
                                               dropout=0.0, batch_first=True, norm_first=True)
            self.refine = nn.TransformerEncoder(layer, c.refine_layers, enable_nested_tensor=False)
            self.refine_out = nn.Linear(c.refine_width, 3 + N_SPECIES)
            nn.init.zeros_(self.refine_out.weight)
            nn.init.zeros_(self.refine_out.bias)
        self.register_buffer("frequencies", torch.arange(1, c.n_radial + 1, dtype=torch.float32) * np.pi / c.cutoff)
        self.register_buffer("position_scale", torch.tensor(2.5))

    @property
    def shell_size(self) -> int:
        """How many numbers at the end of a latent are its shell (centre one-hot, neighbour counts; 0 in version 1)."""
        return 2 * N_SPECIES if self.config.composition_in_latent else 0

    @property
    def latent_size(self) -> int:
        """Learned numbers, plus the shell part when the config has it."""
        return self.config.latent_dim + self.shell_size

    @property
    def placed_size(self) -> int:
        """How many leading numbers of a latent say where it sits on a map: the learned ones and the centre's
        element; the neighbour counts after them are the shell's chemistry."""
        return self.config.latent_dim + (N_SPECIES if self.shell_size else 0)

    def _radial_basis(self, r: torch.Tensor) -> torch.Tensor:
        """(..., n_radial) sine basis of distances r (Å) with a smooth cut-off."""
        x = r.clamp(max=self.config.cutoff).unsqueeze(-1)
        envelope = 0.5 * (torch.cos(np.pi * x / self.config.cutoff) + 1.0)
        return torch.sin(self.frequencies * x) / x.clamp(min=1e-3) * envelope

    def encode(self, centre: torch.Tensor, species: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """(n, latent_size) latents. centre: (n,) atomic numbers; species: (n, k) atomic numbers (0: no neighbour);
        vectors: (n, k, 3) Å from the centre."""
        c = self.config
        mask = (species > 0).to(vectors.dtype)
        r = vectors.norm(dim=-1)
        sh = o3.spherical_harmonics(self.irreps_sh, vectors, normalize=True, normalization="component")
        centre_embedding = self.embedding(centre)
        features = torch.cat([centre_embedding.unsqueeze(1).expand(-1, species.shape[1], -1), self.embedding(species),
                              self._radial_basis(r)], dim=-1)
        weights = self.radial(features).view(*species.shape, c.lmax + 1, c.channels) * mask[..., None, None]
        blocks, power = [], []
        upper = torch.triu_indices(c.channels, c.channels, device=vectors.device)
        for degree in range(c.lmax + 1):
            y = sh[..., degree ** 2:(degree + 1) ** 2]  # (n, k, 2 degree + 1)
            block = torch.einsum("nkc,nkm->ncm", weights[:, :, degree], y) / MAX_NEIGHBOURS ** 0.5
            blocks.append(block.reshape(len(centre), -1))
            power.append(torch.einsum("ncm,ndm->ncd", block, block)[:, upper[0], upper[1]])  # the power spectrum
        density = torch.cat(blocks, dim=-1)
        invariants = torch.cat([*power, self.triples(self.square(density, density), density), centre_embedding],
                               dim=-1)
        learned = self.to_latent(invariants)
        if not c.composition_in_latent:
            return learned
        dtype = learned.dtype
        centre_part = nn.functional.one_hot(centre, N_SPECIES).to(dtype)
        counts = torch.zeros(len(centre), N_SPECIES, dtype=dtype, device=learned.device)
        counts.scatter_add_(1, species, (species > 0).to(dtype))
        return torch.cat([learned, centre_part, counts], dim=-1)

    @torch.no_grad()
    def encode_environments(self, environments, *, batch_size: int = 1024) -> np.ndarray:
        """(n, latent_size) float32 latents of ``models.motif.data.Environments``, in batches on the model's device."""
        device = next(self.parameters()).device
        parts = [self.encode(torch.as_tensor(environments.centre[rows], device=device),
                             torch.as_tensor(environments.species[rows], device=device),
                             torch.as_tensor(environments.vectors[rows], device=device)).cpu().numpy()
                 for rows in (slice(start, start + batch_size) for start in range(0, len(environments), batch_size))]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.latent_size), np.float32)

    def decode(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"centre": (n, N_SPECIES) logits, "count": (n, MAX_NEIGHBOURS) logits of 1..16 neighbours,
        "species": (n, 16, N_SPECIES) logits, "positions": (n, 16, 3) Å in the canonical frame}."""
        hidden = self.decoder[:-1](latent)
        out = self.decoder[-1](hidden)
        k = MAX_NEIGHBOURS
        slots = out[:, N_SPECIES + k:].view(-1, k, 3 + N_SPECIES)
        if self.config.refine_layers:  # the slots see each other: crowded shells sort out who goes where
            tokens = self.slot_context(hidden)[:, None] + self.slot_position(slots[..., :3]) + self.slot_index
            slots = slots + self.refine_out(self.refine(tokens))
        decoded = {"centre": out[:, :N_SPECIES], "count": out[:, N_SPECIES:N_SPECIES + k],
                   "positions": slots[..., :3] * self.position_scale, "species": slots[..., 3:]}
        if self.config.composition_in_latent:
            first = self.config.latent_dim
            decoded["shell_centre"] = latent[:, first:first + N_SPECIES]
            decoded["shell_counts"] = latent[:, first + N_SPECIES:first + 2 * N_SPECIES]
        return decoded

    def forward(self, centre, species, vectors):
        latent = self.encode(centre, species, vectors)
        return latent, self.decode(latent)


def shell_of(centre_part: np.ndarray, counts_part: np.ndarray) -> tuple[int, np.ndarray]:
    """(centre atomic number, (N_SPECIES,) whole neighbour counts) of a latent's shell part: the centre is the element
    of the largest entry; the counts are apportioned by largest remainders to the rounded total (at most
    ``MAX_NEIGHBOURS``), so a mixture of 6 O and 4 O halfway reads as 5 O, and of 1 O and 1 S as one of them."""
    centre = int(np.argmax(centre_part[1:])) + 1
    counts = np.clip(np.nan_to_num(np.asarray(counts_part, dtype=np.float64)), 0.0, MAX_NEIGHBOURS)
    counts[0] = 0.0
    total = int(min(round(counts.sum()), MAX_NEIGHBOURS))
    whole = np.floor(counts).astype(np.int64)
    while whole.sum() > total:  # only when the total was capped
        whole[np.flatnonzero(whole)[np.argmin(counts[whole > 0])]] -= 1
    for z in np.argsort(-(counts - whole), kind="stable")[: total - whole.sum()]:
        whole[z] += 1
    return centre, whole


def shell_slots(species_logits: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(slot indices, their atomic numbers) of ``n`` neighbours: the shell's ``counts`` (one row per atom) and
    ``n - counts.sum()`` more of any element (the decoder's count head says the input missed some) assigned to
    the 16 slots by the Hungarian method on the slots' log-probabilities of those elements."""
    from scipy.optimize import linear_sum_assignment

    logits = species_logits - species_logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # (16, N_SPECIES)
    required = np.repeat(np.arange(N_SPECIES), counts)
    extra = max(0, n - len(required))
    best_other = log_p[:, 1:].max(-1)
    cost = np.vstack([-log_p[:, required].T, np.tile(-best_other, (extra, 1))])
    rows, slots = linear_sum_assignment(cost)
    species = np.concatenate([required, 1 + log_p[:, 1:].argmax(-1)[slots[len(required):]]])[rows]
    order = np.argsort(slots)
    return slots[order], species[order]


def match(predicted: torch.Tensor, species_logits: torch.Tensor, target: torch.Tensor, target_species: torch.Tensor,
          count: torch.Tensor) -> np.ndarray:
    """(n, 16) slot index assigned to each true neighbour (-1 on padding): Hungarian assignment per environment on
    squared distance plus a species mismatch cost (1 Å² times the probability the slot gives to another element).
    No gradient flows through the assignment."""
    from scipy.optimize import linear_sum_assignment

    p = predicted.detach().cpu().numpy()
    q = target.detach().cpu().numpy()
    prob = torch.softmax(species_logits.detach(), dim=-1).cpu().numpy()
    s = target_species.cpu().numpy()
    assigned = np.full(s.shape, -1, dtype=np.int64)
    for i, n in enumerate(count.cpu().numpy()):
        cost = ((q[i, :n, None, :] - p[i, None, :, :]) ** 2).sum(-1) + (1.0 - prob[i][:, s[i, :n]].T)
        rows, cols = linear_sum_assignment(cost)
        assigned[i, rows] = cols
    return assigned


def _align_target(predicted: torch.Tensor, target: torch.Tensor, assigned: np.ndarray) -> torch.Tensor:
    """``target`` (n, k, 3) turned, per environment, by the orthogonal transform (a rotation or a reflection: the
    latent cannot tell them apart) that best lays its neighbours onto their assigned slots (Kabsch, no gradient)."""
    index = torch.as_tensor(np.where(assigned >= 0, assigned, 0), device=target.device)
    real = torch.as_tensor(assigned >= 0, device=target.device, dtype=target.dtype)[..., None]
    slots = torch.gather(predicted.detach(), 1, index[..., None].expand(-1, -1, 3)) * real
    u, _, vt = torch.linalg.svd(torch.einsum("nki,nkj->nij", slots, target * real))
    return torch.einsum("nij,nkj->nki", u @ vt, target)


def loss(model: MotifAutoencoder, batch: dict[str, torch.Tensor], *,
         per_environment: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss of a batch {"centre", "species", "vectors" (the encoder's input), "target" (canonical
    positions), "target_species", "count"}: cross-entropies of centre, count and matched slot species, and the mean
    squared distance (Å²) of matched slots; unmatched slots are pushed towards "empty" (species 0). Slots and
    neighbours are matched in the canonical frame, the target is turned onto the matched slots (``_align_target``)
    and matched again, so a frame that the canonical rules fix only up to a symmetry costs nothing.
    ``per_environment``: the squared distances are averaged per environment first, then over the batch, so a shell
    of 12 weighs as much as a shell of 2 (default: every matched neighbour of the batch weighs the same)."""
    _, out = model(batch["centre"], batch["species"], batch["vectors"])
    count = batch["count"]
    target = batch["target"]
    assigned = match(out["positions"], out["species"], target, batch["target_species"], count)
    for _ in range(2):
        target = _align_target(out["positions"], target, assigned)
        assigned = match(out["positions"], out["species"], target, batch["target_species"], count)
    assigned = torch.as_tensor(assigned, device=count.device)
    real = assigned >= 0
    rows = torch.arange(len(count), device=count.device)[:, None].expand_as(assigned)[real]
    slots = assigned[real]
    squared = ((out["positions"][rows, slots] - target[real]) ** 2).sum(-1)
    if per_environment:
        per = torch.zeros(len(count), dtype=squared.dtype, device=squared.device).index_add_(0, rows, squared)
        position = (per / count.clamp(min=1).to(squared.dtype)).mean()
    else:
        position = squared.mean()
    slot_species = torch.zeros_like(batch["target_species"])  # empty unless a neighbour was matched to the slot
    slot_species[rows, slots] = batch["target_species"][real]
    species = nn.functional.cross_entropy(out["species"].reshape(-1, N_SPECIES), slot_species.reshape(-1))
    centre = nn.functional.cross_entropy(out["centre"], batch["centre"])
    number = nn.functional.cross_entropy(out["count"], count - 1)
    total = position + species + 0.5 * centre + 0.5 * number
    parts = {"loss": total, "position": position, "species": species, "centre": centre, "count": number}
    return total, {name: float(value.detach()) for name, value in parts.items()}
