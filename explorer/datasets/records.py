"""The record schema: one clean row per known crystal, and the checks that decide what is kept.

A source yields ``RawItem``s (a key and a payload still to be parsed, plus its property columns);
``make_record`` parses, checks and canonicalises one of them into a flat dict of the schema below,
or raises ``Rejected`` with a reason class and a message that quotes the record.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure

from explorer.datasets.canonical import canonicalize, crystal_system

SCHEMA_VERSION = 1
MAX_Z = 94  # plutonium: heavier elements are not in any default source and are rejected

# Rejection classes, each with the sentence shown to users.
REASONS = {
    "parse_error": "the record could not be parsed as a crystal structure",
    "empty": "the record holds no atoms",
    "binary_file": "the file is binary, not a text structure format",
    "partial_occupancy": "some sites are partially occupied (disordered); only ordered crystals are kept",
    "ambiguous_site_label": "a site label does not name one element (e.g. 'Wat', 'OH' with implicit hydrogen)",
    "unsupported_element": f"an element is not a real element up to Z={MAX_Z}",
    "too_many_atoms": "the cell has more sites than the limit (settings.max_sites)",
    "non_finite": "the lattice or coordinates contain NaN or infinity",
    "degenerate_lattice": "the lattice vectors are (nearly) coplanar: zero cell volume",
    "overlapping_atoms": "two atoms are closer than settings.min_distance",
    "not_periodic": "the structure has no periodic cell (a molecule)",
}


class Rejected(Exception):
    """A record that is not kept: ``reason`` is a key of REASONS, ``detail`` quotes the offending value."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep (reason, detail) when sent between build processes
        return (Rejected, (self.reason, self.detail))


@dataclass(frozen=True)
class RawItem:
    """One record as a source yields it, before parsing.

    kind: 'cif' | 'poscar' | 'pmg_dict' | 'structure' | 'ase_dict' | 'bytes' (file content of unknown kind).
    """

    key: str
    kind: str
    payload: Any
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """The checks of ``make_record`` (copied from Settings so that worker processes get plain data)."""

    max_sites: int = 500
    min_distance: float = 0.5
    symprec: float = 0.1
    angle_tolerance: float = 5.0


def parse_cif(text: str, *, key: str) -> Structure:
    """First structure of a CIF text, rejecting ambiguous labels and disorder with a clear reason."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser(io.StringIO(text)).parse_structures(primitive=False, on_error="raise")
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            message = str(exc).replace("\n", " ")
            if "Occupancy" in message or "occupancy" in message:
                raise Rejected("partial_occupancy", f"{key}: {message}") from None
            raise Rejected("parse_error", f"{key}: not a valid CIF ({type(exc).__name__}: {message})") from None
    labels = sorted({str(w.message) for w in caught if " parsed as " in str(w.message)})
    if labels:
        raise Rejected("ambiguous_site_label", f"{key}: {'; '.join(labels[:3])}")
    if not structures:
        raise Rejected("empty", f"{key}: no structure in the CIF")
    return structures[0]


def parse_item(item: RawItem) -> Structure:
    """The pymatgen Structure of a RawItem; Rejected('parse_error'/'binary_file'/'empty', ...) otherwise."""
    kind, payload, key = item.kind, item.payload, item.key
    if kind == "bytes":
        kind, payload = _sniff(payload, key)
    try:
        if kind == "cif":
            return parse_cif(payload, key=key)
        if kind == "structure":
            return payload
        if kind == "pmg_dict":
            return Structure.from_dict(payload)
        if kind == "poscar":
            from pymatgen.io.vasp import Poscar

            return Poscar.from_str(payload).structure
        if kind == "ase_dict":
            return Structure(Lattice(payload["cell"]), payload["numbers"], payload["positions"],
                             coords_are_cartesian=True)
    except Rejected:
        raise
    except Exception as exc:
        what = {"pmg_dict": "pymatgen structure dict", "poscar": "POSCAR", "ase_dict": "ASE atoms record"}[kind]
        message = f"{key}: not a valid {what} ({type(exc).__name__}: {exc})".replace("\n", " ")
        raise Rejected("parse_error", message) from None
    raise ValueError(f"{key}: unknown payload kind {item.kind!r}")


def _sniff(content: bytes, key: str) -> tuple[str, str]:
    """Guess the format of raw file bytes by content: CIF or POSCAR."""
    if not content.strip():
        raise Rejected("empty", f"{key}: the file is empty")
    if b"\x00" in content[:8192]:
        raise Rejected("binary_file", f"{key}: the file contains NUL bytes")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = content.decode("latin-1")
    if "_cell_length_a" in text or text.lstrip().startswith("data_"):
        return "cif", text
    return "poscar", text


def check_structure(structure: Structure, *, key: str, limits: Limits) -> None:
    """Raise Rejected naming the first problem of a parsed structure (cheap checks first)."""
    if len(structure) == 0:
        raise Rejected("empty", f"{key}: the structure has no sites")
    if len(structure) > limits.max_sites:
        raise Rejected("too_many_atoms", f"{key}: {len(structure)} sites > max_sites={limits.max_sites}")
    matrix, frac = structure.lattice.matrix, structure.frac_coords
    if not (np.isfinite(matrix).all() and np.isfinite(frac).all()):
        raise Rejected("non_finite", f"{key}: lattice or coordinates contain NaN/inf")
    volume = abs(float(np.linalg.det(matrix)))
    if volume < 1e-3 * len(structure):
        raise Rejected("degenerate_lattice", f"{key}: cell volume {volume:.3g} Å^3 for {len(structure)} sites")
    if not structure.is_ordered:
        site = next(s for s in structure if not s.is_ordered)
        raise Rejected("partial_occupancy", f"{key}: site {site.species} at {np.round(site.frac_coords, 4).tolist()}")
    for element in structure.composition.elements:
        z = getattr(element, "Z", 0)
        if not 1 <= z <= MAX_Z:
            raise Rejected("unsupported_element", f"{key}: element {element} (Z={z})")
    centres, neighbours, _, dists = structure.get_neighbor_list(limits.min_distance)
    if len(dists):
        i = int(np.argmin(dists))
        first, second = int(centres[i]), int(neighbours[i])
        pair = f"{structure[first].specie}-{structure[second].specie}"
        raise Rejected("overlapping_atoms", f"{key}: {pair} distance {dists[i]:.3f} Å (sites {first} and {second}) "
                                            f"< {limits.min_distance} Å")


def make_record(item: RawItem, *, source: str, origin: str, limits: Limits) -> dict[str, Any]:
    """Parse, check and canonicalise one item into a flat record dict (see ``RECORD_COLUMNS``).

    pymatgen's warnings (e.g. missing electronegativity of noble gases) are silenced here; the ones
    that matter (ambiguous CIF labels) become rejections in ``parse_cif``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _make_record(item, source=source, origin=origin, limits=limits)


def _make_record(item: RawItem, *, source: str, origin: str, limits: Limits) -> dict[str, Any]:
    structure = parse_item(item)
    check_structure(structure, key=item.key, limits=limits)
    # Isotopes such as D are stored as their element so that the model sees one species per Z.
    original_species = [site.specie.symbol if site.specie.Z != 1 else "H" for site in structure]
    try:
        cell = canonicalize(structure, symprec=limits.symprec, angle_tolerance=limits.angle_tolerance)
    except Exception as exc:  # spglib/Niggli failures on pathological cells
        raise Rejected("degenerate_lattice", f"{item.key}: canonicalisation failed: {exc}") from None
    canonical = cell.to_structure()
    composition = canonical.composition
    a, b, c, alpha, beta, gamma = Lattice(cell.lattice).parameters
    record = {
        "id": f"{source}:{item.key}",
        "source": source,
        "origin": origin,
        "source_key": item.key,
        "formula": composition.formula,
        "reduced_formula": composition.reduced_formula,
        "elements": sorted(el.symbol for el in composition.elements),
        "n_elements": len(composition.elements),
        "nsites": len(canonical),
        "spacegroup_symbol": cell.spacegroup_symbol,
        "spacegroup_number": cell.spacegroup_number,
        "crystal_system": crystal_system(cell.spacegroup_number),
        "a": a, "b": b, "c": c, "alpha": alpha, "beta": beta, "gamma": gamma,
        "volume_per_atom": canonical.volume / len(canonical),
        "density": float(canonical.density),
        "lattice": cell.lattice.ravel().tolist(),
        "numbers": cell.numbers.tolist(),
        "frac_coords": cell.frac_coords.ravel().tolist(),
        "original_lattice": structure.lattice.matrix.ravel().tolist(),
        "original_species": original_species,
        "original_frac_coords": structure.frac_coords.ravel().tolist(),
    }
    record.update({name: _clean(value) for name, value in item.properties.items()})
    return record


def _clean(value: Any) -> Any:
    """Property values as plain JSON-able scalars (NaN for missing numbers)."""
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return float("nan")
    return value


RECORD_COLUMNS = (
    "id", "source", "origin", "source_key", "formula", "reduced_formula", "elements", "n_elements", "nsites",
    "spacegroup_symbol", "spacegroup_number", "crystal_system", "a", "b", "c", "alpha", "beta", "gamma",
    "volume_per_atom", "density", "lattice", "numbers", "frac_coords",
    "original_lattice", "original_species", "original_frac_coords",
)


def canonical_structure(row: Any) -> Structure:
    """The canonical cell of a table row (a pandas Series or dict) as a pymatgen Structure."""
    return Structure(Lattice(np.reshape(row["lattice"], (3, 3))), list(row["numbers"]),
                     np.reshape(row["frac_coords"], (-1, 3)))


def original_structure(row: Any) -> Structure:
    """The structure of a table row as it was read (before reduction)."""
    return Structure(Lattice(np.reshape(row["original_lattice"], (3, 3))), list(row["original_species"]),
                     np.reshape(row["original_frac_coords"], (-1, 3)))
