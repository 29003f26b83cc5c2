"""The map: latents of every known material, their 2D UMAP projection, and the ways back.

An ``Atlas`` is built once per (checkpoint, table, UMAP parameters) and cached under
``data/atlas/<dataset>-<key>/`` (written to a temporary folder, then renamed: never half-written).
Each dataset keeps its ``MAPS_KEPT`` most recent maps (a new checkpoint or table makes a new key, and
the old map of ``known`` weighs ~23 MB); older ones are removed when a new map is written.

- ``place(latents)`` puts new latents on the map with the fitted reducer's ``transform``.
- ``latent_at(x, y)`` is the fast inverse for a click on empty space: a distance-weighted average of
  the latents of the k nearest known points on the map (UMAP's own inverse_transform takes seconds).
- ``nearest(latent, k)`` lists the known materials closest in latent space.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explorer import neighbours
from explorer.storage import atomic_folder, clean_stale_temporaries

MAPS_KEPT = 2
"""Maps cached per dataset: the current one and the one before it (switching back stays instant)."""

SPECTRAL_MIN_POINTS = 10
"""Smallest map fitted from UMAP's spectral start (smaller ones start from a seeded random layout)."""

NEAREST_MARGIN = 32
"""Extra candidates that ``Atlas.nearest`` measures exactly after ranking by a float32 matrix-vector product."""

INVERSE_METHOD = "distance-weighted average of the {k} nearest known latents on the map"


@dataclass(frozen=True)
class UmapParams:
    """Parameters of the 2D projection (part of the cache key)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    seed: int = 42


@dataclass(frozen=True)
class InverseResult:
    """A latent for a map point, and how far that point is from known materials.

    latent: (d,) float32. distance_2d: map units to the nearest known point; typical_spacing: the
    median nearest-neighbour distance between known points, so distance_2d / typical_spacing says
    "how far out" the click is. method: human-readable description of the inverse used.
    """

    latent: np.ndarray
    distance_2d: float
    typical_spacing: float
    method: str
    neighbours: list[int]


@dataclass
class Atlas:
    """Known materials of one dataset in latent space and on the 2D map.

    ids: (n,) record ids; latents: (n, d) float32; xy: (n, 2) float32 map coordinates.
    """

    dataset: str
    key: str
    ids: list[str]
    latents: np.ndarray
    xy: np.ndarray
    reducer_path: Path
    inverse_k: int = 8
    kind: str = "crystals"
    _reducer: object = field(default=None, repr=False)
    _positions: dict | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _spacing: float | None = field(default=None, repr=False)
    _tree: object = field(default=None, repr=False)
    folder: Path | None = None
    _index: object = field(default=None, repr=False)
    _index_looked_for: bool = field(default=False, repr=False)
    _squared_norms: np.ndarray | None = field(default=None, repr=False)
    place_columns: int = 0
    """How many leading latent numbers UMAP saw (0: all): the motif map is placed by the learned part of its
    latents, without the shell counts that follow it."""

    @property
    def reducer(self):
        """The fitted UMAP reducer, unpickled on first use (thread-safe)."""
        with self._lock:
            if self._reducer is None:
                with open(self.reducer_path, "rb") as handle:
                    self._reducer = pickle.load(handle)
            return self._reducer

    def warm(self) -> None:
        """Compile numba code paths of ``transform`` once (slow the first time after start)."""
        self.place(self.latents[:1])

    def index_of(self, record_id: str) -> int | None:
        """The row of ``record_id`` in ``ids``, or None when it is not on this map."""
        if self._positions is None:
            self._positions = {value: k for k, value in enumerate(self.ids)}
        return self._positions.get(record_id)

    def place(self, latents: np.ndarray) -> np.ndarray:
        """(m, 2) map coordinates of (m, d) latents of this map's model (crystal latents on the crystal map, motif
        latents on the motif map; the structure map places structures: ``structure_map.place_structures``)."""
        if self.kind == "structure":
            raise TypeError(f"the {self.kind} map places structures, not latents")
        latents = np.asarray(latents, dtype=np.float32).reshape(-1, self.latents.shape[1])
        if self.place_columns:
            latents = latents[:, : self.place_columns]
        return np.asarray(self.reducer.transform(latents), dtype=np.float32)

    def typical_spacing(self) -> float:
        """Median distance between a known point and its nearest known neighbour on the map."""
        if self._spacing is None:
            if len(self.xy) < 2:
                self._spacing = 1.0
            else:
                from scipy.spatial import cKDTree

                d, _ = cKDTree(self.xy).query(self.xy, k=2)
                positive = d[:, 1][d[:, 1] > 0]
                self._spacing = float(np.median(positive)) if len(positive) else 1.0
        return self._spacing

    def latent_at(self, x: float, y: float) -> InverseResult:
        """Latent for the map point (x, y) by inverse-distance weighting of the nearest known latents."""
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError(f"map point ({x!r}, {y!r}) is not finite")
        latents, distances, nearest = self._inverse(np.array([[x, y]], dtype=np.float64))
        return InverseResult(latent=latents[0], distance_2d=float(distances[0, 0]),
                             typical_spacing=self.typical_spacing(), method=INVERSE_METHOD.format(k=nearest.shape[1]),
                             neighbours=[int(i) for i in nearest[0]])

    def latents_at(self, points: np.ndarray) -> np.ndarray:
        """(m, d) float32 latents of (m, 2) finite map points, as ``latent_at`` gives them one by one."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(points).all():
            raise ValueError("map points must be finite")
        return self._inverse(points)[0]

    def _inverse(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latents (m, d) float32, distances (m, k), indices (m, k)) of the k = ``inverse_k`` nearest known points
        of each map point, nearest first; weights 1 / distance²."""
        k = min(self.inverse_k, len(self.ids))
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(np.asarray(self.xy, dtype=np.float64))
        distances, nearest = self._tree.query(points, k=k)
        distances, nearest = distances.reshape(len(points), k), nearest.reshape(len(points), k)
        weights = 1.0 / np.maximum(distances, 1e-6) ** 2
        latents = np.einsum("mk,mkd->md", weights, self.latents[nearest]) / weights.sum(1, keepdims=True)
        return latents.astype(np.float32), distances, nearest

    def nearest(self, latent: np.ndarray, k: int = 5, *, exclude: str | None = None) -> list[tuple[str, float]]:
        """The k known materials closest in latent space: [(id, euclidean distance)], nearest first (through the
        map's approximate index when it has one: ``explorer.neighbours``)."""
        latent = np.asarray(latent, dtype=np.float32).reshape(-1)
        index = self.neighbour_index()
        if index is not None and k + 1 < len(self.ids):
            order, d = neighbours.query(index, latent, k + 1)
            found = [(self.ids[i], float(dist)) for i, dist in zip(order, d, strict=True) if self.ids[i] != exclude]
            return found[:k]
        # |a - x|^2 = |a|^2 - 2 a.x + |x|^2 ranks every material with one matrix-vector product; the few best (with a
        # margin for float32 rounding) are then measured exactly and sorted
        if self._squared_norms is None:
            self._squared_norms = np.einsum("nd,nd->n", self.latents, self.latents, dtype=np.float64)
        approximate = self._squared_norms - 2.0 * (self.latents @ latent)
        shortlist = min(len(self.ids), k + 1 + NEAREST_MARGIN)
        rows = np.argpartition(approximate, shortlist - 1)[:shortlist] if shortlist < len(self.ids) \
            else np.arange(len(self.ids))
        d = np.linalg.norm(self.latents[rows] - latent.reshape(1, -1), axis=1)
        ranked = np.lexsort((rows, d))  # equal distances (duplicate materials) in table order
        order, d = rows[ranked], d[ranked]
        found = [(self.ids[i], float(dist)) for i, dist in zip(order[: k + 1], d[: k + 1], strict=True)
                 if self.ids[i] != exclude]
        return found[:k]

    def neighbour_index(self):
        """The approximate nearest-neighbour index stored with a big map (loaded on first use), or None (looked
        for once: a map without one is not asked again on every click)."""
        with self._lock:
            if not self._index_looked_for:
                if self.folder is not None and (self.folder / neighbours.INDEX_FILE).is_file():
                    self._index = neighbours.load_index(self.folder)
                self._index_looked_for = True
            return self._index


def cache_key(*, model_hash: str, table_signature: str, params: UmapParams, sample: int | None = None) -> str:
    """Short hash of everything the map depends on (``sample``: UMAP fitted on that many materials, see
    ``fit_umap_sampled``; None: on all of them)."""
    what = {"model": model_hash, "table": table_signature, "umap": params.__dict__}
    if sample is not None:
        what["sample"] = sample
    payload = json.dumps(what, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_or_build(*, dataset: str, cache_dir: Path, key: str, ids: list[str],
                  encode: Callable[[], np.ndarray], params: UmapParams, inverse_k: int = 8,
                  sample: int | None = None, client=None) -> Atlas:
    """The cached atlas for ``key``, or a new one: ``encode()`` gives (n, d) latents in ``ids`` order.

    The folder is named by the app alone (a checked dataset name and an alphanumeric key: ``cache_key``), so
    the reducer unpickled from it is always one the app wrote there; no value of a request becomes its path.
    """
    from explorer.datasets.build import check_dataset_name

    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", key):
        raise ValueError(f"map cache key {key[:40]!r}: only letters and digits")
    folder = cache_dir / f"{check_dataset_name(dataset)}-{key}"
    if not (folder / "done").exists():
        latents = np.asarray(encode(), dtype=np.float32)
        if latents.shape[0] != len(ids):
            raise ValueError(f"{dataset}: encode() gave {latents.shape[0]} latents for {len(ids)} records")
        reducer, xy = fit_umap_sampled(latents, params, sample=sample, client=client)
        index = None if sample is None else neighbours.build_index(latents, seed=params.seed)
        write_folder(folder, dataset=dataset, ids=ids, latents=latents, xy=xy, reducer=reducer, index=index)
    return load_folder(folder, dataset=dataset, kind="crystals", inverse_k=inverse_k)


def write_folder(folder: Path, *, dataset: str, ids, latents, xy, reducer,
                 extra: Callable[[Path], None] | None = None, index=None) -> None:
    """A map written to ``folder`` at once (ids.json, latents.npy, xy.npy, reducer.pkl, the latents' ``index`` when
    given and ``extra(tmp)``'s files, then 'done'): its cache's stale temporaries are cleaned first, the dataset's
    older maps there pruned after."""
    cache = folder.parent
    cache.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(cache)

    def write(tmp: Path) -> None:
        (tmp / "ids.json").write_text(json.dumps(list(ids)))
        np.save(tmp / "latents.npy", latents)
        np.save(tmp / "xy.npy", xy)
        with open(tmp / "reducer.pkl", "wb") as handle:
            pickle.dump(reducer, handle)
        if index is not None:
            neighbours.write_index(tmp, index)
        if extra is not None:
            extra(tmp)
        (tmp / "done").write_text("ok")

    atomic_folder(folder, write)
    prune_cache(cache, dataset=dataset, keep=folder)


def load_folder(folder: Path, *, dataset: str, kind: str, inverse_k: int, place_columns: int = 0) -> Atlas:
    """The map ``write_folder`` wrote to ``folder`` ('<dataset>-<key>', a name the app made). The latents are
    memory-mapped (a million of them are 0.9 GB; a click reads a few rows)."""
    return Atlas(dataset=dataset, key=folder.name.rsplit("-", 1)[1], ids=json.loads((folder / "ids.json").read_text()),
                 latents=np.load(folder / "latents.npy", mmap_mode="r"), xy=np.load(folder / "xy.npy"),
                 reducer_path=folder / "reducer.pkl", inverse_k=inverse_k, kind=kind, folder=folder,
                 place_columns=place_columns)


class BuiltMaps:
    """The maps of one kind that a job builds (minutes: never inside a request), kept in memory once loaded, per
    (data dir, dataset, key)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._maps: dict[tuple, Atlas] = {}
        self._lock = threading.Lock()

    def get(self, dataset: str, settings, *, key: str, built: Callable[[], bool], load: Callable[[], Atlas]) -> Atlas:
        """The map of ``dataset`` with ``key``, loaded once; ValueError saying how to build it when not ``built()``."""
        cache = (str(settings.atlas_dir), dataset, key)
        with self._lock:
            if cache not in self._maps:
                if not built():
                    raise ValueError(f"the {self.name} map of {dataset!r} is not built yet: press 'Build this map' "
                                     f"with the {self.name} map chosen, or run `python -m explorer build --dataset "
                                     f"{dataset}`")
                self._maps[cache] = load()
            return self._maps[cache]


def build_missing_in_background(name: str, datasets: list[str], *, ready: Callable[[str], bool],
                                built: Callable[[str], bool], build: Callable[[str], object]) -> threading.Thread:
    """``build(dataset)`` for each dataset that is ``ready`` and not ``built``, one after the other in a daemon
    thread; failures are logged, never raised (the page says the map is not built)."""
    import logging

    def run() -> None:
        for dataset in datasets:
            try:
                if ready(dataset) and not built(dataset):
                    build(dataset)
                    logging.getLogger("explorer").info("%s map of %s built", name, dataset)
            except Exception as exc:  # noqa: BLE001 - logged; the page says the map is not built
                logging.getLogger("explorer").warning("the %s map of %r could not be built: %s", name, dataset, exc)

    thread = threading.Thread(target=run, name=f"explorer-{name}-map", daemon=True)
    thread.start()
    return thread


def prune_cache(cache_dir: Path, *, dataset: str, keep: Path, n_kept: int = MAPS_KEPT) -> list[Path]:
    """Remove all but the ``n_kept`` newest cached maps of ``dataset`` (never ``keep``); returns the removed
    folders. Other datasets' maps (even ``<dataset>-other-<key>``) are left alone."""
    prefix = f"{dataset}-"
    mine = [f for f in cache_dir.iterdir() if f.is_dir() and f.name.startswith(prefix)
            and "-" not in f.name[len(prefix):] and (f / "done").exists()]
    mine.sort(key=lambda f: (f == keep, (f / "done").stat().st_mtime), reverse=True)
    removed = mine[max(n_kept, 1):]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def fit_umap(latents: np.ndarray, params: UmapParams):
    """Seeded UMAP fit; returns (reducer, (n, 2) float32 coordinates). Tiny sets get fewer neighbours."""
    import umap

    n_neighbors = max(2, min(params.n_neighbors, len(latents) - 1))
    # UMAP's spectral start solves an eigenproblem per connected part of the neighbour graph, which fails for
    # a handful of points (4 materials: "k >= N"); so few points start from a seeded random layout instead.
    init = "random" if len(latents) < SPECTRAL_MIN_POINTS else "spectral"
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=params.min_dist, metric=params.metric,
                        random_state=params.seed, n_components=2, n_jobs=1, init=init)
    xy = reducer.fit_transform(latents)
    return reducer, np.asarray(xy, dtype=np.float32)


PLACED_PER_TASK = 20_000


def place_partition(reducer, latents: np.ndarray) -> np.ndarray:
    """(m, 2) float32 map coordinates of (m, d) latents by a fitted reducer's ``transform`` (on a Dask worker)."""
    return np.asarray(reducer.transform(latents), dtype=np.float32)


def fit_umap_sampled(latents: np.ndarray, params: UmapParams, *, sample: int | None, client=None):
    """``fit_umap`` on all latents, or, when there are more than ``sample``, on a seeded sample of ``sample`` of them
    (``params.seed``), the others placed with the reducer's ``transform`` in partitions of ``PLACED_PER_TASK`` (on
    the Dask cluster of ``client`` when given): the fit's cost grows faster than linearly with the points, while a
    sample of 10^5 already fixes the shape of the map. Returns (reducer, (n, 2) float32)."""
    from explorer.jobs import run

    if sample is None or len(latents) <= sample:
        return fit_umap(latents, params)
    chosen = np.sort(np.random.default_rng(params.seed).choice(len(latents), size=sample, replace=False))
    reducer, fitted = fit_umap(latents[chosen], params)
    rest = np.setdiff1d(np.arange(len(latents)), chosen)
    chunks = [rest[k : k + PLACED_PER_TASK] for k in range(0, len(rest), PLACED_PER_TASK)]
    shared = reducer if client is None else client.scatter(reducer, broadcast=True)
    placed: dict[int, np.ndarray] = {}
    run(place_partition, ((k, len(c), (shared, latents[c])) for k, c in enumerate(chunks)), client=client,
        on_result=placed.__setitem__)
    xy = np.empty((len(latents), 2), dtype=np.float32)
    xy[chosen] = fitted
    for k, chunk in enumerate(chunks):
        xy[chunk] = placed[k]
    return reducer, xy


# ------------------------------------------------------------------ the atlas of a dataset, per settings
def umap_params(settings) -> UmapParams:
    """The UMAP parameters of ``settings``."""
    return UmapParams(n_neighbors=settings.umap_n_neighbors, min_dist=settings.umap_min_dist,
                      metric=settings.umap_metric, seed=settings.umap_seed)


def atlas_key(dataset: str, settings) -> str:
    """Cache key of a dataset's map: checkpoint file sha256 + table report signature + UMAP parameters."""
    from explorer.datasets.build import load_report
    from explorer.services.model import checkpoint_sha256

    report = load_report(dataset, settings)
    if report is None:
        raise FileNotFoundError(f"dataset {dataset!r} has no built table: run `python -m explorer data build`")
    return cache_key(model_hash=checkpoint_sha256(settings), table_signature=report.signature,
                     params=umap_params(settings), sample=umap_sample(report.kept, settings))


def umap_sample(n: int, settings) -> int | None:
    """How many of ``n`` materials the map's UMAP is fitted on: None (all) up to ``settings.umap_fit_max``."""
    return settings.umap_fit_max if n > settings.umap_fit_max else None


def is_built(dataset: str, settings) -> bool:
    """True when the map of ``dataset`` for the current checkpoint and table is cached."""
    try:
        return (settings.atlas_dir / f"{dataset}-{atlas_key(dataset, settings)}" / "done").exists()
    except FileNotFoundError:
        return False


def encode_partition(frame, settings) -> np.ndarray:
    """(n, d) latents of table rows (their canonical cells; on a Dask worker, or here)."""
    from explorer.datasets.records import canonical_structure
    from explorer.services.model import encode

    return encode([canonical_structure(row) for _, row in frame.iterrows()], settings, canonical=True)


def build_atlas(dataset: str, settings, *, progress: bool = False,
                on_progress: Callable[[int, int], None] | None = None, client=None) -> Atlas:
    """The map of ``dataset``: loaded from the cache, or every material encoded (batched; in partitions on the Dask
    cluster of ``client`` when given, see ``explorer.jobs``) and UMAP fitted.

    progress: show a progress bar on stderr; on_progress(encoded, total) is called after every batch.
    """
    from explorer.datasets.build import load_table
    from explorer.jobs import run

    key = atlas_key(dataset, settings)
    table = load_table(dataset, settings)

    def encode_all() -> np.ndarray:
        from tqdm import tqdm

        size = settings.encode_batch_size * (1 if client is None else 8)
        columns = ["lattice", "numbers", "frac_coords"]
        parts: dict[int, np.ndarray] = {}
        with tqdm(total=len(table), desc=f"encoding {dataset}", unit="crystal", disable=not progress) as bar:
            def tick(items: int) -> None:
                bar.update(items)
                if on_progress is not None:
                    on_progress(bar.n, len(table))

            run(encode_partition, ((k, len(rows), (rows, settings)) for k, rows in
                                   enumerate(table[columns].iloc[start : start + size]
                                             for start in range(0, len(table), size))),
                client=client, on_result=parts.__setitem__, on_progress=tick)
        return np.concatenate([parts[k] for k in sorted(parts)]) if parts else np.zeros((0, 1), dtype=np.float32)

    if len(table) < 3:
        raise ValueError(f"dataset {dataset!r} has {len(table)} materials; a map needs at least 3")
    return load_or_build(dataset=dataset, cache_dir=settings.atlas_dir, key=key, ids=table["id"].tolist(),
                         encode=encode_all, params=umap_params(settings), inverse_k=settings.inverse_k,
                         sample=umap_sample(len(table), settings), client=client)


_ATLASES: dict[tuple, Atlas] = {}
_ATLAS_LOCK = threading.Lock()


def get_atlas(dataset: str, settings) -> Atlas:
    """The map of ``dataset`` (built when missing), kept in memory per (data dir, dataset, key)."""
    cache = (str(settings.atlas_dir), dataset, atlas_key(dataset, settings))
    with _ATLAS_LOCK:
        if cache not in _ATLASES:
            _ATLASES[cache] = build_atlas(dataset, settings)
        return _ATLASES[cache]
