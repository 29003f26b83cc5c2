"""Export service: every format round-trips the tiny crystals exactly, and is read by the reference readers."""

from __future__ import annotations

import io
import json
import re
import zipfile

import ase.io
import numpy as np
import pandas as pd
import pytest
from conftest import graphite, nacl, silicon, srtio3
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from explorer.services.export import (
    FORMATS,
    BasketItem,
    basket_zip,
    export_filename,
    path_cif_zip,
    path_extxyz,
    structure_from_bytes,
    structure_to_bytes,
    viewer_html,
)

CRYSTALS = {"NaCl": nacl, "Si": silicon, "SrTiO3": srtio3, "graphite": graphite}
TOL = 1e-6  # Å for lattices, fractional for coordinates


def assert_same(got: Structure, expected: Structure) -> None:
    """Same species in the same order, lattice within TOL Å, fractional coordinates within TOL modulo 1."""
    assert [str(s) for s in got.species] == [str(s) for s in expected.species]
    np.testing.assert_allclose(got.lattice.matrix, expected.lattice.matrix, atol=TOL)
    np.testing.assert_allclose(got.lattice.parameters, expected.lattice.parameters, atol=TOL)
    delta = got.frac_coords - expected.frac_coords
    assert np.abs(delta - np.round(delta)).max() < TOL
    assert StructureMatcher().fit(got, expected)


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


# ------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("crystal", sorted(CRYSTALS))
def test_round_trip_is_exact(crystal, fmt):
    structure = CRYSTALS[crystal]()
    data = structure_to_bytes(structure, fmt=fmt, title=f"{crystal} test")
    assert isinstance(data, bytes)
    assert_same(structure_from_bytes(data, fmt=fmt, name=f"{crystal}.{fmt}"), structure)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("crystal", sorted(CRYSTALS))
def test_reference_readers_read_the_export(crystal, fmt):
    structure = CRYSTALS[crystal]()
    text = structure_to_bytes(structure, fmt=fmt).decode("utf-8")
    if fmt == "extxyz":
        atoms = ase.io.read(io.StringIO(text), format="extxyz")
        assert atoms.pbc.all()
        read = AseAtomsAdaptor.get_structure(atoms)
    else:
        read = Structure.from_str(text, fmt=fmt)
    assert_same(read, structure)


def test_format_table_describes_each_format():
    assert set(FORMATS) == {"cif", "poscar", "extxyz", "json"}
    for spec in FORMATS.values():
        assert spec.label and "." not in spec.extension and "/" in spec.mime


def test_poscar_comment_is_title_or_formula():
    assert structure_to_bytes(nacl(), fmt="poscar", title="rock\nsalt").decode().splitlines()[0] == "rock salt"
    assert structure_to_bytes(nacl(), fmt="poscar").decode().splitlines()[0] == nacl().formula
    assert "direct" in structure_to_bytes(nacl(), fmt="poscar").decode().lower()


def test_cif_is_p1_with_every_site():
    text = structure_to_bytes(srtio3(), fmt="cif", title="perovskite").decode()
    assert text.startswith("# perovskite\n")
    assert "'P 1'" in text and "_atom_site_fract_x" in text
    assert len(Structure.from_str(text, fmt="cif")) == 5


def test_extxyz_and_json_carry_properties():
    props = {"energy_eV": -1.25, "source": "decoded point", "hypothetical": True, "latent": [0.5, -2.0]}
    atoms = ase.io.read(io.StringIO(structure_to_bytes(silicon(), fmt="extxyz", title="Si", properties=props)
                                    .decode()), format="extxyz")
    assert atoms.info["energy_eV"] == -1.25 and atoms.info["source"] == "decoded point"
    assert atoms.info["hypothetical"] is True and list(atoms.info["latent"]) == [0.5, -2.0]
    assert atoms.info["title"] == "Si"
    data = json.loads(structure_to_bytes(silicon(), fmt="json", title="Si", properties=props))
    assert data["properties"]["energy_eV"] == -1.25 and data["properties"]["title"] == "Si"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"'xyz'.*cif, poscar, extxyz, json"):
        structure_to_bytes(nacl(), fmt="xyz")
    with pytest.raises(ValueError, match="'xyz'"):
        structure_from_bytes(b"x", fmt="xyz")
    with pytest.raises(ValueError, match="'Lattice'"):
        structure_to_bytes(nacl(), fmt="extxyz", properties={"Lattice": "1 0 0"})
    with pytest.raises(ValueError, match="'nested'"):
        structure_to_bytes(nacl(), fmt="extxyz", properties={"nested": {"a": 1}})
    disordered = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        structure_to_bytes(disordered, fmt="poscar")


# ---------------------------------------------------------------------------------- broken uploads
BROKEN = {
    "empty": b"",
    "blank": b"  \n\t\n",
    "binary-nul": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "binary-high": bytes(range(128, 256)) * 4,
    "garbage": b"hello world\nthis is not a crystal\n1 2 three\n",
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_input_raises_value_error_naming_the_file(kind, fmt):
    with pytest.raises(ValueError, match=r"^my_upload\.dat: ") as info:
        structure_from_bytes(BROKEN[kind], fmt=fmt, name="my_upload.dat")
    assert FORMATS[fmt].label in str(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_truncated_cif_raises_value_error(fraction):
    text = structure_to_bytes(nacl(), fmt="cif")
    with pytest.raises(ValueError, match=r"^NaCl\.cif: could not read as CIF"):
        structure_from_bytes(text[: int(len(text) * fraction)], fmt="cif", name="NaCl.cif")


def test_structure_without_cell_is_rejected():
    molecule = b"2\nProperties=species:S:1:pos:R:3\nH 0 0 0\nH 0 0 0.74\n"
    with pytest.raises(ValueError, match=r"h2\.xyz: .*Lattice"):
        structure_from_bytes(molecule, fmt="extxyz", name="h2.xyz")
    with pytest.raises(ValueError, match=r"list\.json: .*list"):
        structure_from_bytes(b"[1, 2]", fmt="json", name="list.json")


# ------------------------------------------------------------------------------------------ names
def test_export_filename_is_safe():
    assert export_filename(record_id="amcsd-0000008", formula="FeS2", fmt="cif") == "amcsd-0000008_FeS2.cif"
    assert export_filename(record_id="amcsd:0000008", formula="Fe4 S8", fmt="poscar") == "amcsd-0000008_Fe4S8.vasp"
    name = export_filename(record_id="../up/load: 1", formula="Na Cl", fmt="extxyz")
    assert not re.search(r"[/\\: ]", name) and not name.startswith(".") and name.endswith(".extxyz")
    assert export_filename(record_id="", formula="", fmt="json") == "structure.json"


# ------------------------------------------------------------------------------------------ basket
def basket() -> list[BasketItem]:
    return [
        BasketItem(id="mp-22862", formula="NaCl", source="known", structure=nacl(), latent_2d=(1.5, -0.25),
                   validity={"min_distance": 2.82, "charge": {"balanced": True}}, hypothetical=False),
        BasketItem(id="mp-149", formula="Si", source="known", structure=silicon(), latent_2d=None, validity=None,
                   hypothetical=False),
        BasketItem(id="decoded:1", formula="SrTiO3", source="decoded", structure=srtio3(), latent_2d=(0.0, 2.0),
                   validity={"min_distance": 1.95, "id": "clash"}, hypothetical=True),
        BasketItem(id="mp-22862", formula="NaCl", source="known", structure=nacl().copy(), latent_2d=(1.5, -0.25),
                   validity=None, hypothetical=False),
    ]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_basket_zip_holds_files_and_manifest(fmt):
    items = basket()
    files = unzip(basket_zip(items, fmt=fmt))
    ext = FORMATS[fmt].extension
    assert sorted(files) == sorted(["manifest.csv", f"mp-22862_NaCl.{ext}", f"mp-149_Si.{ext}",
                                    f"decoded-1_SrTiO3.{ext}", f"mp-22862_NaCl_2.{ext}"])
    manifest = pd.read_csv(io.BytesIO(files["manifest.csv"]))
    assert list(manifest.columns) == ["id", "formula", "source", "hypothetical", "filename", "map_x", "map_y",
                                      "map_kind", "made", "checkpoint_sha256", "latent_b64", "min_distance",
                                      "charge.balanced", "validity.id"]
    assert list(manifest["id"]) == [item.id for item in items]
    assert list(manifest["hypothetical"]) == [False, False, True, False]
    assert manifest["map_x"].tolist()[0] == 1.5 and np.isnan(manifest["map_y"][1])
    assert manifest["min_distance"].tolist()[:3] == [2.82, pytest.approx(float("nan"), nan_ok=True), 1.95]
    assert manifest["validity.id"][2] == "clash"
    assert manifest["filename"].is_unique
    for item, filename in zip(items, manifest["filename"], strict=True):
        assert_same(structure_from_bytes(files[filename], fmt=fmt, name=filename), item.structure)


def test_empty_basket_is_an_error():
    with pytest.raises(ValueError, match="the basket is empty"):
        basket_zip([], fmt="cif")


def test_basket_zip_is_reproducible():
    assert basket_zip(basket(), fmt="cif") == basket_zip(basket(), fmt="cif")


# ------------------------------------------------------------------------------------------- paths
def path_frames(n: int = 5) -> list[Structure]:
    """Graphite with c stretched linearly from 6.71 Å to 7.51 Å."""
    base = graphite()
    return [Structure(Lattice.hexagonal(2.46, 6.71 + 0.2 * i), base.species, base.frac_coords) for i in range(n)]


def test_path_extxyz_reads_back_in_order():
    frames = path_frames()
    props = [{"energy_eV": float(i)} for i in range(len(frames))]
    images = ase.io.read(io.StringIO(path_extxyz(frames, properties=props).decode()), index=":", format="extxyz")
    assert len(images) == len(frames)
    for i, (atoms, frame) in enumerate(zip(images, frames, strict=True)):
        assert atoms.info["frame"] == i and atoms.info["t"] == pytest.approx(i / (len(frames) - 1))
        assert atoms.info["energy_eV"] == float(i)
        np.testing.assert_allclose(atoms.cell[:], frame.lattice.matrix, atol=TOL)
        assert_same(AseAtomsAdaptor.get_structure(atoms), frame)


def test_path_extxyz_checks_its_inputs():
    with pytest.raises(ValueError, match="no frames"):
        path_extxyz([])
    with pytest.raises(ValueError, match="5 frames but 2"):
        path_extxyz(path_frames(), properties=[{}, {}])


def test_path_cif_zip_has_one_padded_file_per_frame():
    frames = path_frames(12)
    files = unzip(path_cif_zip(frames, stem="graphite path"))
    assert sorted(files) == [f"graphite-path_{i:03d}.cif" for i in range(12)]
    for i, frame in enumerate(frames):
        name = f"graphite-path_{i:03d}.cif"
        assert_same(structure_from_bytes(files[name], fmt="cif", name=name), frame)


# ------------------------------------------------------------------------------------------ viewer
def test_viewer_html_is_standalone_and_local():
    page = viewer_html(nacl(), title="NaCl <rock salt>", supercell=(2, 2, 1), js_url="assets/vendor/3Dmol-min.js")
    assert page.startswith("<!DOCTYPE html>") and "<title>NaCl &lt;rock salt&gt;</title>" in page
    assert "addModel(" in page and "_cell_length_a" in page and "Na16 Cl16" in page
    assert "addUnitCell(" in page and "setStyle(" in page and "zoomTo(" in page and '"sphere"' in page
    sources = re.findall(r"loadScriptAsync\('([^']*)'\)", page) + re.findall(r"<script[^>]*\bsrc=['\"]([^'\"]*)", page)
    assert sources == ["assets/vendor/3Dmol-min.js"]
    assert "http" not in page and "cdn" not in page.lower()


def test_viewer_html_can_embed_3dmol():
    script = "window.$3Dmol = {createViewer: function () {}};"
    page = viewer_html(nacl(), title="NaCl", inline_js=script)
    head = page.split("<body")[0]
    assert script in head and "var $3Dmolpromise = Promise.resolve();" in head
    assert head.index(script) < head.index("$3Dmolpromise") < page.index("$3Dmolpromise.then")
    with pytest.raises(ValueError, match="3Dmol-min.js"):
        viewer_html(nacl(), title="NaCl", inline_js="alert(1)</script><script>")


def test_viewer_html_rejects_remote_script_and_bad_options():
    with pytest.raises(ValueError, match="cdn.jsdelivr"):
        viewer_html(nacl(), title="x", js_url="https://cdn.jsdelivr.net/npm/3dmol/build/3Dmol-min.js")
    with pytest.raises(ValueError, match="'cartoon'"):
        viewer_html(nacl(), title="x", style="cartoon")
    with pytest.raises(ValueError, match=r"\(0, 1, 1\)"):
        viewer_html(nacl(), title="x", supercell=(0, 1, 1))
