"""Each user format round-trips a tiny real file: what is stored is what was written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.io import write as ase_write
from conftest import graphite, nacl, silicon, srtio3
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from explorer.datasets.build import load_table
from explorer.datasets.catalog import ingest
from explorer.datasets.records import original_structure
from explorer.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", shared_data_dir=tmp_path / "no-shared", workers=1)


def assert_same_structure(stored: Structure, written: Structure, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(stored.lattice.matrix, written.lattice.matrix, atol=atol)
    assert [s.symbol for s in stored.species] == [s.symbol for s in written.species]
    delta = stored.frac_coords - written.frac_coords
    np.testing.assert_allclose(delta - np.round(delta), 0, atol=atol)


def ingested(path: Path, settings: Settings, name: str = "mine") -> pd.DataFrame:
    report = ingest(path, name=name, settings=settings, progress=False)
    assert report.sources[0].read == report.sources[0].kept, report.rejections
    return load_table(name, settings).set_index("source_key")


def test_folder_of_cif_and_poscar_files(tmp_path, settings):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    CifWriter(nacl()).write_file(folder / "NaCl.cif")
    Poscar(silicon()).write_file(folder / "sub" / "POSCAR")
    Poscar(graphite()).write_file(folder / "graphite.vasp")
    table = ingested(folder, settings)
    assert sorted(table.index) == ["NaCl.cif", "graphite.vasp", "sub/POSCAR"]
    assert_same_structure(original_structure(table.loc["NaCl.cif"]), nacl())
    assert_same_structure(original_structure(table.loc["sub/POSCAR"]), silicon())
    assert_same_structure(original_structure(table.loc["graphite.vasp"]), graphite())
    assert table.loc["NaCl.cif", "spacegroup_symbol"] == "Fm-3m"
    assert set(table["origin"]) == {"user"} and set(table["source"]) == {"mine"}


@pytest.mark.parametrize("compressed", [False, True])
def test_cdvae_style_csv(tmp_path, settings, compressed):
    frame = pd.DataFrame({"material_id": ["mp-5229", "mp-22862"], "band_gap": [1.8, 5.0],
                          "formula": ["SrTiO3", "NaCl"], "cif": [str(CifWriter(srtio3())), str(CifWriter(nacl()))]})
    path = tmp_path / ("set.csv.gz" if compressed else "set.csv")
    with (gzip.open(path, "wt") if compressed else open(path, "w")) as handle:
        frame.to_csv(handle, index=False)
    table = ingested(path, settings)
    assert sorted(table.index) == ["mp-22862", "mp-5229"]
    assert_same_structure(original_structure(table.loc["mp-5229"]), srtio3())
    assert table.loc["mp-5229", "band_gap"] == 1.8
    assert table.loc["mp-5229", "source_formula"] == "SrTiO3"  # never overwrites the record's own formula
    assert table.loc["mp-5229", "formula"] == "Sr1 Ti1 O3"


def test_extended_xyz(tmp_path, settings):
    frames = []
    for structure, energy in ((nacl(), -3.4), (silicon(), -5.4)):
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.info["energy_per_atom"] = energy
        frames.append(atoms)
    path = tmp_path / "frames.extxyz"
    ase_write(path, frames, format="extxyz")
    table = ingested(path, settings)
    assert sorted(table.index) == ["0", "1"]
    assert_same_structure(original_structure(table.loc["0"]), nacl())
    assert_same_structure(original_structure(table.loc["1"]), silicon())
    assert table.loc["1", "energy_per_atom"] == -5.4


def test_pymatgen_json_list(tmp_path, settings):
    entries = [{"material_id": "sto", "band_gap": 3.2, "structure": srtio3().as_dict()}, graphite().as_dict()]
    path = tmp_path / "structures.json"
    path.write_text(json.dumps(entries))
    table = ingested(path, settings)
    assert sorted(table.index) == ["1", "sto"]
    assert_same_structure(original_structure(table.loc["sto"]), srtio3(), atol=1e-9)
    assert_same_structure(original_structure(table.loc["1"]), graphite(), atol=1e-9)
    assert table.loc["sto", "band_gap"] == 3.2


def test_extended_xyz_molecule_is_not_periodic(tmp_path, settings):
    from ase.build import molecule

    path = tmp_path / "water.xyz"
    ase_write(path, [molecule("H2O")], format="extxyz")
    report = ingest(path, name="mol", settings=settings, progress=False)
    assert report.sources[0].rejected == {"not_periodic": 1}
    assert "no 3D periodic cell" in report.rejections[0]["detail"]


def test_the_fast_structure_dict_is_pymatgens_and_reads_back():
    """``structure_as_dict`` (what the server puts into every view) is ``Structure.as_dict()`` key for key, for the tiny
    crystals as they are and with site properties, an oxidation state and a mixed site; and it reads back to the same
    structure (as JSON) through pymatgen's reader and the app's own."""
    from pymatgen.core import Species

    from explorer.datasets.formats import structure_as_dict, structure_from_plain_dict

    dressed = srtio3()
    dressed.add_site_property("magmom", [0.0, 0.5, 0.0, 0.0, 0.0])
    dressed.replace(0, Species("Sr", 2))
    mixed = nacl()
    mixed.replace(0, {"Na": 0.5, "K": 0.5})
    for structure in (nacl(), silicon(), srtio3(), graphite(), dressed, mixed):
        data = structure_as_dict(structure)
        assert data == structure.as_dict()
        if structure.is_ordered and not structure.site_properties:
            assert Structure.from_dict(json.loads(json.dumps(data))) == structure
            back = structure_from_plain_dict(data, key="view")
            assert back.species == structure.species
            assert np.allclose(back.frac_coords, structure.frac_coords)
