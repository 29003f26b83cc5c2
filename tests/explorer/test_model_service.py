"""Model service: a small real checkpoint encodes, decodes and interpolates to plain data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import nacl, silicon, srtio3
from pymatgen.core import Structure

from explorer.services import batching, materials, model


def test_checkpoint_is_loaded_once(tiny_settings):
    first = model.loaded_checkpoint(tiny_settings)
    assert model.loaded_checkpoint(tiny_settings) is first
    assert len(model.checkpoint_sha256(tiny_settings)) == 64


def test_missing_checkpoint_names_the_path(tiny_settings, tmp_path):
    settings = tiny_settings.model_copy(update={"checkpoint": tmp_path / "nope.pt"})
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        model.encode([nacl()], settings)


def test_encode_gives_float32_latents_invariant_to_the_cell(tiny_settings):
    d = model.latent_dim(tiny_settings)
    z = model.encode([nacl(), silicon(), srtio3()], tiny_settings)
    assert z.shape == (3, d) and z.dtype == np.float32 and np.isfinite(z).all()
    primitive = model.encode([nacl().get_primitive_structure()], tiny_settings)
    np.testing.assert_allclose(primitive[0], z[0], atol=1e-4)
    assert model.encode([], tiny_settings).shape == (0, d)


def test_decode_gives_structure_and_json_validity(tiny_settings):
    z = model.encode([srtio3()], tiny_settings)[0]
    decoded = model.decode(z, tiny_settings)
    assert isinstance(decoded.structure, Structure) and len(decoded.structure) >= 1
    assert decoded.n_atoms == len(decoded.structure)
    json.dumps(decoded.validity)
    assert {"valid", "reasons", "min_distance", "in_range"} <= set(decoded.validity)
    with pytest.raises(ValueError, match="latent must be finite"):
        model.decode(np.full(z.shape, np.nan), tiny_settings)
    with pytest.raises(ValueError, match="latent must be finite"):
        model.decode(np.zeros(3), tiny_settings)


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolate_frames_run_from_a_to_b(tiny_settings, method):
    a, b = model.encode([nacl(), srtio3()], tiny_settings)
    frames = model.interpolate(a, b, tiny_settings, steps=10, method=method)
    assert [f.index for f in frames] == list(range(10))
    assert frames[0].t == 0.0 and frames[-1].t == 1.0
    np.testing.assert_allclose(frames[0].latent, a, atol=1e-5)
    np.testing.assert_allclose(frames[-1].latent, b, atol=1e-5)
    assert frames[0].formula == model.decode(a, tiny_settings).formula
    assert frames[-1].formula == model.decode(b, tiny_settings).formula
    assert all(f.n_atoms == len(f.structure) and "valid" in f.validity for f in frames)


def test_slerp_interpolates_the_norm_and_stays_on_the_arc():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 1.0])
    path = model.path_latents(a, b, steps=5, method="slerp")
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linspace(3, 1, 5), atol=1e-5)
    angles = np.arctan2(path[:, 1], path[:, 0])
    np.testing.assert_allclose(angles, np.linspace(0, np.pi / 2, 5), atol=1e-5)
    linear = model.path_latents(a, b, steps=3, method="linear")
    np.testing.assert_allclose(linear[1], [1.5, 0.5])
    counts = model.path_latents(np.array([3.0, 0.0, 6.0]), np.array([0.0, 1.0, 4.0]), steps=5, method="slerp",
                                linear_tail=1)  # a count at the end goes straight: 6 to 4 is 5 halfway
    np.testing.assert_allclose(counts[:, :2], path, atol=1e-5)
    np.testing.assert_allclose(counts[:, 2], np.linspace(6, 4, 5), atol=1e-5)


@pytest.mark.parametrize("steps", [1, 31, 2.5, True])
def test_interpolation_steps_are_checked(steps):
    with pytest.raises(ValueError, match="steps must be an integer from 2 to 30"):
        model.path_latents(np.zeros(2), np.ones(2), steps=steps)


def test_interpolation_method_is_checked():
    with pytest.raises(ValueError, match="'cubic'"):
        model.path_latents(np.zeros(2), np.ones(2), steps=3, method="cubic")


def test_concurrent_decodes_are_batched_and_equal_to_decoding_alone(tiny_settings):
    import threading

    z = model.encode([nacl(), silicon(), srtio3(), nacl().get_primitive_structure()], tiny_settings)
    rng = np.random.default_rng(0)
    latents = np.concatenate([z, z + 0.05 * rng.normal(size=z.shape).astype(np.float32)])
    tiny_settings = tiny_settings.model_copy(update={"decode_cache": 0})  # every decode goes to the model
    alone = [model.decode(latent, tiny_settings.model_copy(update={"decode_batching": False})) for latent in latents]
    batched: list = [None] * len(latents)
    barrier = threading.Barrier(len(latents))

    def decode(k: int) -> None:
        barrier.wait()
        batched[k] = model.decode(latents[k], tiny_settings)

    threads = [threading.Thread(target=decode, args=(k,)) for k in range(len(latents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batcher = model._batcher(model.loaded_checkpoint(tiny_settings).model,
                             model.auto_decode_workers(tiny_settings.decode_workers),
                             tiny_settings.decode_max_batch)
    assert batcher.largest_batch > 1  # at least two requests shared a forward pass
    for one, many in zip(alone, batched, strict=True):
        assert [s.specie.symbol for s in one.structure] == [s.specie.symbol for s in many.structure]
        np.testing.assert_allclose(one.structure.frac_coords, many.structure.frac_coords, atol=1e-4)
        np.testing.assert_allclose(one.structure.lattice.matrix, many.structure.lattice.matrix, atol=1e-4)


class _CountingModel:
    """Stands in for the autoencoder in the batcher: records the latents of every pass, decodes to their sums."""

    def __init__(self) -> None:
        self.passes: list[list[float]] = []

    def decode(self, z, known=None):
        self.passes.append([float(v) for v in z[:, 0]])
        self.known = known
        return [float(v) for v in z.sum(axis=1)]


def _request(z: np.ndarray, arrival: int, known=None, due: float | None = None) -> dict:
    """A request as ``DecodeBatcher.decode`` queues it; ``due``: seconds from now (default: in arrival order, an hour
    away)."""
    import threading
    import time

    due = 3600.0 + arrival if due is None else due
    return {"z": z, "known": known, "done": threading.Event(), "result": None, "error": None,
            "due": time.monotonic() + due, "arrival": arrival}


def test_the_batcher_takes_the_request_due_first_and_fills_the_pass_in_order_of_deadlines():
    """Earliest deadline first: a click due before an older path goes first, with the other clicks but without the
    path while it is not due (no path's latents in a click's company here); a path past its deadline goes before
    clicks due later, and the clicks that fit join it; what does not fit waits for the next pass."""
    batcher = batching.DecodeBatcher(_CountingModel(), max_batch=12, click_company=1)
    path = _request(np.full((10, 2), 1.0, dtype=np.float32), 0, due=2.0)
    clicks = [_request(np.full((1, 2), 2.0 + k, dtype=np.float32), 1 + k, due=0.5 + k) for k in range(4)]
    batcher._backlog = [path, *clicks]  # as if all five arrived while the model was busy
    first = batcher.next_batch()
    assert [r["arrival"] for r in first] == [1, 2, 3, 4]  # the clicks, due first, without the path
    assert batcher._backlog == [path]
    late = _request(np.full((8, 2), 3.0, dtype=np.float32), 5, due=-1.0)  # its deadline has passed
    more = [_request(np.full((1, 2), 4.0, dtype=np.float32), 6 + k, due=0.2) for k in range(5)]
    batcher._backlog += [late, *more]
    second = batcher.next_batch()
    assert [r["arrival"] for r in second] == [5, 6, 7, 8, 9]  # the late path, then clicks up to 12 latents
    assert [r["arrival"] for r in batcher._backlog] == [10, 0]
    third = batcher.next_batch()  # the last click leads; the path is not due, so it waits
    assert [r["arrival"] for r in third] == [10]
    assert batcher.next_batch() == [path]
    batcher._run([path])
    assert path["done"].is_set() and path["result"] == [2.0] * 10


def test_a_click_takes_a_path_not_yet_due_when_they_fit_in_its_company():
    """A pass led by a click takes paths that are not due yet while it stays within ``click_company`` latents (a
    click alone costs about twice as much CPU per latent as a pass of 8); a path that would make it larger waits."""
    batcher = batching.DecodeBatcher(_CountingModel(), max_batch=32, click_company=12)
    click = _request(np.full((1, 2), 1.0, dtype=np.float32), 0, due=0.5)
    paths = [_request(np.full((8, 2), 2.0 + k, dtype=np.float32), 1 + k, due=4.0 + k) for k in range(2)]
    big = _request(np.full((12, 2), 5.0, dtype=np.float32), 3, due=3.0)
    batcher._backlog = [click, big, *paths]
    assert [r["arrival"] for r in batcher.next_batch()] == [0, 1]  # the click and the first path that fits: 9
    assert [r["arrival"] for r in batcher.next_batch()] == [3, 2]  # then by deadlines, up to 32 latents
    alone = _request(np.full((1, 2), 6.0, dtype=np.float32), 4, due=0.5)
    batcher._backlog = [alone, _request(np.full((12, 2), 7.0, dtype=np.float32), 5, due=4.0)]
    assert [r["arrival"] for r in batcher.next_batch()] == [4]  # 13 latents would be more than its company
    assert batching.CLICK_COMPANY == 12 and batching.DecodeBatcher(_CountingModel()).click_company == 12


def test_while_one_worker_decodes_a_large_batch_the_next_takes_a_small_one():
    """With 32 latents a pass, three 10-step paths go together; while a worker decodes more than 16 latents, the next
    pass takes at most 16 (one path), so a click waits for a small batch; without a large one running, 32 again."""
    batcher = batching.DecodeBatcher(_CountingModel(), max_batch=32, workers=2)
    paths = [_request(np.full((10, 2), 1.0 + k, dtype=np.float32), k) for k in range(6)]
    batcher._backlog = list(paths)
    assert batcher.limit() == 32 and [r["arrival"] for r in batcher.next_batch(batcher.limit())] == [0, 1, 2]
    batcher._large = 1  # as _loop counts a pass of 30 latents while it runs
    assert batcher.limit() == 16 and [r["arrival"] for r in batcher.next_batch(batcher.limit())] == [3]
    batcher._large = 0
    assert [r["arrival"] for r in batcher.next_batch(batcher.limit())] == [4, 5]


def test_one_pass_decodes_requests_of_one_set_of_known_crystals():
    """Requests offered different known crystals (two settings' maps) never share a pass; the pass gets theirs."""
    batcher = batching.DecodeBatcher(_CountingModel(), max_batch=12)
    mine, theirs = object(), object()
    batcher._backlog = [_request(np.ones((3, 2), dtype=np.float32), 0, mine),
                        _request(np.ones((1, 2), dtype=np.float32), 1, theirs),
                        _request(np.ones((1, 2), dtype=np.float32), 2, mine),
                        _request(np.ones((2, 2), dtype=np.float32), 3, theirs)]
    first = batcher.next_batch()
    assert [r["arrival"] for r in first] == [0, 2]  # due first, with the click of the same known crystals
    second = batcher.next_batch()  # a click, and a small path of its known crystals in its company
    assert [r["arrival"] for r in second] == [1, 3] and not batcher._backlog
    batcher._run(first)
    assert batcher.model.known is mine and first[0]["result"] == [2.0] * 3 and first[1]["result"] == [2.0]
    batcher._run(second)
    assert batcher.model.known is theirs


def test_known_cells_are_the_crystals_of_the_known_map(tiny_settings):
    """``known_cells``: the map's crystals with their map latents, once per map version; none when the map is not
    built or known starts are off; a known material's own latent decodes without being offered itself."""
    from explorer import atlas

    settings = tiny_settings.model_copy(update={"known_starts_dataset": "tiny", "known_starts": 3})
    the_map = atlas.get_atlas("tiny", settings)  # built here when no test before built it
    token, known = model.known_cells(settings)
    largest = model.loaded_checkpoint(settings).model.config.max_atoms
    table_sizes = materials.table("tiny", settings).set_index("id")["numbers"].map(len)
    assert len(known) == sum(table_sizes[i] <= largest for i in the_map.ids) and known.k == 3 and "tiny" in token
    assert all(len(c.numbers) <= largest for c in known.cells)
    assert len(known.store) == len(known) and (the_map.folder / f"known-graphs-{len(known)}").is_dir()
    rows = [the_map.ids.index(i) for i in known.ids]
    np.testing.assert_array_equal(known.latents, np.asarray(the_map.latents, dtype=np.float32)[rows])
    table = materials.table("tiny", settings).set_index("id")
    first = known.cells[0]
    assert first.numbers.tolist() == list(table.loc[known.ids[0], "numbers"])
    assert model.known_cells(settings)[1] is known
    assert model.known_cells(settings.model_copy(update={"known_starts": 0})) is None
    assert model.known_cells(settings.model_copy(update={"known_starts_dataset": "nothing-built"})) is None
    z = np.asarray(known.latents[0], dtype=np.float64)
    assert all(not np.array_equal(c.numbers, first.numbers) or c.frac is not first.frac
               for c in known.starts(z, first))  # never the material itself
    decoded = model.decode_many(np.asarray(the_map.latents[:2]), settings)
    assert len(decoded) == 2 and all(d.structure.num_sites >= 1 for d in decoded)


def test_the_known_crystals_graphs_are_kept_in_their_maps_folder(tmp_path, caplog):
    """``known_cells``'s graph store: built into the map's folder and loaded from it memory-mapped; built again when the
    kept one holds other crystals or is damaged; kept in memory when the folder cannot be written."""
    from models.crystal.search import Cell

    cells = [Cell(numbers=np.array(s.atomic_numbers), frac=s.frac_coords % 1.0, lattice=s.lattice.matrix)
             for s in (nacl(), silicon(), srtio3())]
    store = model._known_graphs(tmp_path, cells, 4.5)
    assert isinstance(store.src, np.memmap) and (tmp_path / "known-graphs-3" / "src.npy").exists()
    again = model._known_graphs(tmp_path, cells, 4.5)
    assert isinstance(again.src, np.memmap) and np.array_equal(again.offsets, store.offsets)
    swapped = [cells[2], cells[0], cells[1]]  # as many crystals, other sizes: not these crystals' graphs
    assert model._known_graphs(tmp_path, swapped, 4.5).n_atoms.tolist() == [5, 8, 8]
    assert model._known_graphs(tmp_path, swapped, 4.5).n_atoms.tolist() == [5, 8, 8]
    assert "built again" not in caplog.text
    (tmp_path / "known-graphs-3" / "offsets.npy").write_bytes(b"broken")
    assert model._known_graphs(tmp_path, cells, 4.5).n_atoms.tolist() == [8, 8, 5]
    assert "built again" in caplog.text
    blocked = tmp_path / "file"
    blocked.write_text("a file where the map's folder should be")
    in_memory = model._known_graphs(blocked, cells, 4.5)
    assert not isinstance(in_memory.src, np.memmap) and "stay in memory" in caplog.text
    assert not isinstance(model._known_graphs(None, cells, 4.5).src, np.memmap)


def test_a_process_that_finds_the_known_graphs_being_built_waits_and_loads_them(tmp_path, monkeypatch):
    """Of a server's processes starting on a fresh map, one builds the graph store and the others wait for its lock,
    then load what it wrote instead of building their own."""
    import threading

    from explorer.storage import exclusive
    from models.crystal import search
    from models.crystal.search import Cell

    cells = [Cell(numbers=np.array(s.atomic_numbers), frac=s.frac_coords % 1.0, lattice=s.lattice.matrix)
             for s in (nacl(), silicon())]
    holder = exclusive(tmp_path / ".known-graphs-2.lock", wait=True)  # the other process, building
    built = []
    build = search.known_graph_store
    monkeypatch.setattr(search, "known_graph_store", lambda *a: built.append(1) or build(*a))
    found = []
    waiting = threading.Thread(target=lambda: found.append(model._known_graphs(tmp_path, cells, 4.5)))
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive() and not found  # waits for the lock
    model.atomic_folder(tmp_path / "known-graphs-2", build(cells, 4.5).save)  # what the other process writes
    holder.close()
    waiting.join(timeout=30)
    assert len(found) == 1 and isinstance(found[0].src, np.memmap) and not built


def test_a_decode_made_from_a_known_crystal_says_which_one(tiny_settings):
    """The search's known crystal travels with the decode (``properties["decoded_from"]``, kept by exports) and the
    view's note names it with its formula; the decoder's own crystal has no such note."""
    from models.crystal.autoencoder import DecodedArrays
    from models.crystal.search import Cell

    settings = tiny_settings.model_copy(update={"known_starts_dataset": "tiny"})
    table = materials.table("tiny", settings)
    record_id, formula = str(table["id"].iloc[0]), str(table["reduced_formula"].iloc[0])
    cell = Cell(numbers=np.array([11, 17]), frac=np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), lattice=np.eye(3) * 3.0)
    arrays = DecodedArrays.from_cells([cell, Cell(cell.numbers, cell.frac, cell.lattice, origin=record_id)])
    plain, taken = arrays.structure(0), arrays.structure(1)
    assert "decoded_from" not in plain.properties and model.origin_note(plain, settings) == ""
    assert taken.properties["decoded_from"] == record_id
    note = model.origin_note(Structure.from_dict(taken.as_dict()), settings)
    assert record_id in note and formula in note and "structure type" in note


def test_a_request_larger_than_a_batch_still_runs_alone():
    batcher = batching.DecodeBatcher(_CountingModel(), max_batch=4)
    batcher._backlog = [_request(np.ones((30, 2), dtype=np.float32), 0), _request(np.ones((1, 2), dtype=np.float32), 1)]
    assert [len(r["z"]) for r in batcher.next_batch()] == [30]  # due first: alone, nothing else fits
    assert [r["arrival"] for r in batcher.next_batch()] == [1]


def test_two_workers_decode_concurrent_requests_as_one_would(tiny_settings):
    import threading

    z = model.encode([nacl(), silicon(), srtio3()], tiny_settings)
    latents = np.concatenate([z + 0.02 * k for k in range(4)]).astype(np.float32)
    net = model.loaded_checkpoint(tiny_settings).model
    alone = [net.decode(latents[k : k + 1])[0] for k in range(len(latents))]
    batcher = batching.DecodeBatcher(net, workers=2, max_batch=2)
    found: list = [None] * len(latents)
    barrier = threading.Barrier(len(latents))

    def decode(k: int) -> None:
        barrier.wait()
        found[k] = batcher.decode(latents[k : k + 1])[0]

    threads = [threading.Thread(target=decode, args=(k,)) for k in range(len(latents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for one, got in zip(alone, found, strict=True):
        assert [s.specie.symbol for s in one.structure] == [s.specie.symbol for s in got.structure]
        np.testing.assert_allclose(one.structure.frac_coords, got.structure.frac_coords, atol=1e-4)


def test_a_latent_decoded_again_comes_from_the_cache_as_a_copy(tiny_settings):
    settings = tiny_settings.model_copy(update={"decode_cache": 8})
    z = model.encode([nacl(), srtio3()], settings)
    cache = model.decode_cache(settings)
    fresh = model.decode_many(z, settings.model_copy(update={"decode_cache": 0}))[::-1]  # the cache is not used
    first = model.decode_many(z, settings)
    hits = cache.hits
    first[0].structure.replace_species({first[0].structure[0].specie: "Xe"})  # a caller changes its copy
    again = model.decode_many(z[::-1], settings)
    assert cache.hits == hits + 2
    for cached, new in zip(again, fresh, strict=True):
        assert cached.structure == new.structure and cached.validity == new.validity
        np.testing.assert_array_equal(cached.latent, new.latent)
    assert "Xe" not in again[1].structure.composition


def test_the_decode_cache_forgets_the_least_recently_used():
    cache = batching.DecodeCache(2)
    for key in (b"a", b"b"):
        cache.put(key, nacl(), {"valid": True})
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", silicon(), {"valid": True})
    assert cache.get(b"b") is None and cache.get(b"a") is not None and cache.get(b"c") is not None
