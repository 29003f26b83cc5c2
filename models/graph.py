"""Periodic neighbour graphs of crystals: every atom pair (with lattice image) within a cutoff.

``periodic_neighbor_graph`` works in numpy (data preparation); ``edge_vectors`` recomputes the
edge vectors in torch from the stored ``(src, dst, image)`` so gradients reach positions and lattice.

Conventions, shared by both functions:

* ``lattice`` rows are the lattice vectors a, b, c in Å; cartesian ``pos = frac_coords @ lattice``.
* ``image`` is the integer lattice translation ``n`` of the neighbour, **relative to the
  coordinates as given** (not wrapped into the cell), so that
  ``vec = pos[dst] + image @ lattice - pos[src]`` with ``pos = frac_coords @ lattice``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MIN_VOLUME = 1e-6
"""Smallest accepted cell volume (Å^3); below this the lattice counts as singular."""

MAX_CANDIDATE_PAIRS = 5e7
"""Most (atom pair, image cell) candidates one graph may examine before it is refused."""

ZERO_DISTANCE = 1e-8
"""Pairs closer than this (Å) count as the same point and never become edges (as pymatgen)."""

_CHUNK_ENTRIES = 1 << 22  # candidate distances computed per block: bounds memory at ~100 MB


@dataclass(frozen=True, eq=False)
class NeighborGraph:
    """Directed edges i -> j of a periodic crystal, sorted by (src, dst, image); arrays are read-only.

    Attributes:
        src: (n_edges,) int64, index of the centre atom i.
        dst: (n_edges,) int64, index of the neighbour atom j.
        image: (n_edges, 3) int64, lattice translation n of the neighbour, relative to the
            fractional coordinates as given: neighbour position = pos[j] + n @ lattice.
        vec: (n_edges, 3) float64 Å, edge vector pos[j] + n @ lattice - pos[i].
        dist: (n_edges,) float64 Å, |vec|.
    """

    src: np.ndarray
    dst: np.ndarray
    image: np.ndarray
    vec: np.ndarray
    dist: np.ndarray

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return int(self.src.shape[0])


def periodic_neighbor_graph(
    *,
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    cutoff: float,
    self_loops: bool = False,
) -> NeighborGraph:
    """All neighbours of every atom within ``cutoff``, periodic images included.

    An edge (i, j, n) is kept when 0 < |pos[j] + n @ lattice - pos[i]| <= cutoff; an atom's own
    periodic images (j == i, n != 0) are neighbours too. Pairs closer than ``ZERO_DISTANCE``
    (an atom and itself at n = 0, or coincident atoms) are dropped; ``self_loops=True`` then adds
    one edge (i, i, 0) with zero vector for every atom. The search runs on coordinates wrapped
    into [0, 1) and takes as many image cells along each axis as the perpendicular cell heights
    require, so very skewed or thin cells are handled; the returned ``image`` is shifted back to
    refer to ``frac_coords`` as given.

    Args:
        lattice: (3, 3) Å, rows are the lattice vectors.
        frac_coords: (n_atoms, 3) fractional coordinates, any real values.
        cutoff: neighbour radius in Å, > 0.
        self_loops: add the edge (i, i, image 0, distance 0) for every atom.

    Returns:
        The ``NeighborGraph``, edges sorted by (src, dst, image).

    Raises:
        ValueError: on a bad shape, non-finite values, a singular lattice, a cutoff <= 0, no
            atoms, or a search larger than ``MAX_CANDIDATE_PAIRS`` (cell too thin for the cutoff).
    """
    lat, frac, cutoff = _check_inputs(lattice=lattice, frac_coords=frac_coords, cutoff=cutoff)
    wrapped, shift = _wrap(frac)
    n_max = _image_range(lattice=lat, wrapped=wrapped, cutoff=cutoff)
    cells = _image_cells(n_max)
    src, dst, cell_index, vec = _search(pos=wrapped @ lat, cells=cells, lattice=lat, cutoff=cutoff)
    image = cells[cell_index] + shift[src] - shift[dst]
    if self_loops:
        n_atoms = frac.shape[0]
        loops = np.arange(n_atoms, dtype=np.int64)
        src = np.concatenate([src, loops])
        dst = np.concatenate([dst, loops])
        image = np.concatenate([image, np.zeros((n_atoms, 3), dtype=np.int64)])
        vec = np.concatenate([vec, np.zeros((n_atoms, 3))])
    order = np.lexsort((image[:, 2], image[:, 1], image[:, 0], dst, src))
    return _frozen_graph(src=src[order], dst=dst[order], image=image[order], vec=vec[order])


def edge_vectors(
    *,
    pos: torch.Tensor,
    lattice: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    image: torch.Tensor,
) -> torch.Tensor:
    """Differentiable edge vectors ``pos[dst] + image @ lattice - pos[src]``.

    Gradients flow to ``pos`` and ``lattice``; the result has their device and dtype. For a batch
    of crystals pass the per-edge lattice (e.g. ``lattice[batch[src]]``).

    Args:
        pos: (n_atoms, 3) Å, cartesian positions consistent with ``image`` (``frac_coords @ lattice``
            for the ``frac_coords`` the graph was built from).
        lattice: (3, 3) Å, rows are lattice vectors, or (n_edges, 3, 3) one lattice per edge.
        src: (n_edges,) integer, centre atom of each edge.
        dst: (n_edges,) integer, neighbour atom of each edge.
        image: (n_edges, 3) integer (or float) lattice translation of the neighbour.

    Returns:
        (n_edges, 3) Å edge vectors.

    Raises:
        ValueError: on inconsistent shapes or a dtype mismatch between ``pos`` and ``lattice``.
    """
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (n_atoms, 3), got {tuple(pos.shape)}")
    if pos.dtype != lattice.dtype:
        raise ValueError(f"pos and lattice dtypes differ: {pos.dtype} vs {lattice.dtype}")
    if src.ndim != 1 or dst.shape != src.shape:
        raise ValueError(f"src and dst must be 1-D of equal length, got {tuple(src.shape)} and {tuple(dst.shape)}")
    n_edges = src.shape[0]
    if image.shape != (n_edges, 3):
        raise ValueError(f"image must have shape ({n_edges}, 3), got {tuple(image.shape)}")
    shift_frac = image.to(dtype=lattice.dtype)
    if lattice.shape == (3, 3):
        shift = shift_frac @ lattice
    elif lattice.shape == (n_edges, 3, 3):
        shift = torch.einsum("ek,ekx->ex", shift_frac, lattice)
    else:
        raise ValueError(f"lattice must have shape (3, 3) or ({n_edges}, 3, 3), got {tuple(lattice.shape)}")
    return pos[dst] - pos[src] + shift


def _check_inputs(
    *, lattice: np.ndarray, frac_coords: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Validated float64 copies of (lattice (3, 3) Å, frac_coords (n_atoms, 3), cutoff Å)."""
    lat = np.array(lattice, dtype=np.float64)
    if lat.shape != (3, 3):
        raise ValueError(f"lattice must have shape (3, 3), got {lat.shape}")
    if not np.isfinite(lat).all():
        raise ValueError(f"lattice has NaN or infinite values: {lat.tolist()}")
    volume = abs(float(np.linalg.det(lat)))
    if volume < MIN_VOLUME:
        raise ValueError(
            f"lattice is singular or degenerate: volume {volume:.3g} Å^3 < {MIN_VOLUME:g} (lattice {lat.tolist()})"
        )
    frac = np.array(frac_coords, dtype=np.float64)
    if frac.ndim != 2 or frac.shape[1] != 3:
        raise ValueError(f"frac_coords must have shape (n_atoms, 3), got {frac.shape}")
    if frac.shape[0] == 0:
        raise ValueError("frac_coords has zero atoms; a graph needs at least one")
    bad_rows = np.flatnonzero(~np.isfinite(frac).all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        raise ValueError(f"frac_coords has NaN or infinite values, e.g. atom {row}: {frac[row].tolist()}")
    cutoff = float(cutoff)
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"cutoff must be a finite number > 0 Å, got {cutoff!r}")
    return lat, frac, cutoff


def _wrap(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wrapped (n_atoms, 3) in [0, 1), shift (n_atoms, 3) int64) with frac = wrapped + shift."""
    shift = np.floor(frac)
    wrapped = frac - shift
    rounded_up = wrapped >= 1.0  # e.g. -1e-17 - floor(-1e-17) rounds to 1.0
    wrapped[rounded_up] -= 1.0
    shift[rounded_up] += 1.0
    return wrapped, shift.astype(np.int64)


def _image_range(*, lattice: np.ndarray, wrapped: np.ndarray, cutoff: float) -> np.ndarray:
    """(3,) int64 largest |n_k| of an image cell that can hold a neighbour within ``cutoff``.

    A neighbour at distance d <= cutoff has |frac_j - frac_i + n|_k * height_k <= cutoff, with
    height_k = volume / |a_i x a_j| the spacing of the lattice planes normal to axis k. Wrapped
    coordinates differ by at most their spread s_k < 1, so |n_k| <= cutoff / height_k + s_k.
    Raises ValueError when the search would exceed ``MAX_CANDIDATE_PAIRS``.
    """
    volume = abs(float(np.linalg.det(lattice)))
    normals = np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]])  # b x c, c x a, a x b
    heights = volume / np.linalg.norm(normals, axis=1)
    spread = wrapped.max(axis=0) - wrapped.min(axis=0)
    n_max = np.floor(cutoff / heights + spread + 1e-9)
    n_atoms = wrapped.shape[0]
    n_pairs = float(np.prod(2.0 * n_max + 1.0)) * float(n_atoms) ** 2
    if not np.isfinite(n_pairs) or n_pairs > MAX_CANDIDATE_PAIRS:
        raise ValueError(
            f"cell is too thin for cutoff {cutoff:g} Å: plane spacings {np.round(heights, 4).tolist()} Å "
            f"need {(2 * n_max + 1).tolist()} image cells per axis for {n_atoms} atoms, "
            f"{n_pairs:.3g} candidate pairs > {MAX_CANDIDATE_PAIRS:.0e}; use a supercell or a smaller cutoff"
        )
    return n_max.astype(np.int64)


def _image_cells(n_max: np.ndarray) -> np.ndarray:
    """(n_cells, 3) int64, every translation n with |n_k| <= n_max[k] (read-only)."""
    return _image_cells_of(*(int(m) for m in n_max))


@functools.lru_cache(maxsize=256)
def _image_cells_of(na: int, nb: int, nc: int) -> np.ndarray:
    axes = [np.arange(-m, m + 1, dtype=np.int64) for m in (na, nb, nc)]
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    cells.flags.writeable = False
    return cells


def _search(
    *, pos: np.ndarray, cells: np.ndarray, lattice: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs within ``cutoff`` among ``pos`` (n_atoms, 3) Å and its copies shifted by ``cells``.

    Screens squared distances blockwise as |p|^2 + |q|^2 - 2 p.q (one matrix product per block,
    with a small margin for rounding), then recomputes the survivors' vectors directly.

    Returns:
        src (n_edges,) int64, dst (n_edges,) int64, index into ``cells`` (n_edges,) int64 and
        vec (n_edges, 3) float64 Å = pos[dst] + cells[index] @ lattice - pos[src].
    """
    n_atoms = pos.shape[0]
    shifts = cells.astype(np.float64) @ lattice
    sq_pos = np.einsum("ix,ix->i", pos, pos)
    scale = float(sq_pos.max() + np.einsum("cx,cx->c", shifts, shifts).max())
    screen = cutoff**2 + 1e-6 * cutoff + 1e-12 * scale
    per_block = max(1, _CHUNK_ENTRIES // (n_atoms * n_atoms))
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(cells), per_block):
        q = (pos[None, :, :] + shifts[start : start + per_block, None, :]).reshape(-1, 3)
        d2 = sq_pos[:, None] + np.einsum("qx,qx->q", q, q)[None, :] - 2.0 * (pos @ q.T)
        rows, cols = np.nonzero(d2 <= screen)
        found.append((rows, cols + start * n_atoms))
    rows = np.concatenate([f[0] for f in found]).astype(np.int64)
    cols = np.concatenate([f[1] for f in found]).astype(np.int64)
    cell_index, dst = np.divmod(cols, n_atoms)
    vec = pos[dst] + shifts[cell_index] - pos[rows]
    dist = np.linalg.norm(vec, axis=1)
    keep = (dist <= cutoff) & (dist > ZERO_DISTANCE)
    return rows[keep], dst[keep], cell_index[keep], vec[keep]


def _frozen_graph(*, src: np.ndarray, dst: np.ndarray, image: np.ndarray, vec: np.ndarray,
                  dist: np.ndarray | None = None) -> NeighborGraph:
    """A ``NeighborGraph`` of contiguous, read-only arrays; ``dist`` is recomputed from ``vec`` unless given (a
    ``GraphStore`` gives the distances of the search that built it, to the bit)."""
    arrays = {
        "src": np.ascontiguousarray(src, dtype=np.int64),
        "dst": np.ascontiguousarray(dst, dtype=np.int64),
        "image": np.ascontiguousarray(image, dtype=np.int64).reshape(-1, 3),
        "vec": np.ascontiguousarray(vec, dtype=np.float64).reshape(-1, 3),
    }
    arrays["dist"] = (np.linalg.norm(arrays["vec"], axis=1) if dist is None
                      else np.array(dist, dtype=np.float64))  # a copy: a store's distances are memory-mapped
    for array in arrays.values():
        array.flags.writeable = False
    return NeighborGraph(**arrays)


@dataclass(frozen=True, eq=False)
class GraphStore:
    """The neighbour graphs of many crystals out to one ``radius``, in flat arrays: atoms as int16, images as int8
    (int16 when a translation needs it), about 15 bytes an edge against 72 in a ``NeighborGraph``. Saved as ``.npy``
    files (``save``), a store loads memory-mapped (``load``): the processes of a server share one copy in the page
    cache.

    Attributes:
        radius: Å, the cutoff every graph was searched at.
        n_atoms: (n_crystals,) int64 atoms of each crystal.
        refused: (n_crystals,) bool, True for a crystal that admits no graph (``periodic_neighbor_graph`` refused it) or
            whose images reach further than int16.
        offsets: (n_crystals + 1,) int64, crystal k's edges are ``offsets[k]:offsets[k + 1]``.
        src, dst: (n_edges,) int16; image: (n_edges, 3) int8 or int16; dist: (n_edges,) float64 Å.
    """

    radius: float
    n_atoms: np.ndarray
    refused: np.ndarray
    offsets: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    image: np.ndarray
    dist: np.ndarray

    FILES = ("radius", "n_atoms", "refused", "offsets", "src", "dst", "image", "dist")

    @classmethod
    def build(cls, cells: list[tuple[np.ndarray, np.ndarray]], radius: float) -> GraphStore:
        """The graphs of ``cells``, each (lattice (3, 3) Å, frac_coords (n_atoms, 3)), out to ``radius`` Å (about
        0.3 ms a crystal of 13 atoms at 5.3 Å on this machine)."""
        graphs, refused = [], []
        for lattice, frac in cells:
            if len(frac) > np.iinfo(np.int16).max:
                raise ValueError(f"a crystal of {len(frac)} atoms is too large for a graph store")
            try:
                graph = periodic_neighbor_graph(lattice=lattice, frac_coords=frac, cutoff=radius)
            except ValueError:
                graph = None
            if graph is not None and graph.n_edges and np.abs(graph.image).max() > np.iinfo(np.int16).max:
                graph = None  # images too far for int16: refused here, searched when asked
            graphs.append(graph)
            refused.append(graph is None)
        kept = [g for g in graphs if g is not None]
        image = np.concatenate([g.image for g in kept]) if kept else np.zeros((0, 3), np.int64)
        narrow = not len(image) or np.abs(image).max() <= np.iinfo(np.int8).max
        join = lambda name, dtype: (np.concatenate([getattr(g, name) for g in kept]).astype(dtype)  # noqa: E731
                                    if kept else np.zeros(0, dtype))
        return cls(radius=float(radius), n_atoms=np.array([len(frac) for _, frac in cells], dtype=np.int64),
                   refused=np.array(refused, dtype=bool),
                   offsets=np.concatenate([[0], np.cumsum([0 if g is None else g.n_edges for g in graphs])]).astype(
                       np.int64),
                   src=join("src", np.int16), dst=join("dst", np.int16),
                   image=image.astype(np.int8 if narrow else np.int16), dist=join("dist", np.float64))

    def __len__(self) -> int:
        return len(self.n_atoms)

    def holds(self, n_atoms: list[int]) -> bool:
        """Whether the store's crystals have these atom counts, in this order (the crystals it was built from)."""
        return len(self) == len(n_atoms) and bool(np.array_equal(self.n_atoms, n_atoms))

    def graph(self, row: int, lattice: np.ndarray, frac_coords: np.ndarray) -> NeighborGraph | None:
        """Crystal ``row``'s graph (None if it admits none); ``lattice`` and ``frac_coords`` are that crystal's, as
        given to ``build``, for the edge vectors, which the store does not keep."""
        if self.refused[row]:
            return None
        edges = slice(int(self.offsets[row]), int(self.offsets[row + 1]))
        src, dst = self.src[edges].astype(np.int64), self.dst[edges].astype(np.int64)
        image = self.image[edges].astype(np.int64)
        vec = (frac_coords[dst] + image - frac_coords[src]) @ lattice
        return _frozen_graph(src=src, dst=dst, image=image, vec=vec, dist=self.dist[edges])

    def save(self, folder: Path) -> None:
        """One ``.npy`` file per attribute in ``folder`` (which must exist)."""
        for name in self.FILES:
            np.save(folder / f"{name}.npy", np.asarray(getattr(self, name)))

    @classmethod
    def load(cls, folder: Path) -> GraphStore:
        """A store saved by ``save``, memory-mapped and read-only. ValueError when the files do not make one."""
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in cls.FILES}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder}: not a graph store ({exc})") from exc
        n, edges = len(arrays["n_atoms"]), len(arrays["src"])
        shapes = {"refused": (n,), "offsets": (n + 1,), "dst": (edges,), "image": (edges, 3), "dist": (edges,)}
        kinds = {"radius": "f", "n_atoms": "i", "refused": "b", "offsets": "i", "src": "i", "dst": "i", "image": "i",
                 "dist": "f"}
        if arrays["radius"].shape != () or any(arrays[name].shape != shape for name, shape in shapes.items()) or any(
                arrays[name].dtype.kind != kind for name, kind in kinds.items()) or int(arrays["offsets"][-1]) != edges:
            raise ValueError(f"{folder}: the arrays of a graph store do not fit together")
        return cls(radius=float(arrays.pop("radius")), **arrays)
