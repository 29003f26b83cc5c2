"""Shared fixtures: tiny real crystals (NaCl, Si, SrTiO3, graphite) and a seeded RNG."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # the data layer does not need torch
        pass


def nacl() -> Structure:
    """Rock salt, conventional cubic cell (8 atoms), a = 5.64 Å."""
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def silicon() -> Structure:
    """Diamond-cubic Si, conventional cell (8 atoms), a = 5.43 Å."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def srtio3() -> Structure:
    """Cubic perovskite SrTiO3 (5 atoms), a = 3.905 Å."""
    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def graphite() -> Structure:
    """Hexagonal AB graphite (4 atoms), a = 2.46 Å, c = 6.71 Å."""
    return Structure(Lattice.hexagonal(2.46, 6.71), ["C"] * 4,
                     [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])


TINY_CRYSTALS = {"NaCl": nacl, "Si": silicon, "SrTiO3": srtio3, "graphite": graphite}


@pytest.fixture(params=sorted(TINY_CRYSTALS))
def tiny_crystal(request) -> Structure:
    return TINY_CRYSTALS[request.param]()


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory):
    """Settings of a temporary data dir with dataset 'tiny' (a dozen real crystals) and a small trained checkpoint."""
    from small_model import small_dataset

    return small_dataset(tmp_path_factory.mktemp("tiny"))
