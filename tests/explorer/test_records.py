"""Every kind of bad input becomes a rejection that names the record and the problem."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import graphite, nacl, srtio3
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from explorer.datasets.records import (
    Limits,
    RawItem,
    Rejected,
    canonical_structure,
    make_record,
    original_structure,
)


def record(item: RawItem, **limits):
    return make_record(item, source="test", origin="user", limits=Limits(**limits))


def rejection(item: RawItem, **limits) -> Rejected:
    with pytest.raises(Rejected) as caught:
        record(item, **limits)
    return caught.value


def test_record_schema_for_srtio3():
    row = record(RawItem(key="sto", kind="structure", payload=srtio3(), properties={"band_gap": 3.2}))
    assert row["id"] == "test:sto" and row["source"] == "test" and row["origin"] == "user"
    assert (row["formula"], row["reduced_formula"], row["elements"]) == ("Sr1 Ti1 O3", "SrTiO3", ["O", "Sr", "Ti"])
    assert (row["spacegroup_symbol"], row["spacegroup_number"], row["crystal_system"]) == ("Pm-3m", 221, "cubic")
    assert row["nsites"] == 5 and row["n_elements"] == 3
    assert row["a"] == pytest.approx(3.905) and row["alpha"] == pytest.approx(90)
    assert row["volume_per_atom"] == pytest.approx(3.905**3 / 5)
    assert row["density"] == pytest.approx(5.12, abs=0.01)  # g/cm^3, the textbook value of SrTiO3
    assert row["band_gap"] == 3.2
    assert min(row["frac_coords"]) >= 0 and max(row["frac_coords"]) < 1


def test_original_and_canonical_structures_are_kept():
    conventional = nacl()
    row = record(RawItem(key="nacl", kind="structure", payload=conventional))
    assert row["nsites"] == 2  # primitive
    original = original_structure(row)
    assert len(original) == 8
    np.testing.assert_allclose(original.lattice.matrix, conventional.lattice.matrix)
    np.testing.assert_allclose(original.frac_coords, conventional.frac_coords)
    assert [s.symbol for s in original.species] == [s.symbol for s in conventional.species]
    assert canonical_structure(row).composition.reduced_formula == "NaCl"


def test_broken_cif_is_a_parse_error():
    error = rejection(RawItem(key="broken.cif", kind="bytes", payload=b"data_x\n_cell_length_a 4.0\nloop_\n_atom"))
    assert error.reason == "parse_error" and error.detail.startswith("broken.cif: not a valid CIF")


def test_garbage_text_is_a_parse_error():
    error = rejection(RawItem(key="notes.txt", kind="bytes", payload=b"this is not a crystal\n"))
    assert error.reason == "parse_error"
    assert error.detail.startswith("notes.txt: not a CIF, extended XYZ or pymatgen JSON file")


def test_empty_file():
    error = rejection(RawItem(key="empty.cif", kind="bytes", payload=b"   \n"))
    assert error.reason == "empty" and error.detail == "empty.cif: the file is empty"


def test_binary_file():
    error = rejection(RawItem(key="image.cif", kind="bytes", payload=b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    assert error.reason == "binary_file" and "image.cif" in error.detail and "NUL" in error.detail


def test_ten_thousand_atoms_are_too_many():
    big = graphite()
    big.make_supercell([25, 25, 4])  # 4 * 2500 = 10,000 atoms
    error = rejection(RawItem(key="huge", kind="structure", payload=big))
    assert error.reason == "too_many_atoms"
    assert error.detail == "huge: 10000 sites > max_sites=500"


def test_nan_coordinates():
    bad = srtio3().as_dict()
    bad["sites"][1]["abc"] = [float("nan"), 0.5, 0.5]
    bad["sites"][1].pop("xyz", None)
    error = rejection(RawItem(key="nan-sto", kind="pmg_dict", payload=bad))
    assert error.reason == "non_finite" and error.detail == "nan-sto: lattice or coordinates contain NaN/inf"
    poscar = "NaN\n1.0\n4 0 0\n0 4 0\n0 0 4\nNa Cl\n1 1\nDirect\n0 0 0\nnan 0.5 0.5\n"
    error = rejection(RawItem(key="POSCAR_nan", kind="bytes", payload=poscar.encode()))
    assert error.reason == "non_finite" and error.detail.startswith("POSCAR_nan:")


def test_partial_occupancy_names_the_site():
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.75, "Au": 0.25}], [[0, 0, 0]])
    text = str(CifWriter(alloy))
    error = rejection(RawItem(key="CuAu.cif", kind="bytes", payload=text.encode()))
    assert error.reason == "partial_occupancy" and "CuAu.cif" in error.detail and "Cu" in error.detail


def test_overlapping_atoms_quote_the_distance():
    crowded = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    error = rejection(RawItem(key="crowded", kind="structure", payload=crowded))
    assert error.reason == "overlapping_atoms"
    assert error.detail == "crowded: Na-Cl distance 0.200 Å (sites 0 and 1) < 0.5 Å"


def test_flat_cell_is_degenerate():
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-7]]), ["Na"], [[0, 0, 0]])
    error = rejection(RawItem(key="flat", kind="structure", payload=flat))
    assert error.reason == "degenerate_lattice" and "flat" in error.detail


def test_water_label_with_implicit_hydrogen_is_ambiguous():
    cif = ("data_x\n_cell_length_a 5\n_cell_length_b 5\n_cell_length_c 5\n_cell_angle_alpha 90\n"
           "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n"
           "_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
           "Ca1 0 0 0\nWat 0.5 0.5 0.5\n")
    error = rejection(RawItem(key="gypsum-ish", kind="cif", payload=cif))
    assert error.reason == "ambiguous_site_label" and "Wat parsed as O" in error.detail


def test_unsupported_element():
    einsteinium = Structure(Lattice.cubic(4.0), ["Es"], [[0, 0, 0]])
    error = rejection(RawItem(key="es", kind="structure", payload=einsteinium))
    assert error.reason == "unsupported_element" and "Es" in error.detail


def test_limits_are_settings():
    crowded = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.2, 0, 0]])  # 0.8 Å apart
    assert record(RawItem(key="ok", kind="structure", payload=crowded))["nsites"] == 2
    strict = rejection(RawItem(key="x", kind="structure", payload=crowded), min_distance=1.0)
    assert strict.reason == "overlapping_atoms"
    assert rejection(RawItem(key="x", kind="structure", payload=nacl()), max_sites=4).reason == "too_many_atoms"


def test_rejected_survives_pickling():
    import pickle

    copy = pickle.loads(pickle.dumps(Rejected("empty", "a: b")))
    assert (copy.reason, copy.detail) == ("empty", "a: b")
    with pytest.raises(ValueError, match="unknown rejection reason"):
        Rejected("nope", "x")
