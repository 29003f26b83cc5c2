"""Regenerate the hostile-input corpus of this folder: `.venv/bin/python tests/data/hostile/make_corpus.py`.

Every committed file is written here, deterministically (no random numbers without a seed, no dates), so a
reader sees how each one was made: valid structures with pymatgen (CifWriter, Poscar, Structure.as_dict)
or ASE, broken ones by hand. The expected verdict of each file is ``EXPECTED`` in tests/hostile_corpus.py;
the three big files (symmetry bomb, 10,368-atom P1 CIF, 100,000-level JSON) are not committed but made at
test time by ``hostile_corpus.generated_files``.
"""

from __future__ import annotations

import codecs
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for hostile_corpus
from conftest import graphite, nacl, silicon, srtio3  # noqa: E402  (the tests' tiny crystals)
from hostile_corpus import COMMITTED, EXPECTED, general_sites_cif, nested_json  # noqa: E402

MAX_FILE_BYTES = 20_000


def nacl_cif() -> str:
    """NaCl as pymatgen writes it: P1, 8 sites, one atom per loop row."""
    return str(CifWriter(nacl()))


def hand_cif(cell: tuple, rows: list[str], *, name: str = "hostile", group: str = "P 1",
             columns: tuple[str, ...] = ("label", "type_symbol", "fract_x", "fract_y", "fract_z", "occupancy")) -> str:
    """A small CIF written by hand: cell (a, b, c, alpha, beta, gamma) as given (any text), one loop of sites."""
    a, b, c, alpha, beta, gamma = cell
    lines = [f"data_{name}", f"_symmetry_space_group_name_H-M '{group}'",
             f"_cell_length_a {a}", f"_cell_length_b {b}", f"_cell_length_c {c}",
             f"_cell_angle_alpha {alpha}", f"_cell_angle_beta {beta}", f"_cell_angle_gamma {gamma}"]
    if rows:
        lines += ["loop_", *(f" _atom_site_{column}" for column in columns), *rows]
    return "\n".join(lines) + "\n"


NACL_ROWS = ["Na1 Na 0 0 0 1", "Cl1 Cl 0.5 0.5 0.5 1"]


def fm3m(cell_a: float, rows: list[str], *, name: str) -> str:
    """NaCl-style Fm-3m CIF: the group named, the 192 operations left for the parser to generate."""
    return hand_cif((cell_a, cell_a, cell_a, 90, 90, 90), rows, name=name, group="F m -3 m")


def pmg_dict(structure: Structure) -> dict:
    return json.loads(json.dumps(structure.as_dict()))


def dumps(data: object) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


# ------------------------------------------------------------------------------------------ rejected files
def truncated_atom_loop() -> str:
    text = nacl_cif()
    return text[:text.index("  Cl  Cl4") + len("  Cl  Cl4  1  0.5")]  # cut in the middle of an atom row


def truncated_after_cell() -> str:
    text = nacl_cif()
    return text[:text.index("_symmetry_Int_Tables_number")]  # the cell, then nothing


def cif_with_cell(a="5.64", b="5.64", c="5.64", alpha="90", beta="90", gamma="90", *, name: str) -> str:
    return hand_cif((a, b, c, alpha, beta, gamma), NACL_ROWS, name=name, group="F m -3 m")


def overlapping_atoms() -> str:
    # Na and Cl 0.001 Å apart (0.0002 of a 5 Å cell), in P1 so that no symmetry merges them.
    return hand_cif((5, 5, 5, 90, 90, 90), ["Na1 Na 0 0 0 1", "Cl1 Cl 0.0002 0 0 1"], name="overlap")


def partial_occupancy() -> str:
    # CsCl-type cell in P1 (a group named without its operations costs pymatgen a second to expand)
    return hand_cif((3.4, 3.4, 3.4, 90, 90, 90), ["Na1 Na 0 0 0 0.5", "Cl1 Cl 0.5 0.5 0.5 1"], name="half_sodium")


def label_without_type_symbol() -> str:
    # a water oxygen labelled 'Wat' with no _atom_site_type_symbol: which element is it?
    return hand_cif((6, 6, 6, 90, 90, 90), ["Wat1 0 0 0", "Na1 0.5 0.5 0.5"], name="water",
                    columns=("label", "fract_x", "fract_y", "fract_z"))


def cell_without_atoms() -> str:
    return hand_cif((5.64, 5.64, 5.64, 90, 90, 90), [], name="no_atoms")


def binary_with_nul_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def control_characters() -> bytes:
    return (b"data_x\n_cell_length_a 5.64\x1b[31m\n_cell_length_b 5.64\x07\x08\n_cell_length_c 5.64\n"
            b"\x7f\x01\x02 not text\n")


NOTES = """Meeting notes, Tuesday

We looked at the rock-salt samples again. The lattice constant is about
5.64 angstrom, the density matches. Next step: ask for the CIF files
and put them in the explorer.
"""

HTML = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>404 Not Found</title></head>
<body>
<h1>Not Found</h1>
<p>The requested URL /structures/NaCl.cif was not found on this server.</p>
<script>document.title = "cell_length";</script>
</body>
</html>
"""


def poscar(lattice: list[str], species: str | None, counts: str, coords: list[str], *, title: str,
           scale: str = "1.0") -> str:
    lines = [title, scale, *lattice, *([species] if species else []), counts, "Direct", *coords]
    return "\n".join(lines) + "\n"


CUBIC = ["4.0 0.0 0.0", "0.0 4.0 0.0", "0.0 0.0 4.0"]


def poscar_600_atoms() -> str:
    grid = np.stack(np.meshgrid(*[np.arange(n) / n for n in (10, 10, 6)], indexing="ij"), -1).reshape(-1, 3)
    return poscar(["30.0 0.0 0.0", "0.0 30.0 0.0", "0.0 0.0 18.0"], "Si", str(len(grid)),
                  [f"{x:.4f} {y:.4f} {z:.4f}" for x, y, z in grid], title="600 Si atoms on a 3 Å grid")


MOLECULE_XYZ = ("3\nwater molecule (no cell on this comment line)\n"
                "O 0.000 0.000 0.000\nH 0.757 0.586 0.000\nH -0.757 0.586 0.000\n")

MALFORMED_XYZ = ('10\nLattice="5.64 0.0 0.0 0.0 5.64 0.0 0.0 0.0 5.64" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                 "Na 0.00 0.00 0.00\nCl 2.82 2.82 2.82\n")


def species_zz() -> str:
    data = pmg_dict(nacl())
    data["sites"][0]["species"] = [{"element": "Zz", "occu": 1}]
    data["sites"][0]["label"] = "Zz"
    return dumps(data)


def californium_json() -> str:
    data = pmg_dict(nacl())
    for site in data["sites"][:4]:  # the four Na sites become Cf (Z=98, above the limit of Z=94)
        site["species"] = [{"element": "Cf", "occu": 1}]
        site["label"] = "Cf"
    return dumps(data)


def non_numeric_coords() -> str:
    data = pmg_dict(nacl())
    data["sites"][1]["abc"] = ["half", "half", "zero"]
    return dumps(data)


# ------------------------------------------------------------------------------------------ accepted files
def comments_and_tabs() -> str:
    return ("# NaCl written by hand\n# with comments and tabs\n\ndata_NaCl_tabs\t# rock salt\n"
            "_symmetry_space_group_name_H-M\t'F m -3 m'\t# no operations listed\n"
            "_cell_length_a\t5.64(1)\n_cell_length_b\t5.64(1)\n_cell_length_c\t5.64(1)\n"
            "_cell_angle_alpha\t90\n_cell_angle_beta\t90\n_cell_angle_gamma\t90\n"
            "# the two sites of the asymmetric unit\nloop_\n\t_atom_site_label\n\t_atom_site_type_symbol\n"
            "\t_atom_site_fract_x\n\t_atom_site_fract_y\n\t_atom_site_fract_z\n"
            "\tNa1\tNa+\t0.0\t0.0\t0.0\t# sodium\n\tCl1\tCl-\t0.5\t0.5\t0.5\t# chlorine\n")


def polonium() -> str:
    return hand_cif((3.359, 3.359, 3.359, 90, 90, 90), ["Po1 Po 0 0 0 1"], name="Po_simple_cubic")


def extxyz_crystal(structure: Structure) -> str:
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    handle = io.StringIO()
    ase.io.write(handle, AseAtomsAdaptor.get_atoms(structure), format="extxyz")
    return handle.getvalue()


def module_this_in_properties() -> str:
    data = pmg_dict(nacl())
    trap = {"@module": "this", "@class": "Nothing"}  # monty's decoder would `import this` (and print the Zen)
    for site in data["sites"]:
        site["properties"] = {"magmom": trap}
    data["properties"] = {"note": trap}
    return dumps(data)


def three_blocks() -> str:
    return "".join(str(CifWriter(s)) for s in (nacl(), silicon(), srtio3()))


# ------------------------------------------------------------------------------------------------ the files
FILES: dict[str, Callable[[], str | bytes]] = {
    # rejected
    "truncated_in_atom_loop.cif": truncated_atom_loop,
    "truncated_after_cell.cif": truncated_after_cell,
    "cell_length_1e9.cif": lambda: cif_with_cell(a="1e9", name="huge_cell"),
    "cell_length_negative.cif": lambda: cif_with_cell(b="-5.64", name="negative_cell"),
    "cell_angle_alpha_200.cif": lambda: cif_with_cell(alpha="200", name="angle_200"),
    "cell_angles_60_60_150.cif": lambda: cif_with_cell(alpha="60", beta="60", gamma="150", name="open_cell"),
    "cell_length_zero.cif": lambda: cif_with_cell(c="0", name="flat_cell"),
    "element_Xx.cif": lambda: fm3m(5.64, ["Xx1 Xx 0 0 0 1", "Cl1 Cl 0.5 0.5 0.5 1"], name="unknown_element"),
    "element_Cf_Z98.cif": lambda: hand_cif((3.9, 3.9, 3.9, 90, 90, 90), ["Cf1 Cf 0 0 0 1", "Cl1 Cl 0.5 0.5 0.5 1"],
                                           name="californium"),
    "atoms_0.001A_apart.cif": overlapping_atoms,
    "partial_occupancy_0.5.cif": partial_occupancy,
    "label_Wat_no_type_symbol.cif": label_without_type_symbol,
    "cell_without_atoms.cif": cell_without_atoms,
    "empty.cif": lambda: b"",
    "whitespace_only.cif": lambda: " \n\t\n   \r\n\n",
    "binary_nul_bytes.cif": binary_with_nul_bytes,
    "control_characters.cif": control_characters,
    "notes.txt": lambda: NOTES,
    "html_page.cif": lambda: HTML,
    "nan_coordinates.vasp": lambda: poscar(CUBIC, "Na Cl", "1 1", ["0 0 0", "nan 0.5 0.5"], title="NaCl with NaN"),
    "coplanar_lattice.vasp": lambda: poscar(["4.0 0.0 0.0", "0.0 4.0 0.0", "4.0 4.0 0.0"], "Na Cl", "1 1",
                                            ["0 0 0", "0.5 0.5 0.5"], title="NaCl, third vector in the ab plane"),
    "vasp4_no_element_names.vasp": lambda: poscar(CUBIC, None, "1 1", ["0 0 0", "0.5 0.5 0.5"],
                                                  title="old VASP 4 file without a species line"),
    "scale_zero.vasp": lambda: poscar(CUBIC, "Na Cl", "1 1", ["0 0 0", "0.5 0.5 0.5"], title="NaCl scaled by 0",
                                      scale="0.0"),
    "poscar_600_atoms.vasp": poscar_600_atoms,
    "molecule_no_lattice.xyz": lambda: MOLECULE_XYZ,
    "atom_count_larger_than_lines.xyz": lambda: MALFORMED_XYZ,
    "not_a_structure.json": lambda: '{"a": 1}\n',
    "nested_9000_levels.json": lambda: nested_json(9000),
    "species_Zz.json": species_zz,
    "species_Cf_Z98.json": californium_json,
    "non_numeric_coords.json": non_numeric_coords,
    "fm3m_120_general_sites.cif": lambda: general_sites_cif(120, seed=120),
    # accepted
    "nacl_utf8_bom.cif": lambda: codecs.BOM_UTF8 + nacl_cif().encode(),
    "nacl_crlf.cif": lambda: nacl_cif().replace("\n", "\r\n").encode(),
    "nacl_utf16_bom.cif": lambda: codecs.BOM_UTF16_LE + nacl_cif().encode("utf-16-le"),
    "nacl_comments_and_tabs.cif": comments_and_tabs,
    "srtio3_poscar_named.cif": lambda: str(Poscar(srtio3())),
    "po_one_atom.cif": polonium,
    "si_crystal.extxyz": lambda: extxyz_crystal(silicon()),
    "nacl_pymatgen.json": lambda: dumps(pmg_dict(nacl())),
    "module_this_in_properties.json": module_this_in_properties,
    "CONTCAR": lambda: str(Poscar(silicon())),
    "srtio3.cif": lambda: str(CifWriter(srtio3())),
    "graphite.vasp": lambda: str(Poscar(graphite())),
    "si_p1_8_atoms.cif": lambda: str(CifWriter(silicon())),
    "three_blocks_nacl_si_srtio3.cif": three_blocks,
}


def main() -> None:
    if set(FILES) != set(COMMITTED):
        raise SystemExit(f"FILES and hostile_corpus.EXPECTED disagree: {sorted(set(FILES) ^ set(COMMITTED))}")
    for name, make in FILES.items():
        content = make()
        data = content.encode() if isinstance(content, str) else content
        if len(data) >= MAX_FILE_BYTES:
            raise SystemExit(f"{name}: {len(data)} bytes, more than a committed corpus file may take")
        (HERE / name).write_bytes(data)
        print(f"{name:40s} {len(data):6d} bytes  expected {' '.join(EXPECTED[name])}")


if __name__ == "__main__":
    main()
