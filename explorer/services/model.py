"""The autoencoder as a service: encode structures, decode latents, interpolate between two latents.

The checkpoint is loaded once per process (cached by path, size and modification time, so a new file
at the same path is picked up) on the device chosen by ``models.device.resolve_device``. Plain data
in and out: pymatgen structures and numpy arrays in; numpy latents, structures and dicts out.
Calls into the model are serialised by a lock (the server runs callbacks in several threads); decodes of
concurrent requests are batched into one forward pass (``DecodeBatcher``).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from explorer.datasets.packages import sha256_of
from explorer.settings import Settings

METHODS = ("linear", "slerp")
MIN_STEPS, MAX_STEPS = 2, 30
_MODEL_LOCK = threading.Lock()
_BATCHERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decoded:
    """A decoded crystal: ``structure``, ``validity`` (``ValidityReport.as_dict()``: plain JSON) and
    ``latent`` (d,) float32 it came from."""

    structure: Structure
    validity: dict
    latent: np.ndarray

    @property
    def formula(self) -> str:
        return self.structure.composition.reduced_formula

    @property
    def n_atoms(self) -> int:
        return len(self.structure)


@dataclass(frozen=True)
class Frame(Decoded):
    """One frame of an interpolation path: ``index`` from 0 and path parameter ``t`` in [0, 1]."""

    index: int = 0
    t: float = 0.0


def _checkpoint_path(settings: Settings) -> Path:
    path = Path(settings.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (set EXPLORER_CHECKPOINT or train one: "
                                "see models/checkpoints/README)")
    return path


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int, device: str):
    from models.checkpoint import load_checkpoint

    return load_checkpoint(path, device=device or None)


def loaded_checkpoint(settings: Settings):
    """The ``LoadedCheckpoint`` of ``settings.checkpoint`` (loaded once per file version and device)."""
    return _load(*_stamp(_checkpoint_path(settings)), settings.device)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))


def checkpoint_sha256(settings: Settings) -> str:
    """sha256 of the checkpoint file (cached per file version): part of the map's cache key."""
    return _sha256(*_stamp(_checkpoint_path(settings)))


def latent_dim(settings: Settings) -> int:
    """Size of the latent vectors of the checkpoint."""
    return int(loaded_checkpoint(settings).model.latent_size)


def encode(structures: Sequence[Structure], settings: Settings, *, batch_size: int | None = None,
           canonical: bool = False) -> np.ndarray:
    """Latent means (n, d) float32 of ordered structures (any cell setting; ``canonical``: they are the
    tables' canonical primitive cells, so the model need not reduce them again)."""
    if not structures:
        return np.zeros((0, latent_dim(settings)), dtype=np.float32)
    model = loaded_checkpoint(settings).model
    with _MODEL_LOCK:
        mu, _ = model.encode_structures(list(structures), batch_size=batch_size or settings.encode_batch_size,
                                        primitive=canonical)
    return mu.detach().cpu().numpy().astype(np.float32)


def _as_latents(latents: np.ndarray, settings: Settings) -> np.ndarray:
    z = np.asarray(latents, dtype=np.float32)
    z = z.reshape(1, -1) if z.ndim == 1 else z
    d = latent_dim(settings)
    if z.ndim != 2 or z.shape[1] != d or not np.isfinite(z).all():
        raise ValueError(f"latent must be finite with {d} values per crystal, got shape {np.shape(latents)}")
    return z


class DecodeBatcher:
    """Decodes of concurrent requests in one forward pass.

    A request's latents go to a queue; one thread takes everything waiting, decodes it as one batch and hands
    each request its crystals. Alone, a decode runs at once (nothing waits for company); under load, the
    decodes that arrive while the model is busy run together next (a batch of 256 costs a fraction of 256
    single decodes), so requests stop queueing one by one behind the model's lock.
    """

    def __init__(self, model, *, max_batch: int = 256) -> None:
        self.model, self.max_batch = model, max_batch
        self.largest_batch = 0  # most requests decoded in one pass so far (for tests and benchmarks)
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="decode-batcher", daemon=True)
        self._thread.start()

    def decode(self, z: np.ndarray) -> list:
        """Crystals (``model.decode`` results) of (n, d) latents ``z``, decoded with whatever else is waiting."""
        request = {"z": z, "done": threading.Event(), "result": None, "error": None}
        self._pending.put(request)
        request["done"].wait()
        if request["error"] is not None:
            raise request["error"]
        return request["result"]

    def _loop(self) -> None:
        while True:
            batch = [self._pending.get()]
            size = len(batch[0]["z"])
            while size < self.max_batch:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
                size += len(batch[-1]["z"])
            self._run(batch)

    def _run(self, batch: list[dict]) -> None:
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            with _MODEL_LOCK:
                crystals = self.model.decode(np.concatenate([r["z"] for r in batch]))
            start = 0
            for request in batch:
                request["result"] = crystals[start : start + len(request["z"])]
                start += len(request["z"])
        except Exception as exc:  # every waiting request learns of it; the thread goes on
            for request in batch:
                request["error"] = exc
        finally:
            for request in batch:
                request["done"].set()


_BATCHERS: dict[int, DecodeBatcher] = {}


def _batcher(model) -> DecodeBatcher:
    with _BATCHERS_LOCK:
        if id(model) not in _BATCHERS:
            _BATCHERS[id(model)] = DecodeBatcher(model)
        return _BATCHERS[id(model)]


def decode_many(latents: np.ndarray, settings: Settings, *, search: bool = True) -> list[Decoded]:
    """Decode (n, d) latents in one batch (with other requests' decodes when ``settings.decode_batching``).
    ``search=False``: the decoder's own guess, without the encoder's check of other candidates
    (``models.search``): about 15 times faster on a CPU, for generation at scale."""
    z = _as_latents(latents, settings)
    model = loaded_checkpoint(settings).model
    if settings.decode_batching and search:
        crystals = _batcher(model).decode(z)
    else:
        with _MODEL_LOCK:
            crystals = model.decode(z, search=search)
    return [Decoded(structure=c.structure, validity=c.validity.as_dict(), latent=z[k])
            for k, c in enumerate(crystals)]


def decode(latent: np.ndarray, settings: Settings) -> Decoded:
    """Decode one latent (d,) to a structure with its validity report."""
    return decode_many(np.asarray(latent).reshape(1, -1), settings)[0]


def path_latents(a: np.ndarray, b: np.ndarray, *, steps: int, method: str = "linear",
                 linear_tail: int = 0) -> np.ndarray:
    """(steps, d) latents from ``a`` to ``b`` inclusive: straight line, or great-circle arc (``slerp``)
    with the norm interpolated linearly (so slerp between latents of different norms stays sensible).
    ``linear_tail``: the last that many numbers always go in a straight line (counts, such as the motif latent's
    shell, which an arc would inflate halfway)."""
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from {MIN_STEPS} to {MAX_STEPS}, got {steps!r}")
    if method not in METHODS:
        raise ValueError(f"interpolation method {method!r}: use one of {', '.join(METHODS)}")
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"endpoints have different sizes: {a.shape[0]} and {b.shape[0]}")
    t = np.linspace(0.0, 1.0, int(steps))[:, None]
    line = (1 - t) * a + t * b
    head = len(a) - max(0, min(int(linear_tail), len(a)))
    if method == "linear":
        return line.astype(np.float32)
    a, b = a[:head], b[:head]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return line.astype(np.float32)
    ua, ub = a / na, b / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    if omega < 1e-6:
        direction = (1 - t) * ua + t * ub
    else:
        direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    line[:, :head] = direction * ((1 - t) * na + t * nb)
    return line.astype(np.float32)


def interpolate(a: np.ndarray, b: np.ndarray, settings: Settings, *, steps: int = 10,
                method: str = "linear") -> list[Frame]:
    """Decode ``steps`` (2-30) latents from ``a`` to ``b`` (see ``path_latents``) in one batch."""
    z = path_latents(a, b, steps=steps, method=method)
    t = np.linspace(0.0, 1.0, len(z))
    return [Frame(structure=d.structure, validity=d.validity, latent=d.latent, index=k, t=float(t[k]))
            for k, d in enumerate(decode_many(z, settings))]
