"""Structures to and from bytes (CIF, POSCAR, extended XYZ, pymatgen JSON), basket and path zips, and a
standalone 3D viewer page. Plain data in, plain data out: lengths in Å, coordinates fractional unless said
otherwise. Writers keep the site order and enough digits for an exact round trip (within 1e-6).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import unicodedata
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from explorer.datasets.formats import decode_text, parse_text
from explorer.datasets.rejections import Rejected


@dataclass(frozen=True)
class ExportFormat:
    """One export format: ``label`` for a dropdown, file ``extension`` (no dot) and ``mime`` type."""

    label: str
    extension: str
    mime: str


FORMATS: dict[str, ExportFormat] = {
    "cif": ExportFormat(label="CIF", extension="cif", mime="chemical/x-cif"),
    "poscar": ExportFormat(label="POSCAR (VASP)", extension="vasp", mime="text/plain"),
    "extxyz": ExportFormat(label="Extended XYZ", extension="extxyz", mime="chemical/x-xyz"),
    "json": ExportFormat(label="pymatgen JSON", extension="json", mime="application/json"),
}


@dataclass(frozen=True)
class BasketItem:
    """A structure the user put in the export basket.

    latent_2d: (map_x, map_y) position on the map, or None; validity: check name -> result (nested
    dicts allowed), or None; hypothetical: True for decoded structures that are not known materials;
    provenance: what made a decode (``services.provenance``), written into its file and the manifest.
    """

    id: str
    formula: str
    source: str
    structure: Structure
    latent_2d: tuple[float, float] | None = None
    validity: dict[str, object] | None = None
    hypothetical: bool = False
    provenance: dict[str, object] | None = None


_CIF_DIGITS = 12  # decimals of CIF numbers: far below the 1e-6 round-trip tolerance
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry dates: the same basket gives the same bytes
_MANIFEST_COLUMNS = ("id", "formula", "source", "hypothetical", "filename", "map_x", "map_y", "map_kind", "made",
                     "checkpoint_sha256", "latent_b64")
_RESERVED_INFO = {"lattice", "properties", "pbc"}  # extxyz comment-line keys that ase writes itself
_INFO_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_STYLES: dict[str, dict] = {"ball-and-stick": {"sphere": {"scale": 0.3}, "stick": {"radius": 0.15}},
                             "spacefill": {"sphere": {"scale": 1.0}}, "stick": {"stick": {"radius": 0.2}}}
_MAX_VIEWER_SITES = 5000


def _format(fmt: str) -> ExportFormat:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[fmt]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------- writing
def structure_to_bytes(structure: Structure, *, fmt: str, title: str = "",
                       properties: Mapping[str, object] | None = None,
                       provenance: Mapping[str, object] | None = None) -> bytes:
    """One structure as the UTF-8 bytes of a file in format ``fmt`` (a key of FORMATS).

    cif: P1 (every site written, no symmetry search), 12 decimals, ``title`` as a leading comment.
    poscar: direct coordinates, 16 significant figures, comment line = ``title`` or the formula.
    extxyz: Cartesian positions (Å) with ``Lattice`` and ``pbc``; ``title`` and ``properties`` (scalars,
    strings or numeric lists) become keys of the comment line (ase ``atoms.info``).
    json: ``Structure.as_dict()``; ``title`` and ``properties`` go into its ``properties`` dict.
    ``provenance`` (``services.provenance``: what made a decode) goes on a CIF comment line, at the end of the
    POSCAR comment line, and with the properties of extxyz and JSON.
    """
    from explorer.services.provenance import line

    _format(fmt)
    _check_exportable(structure)
    title = _one_line(title)
    if fmt == "cif":
        text = _cif_text(structure, title=title)
        if provenance:
            text = f"# {line(dict(provenance))}\n{text}"
    elif fmt == "poscar":
        from pymatgen.io.vasp import Poscar

        comment = title or structure.formula
        if provenance:
            comment = f"{comment} {line(dict(provenance))}"
        poscar = Poscar(structure, comment=comment, sort_structure=False)
        text = poscar.get_str(direct=True, significant_figures=16)
    elif fmt == "extxyz":
        info = {**(properties or {}), **(provenance or {})}
        if title:
            info.setdefault("title", title)
        text = _extxyz_text([structure], [info])
    else:
        text = _json_text(structure, title=title, properties={**(properties or {}), **(provenance or {})})
    return text.encode("utf-8")


def _check_exportable(structure: Structure) -> None:
    if not isinstance(structure, Structure):
        raise ValueError(f"expected a pymatgen Structure, got {type(structure).__name__}: {structure!r:.80}")
    if len(structure) == 0:
        raise ValueError("the structure has no sites: nothing to export")
    if not structure.is_ordered:
        raise ValueError(f"structure {structure.formula!r} is disordered (partial occupancies); "
                         "only ordered structures can be exported")


def _cif_text(structure: Structure, *, title: str = "") -> str:
    from pymatgen.io.cif import CifWriter

    text = str(CifWriter(structure, symprec=None, significant_figures=_CIF_DIGITS))
    return f"# {title}\n{text}" if title else text


def _json_text(structure: Structure, *, title: str, properties: Mapping[str, object] | None) -> str:
    from monty.json import MontyEncoder

    data = structure.as_dict()
    data["properties"] = {**(data.get("properties") or {}), **(properties or {}), **({"title": title} if title else {})}
    try:
        return json.dumps(data, cls=MontyEncoder, indent=1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"structure {structure.formula!r}: properties are not JSON-serialisable ({exc})") from None


def _extxyz_text(structures: Sequence[Structure], infos: Sequence[Mapping[str, object]]) -> str:
    """Extended XYZ of ``structures`` (one frame each), ``infos[i]`` on the comment line of frame i."""
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for structure, info in zip(structures, infos, strict=True):
        atoms = AseAtomsAdaptor.get_atoms(structure, msonable=False)
        atoms.pbc = True
        atoms.info = {str(key): _info_value(key, value) for key, value in info.items()}
        frames.append(atoms)
    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    return buffer.getvalue()


def _info_value(key: object, value: object) -> object:
    """A value ase can write on an extxyz comment line; ValueError quoting the key otherwise."""
    if not isinstance(key, str) or not _INFO_KEY.match(key) or key.lower() in _RESERVED_INFO:
        raise ValueError(f"extxyz property name {key!r} is not allowed: use letters, digits, '_', '.', '-' "
                         f"and none of {sorted(_RESERVED_INFO)}")
    value = value.tolist() if hasattr(value, "tolist") else value  # numpy scalars and arrays
    if isinstance(value, str):
        return _one_line(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, bool | int | float) for v in value):
        return list(value)
    raise ValueError(f"extxyz property {key!r} = {value!r:.80}: only strings, numbers, booleans "
                     "and non-empty lists of numbers can be written")


# ----------------------------------------------------------------------------------------- reading
def structure_from_bytes(data: bytes, *, fmt: str, name: str = "upload") -> Structure:
    """The (first) structure in the bytes of a ``fmt`` file called ``name`` (used in messages), read by the
    same parsers as uploads and ingests (``explorer.datasets.formats``).

    Raises ValueError naming ``name`` and the format for empty, binary or unreadable input, for
    files without atoms and for files without a periodic cell.
    """
    spec = _format(fmt)
    try:
        structure = parse_text(decode_text(data, key=name), fmt=fmt, key=name)
    except Rejected as exc:
        raise ValueError(f"{name}: could not read as {spec.label}: "
                         f"{_one_line(exc.detail.removeprefix(f'{name}: '))[:300]}") from None
    if len(structure) == 0:
        raise ValueError(f"{name}: the {spec.label} file holds no atoms")
    volume = structure.lattice.volume
    if not math.isfinite(volume) or abs(volume) < 1e-6:
        raise ValueError(f"{name}: the {spec.label} file has no periodic cell (cell volume {volume!r} Å^3)")
    return structure


# -------------------------------------------------------------------------------- names and zips
def _safe(text: str, *, keep_spaces: bool = False) -> str:
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"\s+", "-" if keep_spaces else "", text.strip())
    return re.sub(r"[^A-Za-z0-9._()\-]+", "-", text).strip(".-")


def export_filename(*, record_id: str, formula: str, fmt: str) -> str:
    """A safe file name ``<id>_<formula>.<ext>``, e.g. 'amcsd-0000008_FeS2.cif' for 'amcsd:0000008', 'Fe S2'.

    Only ASCII letters, digits, '.', '_', '-', '(' and ')' remain; whitespace inside the id becomes '-',
    inside the formula it is dropped; other characters (slashes, colons, ...) become '-'.
    """
    spec = _format(fmt)
    stem = "_".join(part for part in (_safe(record_id, keep_spaces=True), _safe(formula)) if part)
    return f"{(stem or 'structure')[:120]}.{spec.extension}"


def _unique(filename: str, taken: set[str]) -> str:
    """``filename``, or 'stem_2.ext', 'stem_3.ext', ... if taken (case-insensitively); adds it to taken."""
    stem, dot, ext = filename.rpartition(".")
    candidate, n = filename, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}_{n}{dot}{ext}"
    taken.add(candidate.lower())
    return candidate


def _zip(entries: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for filename, data in entries:
            info = zipfile.ZipInfo(filename, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def basket_zip(items: list[BasketItem], *, fmt: str) -> bytes:
    """A zip of the basket: one ``fmt`` file per item (see export_filename; repeated ids get '_2',
    '_3', ... suffixes) and ``manifest.csv`` with columns id, formula, source, hypothetical, filename,
    map_x, map_y and one column per validity key (nested keys joined by '.'; a key that repeats a fixed
    column gets the prefix 'validity.'); missing values are empty cells.
    """
    _format(fmt)
    if not items:
        raise ValueError("the basket is empty")
    taken: set[str] = set()
    entries, rows = [], []
    for item in items:
        filename = _unique(export_filename(record_id=item.id, formula=item.formula, fmt=fmt), taken)
        try:
            data = structure_to_bytes(item.structure, fmt=fmt, title=f"{item.id} {item.formula}",
                                      provenance=item.provenance)
        except ValueError as exc:
            raise ValueError(f"basket item {item.id!r} ({item.formula}): {exc}") from None
        entries.append((filename, data))
        rows.append(_manifest_row(item, filename))
    return _zip([*entries, ("manifest.csv", _manifest_csv(rows))])


def _flatten(values: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        column = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{column}."))
        else:
            flat[column] = value
    return flat


def _manifest_row(item: BasketItem, filename: str) -> dict[str, object]:
    x, y = item.latent_2d if item.latent_2d is not None else (None, None)
    row: dict[str, object] = {"id": item.id, "formula": item.formula, "source": item.source,
                              "hypothetical": bool(item.hypothetical), "filename": filename, "map_x": x, "map_y": y,
                              **{k: v for k, v in (item.provenance or {}).items() if k not in ("map_x", "map_y")}}
    for key, value in _flatten(item.validity or {}).items():
        row[f"validity.{key}" if key in _MANIFEST_COLUMNS else key] = value
    return row


def _cell(value: object) -> object:
    if value is None:
        return ""
    if hasattr(value, "tolist"):  # numpy values
        value = value.tolist()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return value


def _manifest_csv(rows: list[dict[str, object]]) -> bytes:
    columns = list(_MANIFEST_COLUMNS)
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _cell(row.get(column)) for column in columns})
    return buffer.getvalue().encode("utf-8")


# ------------------------------------------------------------------------------------------ paths
def _check_frames(frames: list[Structure]) -> None:
    if not frames:
        raise ValueError("the path has no frames")
    for index, frame in enumerate(frames):
        try:
            _check_exportable(frame)
        except ValueError as exc:
            raise ValueError(f"path frame {index}: {exc}") from None


def path_extxyz(frames: list[Structure], *, properties: list[dict] | None = None) -> bytes:
    """Multi-frame extended XYZ of an interpolation path, frames in order.

    Each frame's comment line holds ``frame`` (index from 0) and ``t`` (i / (n - 1), 0 for one frame),
    then that frame's ``properties[i]`` (which may override ``t``, e.g. with the exact path parameter).
    """
    _check_frames(frames)
    if properties is not None and len(properties) != len(frames):
        raise ValueError(f"path has {len(frames)} frames but {len(properties)} property dicts")
    last = max(len(frames) - 1, 1)
    extras = properties if properties is not None else [{}] * len(frames)
    infos = [{"frame": i, "t": i / last, **(extra or {})} for i, extra in enumerate(extras)]
    return _extxyz_text(frames, infos).encode("utf-8")


def environments_extxyz(frames: Sequence[tuple[list[str], np.ndarray]], infos: Sequence[Mapping[str, object]]) -> bytes:
    """Extended XYZ of local environments, not crystals: one frame per (symbols, (n, 3) positions Å, the centre
    first at the origin), no cell, ``pbc="F F F"``, ``infos[i]`` on the comment line of frame i."""
    import ase
    import ase.io

    if not frames:
        raise ValueError("no environments to export")
    atoms = []
    for (symbols, positions), info in zip(frames, infos, strict=True):
        frame = ase.Atoms(symbols=list(symbols), positions=np.asarray(positions, dtype=float), pbc=False)
        frame.info = {str(key): _info_value(key, value) for key, value in info.items()}
        atoms.append(frame)
    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue().encode("utf-8")


def path_cif_zip(frames: list[Structure], *, stem: str, provenances: Sequence[Mapping | None] | None = None) -> bytes:
    """A zip of P1 CIFs, one per frame: '<stem>_000.cif', '<stem>_001.cif', ... (at least 3 digits), each with its
    frame's provenance when given."""
    _check_frames(frames)
    safe_stem = _safe(stem, keep_spaces=True) or "path"
    width = max(3, len(str(len(frames) - 1)))
    provenances = provenances or [None] * len(frames)
    return _zip([(f"{safe_stem}_{i:0{width}d}.cif",
                  structure_to_bytes(frame, fmt="cif", title=f"{stem} frame {i}", provenance=found))
                 for i, (frame, found) in enumerate(zip(frames, provenances, strict=True))])


# ----------------------------------------------------------------------------------------- viewer
def _check_js_url(js_url: str) -> None:
    if not js_url or re.match(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*:|//)", js_url) or re.search(r"[\s'\"<>\\]", js_url):
        raise ValueError(f"js_url {js_url!r} must be a local path or relative URL of 3Dmol.js (e.g. "
                         "'3Dmol-min.js' or '/assets/vendor/3Dmol-min.js'), not a remote URL")


def viewer(structure: Structure, *, supercell: tuple[int, int, int] = (1, 1, 1), style: str = "ball-and-stick",
           js_url: str = "3Dmol-min.js", inline_js: str | None = None, polyhedra: list[dict] | None = None,
           width: int = 640, height: int = 480):
    """A py3Dmol view of ``structure`` (repeated ``supercell`` times along a, b, c) with its cell. ``style``: one
    of 'ball-and-stick', 'spacefill', 'stick'; ``polyhedra`` (``motifs.environments.polyhedra`` of the cell) are
    drawn translucent in every repeat.

    Never a CDN. With ``inline_js`` (the text of 3Dmol-min.js) the script is embedded in the view's HTML (in a
    notebook and in a saved page alike, offline); without it the HTML loads the local ``js_url``.
    """
    import py3Dmol

    _check_exportable(structure)
    _check_js_url(js_url)
    if style not in _STYLES:
        raise ValueError(f"unknown viewer style {style!r}; valid styles: {', '.join(_STYLES)}")
    repeats = tuple(supercell) if isinstance(supercell, Sequence) else ()
    if len(repeats) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in repeats):
        raise ValueError(f"supercell {supercell!r} must be three integers >= 1")
    if (n_sites := len(structure) * math.prod(repeats)) > _MAX_VIEWER_SITES:
        raise ValueError(f"supercell {supercell!r} of {structure.formula!r} has {n_sites} sites; "
                         f"the viewer draws at most {_MAX_VIEWER_SITES}")
    shown = structure * repeats
    view = py3Dmol.view(js=js_url, width=width, height=height)
    view.addModel(_cif_text(shown), "cif")
    view.addUnitCell()
    view.setStyle(_STYLES[style])
    for shape in polyhedra or []:
        _add_polyhedron(view, shape, structure.lattice.matrix, repeats)
    view.zoomTo()
    if inline_js is not None:
        view.startjs = _inline_script(inline_js) + view.startjs
    return view


def _add_polyhedron(view, shape: dict, lattice, repeats: tuple[int, int, int]) -> None:
    """One polyhedron ({"element", "vertices": [[x, y, z] Å], "faces": [[i, j, k]], "color"}) in every repeat."""
    import numpy as np

    vertices = np.asarray(shape["vertices"], dtype=float)
    faces = [int(i) for face in shape["faces"] for i in face]
    for shift in np.ndindex(*repeats):
        moved = vertices + np.asarray(shift) @ np.asarray(lattice)
        view.addCustom({"vertexArr": [{"x": x, "y": y, "z": z} for x, y, z in moved.tolist()],
                        "faceArr": faces, "color": shape.get("color", "#888888"), "opacity": 0.45})


def viewer_html(structure: Structure, *, title: str, supercell: tuple[int, int, int] = (1, 1, 1),
                style: str = "ball-and-stick", js_url: str = "3Dmol-min.js", inline_js: str | None = None) -> str:
    """A standalone HTML page showing ``structure`` (``viewer``), with ``title``; with ``inline_js`` (the text of
    3Dmol-min.js, in the page's head) it opens anywhere, offline."""
    view = viewer(structure, supercell=supercell, style=style, js_url=js_url)
    buffer = io.StringIO()
    view.write_html(buffer, fullpage=True)
    script = ""
    if inline_js is not None:
        script = _inline_script(inline_js)
    head = (f'<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8"><title>{html.escape(_one_line(title))}</title>\n'
            f"{script}</head>")
    return buffer.getvalue().replace("<html>", head, 1)


def _inline_script(inline_js: str) -> str:
    """3Dmol.js as a script element, and py3Dmol's loader told it is loaded (it only fetches ``js_url`` while
    ``$3Dmolpromise`` is undefined); ValueError when ``inline_js`` is not 3Dmol.js or could end its element."""
    if "</script" in inline_js.lower() or "$3Dmol" not in inline_js:
        raise ValueError("inline_js must be the text of 3Dmol-min.js (it defines $3Dmol and has no </script>)")
    return f"<script>{inline_js}</script>\n<script>var $3Dmolpromise = Promise.resolve();</script>\n"
