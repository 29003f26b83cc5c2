"""The record schema: one clean row per known crystal, and the checks that decide what is kept.

A source yields ``RawItem``s (a key and a payload still to be parsed, plus its property columns);
``make_record`` parses, checks and canonicalises one of them into a flat dict of the schema below,
or raises ``Rejected`` with a reason class and a message that quotes the record.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure

from explorer.datasets.canonical import canonicalize, crystal_system
from explorer.datasets.formats import check_cell, count_structures, decode_text, parse_item, sniff_format
from explorer.datasets.rejections import MAX_Z, REASONS, Limits, Rejected

__all__ = ["MAX_Z", "REASONS", "RECORD_COLUMNS", "Limits", "RawItem", "Rejected", "canonical_structure",
           "check_structure", "make_record", "original_structure", "read_file_structure",
           "read_structure"]

SCHEMA_VERSION = 2  # 2: one parser per format for every entry point (cell, element and size checks first)


@dataclass(frozen=True)
class RawItem:
    """One record as a source yields it, before parsing.

    kind: 'cif' | 'poscar' | 'pmg_dict' | 'structure' | 'ase_dict' | 'bytes' (file content of unknown kind).
    """

    key: str
    kind: str
    payload: Any
    properties: dict[str, Any] = field(default_factory=dict)


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
    check_cell(tuple(float(v) for v in structure.lattice.parameters), key=key)
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


def read_structure(item: RawItem, limits: Limits) -> Structure:
    """Parse and check one item: the verdict of every entry point (upload, ingest, the CLI).

    Returns the structure as read; raises Rejected with the reason and a message naming the record.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = parse_item(item, limits)
        check_structure(structure, key=item.key, limits=limits)
    return structure


def read_file_structure(item: RawItem, limits: Limits) -> tuple[Structure, str, int]:
    """The first structure of a file's bytes (``item.kind == 'bytes'``) with ``read_structure``'s verdict, the
    format it was read as ('cif', 'poscar', 'extxyz', 'json') and how many structures the file holds."""
    text = decode_text(item.payload, key=item.key)
    fmt = sniff_format(text, name=item.key)
    structure = read_structure(RawItem(key=item.key, kind=fmt, payload=text), limits)
    return structure, fmt, count_structures(text, fmt)


def _make_record(item: RawItem, *, source: str, origin: str, limits: Limits) -> dict[str, Any]:
    structure = read_structure(item, limits)
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
