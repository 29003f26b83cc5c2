"""App-facing services on the tiny dataset: search, colour options, views (known, hypothetical, upload),
interpolation paths and downloads; every result is plain JSON."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from explorer.services import materials


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


@pytest.mark.parametrize("color_by", ["density", "crystal_system"])
def test_map_points_as_arrays_agree_with_the_lists_and_hover_texts_come_for_any_points(tiny_settings, color_by):
    import numpy as np

    lists = materials.map_points("tiny", color_by, tiny_settings)
    arrays = materials.map_points("tiny", color_by, tiny_settings, hover=False)
    assert arrays["hover"] is None and arrays["ids"] == lists["ids"]
    np.testing.assert_array_equal(arrays["x"], lists["x"])
    np.testing.assert_array_equal(arrays["rows"], lists["rows"])
    key = "codes" if lists["colour"]["kind"] == "categorical" else "values"
    expected = np.array([np.nan if v is None else v for v in lists["colour"][key]], dtype=float)
    np.testing.assert_array_equal(np.asarray(arrays["colour"][key], dtype=float), expected)
    some = [7, 0, 3]
    assert materials.hover_of("tiny", "crystals", arrays, some, tiny_settings) == [lists["hover"][k] for k in some]


def test_map_problem_names_what_is_missing(tiny_settings, tmp_path):
    assert materials.map_problem("tiny", tiny_settings) is None
    missing = tiny_settings.model_copy(update={"checkpoint": tmp_path / "none.pt"})
    assert "No model checkpoint at" in materials.map_problem("tiny", missing)
    other = tiny_settings.model_copy(update={"umap_seed": 7})
    assert "not built" in materials.map_problem("tiny", other)
