"""Periodic neighbour graphs against pymatgen's neighbour list on tiny real crystals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from models.graph import GraphStore, NeighborGraph, edge_vectors, periodic_neighbor_graph


def _nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _si() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def _srtio3() -> Structure:
    coords = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"], coords)


def _graphite() -> Structure:
    coords = [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
    return Structure(Lattice.hexagonal(2.46, 6.71), ["C"] * 4, coords)


def _sheared() -> Structure:
    lattice = Lattice([[5.0, 0.0, 0.0], [4.9, 1.0, 0.0], [0.0, 0.0, 5.0]])
    return Structure(lattice, ["Si", "O"], [[0.1, 0.2, 0.3], [0.6, 0.7, 0.55]])


def _triclinic() -> Structure:
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 71.0, 98.0, 113.0)
    coords = np.random.default_rng(7).random((6, 3))
    return Structure(lattice, ["Mg", "O", "O", "Si", "Si", "O"], coords)


CRYSTALS = {"NaCl": _nacl, "Si": _si, "SrTiO3": _srtio3, "graphite": _graphite}


def _graph(structure: Structure, cutoff: float, **kwargs: bool) -> NeighborGraph:
    return periodic_neighbor_graph(
        lattice=structure.lattice.matrix, frac_coords=structure.frac_coords, cutoff=cutoff, **kwargs
    )


def _assert_matches_pymatgen(structure: Structure, cutoff: float) -> NeighborGraph:
    """Same (i, j, image) edges with the same distances and vectors as ``get_neighbor_list``."""
    graph = _graph(structure, cutoff)
    centers, points, offsets, distances = structure.get_neighbor_list(cutoff)
    expected = np.column_stack([centers, points, np.rint(offsets).astype(np.int64)])
    order = np.lexsort(expected.T[::-1])
    got = np.column_stack([graph.src, graph.dst, graph.image])
    assert got.shape == expected.shape, f"{len(got)} edges, pymatgen has {len(expected)}"
    np.testing.assert_array_equal(got, expected[order])
    np.testing.assert_allclose(graph.dist, distances[order], rtol=0, atol=1e-10)
    cart = structure.cart_coords
    by_definition = cart[graph.dst] + graph.image @ structure.lattice.matrix - cart[graph.src]
    np.testing.assert_allclose(graph.vec, by_definition, rtol=0, atol=1e-10)
    return graph


@pytest.mark.parametrize("cutoff", [3.0, 5.0])
@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_matches_pymatgen_on_real_crystals(name: str, cutoff: float) -> None:
    structure = CRYSTALS[name]()
    assert (structure.frac_coords >= 0).all() and (structure.frac_coords < 1).all()
    graph = _assert_matches_pymatgen(structure, cutoff)
    assert graph.n_edges > 0
    assert (graph.dist > 0).all() and (graph.dist <= cutoff).all()


def test_nacl_first_shell() -> None:
    graph = _graph(_nacl(), 3.0)
    assert graph.n_edges == 8 * 6
    np.testing.assert_allclose(graph.dist, 2.82, atol=1e-12)
    assert np.bincount(graph.src).tolist() == [6] * 8


@pytest.mark.parametrize("cutoff", [3.0, 5.0])
def test_images_refer_to_coords_as_given(cutoff: float) -> None:
    base = _srtio3()
    offsets = np.array([[1.3, -2.0, 0.0], [-2.0, 1.3, 3.0], [0.0, 0.0, -1.0], [2.7, -0.2, 1.0], [-1.0, 0.0, 0.0]])
    shifted = Structure(base.lattice, base.species, base.frac_coords + offsets)
    assert (shifted.frac_coords < 0).any() and (shifted.frac_coords >= 1).any()
    _assert_matches_pymatgen(shifted, cutoff)


def test_integer_shift_moves_images_only() -> None:
    structure = _graphite()
    shift = np.array([[0, 0, 0], [2, -1, 0], [0, 0, -3], [-1, 1, 1]])
    graph = _graph(structure, 4.0)
    moved = periodic_neighbor_graph(
        lattice=structure.lattice.matrix, frac_coords=structure.frac_coords + shift, cutoff=4.0
    )
    images = np.column_stack([moved.src, moved.dst, moved.image + shift[moved.dst] - shift[moved.src]])
    order = np.lexsort(images.T[::-1])
    np.testing.assert_array_equal(images[order], np.column_stack([graph.src, graph.dst, graph.image]))
    np.testing.assert_allclose(moved.vec[order], graph.vec, atol=1e-12)


@pytest.mark.parametrize("cutoff", [3.0, 5.0])
def test_strongly_sheared_cell(cutoff: float) -> None:
    graph = _assert_matches_pymatgen(_sheared(), cutoff)
    # Plane spacing is 1 Å along a and b though |a| = 5 Å: images far beyond +-1 are needed.
    assert np.abs(graph.image[:, :2]).max() >= 3


def test_random_triclinic_cell() -> None:
    _assert_matches_pymatgen(_triclinic(), 5.0)


def test_thin_slab_cell() -> None:
    slab = Structure(Lattice(np.diag([4.0, 4.5, 0.7])), ["C", "N"], [[0.0, 0.0, 0.0], [0.5, 0.4, 0.5]])
    graph = _assert_matches_pymatgen(slab, 3.0)
    assert np.abs(graph.image[:, 2]).max() == 4


def test_one_atom_cell_sees_its_own_images() -> None:
    lattice = 3.35 * np.eye(3)
    graph = periodic_neighbor_graph(lattice=lattice, frac_coords=[[0.0, 0.0, 0.0]], cutoff=3.4)
    assert graph.n_edges == 6
    assert (graph.src == 0).all() and (graph.dst == 0).all()
    np.testing.assert_array_equal(np.abs(graph.image).sum(axis=1), 1)
    np.testing.assert_allclose(graph.dist, 3.35, atol=1e-12)
    looped = periodic_neighbor_graph(lattice=lattice, frac_coords=[[0.0, 0.0, 0.0]], cutoff=3.4, self_loops=True)
    assert looped.n_edges == 7
    is_loop = looped.dist == 0
    assert is_loop.sum() == 1 and (looped.image[is_loop] == 0).all()


def test_output_is_sorted_typed_and_read_only() -> None:
    graph = _graph(_triclinic(), 4.0, self_loops=True)
    keys = np.column_stack([graph.src, graph.dst, graph.image])
    np.testing.assert_array_equal(np.lexsort(keys.T[::-1]), np.arange(graph.n_edges))
    assert graph.src.dtype == graph.dst.dtype == graph.image.dtype == np.int64
    assert graph.vec.dtype == graph.dist.dtype == np.float64
    with pytest.raises(ValueError, match="read-only"):
        graph.src[0] = 1


def _torch_inputs(structure: Structure, graph: NeighborGraph) -> dict[str, torch.Tensor]:
    return {
        "pos": torch.tensor(structure.cart_coords, dtype=torch.float64),
        "lattice": torch.tensor(structure.lattice.matrix, dtype=torch.float64),
        "src": torch.from_numpy(graph.src.copy()),
        "dst": torch.from_numpy(graph.dst.copy()),
        "image": torch.from_numpy(graph.image.copy()),
    }


def test_edge_vectors_match_graph() -> None:
    base = _sheared()
    offsets = np.array([[1.3, -2.0, 0.0], [0.0, 2.0, -1.0]])
    structure = Structure(base.lattice, base.species, base.frac_coords + offsets)
    graph = _graph(structure, 4.0)
    inputs = _torch_inputs(structure, graph)
    np.testing.assert_allclose(edge_vectors(**inputs).numpy(), graph.vec, atol=1e-10)
    per_edge = inputs["lattice"].expand(graph.n_edges, 3, 3)
    np.testing.assert_allclose(edge_vectors(**{**inputs, "lattice": per_edge}).numpy(), graph.vec, atol=1e-10)
    single = {**inputs, "pos": inputs["pos"].float(), "lattice": inputs["lattice"].float()}
    assert edge_vectors(**single).dtype == torch.float32


def test_edge_vectors_gradcheck() -> None:
    structure = _sheared()
    graph = _graph(structure, 2.5)
    inputs = _torch_inputs(structure, graph)
    pos = inputs["pos"].requires_grad_()
    lattice = inputs["lattice"].requires_grad_()

    def fn(pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        return edge_vectors(pos=pos, lattice=lattice, src=inputs["src"], dst=inputs["dst"], image=inputs["image"])

    assert torch.autograd.gradcheck(fn, (pos, lattice))
    fn(pos, lattice).norm(dim=1).sum().backward()
    assert pos.grad is not None and lattice.grad is not None and lattice.grad.abs().sum() > 0


GOOD = {"lattice": 4.0 * np.eye(3), "frac_coords": [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], "cutoff": 3.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lattice": np.eye(3)[:2]}, r"lattice must have shape \(3, 3\), got \(2, 3\)"),
        ({"lattice": [[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]}, "singular or degenerate: volume 0"),
        ({"lattice": np.diag([4.0, 4.0, np.nan])}, "lattice has NaN or infinite"),
        ({"frac_coords": [[0.0, 0.0]]}, r"frac_coords must have shape \(n_atoms, 3\), got \(1, 2\)"),
        ({"frac_coords": [[0.0, 0.0, 0.0], [0.1, np.inf, 0.2]]}, r"NaN or infinite values, e.g. atom 1: \[0.1, inf"),
        ({"frac_coords": np.zeros((0, 3))}, "zero atoms"),
        ({"cutoff": 0.0}, "cutoff must be a finite number > 0 Å, got 0.0"),
        ({"cutoff": -1.5}, "got -1.5"),
        ({"cutoff": float("nan")}, "got nan"),
        ({"lattice": np.diag([4.0, 1e-3, 1e-3])}, r"too thin for cutoff 3 Å"),
    ],
)
def test_periodic_neighbor_graph_rejects(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        periodic_neighbor_graph(**{**GOOD, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pos": torch.zeros(2, 2, dtype=torch.float64)}, r"pos must have shape \(n_atoms, 3\), got \(2, 2\)"),
        ({"lattice": torch.eye(3)}, "dtypes differ"),
        ({"lattice": torch.eye(2, dtype=torch.float64)}, r"lattice must have shape .*got \(2, 2\)"),
        ({"image": torch.zeros(4, 2, dtype=torch.int64)}, r"image must have shape \(4, 3\), got \(4, 2\)"),
        ({"dst": torch.zeros(3, dtype=torch.int64)}, "src and dst must be 1-D of equal length"),
    ],
)
def test_edge_vectors_rejects(change: dict, message: str) -> None:
    inputs = {
        "pos": torch.zeros(2, 3, dtype=torch.float64),
        "lattice": torch.eye(3, dtype=torch.float64),
        "src": torch.zeros(4, dtype=torch.int64),
        "dst": torch.ones(4, dtype=torch.int64),
        "image": torch.zeros(4, 3, dtype=torch.int64),
    }
    with pytest.raises(ValueError, match=message):
        edge_vectors(**{**inputs, **change})


def test_a_graph_store_gives_back_each_crystals_graph_after_a_save_and_a_load(tmp_path) -> None:
    """``GraphStore``: the graphs of NaCl, Si, SrTiO3, graphite and a thin slab (images beyond int8 need int16), and of
    a cell too thin to search, which it refuses as ``periodic_neighbor_graph`` does; saved, loaded memory-mapped, the
    same edges, images and distances to the bit, and edge vectors from the cell given back."""
    slab = Structure(Lattice(np.diag([4.0, 4.5, 0.7])), ["C", "N"], [[0.0, 0.0, 0.0], [0.5, 0.4, 0.5]])
    needle = Structure(Lattice(np.diag([4.0, 4.0, 1e-6])), ["C"], [[0.0, 0.0, 0.0]])  # 1e7 image cells
    crystals = [make() for make in CRYSTALS.values()] + [needle, slab]
    cells = [(s.lattice.matrix, s.frac_coords) for s in crystals]
    for cutoff, image_type in ((5.0, np.int8), (95.0, np.int16)):  # 95 Å: the slab's images reach past 127 cells
        if cutoff > 5.0:
            crystals, cells = crystals[-1:], cells[-1:]
        store = GraphStore.build(cells, cutoff)
        assert store.image.dtype == image_type and store.src.dtype == np.int16 and len(store) == len(cells)
        folder = tmp_path / str(cutoff)
        folder.mkdir()
        store.save(folder)
        loaded = GraphStore.load(folder)
        assert isinstance(loaded.dist, np.memmap) and loaded.radius == cutoff
        np.testing.assert_array_equal(loaded.n_atoms, [len(s) for s in crystals])
        for row, (lattice, frac) in enumerate(cells):
            try:
                expected = periodic_neighbor_graph(lattice=lattice, frac_coords=frac, cutoff=cutoff)
            except ValueError:
                assert loaded.graph(row, lattice, frac) is None and loaded.refused[row]
                continue
            got = loaded.graph(row, lattice, frac)
            for name in ("src", "dst", "image", "dist"):
                np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
                assert getattr(got, name).dtype == getattr(expected, name).dtype
            np.testing.assert_allclose(got.vec, expected.vec, atol=1e-9)
    (tmp_path / "5.0" / "dst.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="not a graph store"):
        GraphStore.load(tmp_path / "5.0")
    np.save(tmp_path / "5.0" / "dst.npy", np.zeros(3, dtype=np.int16))
    with pytest.raises(ValueError, match="do not fit together"):
        GraphStore.load(tmp_path / "5.0")
    store.save(tmp_path / "5.0")
    np.save(tmp_path / "5.0" / "src.npy", store.src.astype(np.float32))  # the right shape, not atom indices
    with pytest.raises(ValueError, match="do not fit together"):
        GraphStore.load(tmp_path / "5.0")
