"""The motif autoencoder (``models.motif``) as the app uses it: environments to latents, latents back to
environments with their shape (the ideal polyhedron they are closest to) and a plain validity check.

The checkpoint is ``settings.motif_checkpoint`` (``models/checkpoints/motif.pt``), loaded once per file version and
device with ``weights_only=True``. A decoded environment's neighbours are in the decoder's canonical frame (the
centre at the origin): the shape and distances are what it means, not its orientation.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explorer.settings import Settings

MIN_DISTANCE = 0.7
"""Å: a decoded neighbour closer than this to the centre or to another neighbour makes the environment invalid."""
_LOCK = threading.Lock()


@dataclass(frozen=True)
class DecodedEnvironment:
    """A centre ``element`` with ``neighbours`` (symbols) at ``vectors`` ((k, 3) Å from the centre), the ``latent``
    it came from, its ``motif`` (closest ideal shape, 'CN k' without one), ``csm`` (its continuous shape measure)
    and ``measures`` {shape: CShM} of every candidate with k vertices."""

    element: str
    neighbours: list[str]
    vectors: np.ndarray
    latent: np.ndarray
    motif: str
    csm: float | None
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def cn(self) -> int:
        return len(self.neighbours)

    @property
    def label(self) -> str:
        """'Ti octahedral (CN 6)'."""
        return f"{self.element} {self.motif} (CN {self.cn})"

    def validity(self) -> dict:
        """{"valid", "reasons", "shortest_distance"}: neighbours present, none closer than ``MIN_DISTANCE`` Å to the
        centre or to each other."""
        reasons = []
        if not self.cn:
            reasons.append("no neighbours: the decode is a lone atom")
            return {"valid": False, "reasons": reasons, "shortest_distance": None}
        points = np.vstack([np.zeros(3), self.vectors])
        d = np.linalg.norm(points[:, None] - points[None], axis=-1)
        shortest = float(d[np.triu_indices(len(points), 1)].min())
        if shortest < MIN_DISTANCE:
            reasons.append(f"two atoms {shortest:.2f} Å apart (less than {MIN_DISTANCE} Å)")
        return {"valid": not reasons, "reasons": reasons, "shortest_distance": round(shortest, 3)}


def shape_of(vectors: np.ndarray) -> tuple[str, float | None, dict[str, float]]:
    """(motif, CShM, every candidate's CShM) of neighbour ``vectors``, named as the environment table names them."""
    from explorer.motifs.shapes import best_shape

    vectors = np.asarray(vectors, dtype=float).reshape(-1, 3)
    if not len(vectors):
        return "CN 0", None, {}
    name, csm, measures = best_shape(vectors)
    return (name or f"CN {len(vectors)}"), csm, measures


def _path(settings: Settings) -> Path:
    path = Path(settings.motif_checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"motif checkpoint not found: {path} (set EXPLORER_MOTIF_CHECKPOINT, or train one: "
                                "python -m models.motif.train)")
    return path


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _load(path: str, size: int, mtime_ns: int, device: str):
    from models.motif.train import load

    model, _ = load(path, device=device or None)
    return model


def loaded(settings: Settings):
    """The motif autoencoder of ``settings.motif_checkpoint`` (eval mode, on ``settings.device``)."""
    return _load(*_stamp(_path(settings)), settings.device)


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from explorer.datasets.packages import sha256_of

    return sha256_of(Path(path))


def checkpoint_sha256(settings: Settings) -> str:
    """sha256 of the motif checkpoint file: part of the motif map's cache key."""
    return _sha256(*_stamp(_path(settings)))


def latent_dim(settings: Settings) -> int:
    return int(loaded(settings).latent_size)


def shell_size(settings: Settings) -> int:
    """How many numbers at the end of a motif latent are its shell (centre and neighbour counts; 0 in version 1)."""
    return int(loaded(settings).shell_size)


def encode(environments, settings: Settings, *, batch_size: int = 1024) -> np.ndarray:
    """(n, d) float32 latents of ``models.motif.data.Environments``."""
    with _LOCK:
        return loaded(settings).encode_environments(environments, batch_size=batch_size)


def decode_many(latents: np.ndarray, settings: Settings, *, library=None) -> list[DecodedEnvironment]:
    """Decode (m, d) latents: the centre and the shell's elements, positions in Å as the decoder gives them and the
    encoder then corrects them (``models.motif.refine``), starting also from the nearest known shells of ``library``
    (a ``models.motif.refine.Library``, e.g. ``motif_map.library``) when given."""
    import torch
    from pymatgen.core import Element

    from models.motif import refine

    model = loaded(settings)
    latents = np.asarray(latents, dtype=np.float32).reshape(-1, model.latent_size)
    if not np.isfinite(latents).all():
        raise ValueError("a motif latent holds a value that is not a finite number")
    with _LOCK:
        decoded = refine.decode(model, torch.as_tensor(latents, device=next(model.parameters()).device),
                                library=library)
    found = []
    for latent, (centre, species, points) in zip(latents, decoded, strict=True):
        vectors = np.asarray(points, dtype=float).reshape(-1, 3)
        motif, csm, measures = shape_of(vectors)
        found.append(DecodedEnvironment(element=Element.from_Z(max(int(centre), 1)).symbol,
                                        neighbours=[Element.from_Z(int(z)).symbol for z in species],
                                        vectors=vectors, latent=latent, motif=motif, csm=csm, measures=measures))
    return found


def reproduces(decoded: DecodedEnvironment, element: str, neighbours: list[str], vectors: np.ndarray, *,
               tolerance: float = 0.2) -> bool:
    """True when ``decoded`` is the environment (element, neighbours, vectors): the held-out measure of
    ``models.motif.evaluate``: same centre and count, every element right after the best orthogonal alignment and
    assignment, RMS <= ``tolerance`` Å."""
    from models.motif.data import atomic_number
    from models.motif.evaluate import align

    if decoded.element != element or decoded.cn != len(neighbours) or not neighbours:
        return False
    want = np.array([atomic_number(e) for e in neighbours])
    have = np.array([atomic_number(e) for e in decoded.neighbours])
    rms, assigned = align(decoded.vectors, have, np.asarray(vectors, dtype=float).reshape(-1, 3), want)
    return bool(np.array_equal(have[assigned], want) and rms <= tolerance)
