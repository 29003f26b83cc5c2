"""The hostile-input corpus: structure files a user (or an attacker) might upload or ingest, with the verdict
each must get from every entry point.

The small files are committed in tests/data/hostile/ (made by its ``make_corpus.py``); the three big ones
are made at test time by ``generated_files`` and never committed. ``EXPECTED`` is the manifest: file name ->
("rejected", reason class of ``explorer.datasets.rejections.REASONS``) or ("accepted", reduced formula).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

HOSTILE_DIR = Path(__file__).resolve().parent / "data" / "hostile"

EXPECTED: dict[str, tuple[str, str]] = {
    # ---- rejected: CIF
    "truncated_in_atom_loop.cif": ("rejected", "parse_error"),
    "truncated_after_cell.cif": ("rejected", "empty"),
    "cell_length_1e9.cif": ("rejected", "bad_cell"),
    "cell_length_negative.cif": ("rejected", "bad_cell"),
    "cell_angle_alpha_200.cif": ("rejected", "bad_cell"),
    "cell_angles_60_60_150.cif": ("rejected", "bad_cell"),
    "cell_length_zero.cif": ("rejected", "bad_cell"),
    "element_Xx.cif": ("rejected", "unsupported_element"),
    "element_Cf_Z98.cif": ("rejected", "unsupported_element"),
    "atoms_0.001A_apart.cif": ("rejected", "overlapping_atoms"),
    "partial_occupancy_0.5.cif": ("rejected", "partial_occupancy"),
    "label_Wat_no_type_symbol.cif": ("rejected", "ambiguous_site_label"),
    "cell_without_atoms.cif": ("rejected", "empty"),
    "fm3m_120_general_sites.cif": ("rejected", "too_many_atoms"),
    # ---- rejected: not structure text at all
    "empty.cif": ("rejected", "empty"),
    "whitespace_only.cif": ("rejected", "empty"),
    "binary_nul_bytes.cif": ("rejected", "binary_file"),
    "control_characters.cif": ("rejected", "binary_file"),
    "notes.txt": ("rejected", "parse_error"),
    "html_page.cif": ("rejected", "parse_error"),
    # ---- rejected: POSCAR
    "nan_coordinates.vasp": ("rejected", "non_finite"),
    "coplanar_lattice.vasp": ("rejected", "degenerate_lattice"),
    "vasp4_no_element_names.vasp": ("rejected", "parse_error"),
    "scale_zero.vasp": ("rejected", "degenerate_lattice"),
    "poscar_600_atoms.vasp": ("rejected", "too_many_atoms"),
    # ---- rejected: extended XYZ
    "molecule_no_lattice.xyz": ("rejected", "not_periodic"),
    "atom_count_larger_than_lines.xyz": ("rejected", "parse_error"),
    # ---- rejected: JSON
    "not_a_structure.json": ("rejected", "parse_error"),
    "nested_9000_levels.json": ("rejected", "parse_error"),
    "species_Zz.json": ("rejected", "unsupported_element"),
    "species_Cf_Z98.json": ("rejected", "unsupported_element"),
    "non_numeric_coords.json": ("rejected", "parse_error"),
    # ---- rejected: generated at test time (too big to commit)
    "symmetry_bomb_fm3m_5000_sites.cif": ("rejected", "too_many_atoms"),
    "p1_10368_atoms.cif": ("rejected", "too_many_atoms"),
    "nested_100000_levels.json": ("rejected", "parse_error"),
    # ---- accepted
    "nacl_utf8_bom.cif": ("accepted", "NaCl"),
    "nacl_crlf.cif": ("accepted", "NaCl"),
    "nacl_utf16_bom.cif": ("accepted", "NaCl"),
    "nacl_comments_and_tabs.cif": ("accepted", "NaCl"),
    "srtio3_poscar_named.cif": ("accepted", "SrTiO3"),
    "po_one_atom.cif": ("accepted", "Po"),
    "si_crystal.extxyz": ("accepted", "Si"),
    "nacl_pymatgen.json": ("accepted", "NaCl"),
    "module_this_in_properties.json": ("accepted", "NaCl"),
    "CONTCAR": ("accepted", "Si"),
    "srtio3.cif": ("accepted", "SrTiO3"),
    "graphite.vasp": ("accepted", "C"),
    "si_p1_8_atoms.cif": ("accepted", "Si"),
    "three_blocks_nacl_si_srtio3.cif": ("accepted", "NaCl"),
}

MULTI_BLOCK = {"three_blocks_nacl_si_srtio3.cif": {"NaCl": "NaCl", "Si": "Si", "SrTiO3": "SrTiO3"}}
"""Files with several structures: ``data ingest`` reads every block (keyed ``name#block``, block -> formula)."""


def general_sites_cif(count: int, *, seed: int) -> str:
    """A CIF in Fm-3m (192 operations, named by the group only) with ``count`` carbon sites at seeded random
    general positions: every site makes 192 atoms, so 5,000 sites would make 960,000."""
    rng = np.random.default_rng(seed)
    coords = 0.05 + 0.4 * rng.random((count, 3))
    rows = [f" C{k}  C  {x:.7f}  {y:.7f}  {z:.7f}  1" for k, (x, y, z) in enumerate(coords)]
    return "\n".join([f"data_general_sites_{count}", "_symmetry_space_group_name_H-M 'F m -3 m'",
                      "_symmetry_Int_Tables_number 225", *(f"_cell_length_{t} 30.0" for t in "abc"),
                      *(f"_cell_angle_{t} 90" for t in ("alpha", "beta", "gamma")), "loop_",
                      *(f" _atom_site_{c}" for c in ("label", "type_symbol", "fract_x", "fract_y", "fract_z",
                                                     "occupancy")), *rows]) + "\n"


def p1_grid_cif(shape: tuple[int, int, int] = (24, 24, 18), spacing: float = 2.0) -> str:
    """A P1 CIF with one carbon atom on every point of a ``shape`` grid ``spacing`` Å apart (10,368 atoms)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1).reshape(-1, 3)
    rows = [f"C{k} C {x:.5f} {y:.5f} {z:.5f}" for k, (x, y, z) in enumerate(grid)]
    return "\n".join([f"data_p1_{len(grid)}", "_symmetry_space_group_name_H-M 'P 1'",
                      *(f"_cell_length_{t} {n * spacing:g}" for t, n in zip("abc", shape, strict=True)),
                      *(f"_cell_angle_{t} 90" for t in ("alpha", "beta", "gamma")), "loop_",
                      *(f" _atom_site_{c}" for c in ("label", "type_symbol", "fract_x", "fract_y", "fract_z")),
                      *rows]) + "\n"


def nested_json(levels: int) -> str:
    """``[[[...]]]``, ``levels`` deep: valid JSON that a recursive decoder cannot read."""
    return "[" * levels + "]" * levels


GENERATED: dict[str, Callable[[], str]] = {
    "symmetry_bomb_fm3m_5000_sites.cif": lambda: general_sites_cif(5000, seed=5000),
    "p1_10368_atoms.cif": p1_grid_cif,
    "nested_100000_levels.json": lambda: nested_json(100_000),
}
COMMITTED = [name for name in EXPECTED if name not in GENERATED]


def generated_files(folder: Path) -> list[Path]:
    """Write the big corpus files into ``folder`` (they are never committed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in GENERATED.items():
        path = folder / name
        path.write_text(make())
        paths.append(path)
    return paths


def corpus_files(tmp_dir: Path) -> list[Path]:
    """Every corpus file: the committed ones of tests/data/hostile plus the big ones written into ``tmp_dir``."""
    return [HOSTILE_DIR / name for name in COMMITTED] + generated_files(Path(tmp_dir))


def read_in_worker(item, limits) -> tuple[str, bool]:
    """(reduced formula, whether module 'this' is imported) after ``read_file_structure`` in a worker process."""
    import sys

    from explorer.datasets.records import read_file_structure

    structure, _, _ = read_file_structure(item, limits)
    return structure.composition.reduced_formula, "this" in sys.modules
