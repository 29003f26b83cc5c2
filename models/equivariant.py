"""O(3)-equivariant building blocks of the encoder: a per-edge tensor product and a gated convolution.

``EdgeTensorProduct`` is the "uvu" tensor product of NequIP (node features x edge spherical harmonics,
one learned weight per edge, channel and path), written with Clebsch-Gordan coefficients from
``e3nn.o3.wigner_3j``. It computes what ``e3nn.o3.TensorProduct(..., "uvu", shared_weights=False)``
computes, but splits its inputs once instead of slicing them per path: on the CPU, e3nn's generated
code spends most of the backward pass filling zero tensors for every slice (about 6x slower here).

Inside ``GatedConvolution`` the messages stay channel-major (per input block: channel, then every path's
components) until they are summed over each atom's neighbours; only the sums, one row per atom instead of one per
edge, are put back in the irreps order that ``e3nn.o3.Linear`` reads. Each path's weight is spread over its columns
by the radial network's last layer, so a block's weighting is one product, and the edges go through in chunks
whose messages fit in a core's cache (``MESSAGE_CHUNK``). A server's forward passes run these edge-wise parts in
compiled kernels instead (``models.kernels.use_kernels``; the messages in C, ``models.native``).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from models import native
from models.kernels import kernel_wanted, kernels_on, through_kernel

MESSAGE_CHUNK = 1 << 20
"""Message values (edges x message width) computed at a time by ``GatedConvolution``: about 4 MB of float32, close to
this machine's 2 MB of L2 cache per core, where 10,000 edges at once are ten times that (the middle layer of the
default encoder on 12,000 edges: 9.5 ms in chunks of 4,096 edges, 15.8 ms in one piece, 18.9 ms before session 21)."""

SCATTER_APART = 32
"""``GatedConvolution`` sums each input block's messages over the neighbours on its own when every block has at least
this many columns (the middle layer of the default encoder: 72, 96 and 56), instead of first copying them side by
side for one sum (that copy was a sixth of the tensor product's time). Narrow blocks (the last layer's 8, 8 and 4) go
as one: a sum over a few columns per row costs more per column (13,000 edges: 12.1 ms against 12.9 ms for the middle
layer, 0.56 against 0.36 ms for the last one's on 1,500 edges, session 28). The sums are the same to the bit."""


def _add_messages(tp: EdgeTensorProduct, summed: torch.Tensor, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                  sh: torch.Tensor, hidden: torch.Tensor, last: torch.Tensor) -> None:
    """Adds one chunk of edges' messages to ``summed`` on their centre atoms, in place (``GatedConvolution``).

    ``last``: the radial network's last layer as a matrix (h_in, tp.weight_numel). Each path's weight is made once per
    edge and read by each of its columns (``tp.expand``) in the kernel: the same numbers as ``hidden @ matrix`` with
    the spread matrix of the eager code (each column one dot product of the same terms), for a third of the
    multiplications (the middle layer of the default encoder: 76 weights per edge against 224 columns)."""
    summed.index_add_(0, src, tp.channel_major(x[dst], sh, (hidden @ last)[:, tp.expand]))


def _edges_per_chunk(width: int) -> int:
    """Edges whose messages (or path weights) of ``width`` columns ``GatedConvolution`` makes at a time
    (``MESSAGE_CHUNK`` values, at least 256 edges)."""
    return max(256, MESSAGE_CHUNK // width)


def _chunk_of(start: int, chunk: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Rows ``start`` to ``start + chunk`` of each of ``tensors`` (of as many rows) for a kernel: each tensor itself
    when it is all in one chunk, else a copy, never a view. A kernel is built for what its inputs are, views of how
    large a tensor included: views as large as their tensor and views of part of one gave two kernels to build per
    layer, the second one under load, when a batch first had several chunks (seconds of both cores, session 29)."""
    if start == 0 and chunk >= len(tensors[0]):
        return list(tensors)
    return [tensor[start : start + chunk].clone() for tensor in tensors]


def _hidden(layers: nn.Module, edge_radial: torch.Tensor) -> torch.Tensor:
    """A radial network up to its last layer (``GatedConvolution.radial_hidden``)."""
    hidden = edge_radial
    for layer in list(layers)[:-1]:
        hidden = layer(hidden)
    return hidden


def hidden_irreps(*, mul_scalar: int, mul_vector: int, mul_tensor: int, lmax: int,
                  both_parities: bool) -> o3.Irreps:
    """Hidden irreps: ``mul_scalar``x0e + ``mul_vector``x1o + ``mul_tensor``x2e (+ l = 3.. with ``mul_tensor``).

    With ``both_parities`` the opposite parities join too (``mul_scalar // 4``x0o, 1e, 2o, ...), which
    lets the features tell mirror images apart but costs about twice the compute per edge.
    """
    if min(mul_scalar, mul_vector, mul_tensor) < 1 or lmax < 1:
        raise ValueError(f"multiplicities and lmax must be >= 1, got mul_scalar={mul_scalar!r}, "
                         f"mul_vector={mul_vector!r}, mul_tensor={mul_tensor!r}, lmax={lmax!r}")
    parts = [(mul_scalar, (0, 1))]
    if both_parities:
        parts.append((max(1, mul_scalar // 4), (0, -1)))
    for degree in range(1, lmax + 1):
        mul = mul_vector if degree == 1 else mul_tensor
        parts.append((mul, (degree, (-1) ** degree)))
        if both_parities:
            parts.append((mul, (degree, -((-1) ** degree))))
    return o3.Irreps(parts)


class EdgeTensorProduct(nn.Module):
    """Per-edge weighted tensor product of node features (``irreps_in``) with edge harmonics (``irreps_sh``).

    Every pair of an input block (mul x l1) and a harmonic (l2) gives one output block (mul x l3) for
    each l3 in l1 x l2 (with matching parity) present in ``filter_irreps``; each channel of each path
    has its own weight per edge (``weight_numel`` weights per edge in all). For each input block, all
    its paths come out of one matrix product with the stacked Clebsch-Gordan coefficients, channel-major
    (``channel_major``); ``forward`` puts them in the irreps order of ``irreps_out``.
    """

    def __init__(self, *, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, filter_irreps: o3.Irreps) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps(irreps_sh)
        if any(mul != 1 for mul, _ in self.irreps_sh):
            raise ValueError(f"irreps_sh must have multiplicity 1 per irrep, got {self.irreps_sh}")
        wanted = {ir for _, ir in o3.Irreps(filter_irreps)}
        self.blocks: list[tuple[int, int, list[int]]] = []  # (mul, d1, dims of each output path)
        out = []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            paths = [(j, ir_out) for j, (_, ir_sh) in enumerate(self.irreps_sh)
                     for ir_out in ir_in * ir_sh if ir_out in wanted]
            self.register_buffer(f"coupling{i}", self._block_matrix(ir_in, paths))
            self.blocks.append((mul, ir_in.dim, [ir.dim for _, ir in paths]))
            out += [(mul, ir) for _, ir in paths]
        if not out:
            raise ValueError(f"no path from {self.irreps_in} x {self.irreps_sh} reaches {filter_irreps}")
        self.irreps_out = o3.Irreps(out)
        self.weight_numel = sum(mul * len(dims) for mul, _, dims in self.blocks)
        expand, to_irreps = self._layout()
        # constants of the irreps, not state: a checkpoint neither holds nor needs them
        self.register_buffer("expand", expand, persistent=False)
        self.register_buffer("to_irreps", to_irreps, persistent=False)

    def _block_matrix(self, ir_in: o3.Irrep, paths: list) -> torch.Tensor:
        """(d1 * sh.dim, sum d3) the coupling of one input block's paths."""
        sh_offsets = [0]
        for _, ir in self.irreps_sh:
            sh_offsets.append(sh_offsets[-1] + ir.dim)
        total = sum(ir.dim for _, ir in paths)
        coupling = torch.zeros(ir_in.dim, self.irreps_sh.dim, total)
        column = 0
        for j, ir_out in paths:
            ir_sh = self.irreps_sh[j].ir
            cg = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l) * math.sqrt(ir_out.dim)
            coupling[:, sh_offsets[j] : sh_offsets[j + 1], column : column + ir_out.dim] = cg
            column += ir_out.dim
        return coupling.reshape(ir_in.dim * self.irreps_sh.dim, total)

    def _layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The channel-major order of the output columns (per block: channel u, then every path's components).

        Returns:
            expand: (irreps_out.dim,) for each channel-major column, its weight's index in a row of ``weight_numel``
                (weights are grouped per input block as (channel, path)).
            to_irreps: (irreps_out.dim,) for each column of ``irreps_out``, its channel-major column.
        """
        expand, to_irreps, weight_start, column_start = [], [], 0, 0
        for mul, _, dims in self.blocks:
            total = sum(dims)
            path_of = [p for p, dim in enumerate(dims) for _ in range(dim)]
            expand += [weight_start + u * len(dims) + path_of[c] for u in range(mul) for c in range(total)]
            offset = 0
            for dim in dims:  # irreps order: path, then channel, then the path's components
                to_irreps += [column_start + u * total + offset + m for u in range(mul) for m in range(dim)]
                offset += dim
            weight_start += mul * len(dims)
            column_start += mul * total
        return torch.tensor(expand, dtype=torch.long), torch.tensor(to_irreps, dtype=torch.long)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints saved before session 17 also hold "spread{i}" buffers (the path weights were spread over
        # the output components by a matrix product): they were constants of the irreps and are not needed.
        for i in range(len(self.blocks)):
            state_dict.pop(f"{prefix}spread{i}", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def channel_major(self, x: torch.Tensor, sh: torch.Tensor, column_weight: torch.Tensor) -> torch.Tensor:
        """The tensor product per edge, channel-major.

        Args:
            x: (n_edges, irreps_in.dim) features of each edge's neighbour atom.
            sh: (n_edges, irreps_sh.dim) spherical harmonics of each edge direction.
            column_weight: (n_edges, irreps_out.dim) each path's weight on each of its columns, channel-major
                (``weight[:, self.expand]``).

        Returns:
            (n_edges, irreps_out.dim), channel-major: ``[:, self.to_irreps]`` is in the order of ``irreps_out``.
        """
        parts = self.channel_major_blocks(x, sh, column_weight)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def block_widths(self) -> list[int]:
        """Columns of each input block's part of the channel-major output (``channel_major_blocks``), in order."""
        return [mul * sum(dims) for mul, _, dims in self.blocks if dims]

    def channel_major_blocks(self, x: torch.Tensor, sh: torch.Tensor,
                             column_weight: torch.Tensor) -> list[torch.Tensor]:
        """``channel_major`` in parts, one (n_edges, width) per input block with paths (``block_widths``), side by
        side in its columns: a sum over edges can take each part on its own, without first copying them together."""
        n_edges, n_sh = x.shape[0], sh.shape[-1]
        features = x.split([mul * d1 for mul, d1, _ in self.blocks], dim=-1)
        weights = column_weight.split([mul * sum(dims) for mul, _, dims in self.blocks], dim=-1)
        outputs = []
        for i, (mul, d1, dims) in enumerate(self.blocks):
            if not dims:
                continue
            coupling = getattr(self, f"coupling{i}")  # (d1 * n_sh, total): rows (input component, harmonic)
            total = coupling.shape[-1]
            channels = features[i].reshape(n_edges, mul, d1)
            if d1 == 1:  # a broadcast product (a matrix product of inner size 1 is slower on a CPU)
                product = channels * (sh @ coupling).unsqueeze(1)
            elif total < 4:  # few columns: per edge a (d1, total) matrix, every channel through it
                per_edge = (sh @ coupling.view(d1, n_sh, total).transpose(0, 1).reshape(n_sh, d1 * total)).view(
                    n_edges, d1, total)
                product = torch.bmm(channels, per_edge)
            else:  # the (channel, component x harmonic) outer product through the couplings: one large matrix product
                outer = (channels.unsqueeze(-1) * sh.view(n_edges, 1, 1, n_sh)).reshape(n_edges * mul, d1 * n_sh)
                product = (outer @ coupling).view(n_edges, mul, total)
            outputs.append((product * weights[i].view(n_edges, mul, total)).reshape(n_edges, mul * total))
        return outputs

    def forward(self, x: torch.Tensor, sh: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Tensor product per edge.

        Args:
            x: (n_edges, irreps_in.dim) features of each edge's neighbour atom.
            sh: (n_edges, irreps_sh.dim) spherical harmonics of each edge direction.
            weight: (n_edges, weight_numel) per-edge path weights (from a radial network).

        Returns:
            (n_edges, irreps_out.dim).
        """
        return self.channel_major(x, sh, weight[:, self.expand])[:, self.to_irreps]


def _kept(module: nn.Module, name: str, key: tuple, make):
    """``make()``, kept in ``module`` under ``name`` while ``key`` (weights' versions, dtype, device) stays the same:
    for the forward passes without gradients, which only read the weights."""
    cached = module.__dict__.get(name)
    if cached is None or cached[0] != key:
        cached = module.__dict__[name] = (key, make())
    return cached[1]


def _versions(*weights: torch.Tensor) -> tuple:
    """What changes when a weight is replaced or changed in place (a loaded state dict, an optimiser step)."""
    return tuple((w.data_ptr(), w._version) for w in weights)


def linear_map(linear: o3.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``; without gradients, as one matrix product with the map's dense matrix, kept while its weights
    stay the same (e3nn's generated code contracts every irrep block on its own: on the few rows of a small batch of
    crystals, 0.18 ms a call and 9 % of the app's decode under cProfile on this CPU)."""
    if torch.is_grad_enabled():
        return linear(x)

    def dense() -> tuple[torch.Tensor, torch.Tensor]:
        offset = linear(x.new_zeros(1, linear.irreps_in.dim))
        return linear(torch.eye(linear.irreps_in.dim, dtype=x.dtype, device=x.device)) - offset, offset

    # an o3.Linear always has both: its bias is an empty buffer when it has none
    matrix, offset = _kept(linear, "_dense_map", (_versions(linear.weight, linear.bias), x.dtype, x.device), dense)
    return torch.addmm(offset, x.reshape(-1, matrix.shape[0]), matrix).reshape(*x.shape[:-1], matrix.shape[1])


def gate_map(gate: Gate, x: torch.Tensor) -> torch.Tensor:
    """``gate(x)``; without gradients, as three column selections, its two activations and one product (e3nn's Gate
    cuts its input with generated code and multiplies through a general tensor product: 0.27 ms a call on the few rows
    of one crystal, a fifth of the encoder's time on a lone decode's small batches on this CPU). The selections and
    the product's constants are read off the gate itself, once: it has no weights."""
    if torch.is_grad_enabled():
        return gate(x)

    def columns() -> tuple[torch.Tensor, ...]:
        probe = torch.arange(gate.irreps_in.dim, dtype=torch.float64)[None]
        scalars, gates, gated = (part[0].round().long().to(x.device) for part in gate.sc(probe))
        n_gates, n_gated = gates.shape[0], gated.shape[0]
        # the product is bilinear, one gate per gated irrep: its constant from ones, its gate from 1..n_gates
        constant = gate.mul(torch.ones(1, n_gated, dtype=torch.float64), torch.ones(1, n_gates, dtype=torch.float64))
        which = gate.mul(torch.ones(1, n_gated, dtype=torch.float64),
                         torch.arange(1, n_gates + 1, dtype=torch.float64)[None]) / constant if n_gated else constant
        return scalars, gates, gated, (which[0].round().long() - 1).to(x.device), constant[0].to(x)

    scalars, gates, gated, which, constant = _kept(gate, "_columns", (x.dtype, x.device), columns)
    out = gate.act_scalars(x[..., scalars])
    if not len(gates):
        return out
    weights = gate.act_gates(x[..., gates])[..., which] * constant
    return torch.cat([out, x[..., gated] * weights], dim=-1)


def native_tables(tp: EdgeTensorProduct) -> native.MessageTables | None:
    """The C kernel's tables of ``tp`` (``models.native.MessageTables``), kept while its couplings stay the same; None
    for a tensor product the kernel does not take (a block of more than ``models.native.MAX_CHANNELS`` channels)."""

    def make() -> native.MessageTables | None:
        try:
            return native.MessageTables.of(tp)
        except ValueError:
            return None

    couplings = [getattr(tp, f"coupling{b}") for b in range(len(tp.blocks))]
    return _kept(tp, "_native_tables", _versions(*couplings), make)


def make_gate(irreps_out: o3.Irreps) -> Gate:
    """A Gate whose output is ``irreps_out``: silu on even and tanh on odd scalars, sigmoid gates for l > 0."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    acts = {1: nn.functional.silu, -1: torch.tanh}
    if gated.num_irreps == 0:
        return Gate(scalars, [acts[ir.p] for _, ir in scalars], "", [], "")
    return Gate(scalars, [acts[ir.p] for _, ir in scalars], f"{gated.num_irreps}x0e", [torch.sigmoid], gated)


class GatedConvolution(nn.Module):
    """One interaction: linear -> edge tensor product (radial weights) -> sum over neighbours -> linear -> gate.

    The first linear maps the node features to at most ``mul_message`` channels per irrep (the
    per-edge tensor product dominates the cost and grows with these channels).

    Equivariant under O(3): ``node`` transforms by ``irreps_in``, ``edge_sh`` by the spherical harmonics,
    ``edge_radial`` is invariant. A linear self-connection joins before the gate, and the input is added
    back (residual) when input and output irreps agree.
    """

    def __init__(self, *, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, n_basis: int,
                 radial_hidden: int, avg_num_neighbors: float, mul_message: int) -> None:
        super().__init__()
        if avg_num_neighbors <= 0 or mul_message < 1:
            raise ValueError(f"avg_num_neighbors and mul_message must be > 0, got {avg_num_neighbors!r}, "
                             f"{mul_message!r}")
        self.irreps_in = o3.Irreps(irreps_in)
        self.gate = make_gate(o3.Irreps(irreps_out))
        self.irreps_out = self.gate.irreps_out
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)
        # The per-edge tensor product is the cost: it sees at most mul_message channels of each irrep.
        irreps_message = o3.Irreps([(min(mul, mul_message), ir) for mul, ir in self.irreps_in])
        self.linear_in = o3.Linear(self.irreps_in, irreps_message)
        self.tp = EdgeTensorProduct(irreps_in=irreps_message, irreps_sh=irreps_sh, filter_irreps=self.gate.irreps_in)
        self.radial = FullyConnectedNet([n_basis, radial_hidden, self.tp.weight_numel], nn.functional.silu)
        self.linear_out = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.self_connection = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.residual = self.irreps_in == self.irreps_out

    def radial_hidden(self, edge_radial: torch.Tensor, *, order: str = "spread") -> tuple[torch.Tensor, torch.Tensor]:
        """The radial network up to its last layer, and that layer, a linear map without bias, as a matrix whose
        columns are in ``order``: "spread", spread over the tensor product's columns (``hidden @ matrix`` is (n_edges,
        tp.irreps_out.dim), each path's weight on each of its columns, channel-major:
        ``EdgeTensorProduct.channel_major``); "paths", as it is (h_in, tp.weight_numel), whose columns ``tp.expand``
        spreads; "native", its columns in the order of the C kernel (``models.native.MessageTables.w_order``)."""
        if order not in ("spread", "paths", "native"):
            raise ValueError(f"order must be 'spread', 'paths' or 'native', got {order!r}")
        hidden = through_kernel(_hidden, self.radial, edge_radial, size=edge_radial.shape[0])
        last = self.radial[-1]

        def matrix() -> torch.Tensor:  # (h_in, tp.weight_numel), or its columns in ``order``
            paths = last(torch.eye(last.h_in, dtype=hidden.dtype, device=hidden.device))
            if order == "spread":
                return paths[:, self.tp.expand]
            return paths if order == "paths" else paths[:, native_tables(self.tp).w_order].contiguous()

        if torch.is_grad_enabled():
            return hidden, matrix()
        # without gradients, kept while the layer's weights stay the same (as ``linear_map``)
        key = (_versions(last.weight), hidden.dtype, hidden.device)
        return hidden, _kept(self, f"_radial_{order}", key, matrix)

    def forward(self, node: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor,
                src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Updated node features.

        Args:
            node: (n_atoms, irreps_in.dim) node features.
            edge_sh: (n_edges, sh dim) spherical harmonics of the edge vectors (centre -> neighbour).
            edge_radial: (n_edges, n_basis) radial basis of the edge lengths (zero at the cutoff).
            src, dst: (n_edges,) long; messages flow from ``dst`` (neighbour) to ``src`` (centre).

        Returns:
            (n_atoms, irreps_out.dim) features.
        """
        x = linear_map(self.linear_in, node)
        if kernel_wanted(node.shape[0]):
            tables = native_tables(self.tp) if native.wanted(x) else None
            if tables is not None:  # the C kernel
                messages = self._native_messages(tables, x, edge_sh, edge_radial, src, dst)
            else:
                summed = self._compiled_messages(x, edge_sh, edge_radial, src, dst)
                messages = None if summed is None else summed[:, self.tp.to_irreps]
            if messages is not None:
                return self._update(node, messages)
        width = self.tp.irreps_out.dim
        chunk = _edges_per_chunk(width)
        hidden, matrix = self.radial_hidden(edge_radial)
        widths = self.tp.block_widths()
        apart = min(widths) >= SCATTER_APART
        sums = [x.new_zeros(node.shape[0], width) for width in (widths if apart else [sum(widths)])]
        for start in range(0, len(src), chunk):  # each chunk's weights and messages are made and summed in the cache
            edges = slice(start, start + chunk)
            parts = self.tp.channel_major_blocks(x[dst[edges]], edge_sh[edges], hidden[edges] @ matrix)
            if not apart and len(parts) > 1:
                parts = [torch.cat(parts, dim=-1)]
            sums = [total.index_add(0, src[edges], part) for total, part in zip(sums, parts, strict=True)]
        summed = sums[0] if len(sums) == 1 else torch.cat(sums, dim=-1)
        return self._update(node, summed[:, self.tp.to_irreps])

    def _native_messages(self, tables: native.MessageTables, x: torch.Tensor, edge_sh: torch.Tensor,
                         edge_radial: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
        """The messages summed on each atom by the C kernel (``models.native``), in the order of ``tp.irreps_out``: the
        path weights of a chunk of edges at a time (``MESSAGE_CHUNK``), each chunk's messages added at once. None when
        the radial network's kernel could not be built (the caller does this pass again eagerly)."""
        hidden, matrix = self.radial_hidden(edge_radial, order="native")
        if not kernels_on():
            return None
        features = x[:, tables.x_order]
        summed = x.new_zeros(x.shape[0], len(tables.to_irreps))
        chunk = _edges_per_chunk(matrix.shape[1])
        for start in range(0, len(src), chunk):
            edges = slice(start, start + chunk)
            native.add_messages(tables, summed, features, src[edges], dst[edges], edge_sh[edges],
                                hidden[edges] @ matrix)
        return summed[:, tables.to_irreps]

    def _compiled_messages(self, x: torch.Tensor, edge_sh: torch.Tensor, edge_radial: torch.Tensor,
                           src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
        """The messages summed on each atom (channel-major) in ``torch.compile``'s kernels, chunk by chunk; None when a
        kernel could not be built (the caller does this pass again eagerly, for the eager numbers)."""
        width = self.tp.irreps_out.dim
        chunk = _edges_per_chunk(width)
        hidden, last = self.radial_hidden(edge_radial, order="paths")
        summed = x.new_zeros(x.shape[0], width)
        for start in range(0, len(src), chunk):
            if not kernels_on():
                return None
            through_kernel(_add_messages, self.tp, summed, x, *_chunk_of(start, chunk, src, dst, edge_sh, hidden), last,
                           size=min(chunk, len(src) - start))
        return summed if kernels_on() else None

    def _update(self, node: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
        """The new node features from the old ones and the ``messages`` summed on each atom (in the order of
        ``tp.irreps_out``)."""
        mixed = linear_map(self.linear_out, messages * self.norm) + linear_map(self.self_connection, node)
        out = gate_map(self.gate, mixed)
        return out + node if self.residual else out
