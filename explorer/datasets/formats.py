"""Untrusted structure files before a parser touches them: bytes to text, which format the text is, the
cheap checks that keep a parser from expanding a bomb, and pymatgen dicts read without importing anything.

Every entry point (upload, ``data ingest``, the CLI) goes through these, so one file gets one verdict.
Problems raise ``Rejected`` with a reason class and a sentence that names the record and the value:

- text: UTF-8 (with or without BOM), UTF-16/32 with a BOM, else Latin-1; NUL bytes or control
  characters make a file binary.
- format by content, the file name only breaking ties: JSON, extended XYZ, CIF, else POSCAR.
- CIF: cell lengths and angles must describe a real cell, type symbols must be elements, and the
  atoms that the symmetry operations will make (at least sites x operations / 48) must fit the limit.
- pymatgen JSON: the lattice, species and coordinates are read as plain numbers and names;
  ``@module``/``@class`` entries are never imported (monty's decoder would import what a file names).
"""

from __future__ import annotations

import codecs
import functools
import io
import json
import math
import re
import unicodedata
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from explorer.datasets.rejections import MAX_Z, Limits, Rejected

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from explorer.datasets.records import RawItem

FORMAT_LABELS = {"cif": "CIF", "poscar": "POSCAR", "extxyz": "extended XYZ", "json": "pymatgen JSON"}
MAX_CELL_LENGTH = 1000.0
"""Longest cell edge (Å) accepted: longer cells are vacuum around a molecule, and make parsers allocate wildly."""

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_SYMOP_TAGS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz", "_space_group_symop.operation_xyz",
               "_symmetry_equiv.pos_as_xyz")
_GROUP_TAGS = ("_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt", "_symmetry_int_tables_number",
               "_space_group_it_number", "_symmetry_space_group_name_hall", "_space_group_name_hall")
_ISOTOPES = {"D": "H", "T": "H"}
MAX_STABILIZER = 48
"""Largest point group of a site (m-3m): a site of a group with n operations has at least n / 48 images."""


def decode_text(data: bytes, *, key: str) -> str:
    """Text of a structure file: BOM-aware, UTF-8 first, Latin-1 as a last resort; Rejected when binary."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Rejected("parse_error", f"{key}: expected the bytes of a file, got {type(data).__name__}")
    data = bytes(data)
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    if encoding is None and len(data) >= 4 and data[1::2][:64].count(0) > 24 and data[0::2][:64].count(0) == 0:
        encoding = "utf-16-le"  # UTF-16 without a BOM: every second byte of ASCII text is NUL
    if encoding is not None:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise Rejected("binary_file", f"{key}: starts like {encoding} text but is not ({exc.reason})") from None
    else:
        if b"\x00" in data[:8192]:
            raise Rejected("binary_file", f"{key}: the file contains NUL bytes: it is binary, not structure text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    if not text.strip():
        raise Rejected("empty", f"{key}: the file is empty")
    controls = sorted({ch for ch in text[:8192] if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v"})
    if controls:
        raise Rejected("binary_file", f"{key}: the file holds control characters ({', '.join(map(repr, controls[:3]))})"
                                      ": it is binary, not structure text")
    return text


def sniff_format(text: str, *, name: str = "") -> str:
    """'json', 'extxyz', 'cif' or 'poscar', by content (a POSCAR named .cif is still a POSCAR)."""
    head = text.lstrip()[:4096]
    if head[:1] in "{[":
        return "json"
    lines = head.splitlines()
    if len(lines) >= 2 and lines[0].strip().isdigit() and "lattice=" in lines[1].lower():
        return "extxyz"
    if re.search(r"(?im)^\s*data_", head) or "_cell_length_a" in text[:200000]:
        return "cif"
    if name.lower().endswith((".xyz", ".extxyz")):
        return "extxyz"
    return "poscar"


def cif_blocks(text: str) -> list[str]:
    """The text of each ``data_`` block of a CIF (the whole text when it has none)."""
    starts = [m.start() for m in re.finditer(r"(?im)^[ \t]*data_", text)]
    if len(starts) <= 1:
        return [text]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def _number(value: Any) -> float | None:
    """A CIF number ('5.431(2)' -> 5.431), or None."""
    match = _NUMBER.match(str(value)) if value is not None else None
    return float(match.group(1)) if match else None


def _column(data: dict, tag: str) -> list[str]:
    value = data.get(tag)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def check_cell(parameters: tuple[float | None, ...], *, key: str) -> None:
    """Rejected('bad_cell') unless a, b, c (Å) and alpha, beta, gamma (degrees) describe a real cell."""
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    for name, value in zip(names[:3], parameters[:3], strict=True):
        if value is None or not math.isfinite(value) or value <= 0 or value > MAX_CELL_LENGTH:
            raise Rejected("bad_cell", f"{key}: cell length {name} = {value!r} Å; it must be a number above 0 and "
                                       f"at most {MAX_CELL_LENGTH:g} Å")
    for name, value in zip(names[3:], parameters[3:], strict=True):
        if value is None or not math.isfinite(value) or not 0 < value < 180:
            raise Rejected("bad_cell", f"{key}: cell angle {name} = {value!r}°; angles must lie between 0 and 180°")
    ca, cb, cg = (math.cos(math.radians(v)) for v in parameters[3:])
    if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-8:
        angles = ", ".join(f"{v:g}" for v in parameters[3:])
        raise Rejected("bad_cell", f"{key}: cell angles {angles}° cannot close a cell (zero or imaginary volume)")


@functools.lru_cache(maxsize=1)
def _hall_numbers() -> dict[str, int]:
    """Space-group symbol (spaces and underscores removed) or number -> a Hall number of spglib's database."""
    import spglib

    found: dict[str, int] = {}
    for hall in range(1, 531):
        kind = spglib.get_spacegroup_type(hall)
        for name in (kind.international_short, kind.international_full, kind.international, kind.hall_symbol,
                     str(kind.number)):
            found.setdefault(re.sub(r"[\s_]", "", name).lower(), hall)
    return found


def _symmetry_ops(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(rotations (n, 3, 3), translations (n, 3)) of the distinct symmetry operations a CIF block lists or its
    space group implies (spglib's database); the identity alone when it names none that can be read."""
    from pymatgen.core.operations import SymmOp

    for tag in _SYMOP_TAGS:
        strings = sorted({re.sub(r"\s+", "", op).lower().strip("'\"") for op in _column(data, tag)})
        if strings:
            try:
                ops = [SymmOp.from_xyz_str(op) for op in strings]
            except Exception:  # unreadable operations: the parser reports them
                break
            return np.array([op.rotation_matrix for op in ops]), np.array([op.translation_vector for op in ops])
    lower = {k.lower(): v for k, v in data.items()}
    for tag in _GROUP_TAGS:
        value = lower.get(tag)
        if value is None or isinstance(value, list):
            continue
        name = re.sub(r"[\s_'\"]", "", str(value)).lower()
        number = _number(value)
        hall = _hall_numbers().get(str(int(number)) if number is not None and "number" in tag else name)
        if hall is not None:
            import spglib

            found = spglib.get_symmetry_from_database(hall)
            return np.asarray(found["rotations"], dtype=float), np.asarray(found["translations"], dtype=float)
    return np.eye(3)[None], np.zeros((1, 3))


def element_of(symbol: str) -> str | None:
    """The element of a CIF type symbol or label ('Fe3+' -> 'Fe', 'O2-' -> 'O', 'OH' -> 'O', 'D' -> 'H'), or None
    when its letters name no element up to Z=MAX_Z ('Cf', 'Xx': never a one-letter guess such as 'C')."""
    from pymatgen.core.periodic_table import Element

    match = re.match(r"^\s*([A-Za-z])([a-z]?)", symbol)
    if not match:
        return None
    candidate = match.group(1).upper() + match.group(2)
    candidate = _ISOTOPES.get(candidate, candidate)
    if Element.is_valid_symbol(candidate) and Element(candidate).Z <= MAX_Z:
        return candidate
    return None


def precheck_cif(text: str, *, key: str, limits: Limits) -> None:
    """Cheap checks of a one-block CIF before pymatgen expands its symmetry (which is quadratic in atoms)."""
    from pymatgen.io.cif import CifFile

    try:
        blocks = list(CifFile.from_str(text).data.values())
    except Exception as exc:
        raise Rejected("parse_error", f"{key}: not a valid CIF ({describe(exc)})") from None
    if not blocks:
        raise Rejected("empty", f"{key}: the CIF has no data_ block")
    data = blocks[0].data
    if "_cell_length_a" not in data:
        raise Rejected("parse_error", f"{key}: the CIF has no cell (_cell_length_a is missing)")
    check_cell(tuple(_number(data.get(f"_cell_{t}")) for t in
                     ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")), key=key)
    symbols = _column(data, "_atom_site_type_symbol")
    labels = _column(data, "_atom_site_label")
    for k, symbol in enumerate(symbols):
        if symbol not in ("?", ".") and element_of(symbol) is None:
            label = labels[k] if k < len(labels) else f"#{k + 1}"
            raise Rejected("unsupported_element", f"{key}: site {label!r} has type symbol {symbol!r}, which is not "
                                                  f"an element up to Z={MAX_Z}")
    sites = max(len(symbols), len(labels), len(_column(data, "_atom_site_fract_x")))
    if sites == 0:
        raise Rejected("empty", f"{key}: the CIF lists no atom sites")
    rotations, translations = _symmetry_ops(data)
    n_ops = len(rotations)
    least = sites if n_ops <= 1 else math.ceil(sites * n_ops / MAX_STABILIZER)
    if least <= limits.max_sites and n_ops > 1:
        least = _orbit_atoms(data, rotations, translations, stop=limits.max_sites) or least
    if max(least, sites) > limits.max_sites:
        raise Rejected("too_many_atoms", f"{key}: {sites} sites x {n_ops} symmetry operations give at least "
                                         f"{max(least, sites)} atoms in the cell, more than the limit of "
                                         f"{limits.max_sites}")


def _orbit_atoms(data: dict, rotations: np.ndarray, translations: np.ndarray, *, stop: int) -> int | None:
    """Atoms the symmetry operations make of the listed sites (images closer than 1e-3 of the cell merged),
    counted in numpy before any parser expands them; stops counting once past ``stop``. None if unreadable."""
    columns = [[_number(v) for v in _column(data, f"_atom_site_fract_{axis}")] for axis in "xyz"]
    if not columns[0] or len({len(c) for c in columns}) != 1 or any(v is None for c in columns for v in c):
        return None
    coords = np.array(columns, dtype=float).T  # (sites, 3)
    if not np.isfinite(coords).all():
        return None
    total = 0
    for site in coords:
        images = np.mod(rotations @ site + translations, 1.0)
        images = np.round(images * 1000).astype(np.int64) % 1000
        total += len(np.unique(images, axis=0))
        if total > stop:
            break
    return total


def describe(exc: BaseException) -> str:
    """An exception of a parser in words a user can act on (not 'ZeroDivisionError: integer modulo by zero')."""
    text = " ".join(str(exc).split())[:200]
    if isinstance(exc, MemoryError):
        return "it would need more memory than a structure may take (is a cell length or count huge?)"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply to read"
    internal = re.search(r"zip\(\)|unpack|could not convert|invalid literal|out of range|NoneType", text)
    if isinstance(exc, ZeroDivisionError | IndexError | KeyError | StopIteration | EOFError) or (
            isinstance(exc, ValueError | TypeError) and internal):
        return "the file is truncated or malformed: a value or a line the format needs is missing or misplaced"
    if isinstance(exc, UnicodeError):
        return "the text encoding is not readable"
    return text or type(exc).__name__


# ------------------------------------------------------------------------------- pymatgen JSON, safely
def _floats(value: Any, n: int, *, what: str, key: str) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise Rejected("parse_error", f"{key}: {what} must be a list of {n} numbers, got {str(value)[:60]!r}")
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        raise Rejected("parse_error", f"{key}: {what} must be numbers, got {str(value)[:60]!r}") from None
    return numbers


def _species(entry: Any, *, key: str, index: int) -> dict:
    """{symbol or Species: occupancy} of one site's 'species' list (or a plain 'label'/'element' string)."""
    from pymatgen.core.periodic_table import Species

    if isinstance(entry, str):
        entry = [{"element": entry, "occu": 1.0}]
    if not isinstance(entry, list) or not entry:
        raise Rejected("parse_error", f"{key}: site {index} has no species list")
    found: dict = {}
    for item in entry:
        if not isinstance(item, dict) or not isinstance(item.get("element"), str):
            raise Rejected("parse_error", f"{key}: site {index}: a species must be {{\"element\": ..., \"occu\": ...}}")
        element = element_of(item["element"]) if re.fullmatch(r"[A-Z][a-z]?", item["element"]) else None
        if element is None:
            raise Rejected("unsupported_element", f"{key}: site {index}: {item['element'][:20]!r} is not an element "
                                                  f"up to Z={MAX_Z}")
        occu = _number(item.get("occu", 1.0))
        if occu is None or not 0 < occu <= 1:
            raise Rejected("parse_error", f"{key}: site {index}: occupancy {item.get('occu')!r} is not in (0, 1]")
        oxidation = item.get("oxidation_state")
        specie = Species(element, float(oxidation)) if isinstance(oxidation, int | float) and oxidation else element
        found[specie] = found.get(specie, 0.0) + occu
    return found


def structure_as_dict(structure: Structure) -> dict:
    """``structure.as_dict()``, the same dict, made in a fraction of the time: pymatgen's recomputes the lattice's
    parameters and volume for every site (then drops them), about half of what a path of ten frames cost the server
    to put into its answer. Its reader is ``structure_from_plain_dict`` (or pymatgen's ``Structure.from_dict``)."""
    lattice = structure.lattice
    species_dicts: dict = {}

    def species(site) -> list[dict]:
        found = []
        for specie, occu in site.species.items():
            if specie not in species_dicts:
                entry = specie.as_dict()
                del entry["@module"], entry["@class"]
                species_dicts[specie] = entry
            found.append({**species_dicts[specie], "occu": occu})
        return found

    frac = structure.frac_coords.astype(float).tolist()
    cart = structure.cart_coords.astype(float).tolist()
    return {"@module": type(structure).__module__, "@class": type(structure).__name__, "charge": structure.charge,
            "lattice": {"matrix": lattice.matrix.tolist(), "pbc": lattice.pbc, **lattice.params_dict,
                        "volume": lattice.volume},
            "properties": structure.properties,
            "sites": [{"species": species(site), "abc": abc, "properties": site.properties, "label": site.label,
                       "xyz": xyz} for site, abc, xyz in zip(structure, frac, cart, strict=True)]}


def structure_from_plain_dict(data: Any, *, key: str):
    """A pymatgen Structure from ``Structure.as_dict()`` JSON, reading only numbers and element names.

    Site properties and every ``@module``/``@class`` entry are ignored: nothing named in the file is
    imported. Raises Rejected('parse_error' / 'unsupported_element') naming the record and the field.
    """
    from pymatgen.core import Lattice, Structure

    if not isinstance(data, dict):
        raise Rejected("parse_error", f"{key}: expected a structure object, got a JSON {type(data).__name__}")
    lattice = data.get("lattice")
    matrix = lattice.get("matrix") if isinstance(lattice, dict) else lattice
    if not isinstance(matrix, list) or len(matrix) != 3:
        raise Rejected("parse_error", f"{key}: no lattice matrix (expected 'lattice': {{'matrix': 3x3 numbers}})")
    rows = [_floats(row, 3, what="a lattice row", key=key) for row in matrix]
    sites = data.get("sites")
    if not isinstance(sites, list):
        raise Rejected("parse_error", f"{key}: no 'sites' list")
    if not sites:
        raise Rejected("empty", f"{key}: the structure has no sites")
    species, coords, cartesian = [], [], "abc" not in sites[0] if isinstance(sites[0], dict) else False
    for index, site in enumerate(sites):
        if not isinstance(site, dict):
            raise Rejected("parse_error", f"{key}: site {index} is not an object")
        species.append(_species(site.get("species", site.get("label")), key=key, index=index))
        coords.append(_floats(site.get("xyz" if cartesian else "abc"), 3,
                              what=f"site {index} {'xyz' if cartesian else 'abc'}", key=key))
    matrix_array = np.array(rows)
    if not np.isfinite(matrix_array).all() or not np.isfinite(np.array(coords)).all():
        raise Rejected("non_finite", f"{key}: lattice or coordinates contain NaN/inf")
    return Structure(Lattice(matrix_array), species, coords, coords_are_cartesian=cartesian)


# ----------------------------------------------------------------------------------------- the parsers
def parse_cif(text: str, *, key: str, limits: Limits | None = None) -> Structure:
    """The first block of a CIF text (after ``precheck_cif`` when ``limits`` are given); ambiguous labels
    and disorder become rejections with their reason."""
    from pymatgen.io.cif import CifParser

    if limits is not None:
        precheck_cif(text, key=key, limits=limits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser(io.StringIO(text)).parse_structures(primitive=False, on_error="raise")
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            message = describe(exc)
            if "ccupancy" in message:
                raise Rejected("partial_occupancy", f"{key}: {message}") from None
            raise Rejected("parse_error", f"{key}: not a valid CIF ({message})") from None
    labels = sorted({str(w.message) for w in caught if " parsed as " in str(w.message)})
    if labels:
        raise Rejected("ambiguous_site_label", f"{key}: {'; '.join(labels[:3])}")
    if not structures:
        raise Rejected("empty", f"{key}: no structure in the CIF")
    return structures[0]


def parse_poscar(text: str, *, key: str) -> Structure:
    """A POSCAR/CONTCAR text that names its elements."""
    from pymatgen.io.vasp import Poscar

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = Poscar.from_str(text).structure
        except Exception as exc:
            raise Rejected("parse_error", f"{key}: not a CIF, extended XYZ or pymatgen JSON file, and not a valid "
                                          f"POSCAR either ({describe(exc)})") from None
    if any("cannot be determined" in str(w.message) or "false names" in str(w.message) for w in caught):
        raise Rejected("parse_error", f"{key}: the POSCAR does not name its elements (no species line)")
    return structure


def parse_extxyz(text: str, *, key: str, index: int = 0) -> Structure:
    """Frame ``index`` of an extended XYZ text; Rejected('not_periodic') for a molecule."""
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        atoms = ase.io.read(io.StringIO(text), format="extxyz", index=index)
    except Exception as exc:
        raise Rejected("parse_error", f"{key}: not a valid extended XYZ file ({describe(exc)})") from None
    if atoms.cell.rank < 3 or not atoms.pbc.all():
        raise Rejected("not_periodic", f"{key}: no 3D periodic cell (no Lattice= on the comment line, pbc="
                                       f"{atoms.pbc.tolist()}): a molecule, not a crystal")
    return AseAtomsAdaptor.get_structure(atoms)


def parse_json(text: str, *, key: str) -> Structure:
    """A pymatgen Structure JSON object (or the first of a list, or {"structure": {...}}), read safely."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Rejected("parse_error", f"{key}: not valid JSON ({describe(exc)})") from None
    if isinstance(data, list):
        if not data:
            raise Rejected("empty", f"{key}: the JSON list is empty")
        if not isinstance(data[0], dict):
            raise Rejected("parse_error", f"{key}: expected a structure object, got a JSON list of "
                                          f"{type(data[0]).__name__}")
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("structure"), dict):
        data = data["structure"]
    return structure_from_plain_dict(data, key=key)


def count_structures(text: str, fmt: str) -> int:
    """How many structures a file of format ``fmt`` holds (CIF blocks, JSON list entries, XYZ frames)."""
    if fmt == "cif":
        return len(cif_blocks(text))
    if fmt == "json":
        stripped = text.lstrip()
        if not stripped.startswith("["):
            return 1
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):
            return 1
        return len(data) if isinstance(data, list) else 1
    if fmt == "extxyz":
        lines, count, k = text.splitlines(), 0, 0
        while k < len(lines) and lines[k].strip().isdigit():
            count, k = count + 1, k + int(lines[k].strip()) + 2
        return max(count, 1)
    return 1


def parse_text(text: str, *, fmt: str, key: str, limits: Limits | None = None) -> Structure:
    """The first structure of a text in format ``fmt`` ('cif', 'poscar', 'extxyz', 'json')."""
    if fmt == "cif":
        return parse_cif(cif_blocks(text)[0], key=key, limits=limits)
    if fmt == "poscar":
        return parse_poscar(text, key=key)
    if fmt == "extxyz":
        return parse_extxyz(text, key=key)
    if fmt == "json":
        return parse_json(text, key=key)
    raise ValueError(f"unknown structure format {fmt!r}; known: {', '.join(FORMAT_LABELS)}")


def parse_item(item: RawItem, limits: Limits | None = None) -> Structure:
    """The pymatgen Structure of a RawItem; Rejected with its reason otherwise."""
    from pymatgen.core import Lattice, Structure

    kind, payload, key = item.kind, item.payload, item.key
    if kind == "bytes":
        payload = decode_text(payload, key=key)
        kind = sniff_format(payload, name=key)
    if kind in ("cif", "poscar", "extxyz", "json"):
        return parse_text(payload, fmt=kind, key=key, limits=limits)
    if kind == "structure":
        return payload
    if kind == "pmg_dict":
        return structure_from_plain_dict(payload, key=key)
    if kind == "ase_dict":
        try:
            return Structure(Lattice(payload["cell"]), payload["numbers"], payload["positions"],
                             coords_are_cartesian=True)
        except Exception as exc:
            raise Rejected("parse_error", f"{key}: not a valid ASE atoms record ({describe(exc)})") from None
    raise ValueError(f"{key}: unknown payload kind {item.kind!r}")
