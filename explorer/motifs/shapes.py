"""Ideal coordination polyhedra and the continuous shape measure (CShM) of an environment against them.

An environment is the vectors from a centre atom to its neighbours (Å). Its shape measure against an ideal
polyhedron P with the same number of vertices is (Pinsky & Avnir's CShM, as the SHAPE program and pymatgen's
ChemEnv use it, here with the centre atom fixed at the origin)::

    S = 100 * min over rotations R, scale s and vertex orders π of  Σ |q_i - s R p_π(i)|²  /  Σ |q_i|²

0 is the ideal polyhedron; about 1 a slight distortion; above 3-5 a strongly distorted one. Scale is free, so a
uniform bond length change costs nothing, while unequal bonds or angles do. The minimum over rotations and
orders is found by alternating the optimal order for a rotation (Hungarian assignment) and the optimal rotation
for an order (Kabsch), starting from every rotation that lays two vertices of the ideal shape onto two chosen
neighbours at a similar angle (and a few fixed random ones): deterministic, and exact for the ideal shapes.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

RANDOM_STARTS = 4
PAIR_STARTS = 12
PAIR_TOLERANCE = math.radians(25)
ITERATIONS = 20


def _ring(n: int, *, z: float = 0.0, radius: float = 1.0, phase: float = 0.0) -> list[list[float]]:
    return [[radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n), z]
            for k in range(n)]


def _prism(n: int) -> list[list[float]]:
    """A right prism with square side faces on an n-gon of radius 1."""
    h = math.sin(math.pi / n)  # half the n-gon's edge: square side faces
    return _ring(n, z=h) + _ring(n, z=-h)


def _antiprism(n: int) -> list[list[float]]:
    """An n-gonal antiprism with equal edges."""
    edge2 = 2 - 2 * math.cos(2 * math.pi / n)
    h = math.sqrt(max(edge2 - (2 - 2 * math.cos(math.pi / n)), 0.0)) / 2
    return _ring(n, z=h) + _ring(n, z=-h, phase=math.pi / n)


def _caps(points: list[list[float]], caps: list[list[float]]) -> list[list[float]]:
    return points + caps


_TET = [[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
_OCT = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
_CUBE = [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
_TBP = _ring(3) + [[0, 0, 1], [0, 0, -1]]
_PHI = (1 + 5 ** 0.5) / 2
_ICO = [p for a, b in ((1, _PHI), (-1, _PHI), (1, -_PHI), (-1, -_PHI))
        for p in ([0, a, b], [a, b, 0], [b, 0, a])]
_CUBOCT = [[x, y, 0] for x in (-1, 1) for y in (-1, 1)] + [[x, 0, z] for x in (-1, 1) for z in (-1, 1)] + \
    [[0, y, z] for y in (-1, 1) for z in (-1, 1)]
_HCP12 = _ring(6) + _ring(3, z=math.sqrt(2 / 3), radius=1 / math.sqrt(3), phase=math.pi / 6) + \
    _ring(3, z=-math.sqrt(2 / 3), radius=1 / math.sqrt(3), phase=math.pi / 6)

IDEAL_SHAPES: dict[int, dict[str, list[list[float]]]] = {
    1: {"single bond": [[0, 0, 1]]},
    2: {"linear": [[0, 0, 1], [0, 0, -1]], "bent (120°)": _ring(3)[:2], "L-shaped (90°)": _ring(4)[:2]},
    3: {"trigonal planar": _ring(3), "trigonal pyramidal": _TET[:3], "T-shaped": _ring(4)[:3]},
    4: {"tetrahedral": _TET, "square planar": _ring(4), "see-saw": _TBP[1:]},
    5: {"trigonal bipyramidal": _TBP, "square pyramidal": _OCT[:5], "pentagonal planar": _ring(5)},
    6: {"octahedral": _OCT, "trigonal prismatic": _prism(3), "hexagonal planar": _ring(6),
        "pentagonal pyramidal": _ring(5) + [[0, 0, 1]]},
    7: {"pentagonal bipyramidal": _ring(5) + [[0, 0, 1], [0, 0, -1]],
        "capped octahedral": _caps(_OCT, [[1 / 3 ** 0.5] * 3]),
        "capped trigonal prismatic": _caps(_prism(3), _ring(3, phase=math.pi / 3)[:1])},
    8: {"cubic": _CUBE, "square antiprismatic": _antiprism(4), "hexagonal bipyramidal": _ring(6) + [[0, 0, 1],
                                                                                                [0, 0, -1]]},
    9: {"tricapped trigonal prismatic": _caps(_prism(3), _ring(3, phase=math.pi / 3)),
        "capped square antiprismatic": _caps(_antiprism(4), [[0, 0, 1]])},
    10: {"bicapped square antiprismatic": _caps(_antiprism(4), [[0, 0, 1], [0, 0, -1]])},
    12: {"cuboctahedral": _CUBOCT, "anticuboctahedral": _HCP12, "icosahedral": _ICO,
         "hexagonal prismatic": _prism(6)},
}
"""Ideal polyhedra by coordination number (vertex directions from the centre; scaled to unit length)."""


@functools.lru_cache(maxsize=64)
def _template(cn: int, name: str) -> np.ndarray:
    points = np.asarray(IDEAL_SHAPES[cn][name], dtype=float)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


@functools.lru_cache(maxsize=1)
def _random_starts() -> np.ndarray:
    return Rotation.random(RANDOM_STARTS, random_state=12345).as_matrix()


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    e1 = u / np.linalg.norm(u)
    w = v - (v @ e1) * e1
    if np.linalg.norm(w) < 1e-6:
        return None
    e2 = w / np.linalg.norm(w)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def _starts(q: np.ndarray, p: np.ndarray) -> list[np.ndarray]:
    """Rotations laying template vertices (c, d) onto neighbours (a, b): a the first neighbour, b the one most
    nearly perpendicular to it, (c, d) every pair of vertices at a similar angle (closest first)."""
    starts = list(_random_starts())
    if len(q) < 2:
        return starts + [_kabsch(q, p)]
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    b = 1 + int(np.argmin(np.abs(unit[1:] @ unit[0])))
    target = _frame(q[0], q[b])
    if target is None:
        return starts
    angle = math.acos(float(np.clip(unit[0] @ unit[b], -1, 1)))
    cos = np.clip(p @ p.T, -1, 1)
    pairs = [(abs(math.acos(cos[c, d]) - angle), c, d) for c in range(len(p)) for d in range(len(p)) if c != d]
    for diff, c, d in sorted(pairs)[:PAIR_STARTS]:
        source = _frame(p[c], p[d])
        if diff <= PAIR_TOLERANCE and source is not None:
            starts.append(target @ source.T)
    return starts


def _kabsch(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The proper rotation R maximising Σ q_i · R p_i."""
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return (u @ np.diag([1.0, 1.0, d]) @ vt).T


def shape_measure(vectors: np.ndarray, cn_name: tuple[int, str] | str) -> float:
    """CShM (0-100) of the neighbour ``vectors`` (n, 3) Å against the ideal shape ``(n, name)`` (see module)."""
    q = np.asarray(vectors, dtype=float)
    name = cn_name[1] if isinstance(cn_name, tuple) else cn_name
    p = _template(len(q), name)
    norm = float((q ** 2).sum())
    if norm <= 0:
        raise ValueError("an environment needs neighbours away from its centre")
    best = 0.0
    for start in _starts(q, p):
        rotation, order = start, None
        for _ in range(ITERATIONS):
            rows, cols = linear_sum_assignment(-(q @ (p @ rotation.T).T))
            if order is not None and np.array_equal(cols, order):
                break
            order = cols
            rotation = _kabsch(q[rows], p[cols])
        overlap = float(np.einsum("ij,ij->", q[rows], p[order] @ rotation.T))
        best = max(best, overlap)
        if 1 - best ** 2 / (norm * len(p)) < 1e-10:
            break
    return max(0.0, 100.0 * (1.0 - best ** 2 / (norm * len(p))))


def best_shape(vectors: np.ndarray) -> tuple[str | None, float | None, dict[str, float]]:
    """(name, CShM) of the ideal shape closest to the neighbour ``vectors``, and the CShM of every candidate of
    that coordination number; (None, None, {}) when there is no ideal shape with that many vertices."""
    shapes = IDEAL_SHAPES.get(len(vectors))
    if not shapes:
        return None, None, {}
    measures = {name: round(shape_measure(vectors, name), 3) for name in shapes}
    name = min(measures, key=measures.get)
    return name, measures[name], measures
