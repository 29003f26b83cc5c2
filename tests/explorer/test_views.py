"""Views of the structures on screen on the tiny dataset (known, hypothetical, uploaded, path frames) and the
checks of everything a browser sends back: every result is plain JSON, every bad value a clear ValueError."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from conftest import nacl
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from explorer.datasets.records import canonical_structure
from explorer.services import downloads, materials, views
from explorer.services.export import structure_to_bytes


def test_known_view_is_json_with_nearest(tiny_settings):
    record_id = materials.table("tiny", tiny_settings)["id"].iloc[2]
    view = views.known_view("tiny", record_id, tiny_settings)
    json.dumps(view)
    assert view["kind"] == "known" and view["formula"] == "SrTiO3"
    assert dict(view["details"])["space group"] == "Pm-3m (221)"
    assert len(view["nearest"]) == tiny_settings.n_nearest and record_id not in [n[0] for n in view["nearest"]]
    expected = canonical_structure(materials.row_of("tiny", record_id, tiny_settings))
    assert StructureMatcher().fit(views.structure_of(view), expected)
    with pytest.raises(ValueError, match="nope"):
        views.known_view("tiny", "nope", tiny_settings)


def test_hypothetical_view_says_so(tiny_settings):
    points = materials.map_points("tiny", None, tiny_settings)
    view = views.hypothetical_view("tiny", min(points["x"]) - 1, min(points["y"]) - 1, tiny_settings)
    json.dumps(view)
    assert view["kind"] == "hypothetical" and "hypothetical" in view["note"]
    assert "nearest known material" in view["note"] and "Inverse used" in view["note"]
    assert "valid" in view["validity"] and len(view["nearest"]) == tiny_settings.n_nearest


def test_upload_view_and_clear_errors(tiny_settings):
    view = views.upload_view("tiny", structure_to_bytes(nacl(), fmt="cif"), "nacl.cif", tiny_settings)
    assert view["kind"] == "upload" and view["formula"] == "NaCl" and len(view["xy"]) == 2
    with pytest.raises(ValueError, match="bad.cif"):
        views.upload_view("tiny", b"data_x\nnot a cif at all\n", "bad.cif", tiny_settings)
    with pytest.raises(ValueError, match="binary"):
        views.upload_view("tiny", b"\x00\x01\x02", "POSCAR", tiny_settings)


def test_interpolation_path_and_downloads(tiny_settings):
    ids = materials.table("tiny", tiny_settings)["id"]
    a = views.known_view("tiny", ids.iloc[0], tiny_settings)
    b = views.known_view("tiny", ids.iloc[11], tiny_settings)
    path = views.interpolation(a, b, "tiny", tiny_settings, steps=10, method="slerp")
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
    assert isinstance(views.structure_of(path["frames"][0]), Structure)
