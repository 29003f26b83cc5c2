"""The encoder's message kernel in C (``models/messages.c``), built by the machine's C compiler on first use.

``models.equivariant.GatedConvolution`` sums its messages through it when the server's kernels are on
(``models.kernels.use_kernels``), on the CPU in float32. Its tensor product writes the Clebsch-Gordan couplings
out as their non-zero terms (28 of the 324 numbers of the middle layer's first coupling matrix, 46 of 630 of its
second), where the dense matrix products of the eager code and of ``torch.compile``'s kernel multiply every zero and
store each edge's outer products; the radial weights and the sum over neighbours join in the same pass, and no
message is stored. The default encoder: 0.59x the time of ``torch.compile``'s kernels on 48 batches of the
search's candidates, latents within 1e-6 of theirs (see the model card).

The library is a plain C function called through ``ctypes`` (no Python or torch headers: it builds in under a
second), compiled once per source and compiler into a folder of the user's cache (``KERNEL_CACHE_ENV``), without
machine-specific instructions or fused multiply-adds, so that every machine adds the same terms in the same order.
Where there is no C compiler, ``library()`` is None and the layer uses ``torch.compile``'s kernel instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

LOG = logging.getLogger("explorer")

SOURCE = Path(__file__).with_name("messages.c")
KERNEL_CACHE_ENV = "EXPLORER_KERNEL_CACHE"
"""Environment variable naming the folder of built kernels (default: ``$XDG_CACHE_HOME`` or ``~/.cache``, then
``latent-materials-explorer/kernels``)."""
FLAGS = ("-O3", "-ffp-contract=off", "-fPIC", "-shared")
"""No ``-march``: a library built on one machine may be loaded on another sharing the cache folder."""
MAX_CHANNELS = 64
"""Most channels of one input block that ``messages.c`` takes (its ``MAX_CHANNELS``)."""

_STATE: dict = {}
_LOCK = threading.Lock()


def _compiler() -> str | None:
    named = os.environ.get("CC", "").strip()
    if named:
        return shutil.which(named)
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


def cache_folder() -> Path:
    named = os.environ.get(KERNEL_CACHE_ENV, "").strip()
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "latent-materials-explorer" / "kernels"


def _own(path: Path) -> bool:
    """Whether ``path`` belongs to this user and no one else may write it (a library to load)."""
    if not hasattr(os, "getuid"):
        return True
    stat = path.stat()
    return stat.st_uid == os.getuid() and not stat.st_mode & 0o022


def _build(compiler: str) -> Path:
    """The library for this source and compiler, built into ``cache_folder()`` unless it is there (written under a
    temporary name, then renamed: processes that build at once each load a whole file)."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS).encode(),
                                     platform.machine().encode(), sys.platform.encode()])).hexdigest()[:16]
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"messages-{key}.so"
    if target.is_file() and _own(target):
        return target
    descriptor, temporary = tempfile.mkstemp(prefix=".messages-", suffix=".so", dir=folder)
    os.close(descriptor)
    try:
        run = subprocess.run([compiler, *FLAGS, "-o", temporary, str(SOURCE)], capture_output=True, text=True,
                             timeout=120)
        if run.returncode != 0:
            raise OSError(f"{Path(compiler).name} exited with code {run.returncode}: {run.stderr.strip()[:300]}")
        os.chmod(temporary, 0o700)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def library() -> ctypes.CDLL | None:
    """The built kernel (built on the first call of a process), or None where it cannot be built or loaded here (the
    first call logs why)."""
    if "library" not in _STATE:
        with _LOCK:
            if "library" not in _STATE:
                _STATE["library"] = _load()
    return _STATE["library"]


def _load() -> ctypes.CDLL | None:
    try:
        compiler = _compiler()
        if compiler is None:
            raise OSError("no C compiler (cc, gcc, clang or $CC) found")
        loaded = ctypes.CDLL(str(_build(compiler)))
        pointer, integer = ctypes.c_void_p, ctypes.c_int64
        loaded.add_messages.argtypes = [integer, pointer, pointer, integer, pointer, integer, pointer, integer,
                                        pointer, integer, pointer, integer, integer, pointer, pointer, pointer,
                                        pointer]
        loaded.add_messages.restype = ctypes.c_int
        return loaded
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        LOG.warning("the encoder's messages run in torch.compile's kernels, not in C: %s: %s", type(exc).__name__,
                    str(exc)[:300])
        return None


@dataclass(frozen=True)
class MessageTables:
    """What ``messages.c`` needs of one ``models.equivariant.EdgeTensorProduct``: its couplings as terms, and the
    column orders it reads and writes.

    Attributes:
        x_order: (irreps_in.dim,) the columns of the node features in the kernel's order (per block: component,
            then channel; ``x[:, x_order]``).
        w_order: (weight_numel,) the columns of the path weights in the kernel's order (per block: path, then
            channel).
        to_irreps: (irreps_out.dim,) for each column of ``irreps_out``, the kernel's column of the sums.
        columns: (n_groups, 5) int32, per output column group: channels, offset in w, offset in the sums, first
            term, number of terms.
        term_x, term_sh: (n_terms,) int32 each term's offset in x and its harmonic; term_v: (n_terms,) float32 its
            coupling.
        n_sh: the harmonics per edge (``irreps_sh.dim``).
    """

    x_order: torch.Tensor
    w_order: torch.Tensor
    to_irreps: torch.Tensor
    columns: torch.Tensor
    term_x: torch.Tensor
    term_sh: torch.Tensor
    term_v: torch.Tensor
    n_sh: int

    @classmethod
    def of(cls, tp) -> MessageTables:
        """The tables of ``tp`` (an ``EdgeTensorProduct``). Raises ``ValueError`` for a block of more than
        ``MAX_CHANNELS`` channels."""
        x_order, w_order, columns, term_x, term_sh, term_v = [], [], [], [], [], []
        to_kernel = {}  # channel-major column of the tensor product -> the kernel's column (the same block start)
        x_start = w_start = out_start = 0
        n_sh = tp.irreps_sh.dim
        for b, (mul, d1, dims) in enumerate(tp.blocks):
            if mul > MAX_CHANNELS:
                raise ValueError(f"a block of {mul} channels: the C kernel takes at most {MAX_CHANNELS}")
            x_order += [x_start + u * d1 + i for i in range(d1) for u in range(mul)]
            total = sum(dims)
            w_order += [w_start + u * len(dims) + p for p in range(len(dims)) for u in range(mul)]
            coupling = getattr(tp, f"coupling{b}").detach().float().cpu()  # (d1 * n_sh, total)
            path_of = [p for p, dim in enumerate(dims) for _ in range(dim)]
            for c in range(total):
                rows = torch.nonzero(coupling[:, c]).flatten().tolist()
                columns.append([mul, w_start + path_of[c] * mul, out_start + c * mul, len(term_x), len(rows)])
                for row in rows:
                    i, j = divmod(row, n_sh)
                    term_x.append(x_start + i * mul)
                    term_sh.append(j)
                    term_v.append(float(coupling[row, c]))
                for u in range(mul):
                    to_kernel[out_start + u * total + c] = out_start + c * mul + u
            x_start += mul * d1
            w_start += mul * len(dims)
            out_start += mul * total

        def longs(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long)

        def int32s(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int32)

        return cls(x_order=longs(x_order), w_order=longs(w_order),
                   to_irreps=longs([to_kernel[int(k)] for k in tp.to_irreps]),
                   columns=int32s(columns).reshape(-1, 5), term_x=int32s(term_x), term_sh=int32s(term_sh),
                   term_v=torch.tensor(term_v, dtype=torch.float32), n_sh=n_sh)


def wanted(x: torch.Tensor) -> bool:
    """Whether ``add_messages`` can take features like ``x`` here: float32 on the CPU, and the library built."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and library() is not None


def add_messages(tables: MessageTables, summed: torch.Tensor, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                 sh: torch.Tensor, w: torch.Tensor) -> None:
    """Adds every edge's message to ``summed`` on its centre atom, in place (``messages.c``).

    Args:
        tables: the layer's ``MessageTables``.
        summed: (n_atoms, irreps_out.dim) float32 in the kernel's column order (``summed[:, tables.to_irreps]`` is in
            the order of ``irreps_out``).
        x: (n_atoms, irreps_in.dim) node features in the kernel's order (``features[:, tables.x_order]``).
        src, dst: (n_edges,) int64; messages flow from ``dst`` (neighbour) to ``src`` (centre).
        sh: (n_edges, irreps_sh.dim) harmonics; w: (n_edges, weight_numel) path weights in the kernel's order
            (``weights[:, tables.w_order]``).

    Raises:
        ValueError: wrong dtypes or shapes; IndexError: an atom index outside the features' rows (nothing added).
    """
    kernel = library()
    if kernel is None:
        raise RuntimeError("the C message kernel is not available here")
    n_edges, n_atoms = src.shape[0], x.shape[0]
    if not (summed.dtype == x.dtype == sh.dtype == w.dtype == torch.float32 and src.dtype == dst.dtype == torch.long):
        raise ValueError("the C message kernel takes float32 features and int64 indices")
    if (dst.shape[0], sh.shape[0], w.shape[0]) != (n_edges,) * 3 or summed.shape[0] != n_atoms \
            or w.shape[1] != len(tables.w_order) or x.shape[1] != len(tables.x_order) \
            or summed.shape[1] != len(tables.to_irreps) or sh.shape[1] != tables.n_sh:
        raise ValueError(f"shapes do not fit the layer: {n_edges} edges, features {tuple(x.shape)}, sums "
                         f"{tuple(summed.shape)}, weights {tuple(w.shape)}, harmonics {tuple(sh.shape)}")
    if n_edges == 0:
        return
    if not summed.is_contiguous():
        raise ValueError("the sums must be one contiguous tensor (they are added to in place)")
    src, dst, x, sh, w = (t.contiguous() for t in (src, dst, x, sh, w))
    code = kernel.add_messages(n_edges, src.data_ptr(), dst.data_ptr(), n_atoms, x.data_ptr(), x.shape[1],
                               sh.data_ptr(), sh.shape[1], w.data_ptr(), w.shape[1], summed.data_ptr(),
                               summed.shape[1], len(tables.columns), tables.columns.data_ptr(),
                               tables.term_x.data_ptr(), tables.term_sh.data_ptr(), tables.term_v.data_ptr())
    if code != 0:
        raise IndexError(f"an edge names an atom outside 0..{n_atoms - 1}: no message was added")
