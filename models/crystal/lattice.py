"""Lattice parametrisation shared by decoder and losses: matrix <-> (log a, log b, log c, cos α, cos β, cos γ).

The tables hold canonical cells in the standard orientation (a along x, b in the xy plane, rows are
lattice vectors), so six parameters rebuild the matrix exactly. ``matrix_from_parameters`` clamps its
inputs so that any real input, however far from the data, gives a finite, non-degenerate cell.
"""

from __future__ import annotations

import math

import torch

MIN_LENGTH = 1.0
"""Shortest lattice vector (Å) a decoded cell may have."""

MAX_LENGTH = 100.0
"""Longest lattice vector (Å) a decoded cell may have."""

MAX_ABS_COS = 0.9
"""Decoded |cos| of each cell angle is clamped to this (angles within about 26°..154°)."""

MIN_HEIGHT_FRACTION = 0.1
"""The c vector keeps at least this fraction of its length out of the ab plane."""


def lattice_parameters(lattice: torch.Tensor) -> torch.Tensor:
    """Six parameters of each cell.

    Args:
        lattice: (n_crystals, 3, 3) Å, rows are the lattice vectors a, b, c.

    Returns:
        (n_crystals, 6): log a, log b, log c (log Å), cos α (b, c), cos β (a, c), cos γ (a, b).

    Raises:
        ValueError: on a bad shape.
    """
    if lattice.ndim != 3 or lattice.shape[1:] != (3, 3):
        raise ValueError(f"lattice must have shape (n_crystals, 3, 3), got {tuple(lattice.shape)}")
    lengths = lattice.norm(dim=-1)
    unit = lattice / lengths.clamp_min(1e-12).unsqueeze(-1)
    cos_alpha = (unit[:, 1] * unit[:, 2]).sum(-1)
    cos_beta = (unit[:, 0] * unit[:, 2]).sum(-1)
    cos_gamma = (unit[:, 0] * unit[:, 1]).sum(-1)
    return torch.cat([lengths.log(), torch.stack([cos_alpha, cos_beta, cos_gamma], dim=-1)], dim=-1)


def matrix_from_parameters(params: torch.Tensor) -> torch.Tensor:
    """Standard-orientation lattice matrices (a along x, b in the xy plane) from six parameters.

    Lengths are clamped to [``MIN_LENGTH``, ``MAX_LENGTH``] Å, cosines to ±``MAX_ABS_COS``, and the
    height of c above the ab plane to at least ``MIN_HEIGHT_FRACTION`` of its length, so the result
    is finite and has a positive volume for any finite input (NaN inputs are replaced first).

    Args:
        params: (n_crystals, 6), as returned by ``lattice_parameters``.

    Returns:
        (n_crystals, 3, 3) Å, rows are lattice vectors, positive determinant.
    """
    if params.ndim != 2 or params.shape[1] != 6:
        raise ValueError(f"params must have shape (n_crystals, 6), got {tuple(params.shape)}")
    params = torch.nan_to_num(params)
    log_len = params[:, :3].clamp(math.log(MIN_LENGTH), math.log(MAX_LENGTH))
    a, b, c = log_len.exp().unbind(-1)
    cos_a, cos_b, cos_g = params[:, 3:].clamp(-MAX_ABS_COS, MAX_ABS_COS).unbind(-1)
    sin_g = (1.0 - cos_g * cos_g).sqrt()
    cx = cos_b
    cy = (cos_a - cos_b * cos_g) / sin_g
    cz = (1.0 - cx * cx - cy * cy).clamp_min(MIN_HEIGHT_FRACTION**2).sqrt()
    zero = torch.zeros_like(a)
    rows = [
        torch.stack([a, zero, zero], dim=-1),
        torch.stack([b * cos_g, b * sin_g, zero], dim=-1),
        torch.stack([c * cx, c * cy, c * cz], dim=-1),
    ]
    return torch.stack(rows, dim=1)
