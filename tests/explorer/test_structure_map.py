"""The structure map: crystals placed by the geometry of their sites alone, so that one structure type sits
together whatever its elements (rock salt NaCl, KBr and MgO; perovskite SrTiO3 and BaTiO3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import nacl, silicon, srtio3
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from explorer.cli import main
from explorer.motifs.geometry import anonymous_label, structure_type


def rock_salt(a: str, b: str, length: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(length), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def zinc_blende(a: str, b: str, length: float) -> Structure:
    return Structure.from_spacegroup("F-43m", Lattice.cubic(length), [a, b], [[0, 0, 0], [0.25, 0.25, 0.25]])


def perovskite(a: str, b: str, length: float) -> Structure:
    return Structure(Lattice.cubic(length), [a, b, "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def cscl() -> Structure:
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_structure_types_forget_the_elements_and_their_alphabetical_order():
    assert structure_type(rock_salt("Na", "Cl", 5.64)) == structure_type(rock_salt("Mg", "O", 4.21)) \
        == "AB_cF8_225_a_b"
    # Zn comes after S in the alphabet, Cd before Se: pymatgen's own labels differ, ours do not
    assert structure_type(zinc_blende("Zn", "S", 5.41)) == structure_type(zinc_blende("Cd", "Se", 6.05))
    assert structure_type(cscl()) != structure_type(nacl())
    assert anonymous_label("A2B_tP6_136_f_a") == "AB2_tP6_136_a_f"


def _described(structures, settings):
    from explorer.structure_map import describe

    scales = {"symmetry": 1.0, "stoichiometry": 1.0, "coordination": 1.0, "shape": 1.0}
    return describe(structures, settings, scales=scales)


def test_the_descriptor_sees_geometry_not_elements_and_ignores_rotation_and_cell_choice(tiny_settings):
    rotation = Rotation.from_euler("zyx", [30, 40, 50], degrees=True).as_matrix()
    rotated = Structure(Lattice(nacl().lattice.matrix @ rotation.T), nacl().species, nacl().frac_coords)
    structures = [nacl(), rock_salt("K", "Br", 6.6), rock_salt("Mg", "O", 4.21), rotated,
                  nacl().get_primitive_structure(), nacl() * (2, 1, 1), perovskite("Sr", "Ti", 3.905),
                  perovskite("Ba", "Ti", 4.01), cscl(), silicon()]
    d = _described(structures, tiny_settings)
    for k in range(1, 6):  # KBr, MgO, rotated, primitive cell, supercell: all rock salt
        assert np.linalg.norm(d[k] - d[0]) < 1e-6, k
    assert np.linalg.norm(d[7] - d[6]) < 1e-6  # BaTiO3 and SrTiO3
    others = [np.linalg.norm(d[k] - d[0]) for k in (6, 8, 9)]
    assert min(others) > 0.5


@pytest.fixture(scope="module")
def types_dataset(tiny_settings, tmp_path_factory):
    from small_model import ingest_crystals

    from explorer.atlas import build_atlas

    crystals = [nacl(), rock_salt("K", "Br", 6.6), rock_salt("Mg", "O", 4.21), rock_salt("Li", "F", 4.03),
                perovskite("Sr", "Ti", 3.905), perovskite("Ba", "Ti", 4.01), perovskite("Ca", "Ti", 3.84),
                cscl(), Structure(Lattice.cubic(3.9), ["Tl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                zinc_blende("Zn", "S", 5.41), zinc_blende("Ga", "As", 5.65), silicon(), srtio3()]
    ingest_crystals(tiny_settings, "tiny-types", crystals, tmp_path_factory.mktemp("types"))
    build_atlas("tiny-types", tiny_settings)
    return "tiny-types"


def test_the_structure_map_puts_each_type_together_and_places_new_structures(tiny_settings, types_dataset):
    from explorer import structure_map
    from explorer.services import materials

    assert not structure_map.is_built(types_dataset, tiny_settings)
    with pytest.raises(ValueError, match="not built yet"):  # a request never waits minutes for a build
        structure_map.place_structures(types_dataset, [nacl()], tiny_settings)
    the_map = structure_map.build(types_dataset, tiny_settings)
    assert structure_map.is_built(types_dataset, tiny_settings) and the_map.kind == "structure"
    frame = materials.table(types_dataset, tiny_settings).set_index("id")
    assert sorted(the_map.ids) == sorted(frame.index)
    formula = dict(zip(frame.index, frame["reduced_formula"], strict=True))
    types = structure_map.types_of(types_dataset, tiny_settings)
    assert len({types[i] for i in the_map.ids if formula[i] in ("NaCl", "KBr", "MgO", "LiF")}) == 1
    features = structure_map.features_of(types_dataset, tiny_settings)
    nacl_row = [formula[i] for i in the_map.ids].index("NaCl")
    nearest = np.argsort(np.linalg.norm(features - features[nacl_row], axis=1))[1:4]
    assert sorted(formula[the_map.ids[k]] for k in nearest) == ["KBr", "LiF", "MgO"]
    # a new rock salt lands among the rock salts, not among the caesium chlorides
    point = structure_map.place_structures(types_dataset, [rock_salt("Na", "F", 4.63)], tiny_settings)[0]
    distance = {formula[i]: float(np.linalg.norm(the_map.xy[k] - point)) for k, i in enumerate(the_map.ids)}
    assert min(distance[f] for f in ("NaCl", "KBr", "MgO", "LiF")) < min(distance["CsCl"], distance["TlCl"])
    with pytest.raises(TypeError, match="places structures"):
        the_map.place(the_map.latents[:1])


def test_views_follow_the_map_kind(tiny_settings, types_dataset):
    from explorer import structure_map
    from explorer.services import maps, materials, views

    structure_map.build(types_dataset, tiny_settings)
    the_map = maps.get_map(types_dataset, "structure", tiny_settings)
    record_id = the_map.ids[0]
    known = views.known_view(types_dataset, record_id, tiny_settings, kind="structure")
    assert known["map"] == "structure" and known["xy"] == the_map.xy[0].tolist()
    on_crystals = views.placed(known, types_dataset, "crystals", tiny_settings)
    assert on_crystals["map"] == "crystals" and on_crystals["xy"] != known["xy"]
    x, y = (float(v) + 0.1 for v in the_map.xy[0])
    decoded = views.hypothetical_view(types_dataset, x, y, tiny_settings, kind="structure")
    assert decoded["map"] == "structure" and decoded["xy"] == [x, y] and decoded["structure"]["sites"]
    moved = views.placed(views.check_view(decoded, tiny_settings), types_dataset, "crystals", tiny_settings)
    assert moved["map"] == "crystals" and len(moved["xy"]) == 2
    points = materials.map_points(types_dataset, "source", tiny_settings, "structure")
    assert points["ids"] == the_map.ids and all("structure type" in h for h in points["hover"])
    for hostile in ("../x", 3, "motifs; rm", ["structure"]):
        with pytest.raises(ValueError, match="unknown map kind"):
            maps.check_kind(hostile)
    with pytest.raises(ValueError, match="unknown map kind"):
        views.check_view({**known, "map": "../../etc"}, tiny_settings)


@pytest.mark.parametrize("kind, suffix", [("crystals", "csv"), ("structure", "parquet")])
def test_export_map_writes_ids_coordinates_latents_and_colours(tiny_settings, types_dataset, tmp_path, monkeypatch,
                                                               capsys, kind, suffix):
    from explorer.services import maps, materials

    for field in ("data_dir", "shared_data_dir", "checkpoint", "workers", "umap_n_neighbors"):  # the same maps
        monkeypatch.setenv(f"EXPLORER_{field.upper()}", str(getattr(tiny_settings, field)))
    out = tmp_path / f"map.{suffix}"
    assert main(["export-map", "--dataset", types_dataset, "--kind", kind, "--out", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    written = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
    the_map = maps.get_map(types_dataset, kind, tiny_settings)
    assert written["id"].tolist() == the_map.ids
    np.testing.assert_allclose(written[["x", "y"]].to_numpy(), the_map.xy, atol=1e-5)
    latent = [c for c in written.columns if c.startswith("z") and c[1:].isdigit()]
    np.testing.assert_allclose(written[latent].to_numpy(), the_map.latents, atol=1e-5)
    frame = materials.table(types_dataset, tiny_settings).set_index("id").loc[the_map.ids]
    assert written["reduced_formula"].tolist() == frame["reduced_formula"].tolist()
    assert {"source", "spacegroup_number", "density", "volume_per_atom"} <= set(written.columns)
    if kind == "structure":
        assert "AB_cF8_225_a_b" in set(written["structure_type"])
        assert any(c.startswith("g") for c in written.columns)
    assert main(["export-map", "--dataset", types_dataset, "--out", str(tmp_path / "map.txt")]) == 2
    assert "CSV (.csv) or Parquet" in capsys.readouterr().err
