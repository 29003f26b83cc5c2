"""Decode motif latents, then let the encoder correct the geometry: gradient steps on the decoded positions until
their own latent matches the one decoded.

The decoder (an MLP from the latent to 16 slots) gets the shell's elements right (they are in the latent) but their
positions only to about 0.15 Å (median RMS): a plain regression of coordinates. The encoder is sharper: its latent
is a smooth, invariant function of the positions, so the decoded points can be moved, by Adam on

    | learned part of encode(centre, elements, points) - learned part of z |^2

(the shell part of a version-2 latent is fixed by the elements), towards a shell the encoder would have given z. The
same idea as the crystal model's search (``models.crystal.search``: the encoder checks the decoder's candidates), here
continuous, as the motif encoder is cheap. On the 2,000 held-out environments of ``bench/motif.py`` it takes the
reconstructed share from 58.6 to 71.5 % (median RMS 0.155 -> 0.064 Å) with ``STEPS`` = 50; 300 steps gave 74.6 %
(session 14, before complete decodes), but each step costs 5-9 ms on 2 cores whatever the batch (the encoder's e3nn
tensor products are hundreds of small operations), and the app decodes on every click.

A decode is of a complete environment by default: the latent's shell part says how many neighbours of each element
it holds (before, a neighbour was added whenever the count head asked for one more, which it did for 5.1 % of
complete held-out environments). A decode asked to add neighbours (``missing``: an input that misses one) is not
refined: the latent says nothing of where the added one goes, and pulling the points towards it would push the
added neighbour away. Version-1 checkpoints (no shell in the latent) are decoded as they are.

**Known shells as further starts** (``Library``): the decoder's guess is one start; a ``Library`` of known
environments (the dataset's on the motif map; the training environments in ``bench/motif.py``) gives more: the
``STARTS`` environments whose learned latent is nearest to z among those with the same number of neighbours and the
same pattern of counts (O6; O4 S2; ...), their elements renamed to the shell's (most numerous to most numerous;
``models.patterns``). One forward pass of the encoder ranks them by their latent as they are; the
``REFINED_STARTS`` closest are refined with the decoder's guess in one batch (a step costs about the same for 1 or 64
shells) and the one whose latent ends closest to z is kept. A shell that the decoder puts in the wrong basin (CN 5:
square pyramid or trigonal bipyramid; most shells of 7 to 16) then starts from a real one of the right shape. On the
2,000 held-out environments of ``bench/motif.py`` (the library: the 46,751 training environments) the reconstructed
share goes from 71.5 to 92.1 % (CN 5: 28 -> 75 %, CN 7-16: 13 -> 74 %), against 82.5 % for the best of the same
starts unrefined; 90.1 % when the library also leaves out every crystal whose formula a held-out crystal has
(near-twins: the same mineral at another temperature or pressure). 4 shells, all refined: 91.5 % (88.8 % without
near-twins); 8, all refined: 92.4 % (90.2 %), at about 1.4 times the server time of a 10-frame path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models.motif.data import MAX_NEIGHBOURS, Environments
from models.motif.evaluate import decoded_points
from models.motif.model import MotifAutoencoder, shell_of
from models.patterns import PatternIndex, count_pattern, renamed

STEPS = 50
LEARNING_RATE = 0.03
"""Å per step at the start (Adam; the rate follows a half cosine down to zero)."""
STARTS = 8
"""Known shells offered beside the decoder's guess, nearest first."""
REFINED_STARTS = 6
"""Of those, the ones refined: the closest to z as they are (one pass of the encoder ranks them)."""

Decoded = tuple[int, np.ndarray, np.ndarray]
"""(centre atomic number, (m,) neighbour atomic numbers, (m, 3) positions Å)."""


@dataclass(frozen=True, eq=False)
class Library:
    """Known environments to start refinements from: ``learned`` (n, latent_dim) float32, the learned part of their
    latents under the model that decodes; ``environments`` (``models.motif.data.Environments``) their shells."""

    learned: np.ndarray
    environments: Environments
    _index: PatternIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.learned) != len(self.environments):
            raise ValueError(f"{len(self.learned)} latents for {len(self.environments)} environments")
        patterns = [count_pattern(species)[1] for species in self.environments.species]
        object.__setattr__(self, "_index", PatternIndex(latents=self.learned, patterns=patterns))

    def __len__(self) -> int:
        return len(self.learned)

    @classmethod
    def encode(cls, model: MotifAutoencoder, environments: Environments, *, batch_size: int = 1024) -> Library:
        """The library of ``environments``, their latents computed with ``model``."""
        latents = model.encode_environments(environments, batch_size=batch_size)
        return cls(learned=latents[:, : model.config.latent_dim], environments=environments)

    def starts(self, learned: np.ndarray, counts: np.ndarray, k: int = STARTS) -> list[tuple[np.ndarray, np.ndarray]]:
        """Up to ``k`` (neighbour atomic numbers, (m, 3) positions Å) of the known shells with the pattern of
        ``counts`` ((N_SPECIES,) whole neighbour counts), nearest first to the ``learned`` part of a latent, their
        elements renamed to the shell's; never the shell whose latent it is (``models.patterns.SAME_LATENT``)."""
        elements, pattern = count_pattern(np.repeat(np.arange(len(counts)), counts))
        found = []
        for row in self._index.nearest(learned, pattern, k):
            n = int(self.environments.count[row])
            found.append((renamed(self.environments.species[row, :n], elements),
                          self.environments.vectors[row, :n].astype(np.float64)))
        return found


def decode(model: MotifAutoencoder, latents: torch.Tensor, *, steps: int = STEPS, learning_rate: float = LEARNING_RATE,
           library: Library | None = None, starts: int = STARTS, refined: int = REFINED_STARTS,
           missing: int | None = 0) -> list[Decoded]:
    """Per latent (n, latent_size): (centre atomic number, (m,) neighbour atomic numbers, (m, 3) positions Å),
    ``decoded_points`` of the decoder's output refined by the encoder (``steps`` = 0 and no ``library``: as
    decoded); with a ``library``, its ``starts`` nearest known shells are ranked by their distance to z as they are,
    the ``refined`` closest are refined too, and the shell whose latent ends closest to z is returned. ``missing``:
    neighbours to add to the latent's shell (``decoded_points``; 0 for a complete environment); a decode with added
    neighbours is not refined."""
    with torch.no_grad():
        found = decoded_points(model.decode(latents), missing=missing)
    if (steps <= 0 and library is None) or not model.shell_size:
        return found
    first = model.config.latent_dim
    z = latents.detach().cpu().numpy()
    half = model.shell_size // 2  # the centre's one-hot, then the neighbour counts
    candidates: list[Decoded] = []
    owners: list[int] = []
    for i, (centre, species, _) in enumerate(found):
        counts = shell_of(z[i, first:first + half], z[i, first + half:first + model.shell_size])[1]
        if len(species) != counts.sum():
            continue
        candidates.append(found[i])
        owners.append(i)
        if library is not None:
            for known_species, points in library.starts(z[i, :first], counts, starts):
                candidates.append((centre, known_species, points))
                owners.append(i)
    if not candidates:
        return found
    if library is not None and starts > refined:
        candidates, owners = _closest_starts(model, latents, candidates, owners, refined)
    points, distance = refine(model, latents[owners], candidates, steps=steps, learning_rate=learning_rate,
                              with_distance=True)
    best: dict[int, int] = {}
    for k, i in enumerate(owners):
        if i not in best or distance[k] < distance[best[i]]:
            best[i] = k
    for i, k in best.items():
        found[i] = (candidates[k][0], candidates[k][1], points[k])
    return found


def _closest_starts(model: MotifAutoencoder, latents: torch.Tensor, candidates: list[Decoded], owners: list[int],
                    keep: int) -> tuple[list[Decoded], list[int]]:
    """Per latent, its first candidate (the decoder's guess) and the ``keep`` others whose learned latent, as they
    are, is closest to z's."""
    _, distance = refine(model, latents[owners], candidates, steps=0, with_distance=True)
    by_owner: dict[int, list[int]] = {}
    for k, owner in enumerate(owners):
        by_owner.setdefault(owner, []).append(k)
    chosen: list[int] = []
    for rows in by_owner.values():
        chosen += [rows[0]] + sorted(rows[1:], key=lambda k: distance[k])[:keep]
    chosen.sort()
    return [candidates[k] for k in chosen], [owners[k] for k in chosen]


def refine(model: MotifAutoencoder, latents: torch.Tensor, decoded: list[Decoded], *, steps: int = STEPS,
           learning_rate: float = LEARNING_RATE, with_distance: bool = False):
    """The positions of ``decoded`` (as ``decoded_points`` gives them) after ``steps`` of Adam on the distance between
    the learned part of their latent and of ``latents``; the model's weights are not touched. ``with_distance``:
    (positions, (n,) squared distance of each one's learned latent to z's after the last step)."""
    device, dtype = latents.device, next(model.parameters()).dtype
    n = len(decoded)
    centre = torch.as_tensor([c for c, _, _ in decoded], device=device)
    species = torch.zeros(n, MAX_NEIGHBOURS, dtype=torch.long, device=device)
    start = torch.zeros(n, MAX_NEIGHBOURS, 3, dtype=dtype, device=device)
    for i, (_, elements, points) in enumerate(decoded):
        species[i, : len(elements)] = torch.as_tensor(elements, device=device)
        start[i, : len(elements)] = torch.as_tensor(np.asarray(points), dtype=dtype, device=device)
    real = (species > 0).to(dtype)[..., None]
    learned = model.config.latent_dim
    target = latents[:, :learned].detach().to(dtype)
    points = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([points], lr=learning_rate)
    with torch.enable_grad():
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * 0.5 * (1 + np.cos(np.pi * step / steps))
            z = model.encode(centre, species, points * real)
            loss = ((z[:, :learned] - target) ** 2).sum()
            (points.grad,) = torch.autograd.grad(loss, points)
            optimizer.step()
    moved = (points * real).detach()
    positions = [p[: len(elements)] for p, (_, elements, _) in zip(moved.cpu().numpy().astype(np.float64), decoded,
                                                                    strict=True)]
    if not with_distance:
        return positions
    with torch.no_grad():
        distance = ((model.encode(centre, species, moved)[:, :learned] - target) ** 2).sum(-1)
    return positions, distance.double().cpu().numpy()
