"""App-facing services on the tiny dataset: search, colour options, views (known, hypothetical, upload),
interpolation paths and downloads; every result is plain JSON."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest
from conftest import nacl
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from explorer.datasets.records import canonical_structure
from explorer.services import downloads, materials
from explorer.services.export import structure_to_bytes


def test_search_by_formula_elements_id_and_mineral():
    frame = pd.DataFrame({"id": ["a:1", "a:2", "a:3"], "reduced_formula": ["NaCl", "LiFeO2", "FeS2"],
                          "elements": [["Cl", "Na"], ["Fe", "Li", "O"], ["Fe", "S"]],
                          "mineral": ["Halite", None, "Pyrite"]})
    assert materials.search(frame, "NaCl").tolist() == [0]
    assert materials.search(frame, "Na4Cl4").tolist() == [0]
    assert materials.search(frame, "Li-Fe-O").tolist() == [1]
    assert materials.search(frame, "Fe-S").tolist() == [2]
    assert materials.search(frame, "A:2").tolist() == [1]
    assert materials.search(frame, "pyr").tolist() == [2]
    assert materials.search(frame, "").tolist() == []
    assert materials.search(frame, "no such thing").tolist() == []


def test_filters_by_elements_sites_and_property():
    frame = pd.DataFrame({"id": ["a:1", "a:2", "a:3", "a:4"], "elements": [["Cl", "Na"], ["Fe", "Li", "O"],
                          ["Fe", "S"], ["Li", "O"]], "nsites": [2, 4, 3, 12],
                          "band_gap": [5.0, 1.2, 0.9, float("nan")]})
    assert materials.filter_mask(frame).tolist() == [True] * 4
    assert materials.filter_mask(frame, elements="Li O").tolist() == [False, True, False, True]
    assert materials.filter_mask(frame, elements="Fe,Li-O").tolist() == [False, True, False, False]
    assert materials.filter_mask(frame, sites=(3, None)).tolist() == [False, True, True, True]
    assert materials.filter_mask(frame, sites=(None, 3)).tolist() == [True, False, True, False]
    # a material without the property fails a property range
    assert materials.filter_mask(frame, prop="band_gap", prop_range=(1.0, None)).tolist() == [True, True, False, False]
    both = materials.filter_mask(frame, elements="O", prop="band_gap", prop_range=(None, 2))
    assert both.tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        materials.filter_mask(frame, elements="Li Xx")
    with pytest.raises(ValueError, match="minimum 5 is above the maximum 2"):
        materials.filter_mask(frame, sites=(5, 2))
    with pytest.raises(ValueError, match="no numeric property 'colour'"):
        materials.filter_mask(frame, prop="colour", prop_range=(0, 1))


def test_filtered_points_keep_their_own_colours(tiny_settings):
    points = materials.map_points("tiny", "density", tiny_settings)
    keep = materials.filter_mask(materials.table("tiny", tiny_settings), elements="O")
    shown = materials.filtered_points(points, keep)
    assert 0 < len(shown["ids"]) < len(points["ids"])
    for k, record_id in enumerate(shown["ids"]):
        j = points["ids"].index(record_id)
        assert (shown["x"][k], shown["y"][k], shown["colour"]["values"][k]) == (
            points["x"][j], points["y"][j], points["colour"]["values"][j])


def test_color_options_have_categorical_and_continuous(tiny_settings):
    options = {o["value"]: o["kind"] for o in materials.color_options(materials.table("tiny", tiny_settings))}
    assert options["source"] == options["crystal_system"] == options["spacegroup_number"] == "categorical"
    assert options["n_elements"] == "categorical"
    assert options["density"] == options["volume_per_atom"] == "continuous"


def test_map_points_cover_every_material(tiny_settings):
    points = materials.map_points("tiny", "density", tiny_settings)
    assert len(points["x"]) == len(points["ids"]) == len(points["hover"]) == 12
    assert points["colour"]["kind"] == "continuous" and len(points["colour"]["values"]) == 12
    categorical = materials.map_points("tiny", "crystal_system", tiny_settings)["colour"]
    assert set(categorical["categories"]) == {"cubic", "tetragonal", "hexagonal", "trigonal"}
    json.dumps(points)


def test_known_view_is_json_with_nearest(tiny_settings):
    record_id = materials.table("tiny", tiny_settings)["id"].iloc[2]
    view = materials.known_view("tiny", record_id, tiny_settings)
    json.dumps(view)
    assert view["kind"] == "known" and view["formula"] == "SrTiO3"
    assert dict(view["details"])["space group"] == "Pm-3m (221)"
    assert len(view["nearest"]) == tiny_settings.n_nearest and record_id not in [n[0] for n in view["nearest"]]
    expected = canonical_structure(materials.row_of("tiny", record_id, tiny_settings))
    assert StructureMatcher().fit(materials.structure_of(view), expected)
    with pytest.raises(KeyError, match="nope"):
        materials.known_view("tiny", "nope", tiny_settings)


def test_hypothetical_view_says_so(tiny_settings):
    points = materials.map_points("tiny", None, tiny_settings)
    view = materials.hypothetical_view("tiny", min(points["x"]) - 1, min(points["y"]) - 1, tiny_settings)
    json.dumps(view)
    assert view["kind"] == "hypothetical" and "hypothetical" in view["note"]
    assert "nearest known material" in view["note"] and "Inverse used" in view["note"]
    assert "valid" in view["validity"] and len(view["nearest"]) == tiny_settings.n_nearest


def test_upload_view_and_clear_errors(tiny_settings):
    view = materials.upload_view("tiny", structure_to_bytes(nacl(), fmt="cif"), "nacl.cif", tiny_settings)
    assert view["kind"] == "upload" and view["formula"] == "NaCl" and len(view["xy"]) == 2
    with pytest.raises(ValueError, match="bad.cif"):
        materials.upload_view("tiny", b"data_x\nnot a cif at all\n", "bad.cif", tiny_settings)
    with pytest.raises(ValueError, match="binary"):
        materials.upload_view("tiny", b"\x00\x01\x02", "POSCAR", tiny_settings)


def test_interpolation_path_and_downloads(tiny_settings):
    ids = materials.table("tiny", tiny_settings)["id"]
    a = materials.known_view("tiny", ids.iloc[0], tiny_settings)
    b = materials.known_view("tiny", ids.iloc[11], tiny_settings)
    path = materials.interpolation(a, b, "tiny", tiny_settings, steps=10, method="slerp")
    json.dumps(path)
    assert len(path["frames"]) == len(path["xy"]) == 10
    assert all(f["n_atoms"] == len(f["structure"]["sites"]) for f in path["frames"])
    name, data = downloads.path_file(path, "extxyz")
    assert name.endswith(".extxyz") and data.count(b"Lattice=") == 10
    name, data = downloads.path_file(path, "cif")
    assert len(zipfile.ZipFile(io.BytesIO(data)).namelist()) == 10
    for fmt in ("cif", "poscar", "json", "extxyz"):
        name, data = downloads.structure_file(a, fmt)
        assert name.startswith("tiny-00_NaCl") or name.startswith("tiny-00_NaCl.cif")
    name, data = downloads.basket_file([downloads.basket_item(a), downloads.basket_item(path["frames"][3])], "cif")
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "manifest.csv" in names and len(names) == 3
    name, page = downloads.viewer_file(a, supercell="2x2x2", style="spheres")
    assert name.endswith(".html") and b"$3Dmol" in page.split(b"<body")[0] and b"src=" not in page.split(b"<body")[0]
    with pytest.raises(ValueError, match="no structure on screen"):
        downloads.structure_file(None, "cif")
    with pytest.raises(ValueError, match="no interpolation path"):
        downloads.path_file(None, "cif")
    assert isinstance(materials.structure_of(path["frames"][0]), Structure)


def test_map_problem_names_what_is_missing(tiny_settings, tmp_path):
    assert materials.map_problem("tiny", tiny_settings) is None
    missing = tiny_settings.model_copy(update={"checkpoint": tmp_path / "none.pt"})
    assert "No model checkpoint at" in materials.map_problem("tiny", missing)
    other = tiny_settings.model_copy(update={"umap_seed": 7})
    assert "not built" in materials.map_problem("tiny", other)
