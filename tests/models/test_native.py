"""The encoder's message kernel in C (``models.native``): the eager sums, its checks, its build and its absence."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
import torch
from e3nn import o3

from models import equivariant, native
from models.equivariant import EdgeTensorProduct, GatedConvolution, hidden_irreps
from models.kernels import kernels_on, use_kernels

IRREPS_SH = o3.Irreps.spherical_harmonics(2)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process that has not built or loaded the kernel yet, with its cache folder in ``tmp_path``."""
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv(native.KERNEL_CACHE_ENV, str(tmp_path / "kernels"))
    return tmp_path / "kernels"


@pytest.fixture
def kernels():
    use_kernels(True)
    yield
    use_kernels(False)


def _eager_sums(tp: EdgeTensorProduct, x, sh, weights, src, dst, n_atoms):
    """What the eager code sums: the tensor product per edge, added on each centre atom, in irreps order."""
    return torch.zeros(n_atoms, tp.irreps_out.dim).index_add(0, src, tp(x[dst], sh, weights))


def _float_convolution(*, n_edges: int, seed: int) -> tuple[GatedConvolution, list[torch.Tensor]]:
    """A float32 hidden-to-hidden layer on 6 atoms (as the app runs) and random arguments for it."""
    torch.manual_seed(seed)
    irreps = hidden_irreps(mul_scalar=8, mul_vector=4, mul_tensor=2, lmax=2, both_parities=False)
    conv = GatedConvolution(irreps_in=irreps, irreps_out=irreps, irreps_sh=IRREPS_SH, n_basis=4, radial_hidden=8,
                            avg_num_neighbors=3.0, mul_message=4).float()
    return conv, [irreps.randn(6, -1), IRREPS_SH.randn(n_edges, -1), torch.rand(n_edges, 4),
                  torch.randint(0, 6, (n_edges,)), torch.randint(0, 6, (n_edges,))]


@pytest.mark.parametrize("muls", [(8, 8, 4), (4, 3, 2), (16, 5, 1)])
def test_the_c_kernel_sums_the_eager_tensor_products(fresh, muls):
    """For blocks of 8, 4 and 16 channels (loops of a known length) and of 1, 2, 3 or 5 (the general loop), of
    scalars, vectors and l = 2 tensors, the kernel's sums in float32 are the eager ones to float32 rounding."""
    torch.manual_seed(0)
    irreps = o3.Irreps(f"{muls[0]}x0e + {muls[1]}x1o + {muls[2]}x2e")
    tp = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    tables = native.MessageTables.of(tp)
    n_atoms, n_edges = 7, 300
    x, sh = irreps.randn(n_atoms, -1), IRREPS_SH.randn(n_edges, -1)
    weights = torch.randn(n_edges, tp.weight_numel)
    src, dst = torch.randint(0, n_atoms, (n_edges,)), torch.randint(0, n_atoms, (n_edges,))
    summed = torch.zeros(n_atoms, tp.irreps_out.dim)
    native.add_messages(tables, summed, x[:, tables.x_order], src, dst, sh, weights[:, tables.w_order])
    expected = _eager_sums(tp, x, sh, weights, src, dst, n_atoms)
    torch.testing.assert_close(summed[:, tables.to_irreps], expected, rtol=1e-5, atol=1e-5)
    assert sorted(tables.to_irreps.tolist()) == list(range(tp.irreps_out.dim))  # every column once


def test_a_layer_with_kernels_on_sums_its_messages_in_c_and_gives_the_eager_features(fresh, kernels, monkeypatch):
    """With the server's kernels on, a float32 layer's messages go through the C kernel (a chunk of edges at a time)
    and the layer gives its eager features; in float64, or with gradients, it does not use it."""
    calls = []
    real = native.add_messages
    monkeypatch.setattr(native, "add_messages", lambda *args: calls.append(len(args[3])) or real(*args))
    monkeypatch.setattr(equivariant, "MESSAGE_CHUNK", 1)  # 256 edges a chunk
    conv, args = _float_convolution(n_edges=600, seed=1)
    with torch.no_grad():
        in_c = conv(*args)
        assert calls == [256, 256, 88]
        use_kernels(False)
        eager = conv(*args)
        use_kernels(True)
        conv.double()(*[a.double() if a.is_floating_point() else a for a in args])
    assert calls == [256, 256, 88]  # not for float64
    torch.testing.assert_close(in_c, eager, rtol=1e-5, atol=1e-5)


def test_an_edge_to_an_atom_that_is_not_there_is_refused_and_adds_nothing(fresh):
    irreps = o3.Irreps("4x0e + 4x1o")
    tp = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    tables = native.MessageTables.of(tp)
    x, sh, weights = irreps.randn(3, -1), IRREPS_SH.randn(4, -1), torch.randn(4, tp.weight_numel)
    summed = torch.zeros(3, tp.irreps_out.dim)
    for src, dst in ([0, 1, 2, 3], [0, 0, 0, 0]), ([0, 0, 0, 0], [0, 1, -1, 2]):
        with pytest.raises(IndexError, match="outside 0..2"):
            native.add_messages(tables, summed, x, torch.tensor(src), torch.tensor(dst), sh, weights)
    assert not summed.any()
    with pytest.raises(ValueError, match="float32"):
        native.add_messages(tables, summed.double(), x.double(), torch.tensor([0] * 4), torch.tensor([0] * 4),
                            sh.double(), weights.double())
    with pytest.raises(ValueError, match="shapes do not fit"):
        native.add_messages(tables, summed, x, torch.tensor([0] * 4), torch.tensor([0] * 4), sh, weights[:, :3])
    with pytest.raises(ValueError, match="shapes do not fit"):  # fewer harmonics than the terms read
        native.add_messages(tables, summed, x, torch.tensor([0] * 4), torch.tensor([0] * 4), sh[:, :4], weights)


def test_a_block_of_more_channels_than_the_kernel_takes_stays_with_torch(fresh):
    irreps = o3.Irreps(f"{native.MAX_CHANNELS + 1}x0e")
    tp = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    with pytest.raises(ValueError, match="65 channels"):
        native.MessageTables.of(tp)
    assert equivariant.native_tables(tp) is None


def test_the_library_is_built_once_then_loaded_from_the_cache_folder(fresh, monkeypatch):
    assert native.library() is not None
    built = list(fresh.glob("messages-*.so"))
    assert len(built) == 1 and not list(fresh.glob(".messages-*"))  # no temporary left
    assert oct(built[0].stat().st_mode & 0o777) == "0o700"

    def no_compiler(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(native, "_STATE", {})  # another process
    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert native.library() is not None
    os.chmod(built[0], 0o777)  # anyone may write it: not loaded, built again
    monkeypatch.setattr(native, "_STATE", {})
    with pytest.raises(AssertionError, match="built again"):
        native._build(native._compiler())


def test_without_a_c_compiler_the_layer_runs_in_torch_compiles_kernel(fresh, kernels, monkeypatch, caplog):
    """Where there is no C compiler (or it fails), the log says so once and the layers use ``torch.compile``'s kernel,
    which gives the eager features."""
    monkeypatch.setenv("CC", "no-such-compiler-here")
    conv, args = _float_convolution(n_edges=300, seed=2)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="explorer"):
        compiled = conv(*args)
        assert native.library() is None and kernels_on()
        use_kernels(False)
        eager = conv(*args)
    assert caplog.text.count("not in C: OSError: no C compiler") == 1
    assert not list(fresh.glob("*.so"))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
