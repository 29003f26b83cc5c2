"""Colours of the maps, shared by the browser's markers (``ui.components``) and the server's density images
(``services.lod``), so that a point has the same colour in both."""

from __future__ import annotations

import functools

import numpy as np

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
"""Distinguishable with every common colour-vision deficiency."""
CONTINUOUS_SCALE = "Viridis"
OTHER_COLOUR = "#BBBBBB"
MISSING_RGB = (187, 187, 187)
"""Points without a value of a continuous colouring."""


def category_colors(n: int) -> list[str]:
    """n colour-blind-safe colours: Okabe-Ito up to 8, else samples of Cividis."""
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    from plotly.colors import sample_colorscale

    return sample_colorscale("Cividis", [k / max(n - 1, 1) for k in range(n)])


def palette_of(categories: list[str]) -> list[str]:
    """A colour per category (``category_colors``), light grey for a last category "other" (the rest of them)."""
    palette = list(category_colors(len(categories)))
    if categories and categories[-1] == "other":
        palette[-1] = OTHER_COLOUR
    return palette


def rgb_of(colour: str) -> tuple[int, int, int]:
    """(r, g, b) 0-255 of a '#RRGGBB' or 'rgb(r, g, b)' colour as plotly writes them."""
    from plotly.colors import hex_to_rgb, unlabel_rgb

    r, g, b = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
    return int(round(r)), int(round(g)), int(round(b))


@functools.lru_cache(maxsize=1)
def continuous_lut() -> np.ndarray:
    """(256, 3) uint8: ``CONTINUOUS_SCALE`` sampled evenly, low to high, as plotly draws the markers' colour bar."""
    from plotly.colors import sample_colorscale

    return np.array([rgb_of(c) for c in sample_colorscale(CONTINUOUS_SCALE, list(np.linspace(0, 1, 256)))],
                    dtype=np.uint8)
