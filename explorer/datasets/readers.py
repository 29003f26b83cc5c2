"""Readers of user files into RawItems: a folder of CIF / POSCAR files, a CDVAE-style CSV with a
``cif`` column, an extended XYZ file, a pymatgen JSON list, or one structure file.

Readers never modify the user's files. What cannot be read becomes a RawItem of kind 'bytes'
(parsed later, where it is rejected with its reason) or a ``Rejected`` that the caller records.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from explorer.datasets.formats import cif_blocks, decode_text, describe, sniff_format
from explorer.datasets.records import RECORD_COLUMNS, RawItem, Rejected

# Property columns must not overwrite the record's own columns: they get this prefix instead.
_RESERVED = set(RECORD_COLUMNS)
_ID_COLUMNS = ("material_id", "id", "mp_id", "name")

ItemOrRejection = RawItem | Rejected


def property_name(column: str) -> str:
    """Column name under which a source's property is stored ('formula' -> 'source_formula')."""
    name = str(column).strip()
    return f"source_{name}" if name in _RESERVED else name


def _scalar(value: Any) -> Any:
    """Keep numbers and strings; lists/dicts become JSON text so every column stays one type."""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_csv_items(path: Path, *, key_prefix: str = "", extra_properties: dict | None = None) -> Iterator[RawItem]:
    """CDVAE-style CSV (optionally .gz): one row per crystal, a ``cif`` column, the rest are properties."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype_backend="numpy_nullable")
    except Exception as exc:
        raise Rejected("parse_error", f"{path.name}: not a readable CSV file ({describe(exc)})") from None
    if "cif" not in frame.columns:
        raise Rejected("parse_error", f"{path.name}: CSV has no 'cif' column (columns: {list(frame.columns)[:10]})")
    id_column = next((c for c in _ID_COLUMNS if c in frame.columns), None)
    for index, row in enumerate(frame.to_dict(orient="records")):
        key = str(row[id_column]) if id_column and row[id_column] is not None else f"row{index}"
        props = {property_name(k): _scalar(v) for k, v in row.items() if k not in ("cif", "Unnamed: 0", id_column)}
        props.update(extra_properties or {})
        cif = row["cif"] if isinstance(row["cif"], str) else ""
        yield RawItem(key=f"{key_prefix}{key}", kind="bytes", payload=cif.encode(), properties=props)


def read_json_items(path: Path, *, key_prefix: str = "") -> Iterator[RawItem]:
    """A JSON (optionally .gz) list of pymatgen Structure dicts, or of {"structure": {...}, other props}."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as handle:
            entries = json.load(handle)
    except Exception as exc:
        raise Rejected("parse_error", f"{path.name}: not valid JSON ({describe(exc)})") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise Rejected("parse_error", f"{path.name}: expected a list of structures, got {type(entries).__name__}")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            yield RawItem(key=f"{key_prefix}{index}", kind="bytes", payload=json.dumps(entry).encode())
            continue
        structure = entry.get("structure", entry)
        props = {property_name(k): _scalar(v) for k, v in entry.items()
                 if k not in ("structure", "lattice", "sites", "charge", "properties") and not k.startswith("@")}
        key = next((str(entry[c]) for c in _ID_COLUMNS if c in entry), str(index))
        yield RawItem(key=f"{key_prefix}{key}", kind="pmg_dict", payload=structure, properties=props)


def read_extxyz_items(path: Path, *, key_prefix: str = "") -> Iterator[ItemOrRejection]:
    """Frames of an extended XYZ file; frames after an unreadable one are reported as one rejection."""
    from ase.io import iread

    index = 0
    try:
        for index, atoms in enumerate(iread(str(path), index=":", format="extxyz")):  # noqa: B007
            key = f"{key_prefix}{index}"
            if not atoms.pbc.all() or atoms.cell.rank < 3:
                pbc = atoms.pbc.tolist()
                yield Rejected("not_periodic", f"{key}: frame {index} has no 3D periodic cell (pbc={pbc})")
                continue
            props = {property_name(k): _scalar(v) for k, v in atoms.info.items()}
            yield RawItem(key=key, kind="ase_dict", properties=props, payload={
                "cell": atoms.cell.array.tolist(), "numbers": atoms.numbers.tolist(),
                "positions": atoms.positions.tolist()})
            index += 1
    except Exception as exc:
        yield Rejected("parse_error", f"{key_prefix}{index}: extended XYZ frame {index} and after unreadable "
                                      f"({describe(exc)})")


def read_path(path: Path, *, max_bytes: int | None = None) -> Iterator[ItemOrRejection]:
    """Every structure in a file or folder (recursively), keyed by path relative to ``path``.

    max_bytes: structure files (CIF, POSCAR, ...) larger than this are rejected without being read;
    tables of many structures (CSV, JSON, extended XYZ) have no such limit.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        yield from _read_file(path, key_prefix="", max_bytes=max_bytes)
        return
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                           for part in p.relative_to(path).parts))
    for file in files:
        yield from _read_file(file, key_prefix=f"{file.relative_to(path).as_posix()}", max_bytes=max_bytes)


def read_structure_file(content: bytes, *, key: str) -> Iterator[ItemOrRejection]:
    """The structures of one structure file's bytes: one item, or one per ``data_`` block of a CIF
    (keyed ``key#block``), so that a 500-block CIF gives 500 records instead of its first."""
    try:
        text = decode_text(content, key=key)
    except Rejected as rejection:
        yield rejection
        return
    fmt = sniff_format(text, name=key)
    blocks = cif_blocks(text) if fmt == "cif" else [text]
    if len(blocks) == 1:
        yield RawItem(key=key, kind=fmt, payload=text)
        return
    for index, block in enumerate(blocks):
        name = block.split(None, 1)[0][5:] if block.strip() else ""
        yield RawItem(key=f"{key}#{name or index}", kind="cif", payload=block)


def _read_file(path: Path, *, key_prefix: str, max_bytes: int | None = None) -> Iterator[ItemOrRejection]:
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    multi = f"{key_prefix}#" if key_prefix else ""
    try:
        if base.endswith(".csv"):
            yield from read_csv_items(path, key_prefix=multi)
        elif base.endswith(".json"):
            yield from read_json_items(path, key_prefix=multi)
        elif base.endswith((".xyz", ".extxyz")):
            yield from read_extxyz_items(path, key_prefix=multi)
        else:
            key = key_prefix or path.name
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise Rejected("too_large", f"{key}: {size / 1e6:.1f} MB, more than the limit of "
                                            f"{max_bytes / 1e6:g} MB for one structure file")
            yield from read_structure_file(path.read_bytes(), key=key)
    except Rejected as rejection:
        yield rejection
