"""Big maps (services.lod): the density image, windows from plotly's relayout events, clicks and selections
resolved on the server against every point, whatever a browser sends."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from explorer.services import colours, lod

WINDOW = ([0.0, 10.0], [0.0, 10.0])


def _layer(kind: str = "categorical") -> lod.Layer:
    """Three points of category 0 at (1, 1), one of category 1 at (9, 9), one at (5, 5) of category 1."""
    x = np.array([1.0, 1.0, 1.0, 9.0, 5.0])
    y = np.array([1.0, 1.0, 1.0, 9.0, 5.0])
    if kind == "categorical":
        colour = {"kind": "categorical", "codes": np.array([0, 0, 0, 1, 1]), "categories": ["a", "b"], "label": "c"}
    else:
        colour = {"kind": "continuous", "values": np.array([0.0, 0.0, 0.0, 1.0, np.nan]), "label": "v"}
    points = {"x": x, "y": y, "ids": ["p0", "p1", "p2", "p3", "p4"], "rows": np.arange(5), "colour": colour,
              "kind": "crystals", "hover": None}
    return lod.Layer.of(points)


def _pixels(image: dict) -> np.ndarray:
    assert image["source"].startswith("data:image/png;base64,")
    png = base64.b64decode(image["source"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _pixel_of(x: float, y: float, size=lod.IMAGE_SIZE) -> tuple[int, int]:
    (x0, x1), (y0, y1) = WINDOW
    return int((y1 - y) / (y1 - y0) * size[1]), int((x - x0) / (x1 - x0) * size[0])


def test_density_image_shows_every_point_in_its_colour_and_nothing_elsewhere():
    layer = _layer()
    image = lod.density_image(layer, np.arange(5), WINDOW)
    assert (image["x"], image["y"], image["sizex"], image["sizey"]) == (0.0, 10.0, 10.0, 10.0)
    assert image["xref"] == "x" and image["layer"] == "below"
    rgba = _pixels(image)
    assert rgba.shape == (lod.IMAGE_SIZE[1], lod.IMAGE_SIZE[0], 4)
    first, second = (colours.rgb_of(c) for c in colours.palette_of(["a", "b"]))
    dense, lone = rgba[_pixel_of(1, 1)], rgba[_pixel_of(9, 9)]
    assert tuple(dense[:3]) == first and tuple(lone[:3]) == second
    assert dense[3] > lone[3] > 0  # three points are more opaque than one
    assert rgba[_pixel_of(3, 7)][3] == 0  # empty space stays transparent
    assert (rgba[..., 3] > 0).sum() <= 3 * 9  # each point covers at most its 3x3 neighbourhood


def test_density_image_of_a_continuous_colouring_uses_the_markers_scale():
    layer = _layer("continuous")
    assert layer.colour["range"] == [0.0, 1.0]
    rgba = _pixels(lod.density_image(layer, np.arange(5), WINDOW))
    lut = colours.continuous_lut()
    assert tuple(rgba[_pixel_of(1, 1)][:3]) == tuple(lut[0])
    assert tuple(rgba[_pixel_of(9, 9)][:3]) == tuple(lut[255])
    assert tuple(rgba[_pixel_of(5, 5)][:3]) == colours.MISSING_RGB  # a point without a value: grey
    subset = layer.subset(np.array([3, 4]), ["h3", "h4"])
    assert subset["colour"]["values"] == [1.0, None] and subset["colour"]["range"] == [0.0, 1.0]
    assert subset["ids"] == ["p3", "p4"] and subset["x"] == [9.0, 5.0]


def test_windows_follow_zoom_pan_and_reset_and_ignore_anything_else():
    extent = ([-5.0, 15.0], [-5.0, 15.0])
    assert lod.requested_window({"x": [1, 3], "y": [4, 2], "t": 5}, extent) == ([1.0, 3.0], [2.0, 4.0])
    assert lod.requested_window({"x": "auto", "y": [2, 4]}, extent) == ([-5.0, 15.0], [2.0, 4.0])
    assert lod.requested_window({"x": "auto", "y": "auto"}, extent) == extent
    for nothing in ({"autosize": True}, {"x": [1, 3]}, {"x": ["a", 1], "y": [0, 1]}, {"x": [1, 1], "y": [0, 1]},
                    {"x": [float("nan"), 1], "y": [0, 1]}, {"x": "all", "y": [0, 1]}, None, "zoom", []):
        assert lod.requested_window(nothing, extent) is None
    assert lod.check_window({"x": [0, 1], "y": [2, 3]}, extent) == ([0.0, 1.0], [2.0, 3.0])
    for garbage in (None, {"x": [0, 1]}, {"x": "a", "y": [0, 1]}, {"x": [0, 1, 2], "y": [0, 1]}, [1, 2]):
        assert lod.check_window(garbage, extent) == ([-5.0, 15.0], [-5.0, 15.0])


def test_points_in_a_window_honour_the_filters():
    layer = _layer()
    assert lod.in_window(layer, None, ([0, 6], [0, 6])).tolist() == [0, 1, 2, 4]
    keep = np.array([True, False, True, True, False])
    assert lod.in_window(layer, keep, ([0, 6], [0, 6])).tolist() == [0, 2]


def test_a_click_resolves_to_the_nearest_point_within_the_radius_or_to_empty_space():
    layer = _layer()
    assert lod.nearest(layer, None, 8.8, 9.1, 0.5) == 3
    assert lod.nearest(layer, None, 7.0, 7.0, 0.5) is None  # empty space: the page decodes it
    keep = np.array([True, True, True, False, True])
    assert lod.nearest(layer, keep, 8.8, 9.1, 0.5) is None  # the filter hides the only point there
    assert lod.click_radius(([0, 150], [0, 10])) == pytest.approx(1.5)


def test_box_and_lasso_select_every_point_inside_and_refuse_malformed_selections():
    layer = _layer()
    assert lod.selected(layer, None, {"range": {"x": [0, 6], "y": [0, 6]}}).tolist() == [0, 1, 2, 4]
    corner = {"lassoPoints": {"x": [6, 10, 10], "y": [10, 6, 10]}}  # a triangle round (9, 9) only
    assert lod.selected(layer, None, corner).tolist() == [3]
    below = {"lassoPoints": {"x": [0, 10, 10], "y": [-1, -1, 8]}}
    assert lod.selected(layer, None, below).tolist() == []
    square = {"lassoPoints": {"x": [4, 10, 10, 4], "y": [4, 4, 10, 10]}}
    assert lod.selected(layer, None, square).tolist() == [3, 4]
    assert lod.selected(layer, np.array([1, 1, 1, 0, 1], bool), square).tolist() == [4]
    for bad in (None, {}, {"range": {"x": [0, 1]}}, {"lassoPoints": {"x": [0, 1], "y": [0, 1]}},
                {"lassoPoints": {"x": [0, "a", 2], "y": [0, 1, 2]}}, {"lassoPoints": {"x": [0, 1, 2], "y": [0, 1]}},
                {"lassoPoints": {"x": list(range(30000)), "y": list(range(30000))}}, {"range": "all"}):
        assert lod.selected(layer, None, bad) is None
