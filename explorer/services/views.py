"""The structures on screen as JSON-able "views" (known, hypothetical, uploaded, path frames), and the
checks of the views and map points a browser sends back. Plain data in, plain data out.

A view is the dict the app keeps in its ``current`` store for the structure on screen::

    {"kind": "known" | "hypothetical" | "upload" | "frame" | "relaxed" | "environment", "id", "title", "formula",
     "dataset", "structure": Structure.as_dict(), "latent": [...], "xy": [x, y] | None,
     "map": "crystals" | "structure" | "motifs",
     "validity": {...} | None,
     "details": [[label, value], ...], "nearest": [[id, formula, distance], ...], "note": str, "ms": float}

``xy`` is the position on the map of kind ``map`` (``services.maps``): the map shown when the view was made;
``placed`` moves a view to another kind of map. A known material's view adds "reconstruction": {"matched":
bool | None, "message": str} (does its latent decode back to it? ``explorer.reconstruction``). A relaxed view
(``relaxed_view``) adds "relaxation": the numbers of ``physics.Relaxation.summary`` and "source": the title of the
structure it was relaxed from. A decode (kinds "hypothetical" and "frame") adds "checkpoint" (the sha256 of the
model that decoded it) and "made" (how: a map point, a path frame), which its exported files carry
(``services.provenance``). An environment of the motif map is a view too (``services.motif_views``).

Everything that comes back from the browser is untrusted: ``check_view`` reads a view's structure with the
safe reader (no class named in the JSON is imported), and its latent as finite numbers of the model's size.
"""

from __future__ import annotations

import base64
import math
import time

import numpy as np
from pymatgen.core import Structure

from explorer import reconstruction
from explorer.atlas import get_atlas
from explorer.datasets.build import limits_of
from explorer.datasets.formats import FORMAT_LABELS, structure_as_dict, structure_from_plain_dict
from explorer.datasets.records import canonical_structure
from explorer.datasets.rejections import Rejected
from explorer.services import maps, materials, model
from explorer.settings import Settings

KINDS = ("known", "hypothetical", "upload", "frame", "relaxed", "environment")


def structure_details(structure: Structure) -> list[list[str]]:
    """[[label, value]] of any structure (space group by spglib, lattice, density)."""
    group = reconstruction.space_group_of(structure)
    a, b, c, alpha, beta, gamma = structure.lattice.parameters
    return [["formula", structure.formula], ["space group", group],
            ["lattice", f"a={a:.3f} b={b:.3f} c={c:.3f} Å, α={alpha:.1f} β={beta:.1f} γ={gamma:.1f}°"],
            ["density", f"{float(structure.density):.3f} g/cm³"], ["atoms in cell", str(len(structure))]]


def _nearest(dataset: str, latent: np.ndarray, settings: Settings, *, exclude: str | None = None) -> list[list]:
    atlas = get_atlas(dataset, settings)
    frame = materials.table(dataset, settings)
    found = atlas.nearest(latent, k=settings.n_nearest, exclude=exclude)  # rows of the map are rows of the table
    return [[record_id, frame.iloc[atlas.index_of(record_id)]["reduced_formula"], round(distance, 4)]
            for record_id, distance in found]


def crystal_kind(kind: object) -> str:
    """The map a crystal's view is placed on when the map of ``kind`` is shown: that map, or the crystal map when
    it is the motif map (whose points are environments)."""
    kind = maps.check_kind(kind)
    return kind if kind in maps.CRYSTAL_KINDS else "crystals"


def known_view(dataset: str, record_id: str, settings: Settings, *, kind: str = "crystals") -> dict:
    """The view of a known material (its canonical cell, stored latent and its position on the map of ``kind``)."""
    start = time.perf_counter()
    kind = crystal_kind(kind)
    row = materials.row_of(dataset, record_id, settings)
    atlas = get_atlas(dataset, settings)
    k = atlas.index_of(record_id)
    if k is None:
        raise ValueError(f"{record_id[:80]} is in the table of {dataset} but not on its map: rebuild the map")
    return {"kind": "known", "id": record_id, "title": f"{row['reduced_formula']} ({record_id})",
            "formula": row["reduced_formula"], "dataset": dataset,
            "structure": structure_as_dict(canonical_structure(row)), "latent": atlas.latents[k].tolist(),
            "xy": _known_xy(dataset, kind, record_id, settings), "map": kind, "validity": None,
            "details": materials.details_of(row),
            "nearest": _nearest(dataset, atlas.latents[k], settings, exclude=record_id),
            "reconstruction": _reconstruction_entry(dataset, record_id, settings),
            "note": "", "ms": round(1000 * (time.perf_counter() - start), 1)}


def _known_xy(dataset: str, kind: str, record_id: str, settings: Settings) -> list[float] | None:
    """Where a known material sits on the map of ``kind`` (None when that map leaves it out)."""
    the_map = maps.get_map(dataset, kind, settings)
    k = the_map.index_of(record_id)
    return None if k is None else the_map.xy[k].tolist()


def placed(view: dict, dataset: str, kind: str, settings: Settings) -> dict:
    """A checked ``view`` with its position on the map of ``kind`` (the same view when it is there already, or when
    one of them is the motif map: a crystal is not an environment, nor the other way round)."""
    kind = maps.check_kind(kind)
    if view.get("map", "crystals") == kind or "motifs" in (kind, view.get("map")):
        return view
    if view["kind"] == "known":
        xy = _known_xy(dataset, kind, view["id"], settings)
    else:
        xy = maps.place(dataset, kind, [structure_of(view)], np.asarray([view["latent"]]), settings)[0].tolist()
    return {**view, "xy": xy, "map": kind}


def _reconstruction_entry(dataset: str, record_id: str, settings: Settings) -> dict:
    """{"matched": True / False / None (not checked yet), "message"} of a known material
    (``explorer.reconstruction``)."""
    rebuilt = reconstruction.load(dataset, settings)
    entry = rebuilt.of(record_id) if rebuilt is not None else None
    return {"matched": None if entry is None else entry["matched"], "message": reconstruction.message(entry)}


def decode_of_known(dataset: str, record_id: str, settings: Settings, *, kind: str = "crystals") -> dict:
    """What the autoencoder makes of a known material: its latent decoded (a hypothetical view at its map point)."""
    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    row = materials.row_of(dataset, record_id, settings)
    atlas = get_atlas(dataset, settings)
    k = atlas.index_of(record_id)
    if k is None:
        raise ValueError(f"{record_id[:80]} is in the table of {dataset} but not on its map: rebuild the map")
    decoded = model.decode(atlas.latents[k], settings)
    note = (f"the autoencoder's decode of {row['reduced_formula']} ({record_id}): its latent decoded, as a click on "
            "its point would if the point were empty space")
    return _decoded_view("hypothetical", decoded, dataset=dataset, xy=atlas.xy[k], note=note, settings=settings,
                         record_id=f"decode:{record_id}", start=start, map_kind=kind,
                         made=f"the latent of known material {record_id} decoded")


def _decoded_view(kind: str, decoded: model.Decoded, *, dataset: str, xy, note: str, settings: Settings,
                  record_id: str, start: float, map_kind: str = "crystals", made: str = "") -> dict:
    """The view of a decode at map point ``xy`` of the crystal map, or its place on the map of ``map_kind``;
    ``made`` says how it was made and "checkpoint" which model decoded it (``services.provenance``)."""
    map_kind = crystal_kind(map_kind)
    if map_kind != "crystals":
        xy = maps.place(dataset, map_kind, [decoded.structure], decoded.latent[None], settings)[0]
    origin = model.origin_note(decoded.structure, settings)
    note = f"{note} {origin}" if origin else note
    return {"kind": kind, "map": map_kind, "id": record_id, "title": f"{decoded.formula} ({kind})",
            "formula": decoded.formula,
            "dataset": dataset, "structure": structure_as_dict(decoded.structure), "latent": decoded.latent.tolist(),
            "xy": [float(v) for v in xy] if xy is not None else None, "validity": decoded.validity,
            "details": structure_details(decoded.structure),
            "nearest": _nearest(dataset, decoded.latent, settings), "note": note, "made": made or note,
            "checkpoint": model.checkpoint_sha256(settings), "ms": round(1000 * (time.perf_counter() - start), 1)}


def hypothetical_view(dataset: str, x: float, y: float, settings: Settings, *, kind: str = "crystals") -> dict:
    """Decode the latent at point (x, y) of the map of ``kind`` (``Atlas.latent_at``): a hypothetical structure.
    It is marked where it was clicked (on the structure map, the decode's own geometry may belong elsewhere). On
    the motif map, a hypothetical environment (``motif_views.hypothetical_environment_view``)."""
    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    kind = maps.check_kind(kind)
    if kind == "motifs":
        from explorer.services.motif_views import hypothetical_environment_view

        return hypothetical_environment_view(dataset, x, y, settings)
    x, y = map_point(x, y)
    inverse = maps.get_map(dataset, kind, settings).latent_at(x, y)
    decoded = model.decode(inverse.latent, settings)
    ratio = inverse.distance_2d / inverse.typical_spacing if inverse.typical_spacing > 0 else float("inf")
    note = (f"hypothetical: decoded at map point ({x:.2f}, {y:.2f}), {inverse.distance_2d:.2f} map units from the "
            f"nearest known material ({ratio:.1f}× the typical spacing between known points). "
            f"Inverse used: {inverse.method}.")
    view = _decoded_view("hypothetical", decoded, dataset=dataset, xy=(x, y), note=note, settings=settings,
                         record_id=f"hypothetical@{x:.3f},{y:.3f}", start=start,
                         made=f"map point ({x:.6f}, {y:.6f}) of the {kind} map of {dataset}")
    return {**view, "map": kind}


def upload_view(dataset: str, content: bytes, filename: str, settings: Settings, *, kind: str = "crystals") -> dict:
    """Read an uploaded structure file (CIF, POSCAR, extended XYZ or pymatgen JSON) with the same reader and
    checks as ``data ingest``, in a worker with the time and memory limits of ``settings``; encode it and
    place it on the map. ValueError with a message that names the file and the problem."""
    from explorer.datasets.records import RawItem, read_file_structure
    from explorer.datasets.sandbox import run_limited

    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    filename = _file_label(filename)
    if not isinstance(content, bytes | bytearray):
        raise ValueError(f"{filename}: the upload holds no file content")
    if len(content) > settings.max_upload_mb * 1e6:
        raise ValueError(f"{filename}: {len(content) / 1e6:.1f} MB, more than the upload limit of "
                         f"{settings.max_upload_mb:g} MB")
    try:
        structure, fmt, count = run_limited(read_file_structure, RawItem(key=filename, kind="bytes",
                                                                         payload=bytes(content)),
                                            limits_of(settings), key=filename, seconds=settings.parse_seconds,
                                            memory_mb=settings.parse_memory_mb)
    except Rejected as rejection:
        raise ValueError(rejection.sentence) from None
    try:
        latent = model.encode([structure], settings)[0]
    except Exception as exc:
        raise ValueError(f"{filename}: could not be encoded ({type(exc).__name__}: {exc})") from None
    kind = crystal_kind(kind)
    xy = maps.place(dataset, kind, [structure], latent[None], settings)[0]
    formula = structure.composition.reduced_formula
    label = FORMAT_LABELS.get(fmt, fmt)
    note = f"uploaded file {filename} ({label})"
    if count > 1:
        note += (f"; it holds {count} structures and the first is shown: use `python -m explorer data ingest` "
                 "to read them all")
    view = {"kind": "upload", "id": f"upload:{filename}", "title": f"{formula} (uploaded: {filename})",
            "formula": formula, "dataset": dataset, "structure": structure_as_dict(structure),
            "latent": latent.tolist(), "xy": [float(v) for v in xy], "map": kind, "validity": None,
            "details": structure_details(structure),
            "nearest": _nearest(dataset, latent, settings), "note": note, "ms": 0.0}
    view["ms"] = round(1000 * (time.perf_counter() - start), 1)
    return view


def relaxed_view(source: dict, structure: Structure, summary: dict, dataset: str, settings: Settings, *,
                 kind: str = "crystals") -> dict:
    """The view of ``structure``, the relaxation of the view ``source`` (``physics.relax``): encoded and placed on
    the map like an upload, with the relaxation's ``summary`` in its details."""
    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    source = check_view(source, settings, label="the relaxed structure's source")
    latent = model.encode([structure], settings)[0]
    kind = crystal_kind(kind)
    xy = maps.place(dataset, kind, [structure], latent[None], settings)[0]
    formula = structure.composition.reduced_formula
    steps = f"{summary['steps']} steps" + ("" if summary.get("converged") else ", not converged")
    details = [["relaxation", f"{steps}; energy {summary['energy_before']:.4f} → {summary['energy_after']:.4f} eV/atom"
                              f" (drop {1000 * summary['energy_drop']:.0f} meV/atom)"],
               ["atoms moved", f"{summary['rms_displacement']:.3f} Å RMS"],
               ["space group", f"{summary['space_group_before']} → {summary['space_group_after']}"],
               *[row for row in structure_details(structure) if row[0] != "space group"]]
    return {"kind": "relaxed", "id": f"relaxed:{str(source['id'])[:80]}", "title": f"{formula} (relaxed)",
            "formula": formula, "dataset": dataset, "structure": structure_as_dict(structure),
            "latent": latent.tolist(), "xy": [float(v) for v in xy], "map": kind, "validity": None, "details": details,
            "nearest": _nearest(dataset, latent, settings), "relaxation": summary, "source": source["title"],
            "note": f"relaxed with the potential from {source['title']}",
            "ms": round(1000 * (time.perf_counter() - start), 1)}


def data_url_bytes(contents: object, filename: object, *, max_bytes: int | None = None) -> bytes:
    """The bytes of an upload as the browser sends it (a ``data:...;base64,`` URL); ValueError naming the file
    when it is anything else or (before decoding) larger than ``max_bytes``."""
    import binascii

    label = _file_label(filename)
    if not isinstance(contents, str) or "," not in contents or not contents.startswith("data:"):
        raise ValueError(f"{label}: the upload did not arrive as a file (expected a data URL)")
    header, payload = contents.split(",", 1)
    if max_bytes is not None and len(payload) * 3 // 4 > max_bytes:
        raise ValueError(f"{label}: {len(payload) * 3 / 4e6:.1f} MB, more than the upload limit of "
                         f"{max_bytes / 1e6:g} MB")
    try:
        return base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
    except (binascii.Error, ValueError):
        raise ValueError(f"{label}: the upload is not valid base64") from None


def _file_label(filename: object) -> str:
    """The name of an uploaded file for messages and ids: its last path part, printable, at most 100 characters."""
    text = str(filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable())[:100].strip()
    return text or "upload"


def interpolation(a: dict, b: dict, dataset: str, settings: Settings, *, steps: int, method: str,
                  kind: str = "crystals") -> dict:
    """Decode a path between two views: {"frames": [frame view...], "xy": [[x, y]...], "method", "a", "b", "ends",
    "ms"}; ``ends`` {"a": bool, "b": bool} says whether the first and last frames match A and B (the decoder
    reproduces the endpoint: ``models.crystal.metrics.rms_if_match``)."""
    from explorer.services import motif_views

    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    a, b = check_view(a, settings, label="A"), check_view(b, settings, label="B")
    if isinstance(steps, bool) or not isinstance(steps, int | float) or not math.isfinite(steps) or steps != int(steps):
        raise ValueError(f"steps must be a whole number from {model.MIN_STEPS} to {model.MAX_STEPS}, got {steps!r}")
    ends = [motif_views.is_environment(a), motif_views.is_environment(b)]
    if all(ends):
        return motif_views.interpolation(a, b, dataset, settings, steps=int(steps), method=method)
    if any(ends):
        raise ValueError("A and B must both be crystals or both be environments of the motif map: "
                         f"{a['title'][:60]} and {b['title'][:60]}")
    frames = model.interpolate(np.asarray(a["latent"]), np.asarray(b["latent"]), settings, steps=int(steps),
                               method=method)
    kind = crystal_kind(kind)  # on the motif map, a path between crystals is drawn on the crystal map
    sha = model.checkpoint_sha256(settings)
    xy = maps.place(dataset, kind, [f.structure for f in frames], np.stack([f.latent for f in frames]), settings)
    views = []
    for frame, point in zip(frames, xy, strict=True):
        views.append({"kind": "frame", "id": f"path-frame-{frame.index:02d}", "index": frame.index, "t": frame.t,
                      "title": f"{frame.formula} (path frame {frame.index} of {len(frames) - 1})",
                      "formula": frame.formula, "n_atoms": frame.n_atoms, "dataset": dataset,
                      "structure": structure_as_dict(frame.structure), "latent": frame.latent.tolist(),
                      "xy": point.tolist(), "map": kind, "validity": frame.validity,
                      "details": [["atoms in cell", str(frame.n_atoms)], ["t", f"{frame.t:.3f}"]],
                      "nearest": [], "note": " ".join(filter(None, (
                          f"hypothetical: frame {frame.index} of a {method} path from {a['title']} to {b['title']}.",
                          model.origin_note(frame.structure, settings)))), "ms": 0.0, "checkpoint": sha,
                      "made": f"path {a['title']} → {b['title']}, frame {frame.index} of {len(frames) - 1} ({method})"})
    ends = {"a": _reproduces(frames[0].structure, a, dataset, settings),
            "b": _reproduces(frames[-1].structure, b, dataset, settings)}
    return {"frames": views, "xy": xy.tolist(), "map": kind, "method": method, "a": a["title"], "b": b["title"],
            "ends": ends, "ms": round(1000 * (time.perf_counter() - start), 1)}


def _reproduces(decoded: Structure, view: dict, dataset: str, settings: Settings) -> bool:
    """Whether ``decoded`` (a path's end frame: the decode of ``view``'s latent) matches ``view``
    (``models.crystal.metrics.rms_if_match``). For a known material of ``dataset`` whose view carries its latent
    unchanged, the map's stored reconstruction check already holds the answer (the same decode, matched with the same
    cell), so the StructureMatcher does not run again on every path."""
    if view["kind"] == "known" and isinstance(view.get("id"), str):
        atlas = get_atlas(dataset, settings)
        k = atlas.index_of(view["id"])
        if k is not None and np.array_equal(np.asarray(view["latent"], dtype=np.float32), atlas.latents[k]):
            rebuilt = reconstruction.load(dataset, settings)
            entry = rebuilt.of(view["id"]) if rebuilt is not None else None
            if entry is not None:
                return bool(entry["matched"])
    from models.crystal.metrics import rms_if_match

    return rms_if_match(decoded, structure_of(view)) is not None


def structure_of(view: dict) -> Structure:
    """The pymatgen Structure of a view, read as plain numbers and element names (a view may come from the
    browser: nothing it names is imported); ValueError naming the view when it is not a structure."""
    if not isinstance(view, dict):
        raise ValueError(f"expected a structure view, got {type(view).__name__}")
    try:
        return structure_from_plain_dict(view.get("structure"), key=_label(view))
    except Rejected as rejection:
        raise ValueError(rejection.sentence) from None


def _label(view: dict) -> str:
    title = view.get("title") if isinstance(view, dict) else None
    return str(title)[:80] if isinstance(title, str) and title else "the structure on screen"


def map_point(x: object, y: object) -> tuple[float, float]:
    """(x, y) as finite floats; ValueError quoting them otherwise (a click can carry anything)."""
    try:
        point = (float(x), float(y))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        point = None
    if point is None or not all(math.isfinite(v) for v in point):
        raise ValueError(f"map point ({str(x)[:30]}, {str(y)[:30]}) is not a pair of finite numbers")
    return point


def check_view(view: object, settings: Settings, *, label: str = "structure") -> dict:
    """``view`` if it is a well-formed view (see the module docstring); ValueError saying what is wrong.

    The structure must read safely and fit ``settings.max_sites``; the latent must hold the model's number of
    finite values; the map position, when there is one, two finite numbers.
    """
    if not isinstance(view, dict):
        raise ValueError(f"{label}: expected a structure view, got {type(view).__name__}")
    if view.get("kind") not in KINDS or not isinstance(view.get("title"), str):
        raise ValueError(f"{label}: not a structure view (kind {str(view.get('kind'))[:30]!r})")
    structure = structure_of(view)
    if len(structure) > settings.max_sites:
        raise ValueError(f"{label}: {len(structure)} sites, more than the limit of {settings.max_sites}")
    latent = view.get("latent")
    if view["kind"] == "environment":
        from explorer.services.motif_views import check_environment

        check_environment(view, label, settings)
    else:
        size = model.latent_dim(settings)
        if not isinstance(latent, list) or len(latent) != size or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in latent):
            raise ValueError(f"{label} ({view['title'][:60]}): its latent must be {size} finite numbers")
    if view.get("checkpoint") is not None and not (isinstance(view["checkpoint"], str) and len(view["checkpoint"]) == 64
                                                   and all(c in "0123456789abcdef" for c in view["checkpoint"])):
        raise ValueError(f"{label}: its checkpoint must be a sha256 (64 hex digits)")
    if view.get("map", "crystals") not in maps.KINDS or (view.get("map") == "motifs") != (view["kind"] ==
                                                                                          "environment"):
        raise ValueError(f"{label}: unknown map kind {str(view.get('map'))[:30]!r}")
    if view.get("xy") is not None:
        xy = view["xy"]
        if not isinstance(xy, list) or len(xy) != 2:
            raise ValueError(f"{label}: its map position must be two numbers")
        map_point(*xy)
    return view


def path_frames(path: object) -> list:
    """The frames of an interpolation path from the browser (a list of at most ``model.MAX_STEPS`` + 1, each checked
    where it is used); ValueError when there is no path or it is longer than any the app makes."""
    frames = path.get("frames") if isinstance(path, dict) else None
    if not isinstance(frames, list) or not frames:
        raise ValueError("no interpolation path yet: set A and B and press Interpolate")
    if len(frames) > model.MAX_STEPS + 1:
        raise ValueError(f"the path has {len(frames):,} frames; the app makes paths of at most {model.MAX_STEPS}")
    return frames


def path_frame(path: object, index: object) -> dict:
    """Frame ``index`` of an interpolation path from the browser; ValueError when there is no such frame."""
    frames = path_frames(path)
    try:
        k = int(str(index))
    except ValueError:
        k = -1
    if not 0 <= k < len(frames) or not isinstance(frames[k], dict):
        raise ValueError(f"the path has no frame {str(index)[:20]!r} (it has {len(frames)})")
    return frames[k]
