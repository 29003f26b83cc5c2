"""The page's state in its address: what a link holds, how it is written, and how a link from anyone is read.

A link's query string holds only what differs from the page's defaults::

    ?dataset=known&map=structure&color=density&q=Ti+octahedral&el=Li+O&smin=2&smax=20&prop=band_gap&pmin=0&pmax=3
     &show=id:amcsd:0000008 | decode:<id> | pt:<map>:<x>:<y> | env:<n> | envpt:<x>:<y>   (the structure on screen)
           | up:<map>:<x>:<y>:<formula>   (an uploaded file: its place on the map, not the file)
     &ck=<first 12 hex of the checkpoint's sha256>   (with a decode: which model made it)
     &a=<the same kinds of spec>&b=…&steps=10&method=slerp&cell=2x2x1&style=spheres&uc=primitive
     &path=1&frame=3   (the path between A and B is on screen, at that frame: the page decodes it again)
     (``cell`` is the viewer's supercell, ``uc`` its cell: conventional, primitive or model)

``read`` takes any query string (a link may be hostile or stale) and returns the values it could read and, in
words, what it ignored; whether a dataset, id or environment exists is for the page to check (``view_of``).
A path frame is linked as its path (the ends, steps, method) and its index, since a link cannot carry the latents;
a relaxed structure is not linkable; an uploaded file's link
holds its place on the map and its formula, which the page marks, and says that the file itself is not in it.
"""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qs, urlencode

DEFAULTS = {"map": "crystals", "color": "", "q": "", "el": "", "steps": 10, "method": "linear", "cell": "1x1x1",
            "style": "ball-and-stick", "uc": "conventional"}
SUPERCELLS = ("1x1x1", "2x2x1", "2x2x2", "3x3x1", "3x3x3")
STYLES = ("ball-and-stick", "spheres")
NUMBERS = ("smin", "smax", "pmin", "pmax")
TEXTS = ("dataset", "color", "q", "el", "prop")
MAX_TEXT = 200
FORMULA = r"[A-Za-z0-9().]{1,60}"


def spec_of(view: object) -> str | None:
    """The link spec of a view (see the module docstring), or None when it cannot be linked."""
    if not isinstance(view, dict):
        return None
    kind, record_id = view.get("kind"), str(view.get("id", ""))
    if kind == "known":
        return f"id:{record_id}"
    if kind == "hypothetical" and record_id.startswith("decode:"):
        return record_id
    xy = view.get("xy")
    if kind == "hypothetical" and isinstance(xy, list) and len(xy) == 2:
        return f"pt:{view.get('map', 'crystals')}:{xy[0]:.6g}:{xy[1]:.6g}"
    if kind == "upload" and isinstance(xy, list) and len(xy) == 2 and re.fullmatch(FORMULA, str(view.get("formula"))):
        return f"up:{view.get('map', 'crystals')}:{xy[0]:.6g}:{xy[1]:.6g}:{view['formula']}"
    if kind == "environment":
        source = (view.get("environment") or {}).get("source")
        if source == "known":
            return record_id
        if source == "hypothetical" and isinstance(xy, list) and len(xy) == 2:
            return f"envpt:{xy[0]:.6g}:{xy[1]:.6g}"
    return None


def write(state: dict) -> str:
    """'?key=value&…' of the values of ``state`` that differ from the defaults ('' when none do)."""
    items = [(key, value) for key, value in state.items()
             if value not in (None, "", [], {}) and DEFAULTS.get(key) != value]
    return "?" + urlencode(items) if items else ""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole(text: str, low: int, high: int) -> int | None:
    """The whole number ``text`` says, when it is one from ``low`` to ``high``; else None."""
    number = _number(text)
    return int(number) if number is not None and number == int(number) and low <= number <= high else None


def check_spec(spec: str) -> str | None:
    """Why ``spec`` is not a structure spec (None when its form is right; existence is checked on use)."""
    head, _, rest = spec.partition(":")
    if head in ("id", "decode"):
        return None if rest else "an empty id"
    if head == "env":
        return None if rest.isdigit() else "an environment id that is not 'env:<number>'"
    if head == "pt":
        parts = rest.split(":")
        if len(parts) == 3 and parts[0] in ("crystals", "structure") and all(_number(p) is not None
                                                                             for p in parts[1:]):
            return None
        return "a map point that is not 'pt:<crystals|structure>:<x>:<y>' with finite numbers"
    if head == "up":
        parts = rest.split(":")
        if len(parts) == 4 and parts[0] in ("crystals", "structure") and all(_number(p) is not None
                                                                             for p in parts[1:3]) \
                and re.fullmatch(FORMULA, parts[3]):
            return None
        return "an upload's place that is not 'up:<crystals|structure>:<x>:<y>:<formula>'"
    if head == "envpt":
        parts = rest.split(":")
        return None if len(parts) == 2 and all(_number(p) is not None for p in parts) else \
            "a motif-map point that is not 'envpt:<x>:<y>' with finite numbers"
    return "not a structure of the page (id:, decode:, pt:, env:, envpt: or up:)"


def read(search: object) -> tuple[dict, list[str]]:
    """(the values of a query string that could be read, [what was ignored and why]). Unknown keys, repeated
    keys, texts over ``MAX_TEXT`` characters, numbers that are not finite, steps outside 2-30, unknown methods,
    supercells, cells and styles are ignored, each named."""
    from explorer.services.cells import CELLS
    from explorer.services.maps import KINDS
    from explorer.services.model import MAX_STEPS, METHODS, MIN_STEPS

    text = str(search or "").lstrip("?")
    if len(text) > 4000:
        return {}, ["the link is longer than 4,000 characters"]
    try:
        raw = parse_qs(text, keep_blank_values=False, strict_parsing=False, max_num_fields=40)
    except ValueError:
        return {}, ["the link has more than 40 values"]
    state, ignored = {}, []
    for key, values in raw.items():
        value = values[-1]
        label = f"{key[:20]}={value[:40]!r}"
        if len(values) > 1:
            ignored.append(f"{key[:20]} given {len(values)} times (the last is used)")
        if len(value) > MAX_TEXT:
            ignored.append(f"{key[:20]}: longer than {MAX_TEXT} characters")
        elif key in TEXTS:
            state[key] = value
        elif key == "map":
            (state.__setitem__("map", value) if value in KINDS else ignored.append(f"{label}: not a map kind"))
        elif key in NUMBERS:
            number = _number(value)
            (state.__setitem__(key, number) if number is not None else ignored.append(f"{label}: not a finite number"))
        elif key == "steps":
            number = _whole(value, MIN_STEPS, MAX_STEPS)
            (state.__setitem__(key, number) if number is not None
             else ignored.append(f"{label}: steps are whole numbers from {MIN_STEPS} to {MAX_STEPS}"))
        elif key == "method":
            (state.__setitem__(key, value) if value in METHODS else ignored.append(f"{label}: not a method"))
        elif key == "cell":
            (state.__setitem__(key, value) if value in SUPERCELLS else ignored.append(f"{label}: not a supercell"))
        elif key == "style":
            (state.__setitem__(key, value) if value in STYLES else ignored.append(f"{label}: not a style"))
        elif key == "uc":
            (state.__setitem__(key, value) if value in CELLS else ignored.append(f"{label}: not a cell choice"))
        elif key in ("show", "a", "b"):
            problem = check_spec(value)
            (state.__setitem__(key, value) if problem is None else ignored.append(f"{label}: {problem}"))
        elif key == "path":
            (state.__setitem__(key, value) if value == "1" else ignored.append(f"{label}: not 'path=1'"))
        elif key == "frame":
            number = _whole(value, 0, MAX_STEPS)
            (state.__setitem__(key, number) if number is not None
             else ignored.append(f"{label}: frames are whole numbers from 0 to {MAX_STEPS}"))
        elif key == "ck":
            (state.__setitem__(key, value) if len(value) == 12 and all(c in "0123456789abcdef" for c in value)
             else ignored.append(f"{label}: not a checkpoint's short hash"))
        else:
            ignored.append(f"{label}: unknown")
    return state, ignored


def upload_mark(spec: str) -> dict:
    """The map mark of an 'up:' spec ({"xy", "formula", "map"}, as the page keeps its uploads' marks)."""
    problem = check_spec(spec)
    if problem or not spec.startswith("up:"):
        raise ValueError(problem or "not an upload's place")
    kind, x, y, formula = spec[3:].split(":")
    return {"xy": [float(x), float(y)], "formula": formula, "map": kind}


def view_of(spec: str, dataset: str, settings) -> dict:
    """The view a spec names on ``dataset`` (decoded anew for map points); ValueError saying why it cannot be."""
    from explorer.services import motif_views, views

    problem = check_spec(spec)
    if problem:
        raise ValueError(problem)
    head, _, rest = spec.partition(":")
    if head == "up":
        raise ValueError("an uploaded file is not in a link (its place on the map is)")
    if head == "id":
        return views.known_view(dataset, rest, settings)
    if head == "decode":
        return views.decode_of_known(dataset, rest, settings)
    if head == "env":
        return motif_views.environment_view(dataset, spec, settings)
    parts = rest.split(":")
    if head == "pt":
        return views.hypothetical_view(dataset, float(parts[1]), float(parts[2]), settings, kind=parts[0])
    return motif_views.hypothetical_environment_view(dataset, float(parts[0]), float(parts[1]), settings)
