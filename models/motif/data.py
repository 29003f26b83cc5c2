"""Local environments as point clouds: a centre and its neighbours (species and vectors from the centre, Å).

The environments come from a dataset's environment table (``data/motifs/<dataset>-<signature>-v2.parquet``, written
by ``python -m explorer build``: one row per symmetry-distinct site, CrystalNN neighbours found with periodic images,
columns ``id``, ``element``, ``neighbours`` [[element, distance]] and ``vectors`` [[x, y, z]] as JSON), read here by
path. ``canonical_frame`` turns an environment into the decoder's target: the same points in a frame fixed by the
points themselves (nearest neighbour along x, the next one not in line with it in the xy plane), so that a decoder
of rotation-invariant latents has one orientation to aim at; equivalent choices of a symmetric shape give the same
point set, which the loss matches without order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_NEIGHBOURS = 16
"""Environments with more neighbours are left out (1.5 % of the sites of the known table have more than 12)."""
N_SPECIES = 95
"""Atomic numbers 1-94, and 0 for an empty slot."""
COLLINEAR = np.cos(np.radians(15.0))


@dataclass(frozen=True)
class Environments:
    """``n`` environments, padded to ``MAX_NEIGHBOURS``: ``centre`` (n,) atomic numbers, ``species`` (n, k) atomic
    numbers (0 where there is no neighbour), ``vectors`` (n, k, 3) Å from the centre, ``count`` (n,) neighbours,
    ``ids`` the crystal of each environment (its table id)."""

    centre: np.ndarray
    species: np.ndarray
    vectors: np.ndarray
    count: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.centre)

    def subset(self, rows: np.ndarray) -> Environments:
        return Environments(centre=self.centre[rows], species=self.species[rows], vectors=self.vectors[rows],
                            count=self.count[rows], ids=[self.ids[k] for k in rows])


def atomic_number(symbol: str) -> int:
    from pymatgen.core import Element

    return int(Element(symbol).Z)


def from_points(centre: str, neighbours: list[str], vectors: np.ndarray, *, record_id: str = "") -> Environments:
    """One environment from element symbols and (k, 3) vectors Å; ValueError naming a bad one."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, 3)
    if len(neighbours) != len(vectors) or not 1 <= len(vectors) <= MAX_NEIGHBOURS:
        raise ValueError(f"environment {record_id or centre}: {len(vectors)} neighbour vectors for "
                         f"{len(neighbours)} neighbours (1 to {MAX_NEIGHBOURS} allowed)")
    if not np.isfinite(vectors).all() or (np.linalg.norm(vectors, axis=1) < 0.3).any():
        raise ValueError(f"environment {record_id or centre}: a neighbour vector is not finite or shorter than 0.3 Å")
    species = np.zeros((1, MAX_NEIGHBOURS), dtype=np.int64)
    species[0, : len(neighbours)] = [atomic_number(e) for e in neighbours]
    padded = np.zeros((1, MAX_NEIGHBOURS, 3), dtype=np.float32)
    padded[0, : len(vectors)] = vectors
    return Environments(centre=np.array([atomic_number(centre)]), species=species, vectors=padded,
                        count=np.array([len(vectors)]), ids=[record_id])


def read_table(path: str | Path, *, limit: int = 0) -> Environments:
    """Every environment of an environment table with 1 to ``MAX_NEIGHBOURS`` neighbours (``limit``: the first
    ones only)."""
    import pandas as pd

    frame = pd.read_parquet(path, columns=["id", "element", "neighbours", "vectors"])
    if limit:
        frame = frame.iloc[:limit]
    parts = []
    for record_id, centre, neighbours, vectors in zip(frame["id"], frame["element"], frame["neighbours"],
                                                      frame["vectors"], strict=True):
        shell = [e for e, _ in json.loads(neighbours)]
        points = np.asarray(json.loads(vectors), dtype=np.float32).reshape(-1, 3)
        if 1 <= len(shell) <= MAX_NEIGHBOURS and len(points) == len(shell):
            parts.append(from_points(centre, shell, points, record_id=str(record_id)))
    return concat(parts)


def concat(parts: list[Environments]) -> Environments:
    if not parts:
        return Environments(centre=np.zeros(0, dtype=np.int64), species=np.zeros((0, MAX_NEIGHBOURS), dtype=np.int64),
                            vectors=np.zeros((0, MAX_NEIGHBOURS, 3), dtype=np.float32),
                            count=np.zeros(0, dtype=np.int64), ids=[])
    return Environments(centre=np.concatenate([p.centre for p in parts]),
                        species=np.concatenate([p.species for p in parts]),
                        vectors=np.concatenate([p.vectors for p in parts]),
                        count=np.concatenate([p.count for p in parts]), ids=[i for p in parts for i in p.ids])


def held_out(ids: list[str], fraction: float, seed: int = 0) -> np.ndarray:
    """Bool per environment: its crystal is held out (a seeded hash of the crystal id, so every environment of
    one crystal falls on the same side, and a table that grows keeps its old split)."""
    def bucket(record_id: str) -> float:
        digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64

    return np.array([bucket(i) < fraction for i in ids], dtype=bool)


def canonical_frame(vectors: np.ndarray, species: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose rows are the frame's axes: x towards the nearest neighbour (ties: the lighter
    element, then the first), y in the plane of the next neighbour not within 15° of the x line, z = x × y,
    turned (a proper rotation) so that the neighbours' z coordinates sum to >= 0 when a mirror would not tell.

    vectors: (k, 3) Å of the real neighbours; species: (k,) atomic numbers."""
    lengths = np.linalg.norm(vectors, axis=1)
    order = np.lexsort((np.arange(len(lengths)), species, np.round(lengths, 3)))
    x = vectors[order[0]] / lengths[order[0]]
    y = None
    for k in order[1:]:
        direction = vectors[k] / lengths[k]
        if abs(direction @ x) < COLLINEAR:
            y = direction - (direction @ x) * x
            break
    if y is None:  # every neighbour in line with the first (CN 1 or linear): any perpendicular
        y = np.cross(x, [0.0, 0.0, 1.0] if abs(x[2]) < 0.9 else [1.0, 0.0, 0.0])
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    if (vectors @ z).sum() < -1e-6:  # the decoder cannot tell a mirror image: turn z to the heavier side
        y, z = -y, -z
    return np.stack([x, y, z])


def canonical(environments: Environments) -> np.ndarray:
    """(n, k, 3) Å: every environment's vectors in its ``canonical_frame`` (padding stays zero)."""
    out = np.zeros_like(environments.vectors)
    for i, (vectors, species, count) in enumerate(zip(environments.vectors, environments.species,
                                                      environments.count, strict=True)):
        frame = canonical_frame(vectors[:count].astype(np.float64), species[:count])
        out[i, :count] = vectors[:count] @ frame.T
    return out
