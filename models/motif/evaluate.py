"""How well the motif autoencoder knows held-out environments.

- **reconstruction**: an environment is reconstructed when the decode has the right centre, the right number of
  neighbours, and, after the best rotation (reflections allowed: the latent cannot tell a mirror image) and
  assignment of decoded to true neighbours, every neighbour's element right and an RMS distance <= 0.2 Å;
- **missing neighbour** (the task of the tensor field network paper): one neighbour is removed, the rest encoded
  and decoded; the decode is aligned to the neighbours that are left (its extra points are free), and the
  environment counts when one extra point has the removed neighbour's element and lies within 0.5 Å of it.

``align`` searches the 48 signed permutations of axes as starts (after putting both point sets in their canonical
frames) and alternates the optimal assignment (Hungarian) and the optimal orthogonal transform (Kabsch).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from models.motif.data import Environments, canonical_frame
from models.motif.model import MotifAutoencoder, shell_of, shell_slots

ITERATIONS = 8
SPECIES_PENALTY = 100.0
_STARTS = [np.diag(signs)[:, list(order)] for order in itertools.permutations(range(3))
           for signs in itertools.product((1.0, -1.0), repeat=3)]


def _orthogonal(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(3, 3) orthogonal R (rotation or improper) minimising sum |q_i - R p_i|^2 (Kabsch without the sign fix)."""
    u, _, vt = np.linalg.svd(q.T @ p)
    return u @ vt


def align(p: np.ndarray, p_species: np.ndarray, q: np.ndarray, q_species: np.ndarray) -> tuple[float, np.ndarray]:
    """(RMS Å over the true points, (len(q),) index of the decoded point matched to each true point) of the best
    orthogonal alignment of decoded points ``p`` (m, 3) onto true points ``q`` (n, 3), m >= n; a species mismatch
    costs ``SPECIES_PENALTY`` Å^2 in the assignment."""
    mismatch = SPECIES_PENALTY * (q_species[:, None] != p_species[None, :])
    p0 = p @ canonical_frame(p, p_species).T if len(p) else p
    q0 = q @ canonical_frame(q, q_species).T
    best = (np.inf, np.zeros(len(q), dtype=np.int64))
    for start in _STARTS:
        rotation = start
        for _ in range(ITERATIONS):
            moved = p0 @ rotation.T
            rows, cols = linear_sum_assignment(((q0[:, None] - moved[None]) ** 2).sum(-1) + mismatch)
            rotation = _orthogonal(p0[cols], q0[rows])
        moved = p0 @ rotation.T
        rows, cols = linear_sum_assignment(((q0[:, None] - moved[None]) ** 2).sum(-1) + mismatch)
        rms = float(np.sqrt(((q0[rows] - moved[cols]) ** 2).sum(-1).mean()))
        if rms < best[0]:
            best = (rms, cols[np.argsort(rows)])
    return best


def decoded_points(out: dict[str, torch.Tensor], *,
                   missing: int | None = 0) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per environment: (centre atomic number, (m,) neighbour atomic numbers, (m, 3) positions Å).

    A version-2 decode (its latent carries the shell: ``model.shell_of``) has the shell's centre and neighbour
    elements, placed on the slots that best fit them (``model.shell_slots``), and ``missing`` more neighbours of the
    elements the decoder's slots favour: 0 (a complete environment, as every point of a motif map is), k (the caller
    says the input missed k: the task of putting a removed neighbour back), or None (one more when the decoder's count
    head asks for more than the shell holds: the model guesses whether the input missed one). A version-1 decode: the
    most likely centre, and the slots whose most likely species is not 'empty'."""
    positions = out["positions"].detach().cpu().numpy()
    species_logits = out["species"].detach().cpu().numpy()
    if "shell_counts" not in out:
        centre = out["centre"].argmax(-1).cpu().numpy()
        species = species_logits.argmax(-1)
        return [(int(c), s[s > 0], x[s > 0]) for c, s, x in zip(centre, species, positions, strict=True)]
    counted = out["count"].argmax(-1).cpu().numpy() + 1
    found = []
    for i, (centre_part, counts_part) in enumerate(zip(out["shell_centre"].detach().cpu().numpy(),
                                                       out["shell_counts"].detach().cpu().numpy(), strict=True)):
        centre, counts = shell_of(centre_part, counts_part)
        extra = int(counted[i] > counts.sum()) if missing is None else max(int(missing), 0)
        n = min(int(counts.sum()) + extra, positions.shape[1])
        slots, species = shell_slots(species_logits[i], counts, n)
        found.append((centre, species, positions[i, slots]))
    return found


def _decode(model: MotifAutoencoder, envs: Environments, batch_size: int = 512, *, refine_steps: int = 0,
            library=None, missing: int | None = 0, **starts: int) -> list:
    """Encode and decode ``envs``; ``refine_steps`` and ``library``: the encoder's correction of the geometry, from
    the decoder's guess and from known shells (``refine.decode``, which also takes ``starts`` and ``refined``);
    ``missing``: as in ``decoded_points``."""
    from models.motif import refine

    model.eval()
    device = next(model.parameters()).device
    found = []
    for start in range(0, len(envs), batch_size):
        rows = slice(start, start + batch_size)
        with torch.no_grad():
            latents = model.encode(torch.as_tensor(envs.centre[rows], device=device),
                                   torch.as_tensor(envs.species[rows], device=device),
                                   torch.as_tensor(envs.vectors[rows], device=device))
        found += refine.decode(model, latents, steps=refine_steps, library=library, missing=missing, **starts)
    return found


def reconstruction(model: MotifAutoencoder, envs: Environments, *, tolerance: float = 0.2,
                   refine_steps: int = 0, library=None, **starts: int) -> dict[str, float]:
    """{"n", "reconstructed" (share), "species_right" (share with centre, count and every element right),
    "rms_median" Å over those, "by_cn" {1, ..., 6, "7-16": [reconstructed, environments]}}; ``refine_steps`` and
    ``library``: decodes corrected by the encoder (``models.motif.refine``; the library must not hold ``envs``;
    ``starts`` and ``refined``: how many of its shells, ``refine.decode``)."""
    decoded = _decode(model, envs, refine_steps=refine_steps, library=library, **starts)
    right, good, rms_all = 0, 0, []
    by_cn: dict[object, list[int]] = {}
    for i, (centre, species, points) in enumerate(decoded):
        n = int(envs.count[i])
        tally = by_cn.setdefault(n if n <= 6 else "7-16", [0, 0])
        tally[1] += 1
        true_species = envs.species[i, :n]
        if centre != envs.centre[i] or len(species) != n:
            continue
        rms, assigned = align(points, species, envs.vectors[i, :n].astype(np.float64), true_species)
        if not np.array_equal(species[assigned], true_species):
            continue
        right += 1
        rms_all.append(rms)
        good += rms <= tolerance
        tally[0] += rms <= tolerance
    n = max(len(envs), 1)
    return {"n": len(envs), "reconstructed": good / n, "species_right": right / n,
            "rms_median": float(np.median(rms_all)) if rms_all else float("nan"),
            "by_cn": dict(sorted(by_cn.items(), key=lambda item: 7 if isinstance(item[0], str) else item[0]))}


def missing_neighbour(model: MotifAutoencoder, envs: Environments, *, seed: int = 0, tolerance: float = 0.5,
                      refine_steps: int = 0, library=None, told: bool = True) -> dict[str, float]:
    """{"n" (environments with at least 2 neighbours), "recovered" (share)}: one seeded neighbour removed each and
    the model asked to put one back (``told``, as in the tensor field network paper; False: the decoder's count head
    must notice that one is missing). ``refine_steps``: as in ``reconstruction``; a decode with the added neighbour
    is never refined."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(envs.count >= 2)
    envs = envs.subset(keep)
    removed = np.array([rng.integers(n) for n in envs.count])
    species, vectors = envs.species.copy(), envs.vectors.copy()
    for i, k in enumerate(removed):
        n = envs.count[i]
        species[i, k:n - 1], vectors[i, k:n - 1] = envs.species[i, k + 1:n], envs.vectors[i, k + 1:n]
        species[i, n - 1], vectors[i, n - 1] = 0, 0.0
    partial = Environments(centre=envs.centre, species=species, vectors=vectors, count=envs.count - 1, ids=envs.ids)
    decoded = _decode(model, partial, refine_steps=refine_steps, library=library, missing=1 if told else None)
    hits = 0
    for i, (_, found_species, points) in enumerate(decoded):
        n = int(partial.count[i])
        if len(points) <= n:
            continue
        q = partial.vectors[i, :n].astype(np.float64)
        q_species = partial.species[i, :n]
        _, assigned = align(points, found_species, q, q_species)
        # the transform that lays the matched decoded points onto the neighbours that are left
        rotation = _orthogonal(points[assigned], q)
        extra = np.setdiff1d(np.arange(len(points)), assigned)
        target = envs.vectors[i, removed[i]]
        near = np.linalg.norm(points[extra] @ rotation.T - target, axis=1) <= tolerance
        hits += bool(np.any(near & (found_species[extra] == envs.species[i, removed[i]])))
    return {"n": len(envs), "recovered": hits / max(len(envs), 1)}
