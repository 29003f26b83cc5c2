"""Device choice: explicit argument > EXPLORER_DEVICE > cuda > cpu."""

from __future__ import annotations

import pytest
import torch

from models.device import DEVICE_ENV, resolve_device


def test_precedence(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.delenv(DEVICE_ENV)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected


def test_bad_devices_are_named(monkeypatch):
    with pytest.raises(ValueError, match="'toaster'"):
        resolve_device("toaster")
    monkeypatch.setenv(DEVICE_ENV, "toaster")
    with pytest.raises(ValueError, match=r"\$EXPLORER_DEVICE names no torch device"):
        resolve_device()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
