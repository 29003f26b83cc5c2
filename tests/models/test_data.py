"""Tables -> crystals -> graphs -> batches, and the seeded split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CRYSTALS
from tiny_tables import write_table

from models.crystal.data import (
    build_graphs,
    collate,
    crystal_from_structure,
    data_hash,
    iterate_batches,
    make_crystal,
    read_tables,
    split_train_val,
)


def test_read_tables_skips_large_cells_and_keeps_split(tmp_path):
    structures = [make() for make in TINY_CRYSTALS.values()]  # 8, 8, 5, 4 atoms
    path = write_table(tmp_path / "t.parquet", structures, split=["train", "val", "train", "test"])
    table = read_tables([path], max_atoms=6)
    assert [c.id for c in table.crystals] == ["tiny:2", "tiny:3"]
    assert table.held_out == [False, True] and table.skipped == {str(path): 2}
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        read_tables([tmp_path / "nowhere.parquet"], max_atoms=6)


def test_make_crystal_quotes_bad_records():
    with pytest.raises(ValueError, match="bad:1: atomic number 0"):
        make_crystal(crystal_id="bad:1", lattice=np.eye(3), numbers=[0], frac_coords=[0, 0, 0])
    with pytest.raises(ValueError, match="bad:2: frac_coords must be 3 finite"):
        make_crystal(crystal_id="bad:2", lattice=np.eye(3), numbers=[1], frac_coords=[0, np.nan, 0])


def test_split_is_seeded_and_respects_held_out():
    held = [False] * 95 + [True] * 5
    train, val = split_train_val(n=100, val_fraction=0.1, seed=3, held_out=held)
    again = split_train_val(n=100, val_fraction=0.1, seed=3, held_out=held)
    assert np.array_equal(val, again[1]) and set(range(95, 100)) <= set(val.tolist())
    assert len(val) == 5 + 10 and len(train) == 85 and not set(train) & set(val)


def test_collate_shapes_and_offsets():
    crystals = [crystal_from_structure(make(), crystal_id=name) for name, make in TINY_CRYSTALS.items()]
    graphs = build_graphs(crystals, cutoff=3.0)
    batch = collate(graphs)
    counts = [c.n_atoms for c in crystals]
    assert batch.n_atoms.tolist() == counts and batch.species.shape == (4, max(counts))
    assert batch.mask.sum().item() == sum(counts) == batch.numbers.shape[0]
    assert (batch.batch[batch.src] == batch.batch[batch.dst]).all()  # edges stay inside their crystal
    assert batch.to(dtype=torch.float64).lattice.dtype == torch.float64
    assert batch.to(dtype=torch.float64).numbers.dtype == torch.long


def test_bucketed_batches_cover_every_crystal_once():
    crystals = [crystal_from_structure(make(), crystal_id=f"{name}:{k}")
                for k in range(5) for name, make in TINY_CRYSTALS.items()]
    graphs = build_graphs(crystals, cutoff=3.0)
    ids = [i for b in iterate_batches(graphs, batch_size=3, rng=np.random.default_rng(0), bucket_batches=2)
           for i in b.ids]
    assert sorted(ids) == sorted(c.id for c in crystals)
    assert data_hash(crystals) == data_hash(list(crystals)) != data_hash(crystals[1:])
