"""The motif map: every distinct local environment of the tiny dataset (NaCl, Si, SrTiO3, CsCl, ZnS, CaF2, TiO2,
ZnO, Fe, graphite, diamond, SiO2, Al2O3…) as a point of the shipped motif autoencoder's latent space; a click shows
one environment with the crystals that hold it, empty space decodes a hypothetical one, and a path between two
environments is decoded frame by frame with its motif and shape scores, exportable as multi-frame XYZ."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Element

from explorer import motif_map
from explorer.cli import main
from explorer.services import cells, downloads, maps, materials, motif_views, physics, views
from explorer.ui import components


@pytest.fixture(scope="module")
def motifs(tiny_settings):
    return motif_map.build("tiny", tiny_settings)


def _find(tiny_settings, element: str, motif: str, formula: str) -> str:
    frame = motif_map.environments_of("tiny", tiny_settings)
    hits = frame[(frame["element"] == element) & (frame["motif"] == motif)
                 & frame["crystals"].map(lambda ids: any(
                     materials.row_of("tiny", i, tiny_settings)["reduced_formula"] == formula
                     for i in json.loads(ids)))]
    assert len(hits), (element, motif, formula)
    return f"env:{hits.index[0]}"


def test_every_distinct_environment_is_one_point_that_knows_its_crystals(tiny_settings, motifs):
    from explorer.motifs import table as motif_table

    sites = motif_table.load("tiny", tiny_settings)
    frame = motif_map.environments_of("tiny", tiny_settings)
    assert len(motifs.ids) == len(frame) == len(motifs.xy) == len(motifs.latents)
    assert motifs.kind == "motifs" and motifs.latents.shape[1] == 32 + 95 + 95  # learned, centre, neighbour counts
    assert motifs.place_columns == 32 + 95  # placed without the counts
    centres = motifs.latents[:, 32:127].argmax(1)
    elements = frame["element"].map(lambda e: Element(e).Z).to_numpy()
    assert (centres == elements).all() and motifs.place(motifs.latents[:2]).shape == (2, 2)
    assert len(frame) <= len(sites)
    # every site of every crystal is a point, or a copy of one (same centre, motif and shell within 0.05 Å)
    held = {i for ids in frame["crystals"] for i in json.loads(ids)}
    assert held == set(sites.loc[sites["cn"].between(1, 16), "id"])
    assert frame["count"].sum() >= len(held)
    assert maps.is_built("tiny", "motifs", tiny_settings)
    assert motif_map.build("tiny", tiny_settings).key == motifs.key  # cached: loaded, not built again


def test_map_points_hover_and_colourings(tiny_settings, motifs):
    points = materials.map_points("tiny", "element", tiny_settings, "motifs")
    assert points["kind"] == "motifs" and len(points["x"]) == len(motifs.ids)
    categories = points["colour"]["categories"]
    assert points["colour"]["kind"] == "categorical" and len(categories) <= 8 and categories[-1] == "other"
    frame = motif_map.environments_of("tiny", tiny_settings)
    assert categories[0] == frame["element"].value_counts().index[0]  # the commonest centre first
    shown = [categories[c] for c in points["colour"]["codes"]]
    assert all(s in (e, "other") for s, e in zip(shown, frame["element"], strict=True))
    na = _find(tiny_settings, "Na", "octahedral", "NaCl")
    hover = points["hover"][points["ids"].index(na)]
    assert "Na octahedral" in hover and "in NaCl" in hover and "Cl 2.8" in hover
    assert materials.map_points("tiny", "cn", tiny_settings, "motifs")["colour"]["kind"] == "continuous"
    assert materials.map_points("tiny", "no such", tiny_settings, "motifs")["color_by"] == "motif"


def test_search_on_the_motif_map(tiny_settings, motifs):
    found = materials.search_points("tiny", "octahedral Ti", tiny_settings, "motifs")
    frame = motif_map.environments_of("tiny", tiny_settings)
    rows = [motifs.index_of(i) for i in found["ids"]]
    assert found["count"] >= 2 and set(frame.iloc[rows]["element"]) == {"Ti"}  # SrTiO3 and TiO2
    nacl = materials.search_points("tiny", "NaCl", tiny_settings, "motifs")
    assert {frame.iloc[motifs.index_of(i)]["element"] for i in nacl["ids"]} == {"Na", "Cl"}


def test_a_known_environment_view(tiny_settings, motifs):
    view = motif_views.environment_view("tiny", _find(tiny_settings, "Ti", "octahedral", "SrTiO3"), tiny_settings)
    assert views.check_view(view, tiny_settings) is view
    structure = views.structure_of(view)
    assert structure[0].specie.symbol == "Ti" and [s.specie.symbol for s in structure[1:]] == ["O"] * 6
    distances = np.linalg.norm(structure.cart_coords[1:] - structure[0].coords, axis=1)
    assert np.allclose(distances, 3.905 / 2, atol=0.01)
    entry = view["environment"]
    assert entry["motif"] == "octahedral" and entry["measures"]["octahedral"] < 0.01
    assert "SrTiO3" in [formula for _, formula in entry["crystals"]]
    assert view["map"] == "motifs" and view["xy"] == motifs.xy[motifs.index_of(view["id"])].tolist()
    payload = cells.viewer_payload(view)
    assert payload["cluster"] and len(payload["polyhedra"]) == 1 and len(payload["polyhedra"][0]["faces"]) == 8
    centre = np.asarray(payload["frac"][0]) @ np.asarray(payload["lattice"])
    assert np.allclose(np.asarray(payload["polyhedra"][0]["vertices"]).mean(0), centre, atol=1e-3)
    with pytest.raises(ValueError, match="no environment"):
        motif_views.environment_view("tiny", "env:99999", tiny_settings)
    with pytest.raises(ValueError, match="no environment"):
        motif_views.environment_view("tiny", ["env:0"], tiny_settings)


def test_empty_space_decodes_a_hypothetical_environment(tiny_settings, motifs):
    low = motifs.xy.min(axis=0) - 1.0
    view = views.hypothetical_view("tiny", float(low[0]), float(low[1]), tiny_settings, kind="motifs")
    assert view["kind"] == "environment" and view["environment"]["source"] == "hypothetical"
    assert views.check_view(view, tiny_settings) is view
    assert set(view["validity"]) >= {"valid", "reasons"} and "(hypothetical environment)" in view["title"]
    entry = view["environment"]
    assert entry["cn"] == len(views.structure_of(view)) - 1
    if entry["measures"]:
        assert entry["motif"] == min(entry["measures"], key=entry["measures"].get)


def test_an_interpolation_between_two_motifs_exports_as_multi_frame_xyz(tiny_settings, motifs):
    import ase.io

    a = motif_views.environment_view("tiny", _find(tiny_settings, "Na", "octahedral", "NaCl"), tiny_settings)
    b = motif_views.environment_view("tiny", _find(tiny_settings, "Si", "tetrahedral", "Si"), tiny_settings)
    path = views.interpolation(a, b, "tiny", tiny_settings, steps=6, method="slerp", kind="motifs")
    assert path["map"] == "motifs" and len(path["frames"]) == len(path["xy"]) == 6
    assert isinstance(path["ends"]["a"], bool) and isinstance(path["ends"]["b"], bool)
    for k, frame in enumerate(path["frames"]):
        assert views.check_view(frame, tiny_settings) is frame
        assert frame["index"] == k and frame["n_atoms"] == frame["environment"]["cn"] + 1
        assert f"(path frame {k} of 5)" in frame["title"]
    assert np.allclose(path["frames"][0]["latent"], a["latent"], atol=1e-6)
    assert views.path_frame(path, 3) is path["frames"][3]
    components.frame_strip(path, 2)  # the strip of formulas reads environment frames too
    name, data = downloads.path_file(path, "extxyz")
    assert name.endswith(".extxyz") and " " not in name
    frames = ase.io.read(io.StringIO(data.decode()), index=":", format="extxyz")
    assert len(frames) == 6
    for atoms, frame in zip(frames, path["frames"], strict=True):
        assert not atoms.pbc.any() and atoms.get_chemical_symbols()[0] == frame["environment"]["element"]
        assert np.allclose(atoms.positions[0], 0.0)
        assert atoms.info["motif"] == frame["environment"]["motif"] and atoms.info["frame"] == frame["index"]
    with pytest.raises(ValueError, match="extended XYZ"):
        downloads.path_file(path, "cif")
    crystal = views.known_view("tiny", materials.table("tiny", tiny_settings)["id"].iloc[0], tiny_settings)
    with pytest.raises(ValueError, match="both be crystals or both be environments"):
        views.interpolation(a, crystal, "tiny", tiny_settings, steps=4, method="linear")


def test_environments_are_not_crystals_for_the_basket_physics_and_files(tiny_settings, motifs):
    import ase.io

    view = motif_views.environment_view("tiny", _find(tiny_settings, "Na", "octahedral", "NaCl"), tiny_settings)
    with pytest.raises(ValueError, match="local environment"):
        downloads.basket_item(view)
    with pytest.raises(ValueError, match="local environment"):
        physics.assess_view(view, "tiny", tiny_settings)
    with pytest.raises(ValueError, match="extended XYZ"):
        downloads.structure_file(view, "cif")
    with pytest.raises(ValueError, match="local environment"):
        downloads.viewer_file(view, supercell="1x1x1", style="spheres")
    name, data = downloads.structure_file(view, "extxyz")
    atoms = ase.io.read(io.StringIO(data.decode()), format="extxyz")
    assert atoms.get_chemical_symbols() == ["Na"] + ["Cl"] * 6 and atoms.info["cn"] == 6
    assert atoms.info["cshm_octahedral"] < 0.01


def test_views_move_between_maps_only_where_they_belong(tiny_settings, motifs):
    record_id = materials.table("tiny", tiny_settings)["id"].iloc[0]
    crystal = views.known_view("tiny", record_id, tiny_settings, kind="motifs")
    assert crystal["map"] == "crystals"  # a crystal shown while the motif map is open sits on the crystal map
    assert views.placed(crystal, "tiny", "motifs", tiny_settings) is crystal
    env = motif_views.environment_view("tiny", "env:0", tiny_settings)
    assert views.placed(env, "tiny", "crystals", tiny_settings) is env
    with pytest.raises(ValueError, match="no place on the motif map"):
        maps.place("tiny", "motifs", [views.structure_of(crystal)], np.asarray([crystal["latent"]]), tiny_settings)


@pytest.mark.parametrize("change, message", [
    ({"latent": [0.0] * 3}, "motif latent must be 222"),
    ({"latent": [float("nan")] * 222}, "motif latent must be 222"),
    ({"map": "crystals"}, "not an environment|unknown map kind"),
    ({"environment": {"source": "known", "crystals": "x", "measures": {}}}, "list of crystals"),
    ({"environment": {"source": "elsewhere"}}, "not an environment"),
    ({"environment": {"source": "known", "crystals": [], "measures": {"a": "b"}}}, "shape measures"),
])
def test_hostile_environment_views_are_refused_in_words(tiny_settings, motifs, change, message):
    view = motif_views.environment_view("tiny", "env:0", tiny_settings)
    with pytest.raises(ValueError, match=message):
        views.check_view({**view, **change}, tiny_settings)
    crystal = views.known_view("tiny", materials.table("tiny", tiny_settings)["id"].iloc[0], tiny_settings)
    with pytest.raises(ValueError, match="unknown map kind"):
        views.check_view({**crystal, "map": "motifs"}, tiny_settings)


def test_export_map_of_the_motifs(tiny_settings, motifs, tmp_path, monkeypatch):
    for name, value in (("DATA_DIR", tiny_settings.data_dir), ("CHECKPOINT", tiny_settings.checkpoint),
                        ("SHARED_DATA_DIR", tiny_settings.shared_data_dir), ("UMAP_N_NEIGHBORS", "5")):
        monkeypatch.setenv(f"EXPLORER_{name}", str(value))
    out = tmp_path / "motifs.csv"
    assert main(["export-map", "--dataset", "tiny", "--kind", "motifs", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == len(motifs.ids) and frame["id"].tolist() == motifs.ids
    assert {"x", "y", "m0", "m31", "m221", "element", "cn", "motif", "csm", "count", "formula", "crystal"} <= set(frame)
    assert np.allclose(frame[["x", "y"]].to_numpy(), motifs.xy, atol=1e-5)
