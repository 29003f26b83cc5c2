"""Crystals for the autoencoder: Parquet tables -> ``Crystal`` records -> neighbour graphs -> padded batches.

A table row holds a canonical cell (see ``explorer/datasets/records.py`` for the schema): ``lattice``
(9 floats, row-major, Å), ``numbers`` (atomic numbers) and ``frac_coords`` (3n floats). The decoder
targets that canonical cell, so training crystals are used exactly as stored; crystals built from
arbitrary pymatgen structures are fine to encode (the encoder is E(3)-invariant) but are not canonical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from models.graph import periodic_neighbor_graph

MAX_Z = 94
"""Heaviest element the model knows (plutonium), as in the table schema."""

HELD_OUT_SPLITS = ("val", "valid", "validation", "test")
"""Values of a table's ``split`` column whose rows are always held out of training."""

_TABLE_COLUMNS = ["id", "lattice", "numbers", "frac_coords"]


@dataclass(frozen=True, eq=False)
class Crystal:
    """One periodic crystal.

    Attributes:
        id: record id (e.g. ``"perov_5:1234"``).
        lattice: (3, 3) float64 Å, rows are the lattice vectors.
        numbers: (n_atoms,) int64 atomic numbers in 1..``MAX_Z``.
        frac_coords: (n_atoms, 3) float64 fractional coordinates.
    """

    id: str
    lattice: np.ndarray
    numbers: np.ndarray
    frac_coords: np.ndarray

    @property
    def n_atoms(self) -> int:
        """Number of atoms in the cell."""
        return int(self.numbers.shape[0])


def make_crystal(*, crystal_id: str, lattice, numbers, frac_coords) -> Crystal:
    """A checked ``Crystal`` from array-likes (lattice 9 or (3, 3) Å, numbers (n,), frac_coords 3n or (n, 3)).

    Raises:
        ValueError: quoting the record id, on bad shapes, non-finite values, unknown elements or no atoms.
    """
    lat = np.asarray(lattice, dtype=np.float64).reshape(-1)
    nums = np.asarray(numbers, dtype=np.int64).reshape(-1)
    frac = np.asarray(frac_coords, dtype=np.float64).reshape(-1)
    if lat.shape != (9,) or not np.isfinite(lat).all():
        raise ValueError(f"{crystal_id}: lattice must be 9 finite numbers, got {lat.tolist()}")
    if nums.size == 0:
        raise ValueError(f"{crystal_id}: the crystal has no atoms")
    if frac.shape != (3 * nums.size,) or not np.isfinite(frac).all():
        raise ValueError(f"{crystal_id}: frac_coords must be {3 * nums.size} finite numbers, got {frac.size} values")
    bad = nums[(nums < 1) | (nums > MAX_Z)]
    if bad.size:
        raise ValueError(f"{crystal_id}: atomic number {int(bad[0])} is outside 1..{MAX_Z}")
    return Crystal(id=crystal_id, lattice=lat.reshape(3, 3), numbers=nums, frac_coords=frac.reshape(-1, 3))


def crystal_from_structure(structure: Structure, *, crystal_id: str = "") -> Crystal:
    """The ``Crystal`` of an ordered pymatgen ``Structure`` (its cell as given, not canonicalised)."""
    if not structure.is_ordered:
        raise ValueError(f"{crystal_id or structure.formula}: disordered structures cannot be encoded")
    return make_crystal(crystal_id=crystal_id or structure.composition.reduced_formula,
                        lattice=structure.lattice.matrix, numbers=[site.specie.Z for site in structure],
                        frac_coords=structure.frac_coords)


def primitive_structure(structure: Structure, *, symprec: float = 0.1) -> Structure:
    """The primitive cell of ``structure`` found by spglib (as the data tables' canonical cells are: symprec
    0.1 Å, then tighter), or ``structure`` itself when spglib finds none. Supercells and other cell
    settings of one crystal give cells with the same number of atoms."""
    import warnings

    import spglib

    cell = (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])
    for prec in (symprec, symprec / 10, 1e-3):
        with warnings.catch_warnings():  # spglib 2.x warns about its None-returning error mode
            warnings.simplefilter("ignore", DeprecationWarning)
            primitive = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=prec)
        if primitive is not None:
            lattice, frac, numbers = primitive
            return Structure(Lattice(lattice), [int(z) for z in numbers], frac)
    return structure


def crystal_to_structure(crystal: Crystal) -> Structure:
    """The crystal as a pymatgen ``Structure``."""
    return Structure(Lattice(crystal.lattice), crystal.numbers.tolist(), crystal.frac_coords)


@dataclass(frozen=True)
class TableData:
    """Crystals read from Parquet tables.

    Attributes:
        crystals: the kept crystals, in table order.
        held_out: one flag per crystal: the table's ``split`` column put it in validation/test.
        skipped: per table path, how many rows had more than ``max_atoms`` atoms.
    """

    crystals: list[Crystal]
    held_out: list[bool]
    skipped: dict[str, int] = field(default_factory=dict)


def read_tables(paths: Sequence[str | Path], *, max_atoms: int) -> TableData:
    """Read the crystals with at most ``max_atoms`` atoms from Parquet tables of the record schema.

    Raises:
        FileNotFoundError: naming a missing table.
        ValueError: naming the table and record of a malformed row or a missing column.
    """
    import pandas as pd

    crystals: list[Crystal] = []
    held_out: list[bool] = []
    skipped: dict[str, int] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"table not found: {path}")
        frame = pd.read_parquet(path)
        missing = [c for c in _TABLE_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; found {list(frame.columns)[:12]}")
        splits = frame["split"].astype(str).str.lower() if "split" in frame.columns else None
        skipped[str(path)] = 0
        for row_index, row in enumerate(frame[_TABLE_COLUMNS].itertuples(index=False)):
            if len(row.numbers) > max_atoms:
                skipped[str(path)] += 1
                continue
            crystals.append(make_crystal(crystal_id=str(row.id), lattice=row.lattice, numbers=row.numbers,
                                         frac_coords=row.frac_coords))
            held_out.append(splits is not None and splits.iloc[row_index] in HELD_OUT_SPLITS)
    return TableData(crystals=crystals, held_out=held_out, skipped=skipped)


def split_train_val(*, n: int, val_fraction: float, seed: int,
                    held_out: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` items into (train indices, validation indices), both sorted.

    Items flagged in ``held_out`` always go to validation; of the others a random ``val_fraction``
    joins them.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    fixed = np.zeros(n, dtype=bool) if held_out is None else np.asarray(held_out, dtype=bool)
    if fixed.shape != (n,):
        raise ValueError(f"held_out has {fixed.size} flags for {n} items")
    free = np.flatnonzero(~fixed)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(free)[: int(round(val_fraction * free.size))]
    val = np.zeros(n, dtype=bool)
    val[chosen] = True
    val |= fixed
    return np.flatnonzero(~val), np.flatnonzero(val)


def data_hash(crystals: Sequence[Crystal]) -> str:
    """SHA-256 (hex, first 16 characters) of the crystals' ids, species, lattices and coordinates."""
    digest = hashlib.sha256()
    for crystal in crystals:
        digest.update(crystal.id.encode())
        digest.update(crystal.numbers.astype("<i8").tobytes())
        digest.update(np.round(crystal.lattice, 6).astype("<f8").tobytes())
        digest.update(np.round(crystal.frac_coords, 6).astype("<f8").tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class CrystalGraph:
    """A crystal with its periodic neighbour graph (see ``models.graph.NeighborGraph``).

    Attributes:
        crystal: the crystal.
        src, dst: (n_edges,) int64 centre and neighbour atom of each edge.
        image: (n_edges, 3) int64 lattice translation of the neighbour.
    """

    crystal: Crystal
    src: np.ndarray
    dst: np.ndarray
    image: np.ndarray


def build_graph(crystal: Crystal, *, cutoff: float) -> CrystalGraph:
    """The neighbour graph of one crystal within ``cutoff`` Å; ValueError names the crystal on failure."""
    try:
        graph = periodic_neighbor_graph(lattice=crystal.lattice, frac_coords=crystal.frac_coords, cutoff=cutoff)
    except ValueError as exc:
        raise ValueError(f"{crystal.id}: {exc}") from None
    return CrystalGraph(crystal=crystal, src=graph.src, dst=graph.dst, image=graph.image)


def build_graphs(crystals: Sequence[Crystal], *, cutoff: float, progress: bool = False) -> list[CrystalGraph]:
    """Neighbour graphs of many crystals (about 0.3 ms each), with an optional tqdm bar."""
    items = crystals
    if progress:
        from tqdm import tqdm

        items = tqdm(crystals, desc="graphs", unit="crystal", leave=False)
    return [build_graph(crystal, cutoff=cutoff) for crystal in items]


@dataclass(frozen=True, eq=False)
class CrystalBatch:
    """Crystals stacked for the model: flat atoms and edges (encoder) plus padded per-crystal targets.

    Attributes:
        ids: the crystal ids, length n_crystals.
        numbers: (n_atoms_total,) long atomic numbers.
        frac: (n_atoms_total, 3) fractional coordinates, as given (not wrapped).
        batch: (n_atoms_total,) long index of each atom's crystal.
        lattice: (n_crystals, 3, 3) Å, rows are lattice vectors.
        n_atoms: (n_crystals,) long atoms per crystal.
        src, dst: (n_edges,) long global atom indices of each edge.
        image: (n_edges, 3) float lattice translation of each edge's neighbour.
        species: (n_crystals, max_n) long atomic numbers, 0 on padding (max_n = largest n_atoms).
        frac_padded: (n_crystals, max_n, 3) fractional coordinates wrapped to [0, 1), 0 on padding.
        mask: (n_crystals, max_n) bool, True on real atoms.
    """

    ids: list[str]
    numbers: torch.Tensor
    frac: torch.Tensor
    batch: torch.Tensor
    lattice: torch.Tensor
    n_atoms: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    image: torch.Tensor
    species: torch.Tensor
    frac_padded: torch.Tensor
    mask: torch.Tensor

    @property
    def n_crystals(self) -> int:
        """Number of crystals in the batch."""
        return len(self.ids)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CrystalBatch:
        """A copy on ``device`` with floating tensors cast to ``dtype`` (each when given)."""
        moved = {}
        for name in ("numbers", "frac", "batch", "lattice", "n_atoms", "src", "dst", "image", "species",
                     "frac_padded", "mask"):
            tensor = getattr(self, name)
            cast = dtype if (dtype is not None and tensor.is_floating_point()) else None
            moved[name] = tensor.to(device=device, dtype=cast)
        return replace(self, **moved)


def collate(graphs: Sequence[CrystalGraph]) -> CrystalBatch:
    """Stack crystal graphs into one float32 ``CrystalBatch`` on the CPU."""
    if not graphs:
        raise ValueError("cannot collate an empty list of crystals")
    counts = np.array([g.crystal.n_atoms for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    max_n = int(counts.max())
    species = np.zeros((len(graphs), max_n), dtype=np.int64)
    frac_padded = np.zeros((len(graphs), max_n, 3), dtype=np.float64)
    for k, g in enumerate(graphs):
        n = counts[k]
        species[k, :n] = g.crystal.numbers
        frac_padded[k, :n] = np.mod(g.crystal.frac_coords, 1.0)
    edge_counts = [g.src.size for g in graphs]
    edge_offset = np.repeat(offsets, edge_counts)
    as_float = lambda array: torch.as_tensor(np.asarray(array, dtype=np.float32))  # noqa: E731
    return CrystalBatch(
        ids=[g.crystal.id for g in graphs],
        numbers=torch.as_tensor(np.concatenate([g.crystal.numbers for g in graphs])),
        frac=as_float(np.concatenate([g.crystal.frac_coords for g in graphs])),
        batch=torch.as_tensor(np.repeat(np.arange(len(graphs), dtype=np.int64), counts)),
        lattice=as_float(np.stack([g.crystal.lattice for g in graphs])),
        n_atoms=torch.as_tensor(counts),
        src=torch.as_tensor(np.concatenate([g.src for g in graphs]) + edge_offset),
        dst=torch.as_tensor(np.concatenate([g.dst for g in graphs]) + edge_offset),
        image=as_float(np.concatenate([g.image for g in graphs]).reshape(-1, 3)),
        species=torch.as_tensor(species),
        frac_padded=as_float(np.mod(frac_padded, 1.0)),
        mask=torch.as_tensor(species > 0),
    )


def iterate_batches(graphs: Sequence[CrystalGraph], *, batch_size: int, rng: np.random.Generator | None = None,
                    bucket_batches: int = 0) -> Iterator[CrystalBatch]:
    """Batches of ``batch_size`` crystals, shuffled by ``rng`` when given, else in order.

    With ``bucket_batches`` = k > 0 (and an ``rng``), each run of k * batch_size shuffled crystals is
    sorted by atom count before it is cut into batches, and the batches are shuffled again: batches
    then hold crystals of similar size, so the decoder pads far less (most crystals are small).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if rng is None:
        order = np.arange(len(graphs))
    else:
        order = rng.permutation(len(graphs))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if rng is not None and bucket_batches > 0:
        sizes = np.array([g.crystal.n_atoms for g in graphs])
        chunk = bucket_batches * batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(sizes[part], kind="stable")]
            batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    for indices in batches:
        yield collate([graphs[i] for i in indices])
