"""The autoencoder as a service: encode structures, decode latents, interpolate between two latents.

The checkpoint is loaded once per process (cached by path, size and modification time, so a new file
at the same path is picked up) on the device chosen by ``models.device.resolve_device``. Plain data
in and out: pymatgen structures and numpy arrays in; numpy latents, structures and dicts out.
Encodes are serialised by a lock (the server runs callbacks in several threads); decodes of concurrent requests
are batched into forward passes on a few worker threads, and recent decodes are kept (``explorer.services.batching``).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from explorer.datasets.packages import sha256_of
from explorer.services.batching import MODEL_LOCK, DecodeBatcher, DecodeCache
from explorer.serving import auto_decode_workers
from explorer.settings import Settings
from explorer.storage import atomic_folder, exclusive

LOG = logging.getLogger("explorer")

METHODS = ("linear", "slerp")
MIN_STEPS, MAX_STEPS = 2, 30
_BATCHERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decoded:
    """A decoded crystal: ``structure``, ``validity`` (``ValidityReport.as_dict()``: plain JSON) and
    ``latent`` (d,) float32 it came from."""

    structure: Structure
    validity: dict
    latent: np.ndarray

    @functools.cached_property
    def formula(self) -> str:
        """The reduced formula (worked out once: a view asks for it more than once, 0.14 ms each time)."""
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
    """(absolute path, size, mtime): the version of a file, asked on every request (no ``resolve``: its walk of the
    path's folders cost more than the rest of a request's checks)."""
    stat = path.stat()
    return str(path.absolute()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int, device: str):
    from models.crystal.checkpoint import load_checkpoint

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
    with MODEL_LOCK:
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


KNOWN_MAX = 100_000
"""At most this many crystals of the known-starts dataset's map are offered to decodes (a seeded sample beyond); only
those of at most the model's ``max_atoms`` (a decode is never larger than the decoder can make, and the held-out
benchmark offers the same: the run's training crystals)."""
_KNOWN: dict[tuple, object] = {}


def known_cells(settings: Settings):
    """(token, ``models.crystal.search.KnownCells``) of the map of ``settings.known_starts_dataset``: its crystals and
    latents, from which every decode also starts (``settings.known_starts`` per latent), with their neighbour graphs
    (``_known_graphs``); None when that map is not built or ``known_starts`` is 0. ``token`` names the map's version
    (part of the decode cache's keys)."""
    from explorer import atlas
    from explorer.services import materials
    from models.crystal.search import Cell, KnownCells

    dataset = settings.known_starts_dataset
    if settings.known_starts <= 0:
        return None
    try:
        if not atlas.is_built(dataset, settings):
            return None
        key = (str(settings.atlas_dir), dataset, atlas.atlas_key(dataset, settings), settings.known_starts)
    except (FileNotFoundError, ValueError):
        return None
    with _BATCHERS_LOCK:
        found = _KNOWN.get(key)
    if found is None:
        the_map = atlas.get_atlas(dataset, settings)
        table = materials.table(dataset, settings)
        rows = np.arange(len(the_map.ids))
        if len(rows) > KNOWN_MAX:
            rows = np.sort(np.random.default_rng(0).choice(rows, size=KNOWN_MAX, replace=False))
        position = {record_id: k for k, record_id in enumerate(table["id"])}
        numbers, frac, lattice = (table[c].to_numpy() for c in ("numbers", "frac_coords", "lattice"))
        largest = loaded_checkpoint(settings).model.config.max_atoms
        cells, kept = [], []
        for row in rows:
            k = position.get(the_map.ids[row])
            if k is None or len(numbers[k]) > largest:
                continue
            cells.append(Cell(numbers=np.asarray(numbers[k], dtype=np.int64),
                              frac=np.asarray(frac[k], dtype=np.float64).reshape(-1, 3) % 1.0,
                              lattice=np.asarray(lattice[k], dtype=np.float64).reshape(3, 3)))
            kept.append(row)
        latents = np.asarray(the_map.latents, dtype=np.float32)[np.asarray(kept, dtype=np.int64)]
        store = _known_graphs(the_map.folder, cells, loaded_checkpoint(settings).model.config.cutoff)
        found = ("|".join(map(str, key)), KnownCells(latents=latents, cells=cells, k=settings.known_starts,
                                                      ids=[the_map.ids[row] for row in kept], store=store))
        with _BATCHERS_LOCK:
            _KNOWN.clear()  # one version of one map at a time
            _KNOWN[key] = found
    return found


def _known_graphs(folder: Path | None, cells: list, cutoff: float):
    """The neighbour graphs of the known crystals decodes are offered (``models.crystal.search.known_graph_store``),
    kept in their map's folder (``known-graphs-<n>``, 82 MB for the 10,653 of the known map) and loaded memory-mapped,
    so that a server's processes share them; built when missing (about 5 s on 2 cores) or when they are not these
    crystals', by one process while the others wait for it (a lock file beside them). Without a folder, or when it
    cannot be written, the graphs are kept in memory."""
    from models.crystal.search import known_graph_store

    if folder is None:
        return known_graph_store(cells, cutoff)
    target = Path(folder) / f"known-graphs-{len(cells)}"
    try:
        lock = exclusive(target.parent / f".{target.name}.lock", wait=True)
    except OSError:  # no lock where the folder cannot be written: nor can the graphs be
        lock = None
    try:
        return _kept_graphs(target, cells, cutoff)
    finally:
        if lock is not None:
            lock.close()


def _kept_graphs(target: Path, cells: list, cutoff: float):
    """``_known_graphs`` under its lock: the graphs kept in ``target`` when they fit, else built and kept there."""
    from models.crystal.search import known_graph_store, known_graph_store_fits
    from models.graph import GraphStore

    if target.exists():
        try:
            store = GraphStore.load(target)
            if known_graph_store_fits(store, cells, cutoff):
                return store
        except ValueError as exc:
            LOG.warning("the known crystals' graphs are built again: %s", exc)
    store = known_graph_store(cells, cutoff)
    try:
        atomic_folder(target, store.save)
        return GraphStore.load(target)
    except (OSError, ValueError) as exc:
        LOG.warning("the known crystals' graphs stay in memory: %s could not be written (%s)", target, exc)
        return store


_BATCHERS: dict[int, DecodeBatcher] = {}


def _batcher(model, workers: int, max_batch: int) -> DecodeBatcher:
    with _BATCHERS_LOCK:
        if id(model) not in _BATCHERS:
            _BATCHERS[id(model)] = DecodeBatcher(model, workers=workers, max_batch=max_batch)
        return _BATCHERS[id(model)]


_CACHES: dict[tuple, DecodeCache] = {}


def decode_cache(settings: Settings) -> DecodeCache:
    """The decode cache of ``settings``' checkpoint file version and size (one per process)."""
    key = (*_stamp(_checkpoint_path(settings)), settings.device, settings.decode_cache)
    with _BATCHERS_LOCK:
        if key not in _CACHES:
            _CACHES.clear()  # a new checkpoint file: the old decodes are of another model
            _CACHES[key] = DecodeCache(settings.decode_cache)
        return _CACHES[key]


def decode_many(latents: np.ndarray, settings: Settings, *, search: bool = True) -> list[Decoded]:
    """Decode (n, d) latents in one batch (with other requests' decodes when ``settings.decode_batching``), the
    encoder checking the decoder's candidates and the nearest crystals of the known map (``known_cells``); a latent
    decoded lately is taken from ``decode_cache``.
    ``search=False``: the decoder's own guess, without the encoder's check of other candidates
    (``models.crystal.search``): about 15 times faster on a CPU, for generation at scale (never cached)."""
    z = _as_latents(latents, settings)
    model = loaded_checkpoint(settings).model
    token, known = (known_cells(settings) or ("", None)) if search else ("", None)
    cache = decode_cache(settings) if search and settings.decode_cache else None
    prefix = token.encode()
    found = [cache.get(prefix + row.tobytes()) for row in z] if cache is not None else [None] * len(z)
    todo = [k for k, item in enumerate(found) if item is None]
    if todo:
        if settings.decode_batching and search:
            crystals = _batcher(model, auto_decode_workers(settings.decode_workers),
                                settings.decode_max_batch).decode(z[todo], known)
        else:
            with MODEL_LOCK:
                crystals = model.decode(z[todo], search=search, known=known)
        for k, crystal in zip(todo, crystals, strict=True):
            found[k] = (crystal.structure, crystal.validity.as_dict())
            if cache is not None:
                cache.put(prefix + z[k].tobytes(), *found[k])
    return [Decoded(structure=structure, validity=validity, latent=z[k])
            for k, (structure, validity) in enumerate(found)]


def decoded_from(structure: Structure) -> str:
    """The id of the known crystal a decode was made from (``properties["decoded_from"]``, set by the search), or ''
    for the decoder's own crystal (and for any structure that does not say)."""
    origin = structure.properties.get("decoded_from") if isinstance(structure.properties, dict) else None
    return origin if isinstance(origin, str) else ""


def origin_note(structure: Structure, settings: Settings) -> str:
    """'' for the decoder's own crystal; for one the search took from the known map (``known_cells``): which known
    crystal it was made from, in words (its formula from ``settings.known_starts_dataset``'s table)."""
    origin = decoded_from(structure)
    if not origin:
        return ""
    from explorer.services import materials

    try:
        formula = str(materials.value_of(settings.known_starts_dataset, origin, "reduced_formula", settings))
    except (FileNotFoundError, ValueError, KeyError):
        formula = ""
    named = f"{origin[:80]} ({formula})" if formula else origin[:80]
    return (f"The encoder chose the geometry of known crystal {named} of {settings.known_starts_dataset}, with this "
            "decode's elements and volume per atom: it is that structure type, not a new one.")


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
