"""What the export buttons download: (filename, bytes) built from the app's JSON views with the export service."""

from __future__ import annotations

import re

from explorer.services import provenance
from explorer.services.cells import view_in_cell
from explorer.services.export import (
    FORMATS,
    BasketItem,
    basket_zip,
    environments_extxyz,
    export_filename,
    path_cif_zip,
    path_extxyz,
    structure_to_bytes,
    viewer_html,
)
from explorer.services.motif_views import is_environment, points_of, require_crystal
from explorer.services.views import path_frames, structure_of
from explorer.settings import PROJECT_ROOT

BASKET_LIMIT = 500
"""Most structures the basket holds (and exports in one zip): 500 CIFs take a few seconds to write; a basket the
browser sends with more is refused in words."""

VIEWER_JS = PROJECT_ROOT / "assets" / "vendor" / "3Dmol-min.js"
"""The local 3Dmol.js (from the npm package, ``make assets``) embedded in the standalone viewer page."""


def _properties(view: dict) -> dict:
    props = {"kind": view["kind"], "hypothetical": view["kind"] != "known"}
    if view.get("xy"):
        props["map_x"], props["map_y"] = view["xy"]
        props["map_kind"] = str(view.get("map") or "crystals")
    return props


def _environment_info(view: dict) -> dict:
    """What an environment's extxyz comment line says: its title, centre, motif, CN and every shape measure."""
    entry = view["environment"]
    info = {"title": view["title"], "centre": entry["element"], "motif": entry["motif"], "cn": entry["cn"]}
    if entry.get("csm") is not None:
        info["cshm"] = entry["csm"]
    for shape, measure in entry.get("measures", {}).items():
        info["cshm_" + re.sub(r"[^A-Za-z0-9]+", "_", str(shape)).strip("_")] = float(measure)
    return info


def structure_file(view: dict, fmt: str, *, cell: object = "model", symprec: float = 0.1) -> tuple[str, bytes]:
    """The structure on screen in format ``fmt``, in the cell chosen in the viewer (``cells.in_cell``; "model": the
    model's own cell), with the provenance of the view (an environment of the motif map: extended XYZ only)."""
    if not view:
        raise ValueError("no structure on screen: click a point of the map first")
    if is_environment(view):
        if fmt != "extxyz":
            raise ValueError(f"{view['title'][:80]} is a local environment, not a crystal: it is exported as "
                             "extended XYZ (no cell); choose that format")
        return (export_filename(record_id=view["id"], formula=view["formula"], fmt="extxyz"),
                environments_extxyz([points_of(view)], [_environment_info(view)]))
    structure, _ = view_in_cell(view, cell, symprec=symprec)
    data = structure_to_bytes(structure, fmt=fmt, title=view["title"],
                              properties=_properties(view) if fmt in ("json", "extxyz") else None,
                              provenance=provenance.of_view(view))
    return export_filename(record_id=view["id"], formula=view["formula"], fmt=fmt), data


def basket_item(view: dict) -> dict:
    """The JSON-able basket entry of a view (a crystal: the basket's files are crystal files)."""
    require_crystal(view, "the basket")
    return {"id": view["id"], "formula": view["formula"], "source": view.get("dataset", "") if view["kind"] == "known"
            else view["kind"], "structure": view["structure"], "xy": view.get("xy"),
            "validity": view.get("validity"), "hypothetical": view["kind"] != "known",
            "provenance": provenance.of_view(view)}


def basket_file(items: list[dict], fmt: str) -> tuple[str, bytes]:
    """Every basket item as a ``fmt`` file in one zip with manifest.csv (at most ``BASKET_LIMIT`` of them)."""
    if isinstance(items, list) and len(items) > BASKET_LIMIT:
        raise ValueError(f"the basket holds {len(items):,} structures, more than the {BASKET_LIMIT} it exports at once")
    entries = [BasketItem(id=i["id"], formula=i["formula"], source=i["source"], structure=structure_of(i),
        latent_2d=tuple(i["xy"]) if i.get("xy") else None, validity=i.get("validity"),
        hypothetical=i["hypothetical"], provenance=provenance.clean(i.get("provenance"))) for i in items or []]
    return f"basket_{len(entries)}_{FORMATS[fmt].extension}.zip", basket_zip(entries, fmt=fmt)


def path_file(path: dict, kind: str) -> tuple[str, bytes]:
    """An interpolation path as multi-frame extxyz (``kind='extxyz'``) or a zip of CIFs (``kind='cif'``)."""
    frames = path_frames(path)  # the frames' views
    stem = f"path_{frames[0]['formula']}_to_{frames[-1]['formula']}"
    if any(is_environment(f) for f in frames):
        if kind != "extxyz":
            raise ValueError("a path between environments is exported as extended XYZ (environments are not "
                             "crystals: no CIF)")
        infos = [{**_environment_info(f), "frame": k, "t": float(f.get("t", 0.0)),
                  "valid": bool((f.get("validity") or {}).get("valid"))} for k, f in enumerate(frames)]
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")
        return f"{stem}.extxyz", environments_extxyz([points_of(f) for f in frames], infos)
    structures = [structure_of(f) for f in frames]
    made = [provenance.of_view(f) for f in frames]
    if kind == "extxyz":
        props = [{"t": f["t"], "formula": f["formula"], "valid": bool((f.get("validity") or {}).get("valid")),
                  **(found or {})} for f, found in zip(frames, made, strict=True)]
        return f"{stem}.extxyz", path_extxyz(structures, properties=props)
    return f"{stem}_cifs.zip", path_cif_zip(structures, stem=stem, provenances=made)


def viewer_script() -> str:
    """The text of the project's 3Dmol.js; ValueError saying how to install it when it is missing."""
    if not VIEWER_JS.is_file():
        raise ValueError(f"3Dmol.js is missing at {VIEWER_JS}: run 'make assets' to install it from npm")
    return VIEWER_JS.read_text(encoding="utf-8")


def viewer_file(view: dict, *, supercell: str, style: str, cell: object = "model",
                symprec: float = 0.1) -> tuple[str, bytes]:
    """A standalone HTML page of the 3D view (in the cell chosen in the viewer) with the project's 3Dmol.js
    embedded: it opens anywhere, offline."""
    if not view:
        raise ValueError("no structure on screen: click a point of the map first")
    require_crystal(view, "the 3D page export")
    script = viewer_script()
    repeats = tuple(int(n) for n in supercell.split("x"))
    structure, _ = view_in_cell(view, cell, symprec=symprec)
    page = viewer_html(structure, title=view["title"], supercell=repeats,
                       style="spacefill" if style == "spheres" else "ball-and-stick",
                       inline_js=script)
    name = export_filename(record_id=view["id"], formula=view["formula"], fmt="cif").removesuffix(".cif")
    return f"{name}_3d.html", page.encode("utf-8")
