"""Pick the torch device once, at the edge: explicit argument > ``EXPLORER_DEVICE`` > cuda > cpu."""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "EXPLORER_DEVICE"
"""Environment variable naming the device when no explicit device is given (e.g. ``cpu``, ``cuda:1``)."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on.

    Args:
        device: an explicit choice (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``); ``None``
            or ``""``/``"auto"`` falls through to the environment variable, then to CUDA when
            available, then to the CPU.

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: when the name is not a device, or names CUDA on a machine without it.
    """
    source = "argument"
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        device = os.environ.get(DEVICE_ENV, "").strip() or None
        source = f"${DEVICE_ENV}"
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{source} names no torch device: {device!r} ({exc})") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{source} asks for {device!r} but CUDA is not available on this machine")
    return chosen
