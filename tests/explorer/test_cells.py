"""The viewer's cells, bonds and measurements, and the comparison of two structures, on tiny real crystals."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp
from small_model import perovskites, real_crystals

from explorer.services import cells, compare, downloads, views

NACL, SI, SRTIO3, CSCL = (real_crystals()[k] for k in (0, 1, 2, 3))
GRAPHITE, AL2O3 = real_crystals()[9], real_crystals()[11]
SRZRO3 = perovskites()[0]


def shown(structure: Structure, cell: str = "conventional") -> dict:
    found, sentence = cells.in_cell(structure, cell, symprec=0.1)
    return cells.payload(found, title="t", cell=cell, sentence=sentence)


def test_the_conventional_cell_of_a_body_centred_tetragonal_perovskite_is_right_angled():
    assert not np.allclose(SRZRO3.lattice.angles, 90, atol=1)  # its primitive cell is skewed
    conventional, sentence = cells.in_cell(SRZRO3, "conventional", symprec=0.1)
    assert len(conventional) == 20 and np.allclose(conventional.lattice.angles, 90)
    assert "I4/mcm (140)" in sentence and "conventional standard cell" in sentence
    a, b, c = conventional.lattice.abc
    assert a == pytest.approx(b) and c == pytest.approx(8.20, abs=1e-6)
    primitive, _ = cells.in_cell(SRZRO3, "primitive", symprec=0.1)
    assert len(primitive) == 10 and primitive.volume == pytest.approx(conventional.volume / 2)
    model, sentence = cells.in_cell(SRZRO3, "model", symprec=0.1)
    assert model is SRZRO3 and "model's cell" in sentence
    hexagonal, _ = cells.in_cell(AL2O3, "conventional", symprec=0.1)
    assert len(hexagonal) == 30 and np.allclose(hexagonal.lattice.angles, [90, 90, 120])


def test_a_structure_without_a_standard_cell_is_shown_in_its_own_cell():
    crowded = Structure(Lattice.cubic(4.0), ["Na", "Na"], [[0, 0, 0], [0.0001, 0, 0]])
    found, sentence = cells.in_cell(crowded, "conventional", symprec=0.1)
    assert found is crowded or len(found) <= 2
    with pytest.raises(ValueError, match="unknown cell choice"):
        cells.check_cell("../../etc")
    assert cells.check_cell(None) == cells.DEFAULT_CELL


def bonded(payload: dict) -> dict[str, list[float]]:
    """{'Na-Cl': [lengths]} of the payload's bonds."""
    lattice, frac, species = (np.asarray(payload["lattice"]), np.asarray(payload["frac"]), payload["species"])
    found: dict[str, list[float]] = {}
    for i, j, image in payload["bonds"]:
        pair = "-".join(sorted((species[i], species[j])))
        found.setdefault(pair, []).append(float(np.linalg.norm((frac[j] + image - frac[i]) @ lattice)))
    return found


def test_bonds_are_cation_anion_contacts_in_ionic_crystals_and_metal_bonds_in_metals():
    rock_salt = bonded(shown(NACL))
    assert set(rock_salt) == {"Cl-Na"} and len(rock_salt["Cl-Na"]) == 24  # 4 Na x 6 Cl, each bond once
    assert np.allclose(rock_salt["Cl-Na"], 2.82, atol=1e-3)
    perovskite = bonded(shown(SRTIO3))
    assert set(perovskite) == {"O-Sr", "O-Ti"}  # Sr-Ti is within the radii but not a bond
    assert len(perovskite["O-Ti"]) == 6 and len(perovskite["O-Sr"]) == 12
    graphite = bonded(shown(GRAPHITE))
    assert set(graphite) == {"C-C"} and max(graphite["C-C"]) < 1.5  # no bonds between the layers
    iron = bonded(shown(real_crystals()[8]))
    assert set(iron) == {"Fe-Fe"} and min(iron["Fe-Fe"]) == pytest.approx(2.87 * 3 ** 0.5 / 2, abs=1e-3)


def test_bonds_do_not_depend_on_where_the_crystal_sits():
    moved = NACL.copy()
    moved.translate_sites(range(len(moved)), [0.13, 0.29, 0.41])
    moved.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0))
    assert sorted(len(v) for v in bonded(cells.payload(moved, title="t", cell="model", sentence="")).values()) == \
        sorted(len(v) for v in bonded(cells.payload(NACL, title="t", cell="model", sentence="")).values())


def test_picked_atoms_measure_distance_angle_and_dihedral():
    payload = shown(NACL)
    species = payload["species"]
    na, cl = species.index("Na"), species.index("Cl")
    one = cells.measure(payload, [{"site": na, "cell": [0, 0, 0]}])
    assert "coordination 6" in one[2] and "6 Cl at 2.820 Å" in one[2]
    assert "fractional (0.0000, 0.0000, 0.0000)" in one[1]
    frac = np.asarray(payload["frac"])
    near = [k for k in range(len(species)) if species[k] == "Cl" and np.isclose(np.abs(frac[k] - frac[na]).sum(), 0.5)]
    two = cells.measure(payload, [{"site": na, "cell": [0, 0, 0]}, {"site": near[0], "cell": [0, 0, 0]}])
    assert "distance 2.820 Å as drawn; 2.820 Å to the nearest periodic image" in two[1]
    far = cells.measure(payload, [{"site": na, "cell": [0, 0, 0]}, {"site": near[0], "cell": [1, 1, 1]}])
    assert "2.820 Å to the nearest periodic image" in far[1] and "distance 2.820 Å as drawn" not in far[1]
    angle = cells.measure(payload, [{"site": near[0], "cell": [0, 0, 0]}, {"site": na, "cell": [0, 0, 0]},
                                    {"site": near[1], "cell": [0, 0, 0]}])
    assert "angle at Na" in angle[1] and "90.00°" in angle[1]
    ring = [{"site": na, "cell": [0, 0, 0]}, {"site": near[0], "cell": [0, 0, 0]},
            {"site": cl, "cell": [0, 0, 0]}, {"site": near[1], "cell": [0, 0, 0]}]
    assert "dihedral angle" in cells.measure(payload, ring)[1]
    assert cells.measure(payload, []) == []
    for picks in ([{"site": 8, "cell": [0, 0, 0]}], [{"site": 0, "cell": [0, 0, 5]}],
                  [{"site": "0", "cell": [0, 0, 0]}], [{"site": 0}], "0", [{"site": 0, "cell": [0, 0, 0]}] * 5,
                  [{"site": 0, "cell": [0.5, 0, 0]}]):
        with pytest.raises(ValueError, match="picked atom"):
            cells.measure(payload, picks)


def test_dihedral_of_a_known_geometry():
    square = Structure(Lattice.cubic(20), ["H"] * 4, [[0, 0, 0], [0.05, 0, 0], [0.05, 0.05, 0], [0.05, 0.05, 0.05]])
    payload = cells.payload(square, title="t", cell="model", sentence="")
    picks = [{"site": k, "cell": [0, 0, 0]} for k in range(4)]
    assert "dihedral angle: -90.00°" in cells.measure(payload, picks)[1] or \
        "dihedral angle: 90.00°" in cells.measure(payload, picks)[1]


def test_compare_lists_what_differs_and_the_matcher_verdict():
    result = compare.compare(NACL, CSCL)
    rows = {name: (a, b, differs) for name, a, b, differs in result["rows"]}
    assert rows["space group"][:2] == ("Fm-3m (225)", "Pm-3m (221)") and rows["space group"][2]
    assert rows["coordination (CrystalNN)"][:2] == ("Cl 6, Na 6", "Cl 8, Cs 8")
    assert rows["α, β, γ (°)"][2] is False
    assert result["rms"] is None and "not the same crystal" in result["verdict"]
    shaken = SRTIO3.copy()
    shaken.perturb(0.03, min_distance=0.01)
    same = compare.compare(SRTIO3, shaken)
    assert same["rms"] is not None and "the same crystal" in same["verdict"]
    with pytest.raises(ValueError, match="unknown comparison"):
        compare.check_pair("x")


def test_exports_are_in_the_cell_chosen(tiny_settings):
    view = views.known_view("tiny", "tiny:11_Al2O3.cif", tiny_settings)
    _, data = downloads.structure_file(view, "cif", cell="conventional")
    conventional = Structure.from_str(data.decode(), fmt="cif")
    assert len(conventional) == 30 and np.allclose(conventional.lattice.angles, [90, 90, 120], atol=1e-4)
    _, data = downloads.structure_file(view, "cif", cell="model")
    assert len(Structure.from_str(data.decode(), fmt="cif")) == 10
    _, data = downloads.structure_file(view, "poscar", cell="primitive")
    assert len(Structure.from_str(data.decode(), fmt="poscar")) == 10
    with pytest.raises(ValueError, match="unknown cell choice"):
        downloads.structure_file(view, "cif", cell="hexagonal")
    payload = cells.viewer_payload(view, cell="conventional")
    assert len(payload["species"]) == 30 and "R-3c (167)" in payload["cell_text"] and payload["bonds"]
