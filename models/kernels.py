"""The server's compiled kernels: whether the encoder's edge-wise work runs in kernels that ``torch.compile`` builds.

``use_kernels`` turns them on for a process (a server's, ``explorer.serving.server_process``); ``through_kernel``
calls a function through its kernel when they are on. The layers that use them: ``models.crystal.encoder`` (edge
features) and ``models.equivariant.GatedConvolution`` (radial networks; messages, in C by ``models.native``).
"""

from __future__ import annotations

import logging
import threading

import torch

LOG = logging.getLogger("explorer")
_KERNELS: dict = {"on": False}
_KERNELS_LOCK = threading.Lock()


def use_kernels(enabled: bool = True) -> None:
    """Whether this process's forward passes of the encoder without gradients run their edge-wise parts (edge vectors,
    harmonics and radial basis; the radial networks; each layer's messages and their sums) in kernels that
    ``torch.compile`` builds (inductor: C++ made by the machine's compiler on the first pass, about 7-20 s for the
    default encoder at the first start, then kept in torch's cache folder), rather than one torch operation after
    the other (``through_kernel``); in float32 on the CPU, the messages and their sums run in the C kernel of
    ``models.native`` (the couplings' non-zero terms only; ``torch.compile``'s kernel where it cannot be built).

    Each edge's weights, harmonics and neighbour channels then meet in one loop, and no message is written to memory:
    the kernels may multiply out and add in another order and compute the harmonics and activations by other
    formulas, so the numbers may differ in the last bits of float32 (see the model card for what it changes and
    gains). Where a kernel cannot be built (no C++ compiler) the first pass logs why and every pass runs eagerly. The
    server turns them on (``settings.compile_encoder``); scripts, training and tests run eagerly unless they call
    this."""
    with _KERNELS_LOCK:
        _KERNELS.clear()
        _KERNELS["on"] = bool(enabled)


def kernels_on() -> bool:
    """Whether ``use_kernels`` is on (and no kernel has failed)."""
    return bool(_KERNELS["on"])


def kernel_wanted(size: int) -> bool:
    """Whether ``through_kernel`` compiles a call that takes ``size`` edges or atoms: kernels on, gradients off, and at
    least 2 (torch.compile would build other kernels for sizes 0 and 1)."""
    return kernels_on() and not torch.is_grad_enabled() and size >= 2


def through_kernel(function, *args, size: int):
    """``function(*args)``, through its compiled kernel when ``kernel_wanted(size)`` (``size``: the edges or atoms it
    takes); eagerly when the kernel cannot be built here, which turns the kernels off with a warning."""
    if not kernel_wanted(size):
        return function(*args)
    kernel = _KERNELS.get(function)
    if kernel is None:
        with _KERNELS_LOCK:
            kernel = _KERNELS.setdefault(function, torch.compile(function, dynamic=True))
    try:
        return kernel(*args)
    except Exception as exc:  # noqa: BLE001 - whatever stops a kernel (no compiler, inductor) leaves the eager code
        with _KERNELS_LOCK:
            if _KERNELS["on"]:
                _KERNELS["on"] = False
                LOG.warning("the encoder runs without compiled kernels: %s: %s", type(exc).__name__, str(exc)[:300])
        return function(*args)
