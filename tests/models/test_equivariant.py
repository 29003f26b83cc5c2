"""Each equivariant block passes e3nn's ``assert_equivariant`` (rotations and parity, float64)."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant

from models import equivariant, native
from models.equivariant import EdgeTensorProduct, GatedConvolution, gate_map, hidden_irreps, linear_map, make_gate
from models.kernels import kernels_on, use_kernels

IRREPS_SH = o3.Irreps.spherical_harmonics(2)


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("both_parities", [False, True])
def test_edge_tensor_product_is_equivariant(both_parities):
    irreps = hidden_irreps(mul_scalar=6, mul_vector=3, mul_tensor=2, lmax=2, both_parities=both_parities)
    tp = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    n_edges = 7
    args = [irreps.randn(n_edges, -1), IRREPS_SH.randn(n_edges, -1), torch.randn(n_edges, tp.weight_numel)]
    assert_equivariant(tp, args_in=args, irreps_in=[irreps, IRREPS_SH, None], irreps_out=[tp.irreps_out],
                       tolerance=1e-10)


def test_edge_tensor_product_matches_e3nn_for_scalar_inputs():
    """For scalar inputs every path has one weight per channel, so the two layouts agree exactly."""
    irreps_in = o3.Irreps("4x0e")
    ours = EdgeTensorProduct(irreps_in=irreps_in, irreps_sh=IRREPS_SH, filter_irreps=o3.Irreps("0e+1o+2e"))
    instructions = [(0, j, j, "uvu", True) for j in range(3)]
    reference = o3.TensorProduct(irreps_in, IRREPS_SH, ours.irreps_out, instructions, internal_weights=False,
                                 shared_weights=False, irrep_normalization="component", path_normalization="none")
    x, sh = irreps_in.randn(5, -1), IRREPS_SH.randn(5, -1)
    weight = torch.randn(5, ours.weight_numel)
    # ours: weights grouped per input block as (channel, path); e3nn: per path, then channel
    reference_weight = weight.reshape(5, 4, 3).transpose(1, 2).reshape(5, -1)
    torch.testing.assert_close(ours(x, sh, weight), reference(x, sh, reference_weight))


def test_edge_tensor_product_is_the_clebsch_gordan_sum_of_every_path():
    """Every block (scalars, vectors, l = 2) against the tensor product written out path by path: output block of
    path (input block i, harmonic j, l3) = weight x sqrt(2 l3 + 1) x sum over m1, m2 of x_m1 Y_m2 C(m1, m2, m3)."""
    irreps = hidden_irreps(mul_scalar=4, mul_vector=3, mul_tensor=2, lmax=2, both_parities=True)
    tp = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    n_edges = 6
    x, sh = irreps.randn(n_edges, -1), IRREPS_SH.randn(n_edges, -1)
    weight = torch.randn(n_edges, tp.weight_numel)
    wanted = {ir for _, ir in irreps}
    expected, x_start, w_start = [], 0, 0
    for mul, ir_in in irreps:
        block = x[:, x_start : x_start + mul * ir_in.dim].reshape(n_edges, mul, ir_in.dim)
        x_start += mul * ir_in.dim
        paths = [(j, ir_out) for j, (_, ir_sh) in enumerate(IRREPS_SH) for ir_out in ir_in * ir_sh if ir_out in wanted]
        w = weight[:, w_start : w_start + mul * len(paths)].reshape(n_edges, mul, len(paths))
        w_start += mul * len(paths)
        for p, (j, ir_out) in enumerate(paths):
            y = sh[:, IRREPS_SH.slices()[j]]
            cg = o3.wigner_3j(ir_in.l, IRREPS_SH[j].ir.l, ir_out.l) * ir_out.dim ** 0.5
            out = torch.einsum("eua,eb,abc->euc", block, y, cg) * w[:, :, p, None]
            expected.append(out.reshape(n_edges, -1))
    torch.testing.assert_close(tp(x, sh, weight), torch.cat(expected, dim=-1))


def test_edge_tensor_product_loads_state_dicts_with_the_old_spread_matrices():
    """Checkpoints saved before session 17 hold one "spread" matrix per input block (the committed one does): they
    load, and the product is unchanged; any other unknown entry is still refused."""
    irreps = hidden_irreps(mul_scalar=4, mul_vector=3, mul_tensor=2, lmax=2, both_parities=False)
    tp = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    x, sh = irreps.randn(4, -1), IRREPS_SH.randn(4, -1)
    weight = torch.randn(4, tp.weight_numel)
    before = tp(x, sh, weight)
    old = dict(tp.state_dict(), **{f"spread{i}": torch.ones(len(dims), sum(dims))
                                   for i, (_, _, dims) in enumerate(tp.blocks)})
    loaded = EdgeTensorProduct(irreps_in=irreps, irreps_sh=IRREPS_SH, filter_irreps=irreps)
    loaded.load_state_dict(old)
    torch.testing.assert_close(loaded(x, sh, weight), before)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        loaded.load_state_dict(dict(old, stray=torch.zeros(1)))


def test_gate_is_equivariant():
    irreps = hidden_irreps(mul_scalar=4, mul_vector=2, mul_tensor=2, lmax=2, both_parities=True)
    gate = make_gate(irreps)
    assert gate.irreps_out == irreps
    assert_equivariant(gate, args_in=[gate.irreps_in.randn(3, -1)], irreps_in=[gate.irreps_in],
                       irreps_out=[gate.irreps_out], tolerance=1e-10)


@pytest.mark.parametrize("last", [False, True])
def test_gated_convolution_is_equivariant(last):
    irreps = hidden_irreps(mul_scalar=8, mul_vector=4, mul_tensor=2, lmax=2, both_parities=False)
    conv = GatedConvolution(irreps_in=irreps, irreps_out=o3.Irreps("8x0e") if last else irreps, irreps_sh=IRREPS_SH,
                            n_basis=4, radial_hidden=8, avg_num_neighbors=3.0, mul_message=4)
    n_atoms, n_edges = 5, 12
    src = torch.randint(0, n_atoms, (n_edges,))
    dst = torch.randint(0, n_atoms, (n_edges,))

    def block(node, edge_sh, radial):
        return conv(node, edge_sh, radial, src, dst)

    args = [irreps.randn(n_atoms, -1), IRREPS_SH.randn(n_edges, -1), torch.rand(n_edges, 4)]
    assert_equivariant(block, args_in=args, irreps_in=[irreps, IRREPS_SH, None], irreps_out=[conv.irreps_out],
                       tolerance=1e-10)


def test_hidden_irreps_rejects_zero_channels():
    with pytest.raises(ValueError, match="mul_vector=0"):
        hidden_irreps(mul_scalar=4, mul_vector=0, mul_tensor=2, lmax=2, both_parities=False)


def test_linear_map_is_the_e3nn_linear_and_follows_its_weights():
    """Without gradients ``linear_map`` is one product with the map's dense matrix (bias included), made again when the
    weights change in place (an optimiser step, a loaded state dict); with gradients it is the e3nn map itself."""
    irreps = hidden_irreps(mul_scalar=4, mul_vector=3, mul_tensor=2, lmax=2, both_parities=False)
    for biases in (False, True):
        linear = o3.Linear(irreps, irreps, biases=biases)
        x = irreps.randn(5, -1)
        with torch.no_grad():
            torch.testing.assert_close(linear_map(linear, x), linear(x))
            linear.weight.mul_(2.0)
            if biases:
                linear.bias.add_(1.0)
            torch.testing.assert_close(linear_map(linear, x), linear(x))
            torch.testing.assert_close(linear_map(linear, x[None]), linear(x[None]))
        x.requires_grad_(True)
        linear_map(linear, x).sum().backward()
        assert x.grad is not None and linear.weight.grad is not None


def test_gate_map_is_the_e3nn_gate():
    """Without gradients ``gate_map`` gives what e3nn's Gate gives, to the bit, for gates with and without gated irreps
    and with both parities (odd scalars through tanh); with gradients it is the Gate itself."""
    for irreps in (hidden_irreps(mul_scalar=8, mul_vector=4, mul_tensor=2, lmax=3, both_parities=False),
                   hidden_irreps(mul_scalar=8, mul_vector=3, mul_tensor=2, lmax=2, both_parities=True),
                   o3.Irreps("6x0e")):
        gate = make_gate(irreps)
        x = gate.irreps_in.randn(9, -1)
        with torch.no_grad():
            assert torch.equal(gate_map(gate, x), gate(x))
            torch.testing.assert_close(gate_map(gate, x.float()), gate(x.float()))  # the kept columns follow the dtype
        x.requires_grad_(True)
        gate_map(gate, x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def _small_convolution(*, n_atoms: int, n_edges: int) -> tuple[GatedConvolution, list[torch.Tensor]]:
    """A small hidden-to-hidden convolution and random arguments for it (nodes, harmonics, radial basis, edges)."""
    irreps = hidden_irreps(mul_scalar=8, mul_vector=4, mul_tensor=2, lmax=2, both_parities=False)
    conv = GatedConvolution(irreps_in=irreps, irreps_out=irreps, irreps_sh=IRREPS_SH, n_basis=4, radial_hidden=8,
                            avg_num_neighbors=3.0, mul_message=4)
    args = [irreps.randn(n_atoms, -1), IRREPS_SH.randn(n_edges, -1), torch.rand(n_edges, 4),
            torch.randint(0, n_atoms, (n_edges,)), torch.randint(0, n_atoms, (n_edges,))]
    return conv, args


def test_gated_convolution_follows_its_radial_weights_without_gradients():
    """The radial network's last layer is kept as a matrix between calls without gradients, and made again when its
    weights change in place (a loaded state dict, an optimiser step)."""
    conv, args = _small_convolution(n_atoms=5, n_edges=40)
    with torch.no_grad():
        before = conv(*args)
        conv.radial[-1].weight.mul_(2.0)
        after = conv(*args)
    torch.testing.assert_close(after, conv(*args))  # with gradients: no kept matrix
    assert not torch.allclose(before, after)


def test_gated_convolution_gives_the_same_sums_in_chunks_of_edges(monkeypatch):
    """The edges go through in chunks (``MESSAGE_CHUNK`` message values at a time): many small chunks give what one
    piece gives, with and without gradients."""
    conv, args = _small_convolution(n_atoms=6, n_edges=1000)
    whole = conv(*args)
    monkeypatch.setattr(equivariant, "MESSAGE_CHUNK", 1)  # 256 edges a chunk, the smallest
    torch.testing.assert_close(conv(*args), whole)
    with torch.no_grad():
        torch.testing.assert_close(conv(*args), whole)


def test_gated_convolution_sums_each_block_apart_or_side_by_side_to_the_bit(monkeypatch):
    """Each input block's messages summed over the neighbours on their own (``SCATTER_APART``) give the very numbers of
    the blocks copied side by side and summed at once, with and without gradients."""
    conv, args = _small_convolution(n_atoms=6, n_edges=1000)
    assert len(conv.tp.block_widths()) > 1
    sums = {}
    for apart in (0, 10**9):  # every block apart; all of them side by side
        monkeypatch.setattr(equivariant, "SCATTER_APART", apart)
        with torch.no_grad():
            sums[apart, False] = conv(*args)
        sums[apart, True] = conv(*args).detach()
    assert torch.equal(sums[0, False], sums[10**9, False])
    assert torch.equal(sums[0, True], sums[10**9, True])
    x, sh, weight = torch.randn(50, conv.tp.irreps_in.dim), torch.randn(50, 9), torch.randn(50, conv.tp.irreps_out.dim)
    parts = conv.tp.channel_major_blocks(x, sh, weight)
    assert [part.shape[1] for part in parts] == conv.tp.block_widths()
    assert torch.equal(torch.cat(parts, dim=-1), conv.tp.channel_major(x, sh, weight))


@pytest.fixture
def kernels():
    """``use_kernels`` on for one test, off again after it (whatever the test did)."""
    use_kernels(True)
    yield
    use_kernels(False)


@pytest.mark.parametrize("in_c", [True, False], ids=["messages in C", "messages in torch.compile"])
def test_compiled_kernels_give_what_the_eager_code_gives(kernels, monkeypatch, in_c):
    """The server's compiled kernels (``use_kernels``) give the layer the eager code gives, to float32 rounding: in
    chunks of edges, with a last chunk of one edge, for one atom (eager: the same bits), in float32 as the app runs,
    with the messages in the C kernel (``models.native``) or, where it cannot be built, in ``torch.compile``'s; with
    gradients the eager code runs."""
    monkeypatch.setattr(equivariant, "MESSAGE_CHUNK", 1)  # 256 edges a chunk
    if not in_c:
        monkeypatch.setattr(native, "wanted", lambda x: False)
    conv, args = _small_convolution(n_atoms=6, n_edges=769)  # 3 chunks of 256 and one of 1 edge
    conv = conv.float()
    args = [a.float() if a.is_floating_point() else a for a in args]
    lone = [args[0][:1], args[1][:5], args[2][:5], torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long)]
    with torch.no_grad():
        compiled = [conv(*args), conv(*lone)]
        assert kernels_on()
        use_kernels(False)
        eager = [conv(*args), conv(*lone)]
    for one, other in zip(compiled, eager, strict=True):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-5)
    use_kernels(True)
    with torch.no_grad():  # the kernels read the radial network's last layer as it is now
        conv.radial[-1].weight.mul_(2.0)
        changed = conv(*args)
        use_kernels(False)
        torch.testing.assert_close(changed, conv(*args), rtol=1e-5, atol=1e-5)
        conv.radial[-1].weight.div_(2.0)
    assert not torch.allclose(changed, eager[0])
    use_kernels(True)
    out = conv(*args)  # with gradients: eager, differentiable
    out.sum().backward()
    assert conv.radial[-1].weight.grad is not None
    torch.testing.assert_close(out.detach(), eager[0])


def test_a_layers_kernels_are_built_once_for_one_chunk_of_edges_or_several(kernels, monkeypatch):
    """A layer's kernels take the same inputs whether its edges are in one chunk or several (never views of part of a
    tensor): no kernel is built again when a batch first has several chunks, as it would be under load (dynamo's
    ``error_on_recompile`` makes a second build fail, which would turn the kernels off). The messages go through
    ``torch.compile``'s kernel here, as where the C kernel (``models.native``) cannot be built."""
    monkeypatch.setattr(equivariant, "MESSAGE_CHUNK", 1)  # 256 edges a chunk
    monkeypatch.setattr(native, "wanted", lambda x: False)
    conv, args = _small_convolution(n_atoms=6, n_edges=600)
    conv = conv.float()
    node, sh, radial, src, dst = (a.float() if a.is_floating_point() else a for a in args)
    torch._dynamo.reset()  # no kernel of an earlier test's layer counts as a first build
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        first = [sh[:200].clone(), radial[:200].clone(), src[:200].clone(), dst[:200].clone()]  # as the encoder's
        one_chunk = conv(node, *first)
        conv(node, sh, radial, src, dst)  # three chunks
        again = conv(node, *first)
    assert kernels_on()
    torch.testing.assert_close(again, one_chunk)  # (several threads may add in another order)


def test_without_kernels_the_layer_runs_eagerly_with_a_warning(kernels, monkeypatch, caplog):
    """Where torch.compile cannot build a kernel (no C++ compiler), the pass that tried gives the eager numbers, the
    log says why, and no kernel is tried again."""
    built = []

    def no_compiler(function, **options):
        def fails(*args, **kwargs):
            raise RuntimeError("no C++ compiler found")
        built.append(function)
        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    use_kernels(True)
    conv, args = _small_convolution(n_atoms=6, n_edges=300)
    with torch.no_grad(), caplog.at_level("WARNING", logger="explorer"):
        first = conv(*args)
        assert not kernels_on()
        assert torch.equal(first, conv(*args))
    assert len(built) == 1  # tried once
    assert "without compiled kernels: RuntimeError: no C++ compiler found" in caplog.text
