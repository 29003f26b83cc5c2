"""Maps too big to draw point by point (level of detail, as Chemiscope and datashader do it).

Above ``settings.map_markers_max`` points a map is drawn as a density image of every point that passes the
filters, rendered here for the window on screen (each pixel: how many points fall in it, as opacity, and their
mixed category colour or mean value), with WebGL markers for the points in the window once there are at most
``settings.map_window_max`` of them. Nothing is dropped: clicks resolve to the nearest point on the server (a
KD-tree on the 2D coordinates), lasso and box selections are tested against every point.

The aggregation is a few ``numpy.bincount`` calls (about 30 ms for a million points here): datashader would do
the same with xarray, param and colorcet as new dependencies.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from explorer.services import colours
from explorer.settings import Settings

IMAGE_SIZE = (960, 640)
"""(width, height) pixels of a density image; the browser stretches it over the plot."""
LASSO_VERTICES_MAX = 20_000
"""Most vertices of a lasso a browser may send (plotly's lasso of a long drag has a few hundred)."""
_LAYERS_KEPT = 4
Window = tuple[list[float], list[float]]
"""([x0, x1], [y0, y1]) in map coordinates."""
GRID_SIZE = 150
"""Cells across the map's transparent click grid (``ui.components.grid_trace``)."""


def map_extent(x, y) -> Window:
    """([x0, x1], [y0, y1]): the points with a margin of empty space around them."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x0, x1, y0, y1 = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    pad_x, pad_y = 0.25 * (x1 - x0) + 1.0, 0.25 * (y1 - y0) + 1.0
    return [x0 - pad_x, x1 + pad_x], [y0 - pad_y, y1 + pad_y]


def is_big(n_points: int, settings: Settings) -> bool:
    """Whether a map of ``n_points`` is drawn as a density image (more than ``settings.map_markers_max``)."""
    return n_points > settings.map_markers_max


@dataclass
class Layer:
    """The points of one map in one colouring, as arrays (built once, kept while the map and table last).

    xy: (n, 2) float64 map coordinates; ids: (n,) record or environment ids; colour: as ``materials.map_points``
    gives it, with numpy ``codes`` (int, categorical) or ``values`` (float, NaN when missing, continuous) and a
    ``range`` [min, max] of the values; rgb: (n, 3) uint8 colour of each point.
    """

    points: dict
    xy: np.ndarray
    ids: np.ndarray
    colour: dict
    rgb: np.ndarray
    extent: Window
    _tree: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, points: dict) -> Layer:
        """The layer of ``materials.map_points`` output (hover texts may be left out: ``hover=False``)."""
        xy = np.column_stack([np.asarray(points["x"], dtype=np.float64), np.asarray(points["y"], dtype=np.float64)])
        colour = dict(points["colour"])
        if colour["kind"] == "categorical":
            codes = np.asarray(colour["codes"], dtype=np.int64)
            palette = np.array([colours.rgb_of(c) for c in colours.palette_of(colour["categories"])], dtype=np.uint8)
            colour["codes"] = codes
            rgb = palette[codes] if len(codes) else np.zeros((0, 3), np.uint8)
        else:
            values = np.array([np.nan if v is None else v for v in colour["values"]], dtype=np.float64) \
                if isinstance(colour["values"], list) else np.asarray(colour["values"], dtype=np.float64)
            finite = values[np.isfinite(values)]
            colour["values"] = values
            colour["range"] = [float(finite.min()), float(finite.max())] if len(finite) else [0.0, 1.0]
            rgb = _value_colours(values, colour["range"])
        return cls(points=points, xy=xy, ids=np.asarray(points["ids"], dtype=object), colour=colour, rgb=rgb,
                   extent=map_extent(xy[:, 0], xy[:, 1]))

    def tree(self):
        """A KD-tree of the 2D coordinates (built on first use)."""
        with self._lock:
            if self._tree is None:
                from scipy.spatial import cKDTree

                self._tree = cKDTree(self.xy)
            return self._tree

    def subset(self, index: np.ndarray, hover: list[str]) -> dict:
        """``map_points``-style lists of the points at ``index`` (with their hover texts), colours as on the
        whole map (a continuous colouring keeps the whole map's ``range``)."""
        colour = {key: value for key, value in self.colour.items() if key not in ("codes", "values")}
        if self.colour["kind"] == "categorical":
            colour["codes"] = self.colour["codes"][index].tolist()
        else:
            colour["values"] = [None if not math.isfinite(v) else float(v) for v in self.colour["values"][index]]
        return {**{k: v for k, v in self.points.items() if k not in ("x", "y", "ids", "hover", "colour", "rows")},
                "x": self.xy[index, 0].tolist(), "y": self.xy[index, 1].tolist(), "ids": self.ids[index].tolist(),
                "hover": hover, "colour": colour}


def _value_colours(values: np.ndarray, value_range: list[float]) -> np.ndarray:
    """(n, 3) uint8: values through ``colours.continuous_lut`` over ``value_range``; grey where missing."""
    lut = colours.continuous_lut()
    low, high = value_range
    finite = np.isfinite(values)
    scaled = np.zeros(len(values))
    scaled[finite] = (values[finite] - low) / (high - low) if high > low else 0.5
    rgb = lut[np.clip((scaled * 255).round(), 0, 255).astype(np.int64)]
    rgb[~finite] = colours.MISSING_RGB
    return rgb


class _Recent:
    """The last few values built, by key (the layers of the maps, the filter masks of a layer)."""

    def __init__(self) -> None:
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, build):
        """The value of ``key``, built by ``build()`` when missing (the oldest of more than a few is dropped)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = build()
        with self._lock:
            self._values[key] = value
            while len(self._values) > _LAYERS_KEPT:
                self._values.popitem(last=False)
        return value


_LAYERS = _Recent()


def layer(dataset: str, kind: str, color_by: str | None, settings: Settings) -> Layer:
    """The layer of a checked ``dataset``'s map of ``kind`` coloured by ``color_by`` (hover texts are made only
    for the points sent: ``hover_of``)."""
    from explorer.datasets.build import table_path
    from explorer.services import maps, materials

    the_map = maps.get_map(dataset, kind, settings)
    path = table_path(dataset, settings)
    key = (dataset, kind, color_by, the_map.key, id(the_map), path.stat().st_mtime_ns, str(settings.data_dir))
    return _LAYERS.get(key, lambda: Layer.of(materials.map_points(dataset, color_by, settings, kind, hover=False)))


# --- windows ---------------------------------------------------------------------------------------------------

def check_window(value: object, extent: Window) -> Window:
    """The window a browser's store holds ({"x": [x0, x1], "y": [y0, y1]}) when it is a sane one, else ``extent``."""
    if isinstance(value, dict):
        x, y = _axis_range(value.get("x")), _axis_range(value.get("y"))
        if x is not None and y is not None:
            return x, y
    return list(extent[0]), list(extent[1])


def _axis_range(value: object) -> list[float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    try:
        low, high = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        return None
    return [min(low, high), max(low, high)]


def requested_window(request: object, extent: Window) -> Window | None:
    """The window a browser asks for after a zoom, pan or reset (assets/window.js: {"x": [x0, x1] or "auto",
    "y": ...}; "auto" is the whole map), or None when ``request`` is not such a thing."""
    if not isinstance(request, dict):
        return None
    axes = []
    for k, axis in enumerate(("x", "y")):
        value = request.get(axis)
        checked = list(extent[k]) if value == "auto" else _axis_range(value)
        if checked is None:
            return None
        axes.append(checked)
    return axes[0], axes[1]


def in_window(layer: Layer, keep: np.ndarray | None, window: Window) -> np.ndarray:
    """Indices of the points (that pass ``keep``) inside ``window``."""
    (x0, x1), (y0, y1) = window
    x, y = layer.xy[:, 0], layer.xy[:, 1]
    mask = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    if keep is not None:
        mask &= keep
    return np.flatnonzero(mask)


# --- the density image -------------------------------------------------------------------------------------------

def density_image(layer: Layer, index: np.ndarray, window: Window, *,
                  size: tuple[int, int] = IMAGE_SIZE) -> dict:
    """A plotly layout image of the points at ``index`` over ``window``: a PNG data URL and its placement.

    Each pixel's opacity grows with the log of the points in it and its 3x3 neighbourhood (so that a lone point
    stays visible); its colour is the mean colour of a categorical colouring, or the mean value of a continuous
    one through the same colour scale as the markers.
    """
    from PIL import Image
    from scipy.ndimage import uniform_filter

    width, height = size
    (x0, x1), (y0, y1) = window
    xy = layer.xy[index]
    column = np.clip(((xy[:, 0] - x0) * (width / (x1 - x0))).astype(np.int64), 0, width - 1)
    row = np.clip(((y1 - xy[:, 1]) * (height / (y1 - y0))).astype(np.int64), 0, height - 1)
    pixel = row * width + column

    def spread(weights: np.ndarray | None) -> np.ndarray:
        grid = np.bincount(pixel, weights=weights, minlength=width * height).reshape(height, width)
        return uniform_filter(grid.astype(np.float64), size=3, mode="constant") * 9.0

    counts = spread(None)
    if layer.colour["kind"] == "continuous":
        values = layer.colour["values"][index]
        finite = np.isfinite(values)
        known = spread(finite.astype(np.float64))
        total = spread(np.where(finite, values, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / known
        rgb = _value_colours(mean.ravel(), layer.colour["range"]).reshape(height, width, 3).astype(np.float64)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            rgb = np.stack([spread(layer.rgb[index, c].astype(np.float64)) / counts for c in range(3)], axis=-1)
    filled = counts > 0.5
    alpha = np.zeros((height, width))
    if filled.any():
        alpha[filled] = 0.35 + 0.65 * np.log1p(counts[filled]) / np.log1p(counts.max())
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = np.nan_to_num(rgb).clip(0, 255).astype(np.uint8)
    rgba[..., 3] = (alpha * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=1)
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"source": source, "xref": "x", "yref": "y", "x": x0, "y": y1, "sizex": x1 - x0, "sizey": y1 - y0,
            "sizing": "stretch", "layer": "below", "xanchor": "left", "yanchor": "top", "name": "density"}


# --- clicks and selections on every point --------------------------------------------------------------------------

def nearest(layer: Layer, keep: np.ndarray | None, x: float, y: float, radius: float) -> int | None:
    """The index of the point (that passes ``keep``) nearest to (x, y) within ``radius``, or None (empty space).

    Among the 64 nearest points only: a filter that hides all of them makes the click one on empty space.
    """
    if not len(layer.xy):
        return None
    distances, found = layer.tree().query([x, y], k=min(64, len(layer.xy)), distance_upper_bound=radius)
    for distance, k in zip(np.atleast_1d(distances), np.atleast_1d(found), strict=True):
        if not np.isfinite(distance):
            break
        if keep is None or keep[k]:
            return int(k)
    return None


def selected(layer: Layer, keep: np.ndarray | None, selection: object) -> np.ndarray | None:
    """Indices of the points (that pass ``keep``) inside a plotly selection ({"range": {"x", "y"}} of a box, or
    {"lassoPoints": {"x": [...], "y": [...]}} of a lasso); None when ``selection`` is neither."""
    if not isinstance(selection, dict):
        return None
    box, lasso = selection.get("range"), selection.get("lassoPoints")
    if isinstance(box, dict):
        x, y = _axis_range(box.get("x")), _axis_range(box.get("y"))
        return None if x is None or y is None else in_window(layer, keep, (x, y))
    if not isinstance(lasso, dict):
        return None
    vertices = _vertices(lasso.get("x"), lasso.get("y"))
    if vertices is None:
        return None
    from matplotlib.path import Path

    low, high = vertices.min(0), vertices.max(0)
    candidates = in_window(layer, keep, ([low[0], high[0]], [low[1], high[1]]))
    inside = Path(vertices).contains_points(layer.xy[candidates])
    return candidates[inside]


def _vertices(x: object, y: object) -> np.ndarray | None:
    if not isinstance(x, list) or not isinstance(y, list) or not 3 <= len(x) == len(y) <= LASSO_VERTICES_MAX:
        return None
    try:
        vertices = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    except (TypeError, ValueError):
        return None
    return vertices if np.isfinite(vertices).all() else None


# --- what the page shows of a big map ------------------------------------------------------------------------------

_KEEP = _Recent()


def keep_mask(dataset: str, kind: str, layer: Layer, filters: dict, settings: Settings) -> np.ndarray | None:
    """Which points of ``layer`` pass the crystal filters (``materials.filter_mask`` arguments in ``filters``), or
    None when none is set (the motif map has no filters); cached per filter values. ValueError as filter_mask."""
    from explorer.services import materials

    if kind == "motifs" or not any(v not in (None, "", [], (None, None)) for v in filters.values()):
        return None
    def build() -> np.ndarray | None:
        keep = materials.filter_mask(materials.table(dataset, settings), **filters)[np.asarray(layer.points["rows"])]
        return None if keep.all() else keep

    return _KEEP.get((dataset, kind, id(layer), repr(sorted(filters.items()))), build)


def window_view(dataset: str, kind: str, layer: Layer, keep: np.ndarray | None,
                window: Window, settings: Settings) -> dict:
    """What a big map shows in ``window``: {"image": density image of the points there, "points": the markers
    (those points when at most ``settings.map_window_max``, else none), "in_window", "total", "status"}."""
    from explorer.services import materials

    index = in_window(layer, keep, window)
    drawn = index if len(index) <= settings.map_window_max else index[:0]
    points = layer.subset(drawn, materials.hover_of(dataset, kind, layer.points, drawn, settings))
    total = len(layer.xy) if keep is None else int(keep.sum())
    noun = "environments" if kind == "motifs" else "materials"
    status = (f"{total:,} {noun}{'' if keep is None else f' of {len(layer.xy):,} (filters)'}, drawn as a density "
              f"image (more than {settings.map_markers_max:,}); {len(index):,} in view")
    status += (", shown as points" if len(drawn) else
               f": zoom in to at most {settings.map_window_max:,} to see them as points (a click still picks the "
               "nearest one)")
    return {"image": density_image(layer, index, window), "points": points, "in_window": int(len(index)),
            "total": total, "status": status}


def click_radius(window: Window) -> float:
    """How far from a click (map units) a point of a big map is still the one clicked: about 1.5 cells of the
    click grid across the window, a few pixels on screen."""
    (x0, x1), (y0, y1) = window
    return 1.5 * max(x1 - x0, y1 - y0) / GRID_SIZE
