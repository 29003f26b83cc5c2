"""What made a decoded crystal, carried by every file it is exported to, so that it can be made again.

A provenance is a flat dict of plain values::

    {"checkpoint_sha256": 64 hex digits, "latent_b64": base64 of the latent as little-endian float32,
     "made": "map point (1.2345, -0.5000) of the crystals map" | "path A → B, frame k of n (slerp)" | …,
     "map_kind": "crystals" | "structure", "map_x": float, "map_y": float}

CIF files carry it on a comment line and POSCAR files at the end of their comment line, both as
``explorer {"checkpoint_sha256": …}`` (one line of JSON); extended XYZ on the comment line as ``atoms.info`` keys,
pymatgen JSON in ``properties``, the basket's ``manifest.csv`` as columns. ``read`` finds it in any of those files
again (``python -m explorer decode --from FILE``).
"""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np

KEYS = ("checkpoint_sha256", "latent_b64", "made", "map_kind", "map_x", "map_y")
MARK = "explorer "
"""What starts the JSON of a provenance on a CIF comment line or in a POSCAR comment."""
DECODED = ("hypothetical", "frame")
"""View kinds whose structure is a decode of their latent (known, uploaded and relaxed ones are not)."""
_SHA = re.compile(r"[0-9a-f]{64}")
_MAX_LATENT = 4096


def latent_b64(latent) -> str:
    """The latent as base64 of little-endian float32 (compact, exact for the float32 the model uses), without the
    '=' padding (an extended XYZ comment line reads '=' as the start of a value)."""
    return base64.b64encode(np.asarray(latent, dtype="<f4").ravel().tobytes()).decode("ascii").rstrip("=")


def latent_from_b64(text: object) -> np.ndarray:
    """The float32 latent of ``latent_b64``; ValueError when ``text`` is not one."""
    text = str(text).strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise ValueError("the latent is not valid base64") from None
    if not raw or len(raw) % 4 or len(raw) // 4 > _MAX_LATENT:
        raise ValueError(f"the latent holds {len(raw)} bytes: not a list of float32 values")
    latent = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(latent).all():
        raise ValueError("the latent holds a value that is not a finite number")
    return latent


def of_view(view: dict) -> dict | None:
    """The provenance of a view whose structure is a decode (None for known, uploaded, relaxed ones, or a view
    without its checkpoint); a view from the browser is read as untrusted (``clean``)."""
    if not isinstance(view, dict) or view.get("kind") not in DECODED or not isinstance(view.get("checkpoint"), str):
        return None
    try:
        found = {"checkpoint_sha256": view["checkpoint"], "latent_b64": latent_b64(view["latent"]),
                 "made": str(view.get("made") or view.get("note") or view["kind"]),
                 "map_kind": str(view.get("map") or "crystals")}
        if view.get("xy"):
            found["map_x"], found["map_y"] = (round(float(v), 6) for v in view["xy"])
    except (TypeError, ValueError, KeyError):
        return None
    return clean(found)


def clean(found: object) -> dict | None:
    """``found`` (from a browser store or a file) reduced to well-formed provenance keys, or None."""
    if not isinstance(found, dict) or not _SHA.fullmatch(str(found.get("checkpoint_sha256", ""))):
        return None
    try:
        latent_from_b64(found.get("latent_b64"))
    except ValueError:
        return None
    out = {"checkpoint_sha256": found["checkpoint_sha256"], "latent_b64": str(found["latent_b64"])}
    for key in ("made", "map_kind"):
        if isinstance(found.get(key), str):
            out[key] = " ".join(found[key].split())[:300]
    for key in ("map_x", "map_y"):
        value = found.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def line(found: dict) -> str:
    """'explorer {…}': the provenance as one line of JSON (CIF comment, POSCAR comment)."""
    return MARK + json.dumps(found, separators=(",", ":"), sort_keys=True)


def from_text(text: str) -> dict | None:
    """The provenance on an 'explorer {…}' line of a CIF or POSCAR text, or None."""
    for row in text.splitlines()[:200]:
        start = row.find(MARK + "{")
        if start >= 0:
            try:
                return clean(json.loads(row[start + len(MARK):].strip()))
            except ValueError:
                return None
    return None


def read(data: bytes, name: str, settings) -> tuple[object, str, dict | None]:
    """(the first structure, its format, its provenance or None) of an exported file's bytes, read with the app's
    checks in a limited worker, but for the shortest distance between atoms: a decode that put two atoms too close
    (its validity said so) is exported all the same, and must be read back to be compared; ValueError naming the
    file when it cannot be read."""
    from dataclasses import replace

    from explorer.datasets.build import limits_of
    from explorer.datasets.formats import decode_text
    from explorer.datasets.records import RawItem, read_file_structure
    from explorer.datasets.rejections import Rejected
    from explorer.datasets.sandbox import run_limited

    try:
        structure, fmt, _ = run_limited(read_file_structure, RawItem(key=name, kind="bytes", payload=data),
                                        replace(limits_of(settings), min_distance=0.01), key=name,
                                        seconds=settings.parse_seconds,
                                        memory_mb=settings.parse_memory_mb)
        text = decode_text(data, key=name)
    except Rejected as rejection:
        raise ValueError(rejection.sentence) from None
    if fmt in ("cif", "poscar"):
        return structure, fmt, from_text(text)
    if fmt == "json":
        try:
            return structure, fmt, clean(json.loads(text).get("properties"))
        except (ValueError, AttributeError):
            return structure, fmt, None
    import io

    import ase.io

    try:
        return structure, fmt, clean(dict(ase.io.read(io.StringIO(text), index=0, format="extxyz").info))
    except Exception:  # noqa: BLE001 - read above with the app's checks; no provenance here
        return structure, fmt, None


def _checkpoint_named(sha: str, settings, given=None):
    """Settings whose checkpoint has sha256 ``sha``: ``given``, else the configured one or any of
    ``models/checkpoints/*.pt``; ValueError naming the ones tried when none has it."""
    from pathlib import Path

    from explorer.datasets.packages import sha256_of
    from explorer.settings import PROJECT_ROOT

    tried = [Path(given)] if given else [Path(settings.checkpoint),
                                         *sorted((PROJECT_ROOT / "models" / "checkpoints").glob("*.pt"))]
    for path in tried:
        if path.is_file() and sha256_of(path) == sha:
            return settings.model_copy(update={"checkpoint": path})
    names = ", ".join(str(p) for p in tried)
    raise ValueError(f"the file was decoded by the checkpoint with sha256 {sha[:16]}…, and none of {names} is that "
                     "one: pass --checkpoint PATH to the checkpoint that made it")


def redecode(path, settings, *, checkpoint=None) -> dict:
    """Decode the latent an exported file carries with the checkpoint it names and compare the result with the
    file: {"file", "format", "made", "checkpoint", "checkpoint_sha256", "formula", "decoded_formula",
    "matches" (StructureMatcher at the model card's tolerances), "rms" (its normalised RMS displacement)}. The
    file is read with the app's reader, which puts it in its canonical cell, so the comparison is the matcher's,
    not site by site."""
    from pathlib import Path

    from explorer.services import model
    from models.crystal.metrics import rms_if_match

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size > settings.max_upload_mb * 1e6:
        raise ValueError(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, more than the limit of "
                         f"{settings.max_upload_mb:g} MB")
    structure, fmt, found = read(path.read_bytes(), path.name, settings)
    if found is None:
        raise ValueError(f"{path.name}: it carries no latent of a decode (only decoded or interpolated crystals "
                         "exported by the explorer do)")
    named = _checkpoint_named(found["checkpoint_sha256"], settings, checkpoint)
    latent = latent_from_b64(found["latent_b64"])
    if len(latent) != model.latent_dim(named):
        raise ValueError(f"{path.name}: its latent has {len(latent)} values, the checkpoint's "
                         f"{model.latent_dim(named)}")
    decoded = model.decode(latent, named).structure
    rms = rms_if_match(decoded, structure)
    return {"file": str(path), "format": fmt, "made": found.get("made", ""), "checkpoint": str(named.checkpoint),
            "checkpoint_sha256": found["checkpoint_sha256"], "formula": structure.composition.reduced_formula,
            "decoded_formula": decoded.composition.reduced_formula, "matches": rms is not None, "rms": rms}
