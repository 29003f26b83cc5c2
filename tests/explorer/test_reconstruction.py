"""Does the model give each known material back? The per-material check of a map, and where the app shows it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher

from explorer import reconstruction
from explorer.services import materials, model, views
from models.crystal.metrics import MATCHER_TOLERANCES


@pytest.fixture(scope="module")
def recon(tiny_settings):
    from small_model import reconstruction_dataset

    return reconstruction_dataset(tiny_settings)


def _decodes_back(dataset, record_id, settings) -> bool:
    """Independently of ``explorer.reconstruction``: decode the material's map latent, match with the table row."""
    from explorer.atlas import get_atlas
    from explorer.datasets.records import canonical_structure

    the_map = get_atlas(dataset, settings)
    decoded = model.decode(the_map.latents[the_map.ids.index(record_id)], settings).structure
    target = canonical_structure(materials.row_of(dataset, record_id, settings))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StructureMatcher(**MATCHER_TOLERANCES).get_rms_dist(decoded, target) is not None


def _id_of(dataset, formula, settings) -> str:
    frame = materials.table(dataset, settings)
    return frame.loc[frame["reduced_formula"] == formula, "id"].item()


def test_the_flag_is_right_for_a_material_given_back_and_one_that_is_not(recon, tiny_settings):
    stored = reconstruction.load(recon, tiny_settings)
    assert stored is not None and len(stored.frame) == 4
    rock_salt, spinel = _id_of(recon, "NaCl", tiny_settings), _id_of(recon, "MgAl2O4", tiny_settings)
    assert stored.of(rock_salt)["matched"] and _decodes_back(recon, rock_salt, tiny_settings)
    assert stored.of(rock_salt)["rms"] is not None and 0 <= stored.of(rock_salt)["rms"] < 0.5
    missed = stored.of(spinel)
    assert not missed["matched"] and missed["rms"] is None and not _decodes_back(recon, spinel, tiny_settings)
    assert missed["decoded_formula"] != "" and "(" in missed["decoded_spacegroup"]
    for record_id in stored.frame["id"]:  # every flag agrees with the independent check
        assert stored.of(record_id)["matched"] == _decodes_back(recon, record_id, tiny_settings)
    assert stored.share == pytest.approx(stored.frame["matched"].mean())
    assert f"of 4 materials of {recon}" in stored.sentence()


def test_a_known_view_says_whether_the_model_gives_it_back(recon, tiny_settings):
    good = views.known_view(recon, _id_of(recon, "NaCl", tiny_settings), tiny_settings)["reconstruction"]
    assert good["matched"] is True and good["message"].startswith("the autoencoder reconstructs this material")
    spinel_id = _id_of(recon, "MgAl2O4", tiny_settings)
    bad = views.known_view(recon, spinel_id, tiny_settings)["reconstruction"]
    assert bad["matched"] is False and bad["message"].startswith("the autoencoder decodes it as ")
    assert bad["message"].endswith("(not a match)")
    decode = views.decode_of_known(recon, spinel_id, tiny_settings)
    assert decode["kind"] == "hypothetical" and decode["id"] == f"decode:{spinel_id}"
    assert decode["formula"] in bad["message"] and spinel_id in decode["note"]
    with pytest.raises(ValueError, match="no material"):
        views.decode_of_known(recon, "../../etc/passwd", tiny_settings)


def test_reconstruction_is_a_colour_of_the_map_with_its_share_in_the_status(recon, tiny_settings):
    values = [o["value"] for o in materials.map_color_options(recon, tiny_settings)]
    assert reconstruction.COLUMN in values and reconstruction.RMS_COLUMN in values
    points = materials.map_points(recon, reconstruction.COLUMN, tiny_settings)
    colour = points["colour"]
    assert colour["kind"] == "categorical" and set(colour["categories"]) == {reconstruction.MATCHED,
                                                                             reconstruction.NOT_MATCHED}
    spinel_at = points["ids"].index(_id_of(recon, "MgAl2O4", tiny_settings))
    assert colour["categories"][colour["codes"][spinel_at]] == reconstruction.NOT_MATCHED
    rms = materials.map_points(recon, reconstruction.RMS_COLUMN, tiny_settings)["colour"]["values"]
    assert rms[spinel_at] is None and all(v is None or v >= 0 for v in rms)
    assert "reconstructs" in points["reconstruction"] and "of 4 materials" in points["reconstruction"]


def test_a_map_without_its_check_says_so_and_has_no_such_colour(tiny_settings):
    from small_model import ingest_crystals, real_crystals

    from explorer.atlas import build_atlas

    ingest_crystals(tiny_settings, "tiny-unchecked", real_crystals()[3:7], tiny_settings.data_dir.parent / "unchecked")
    build_atlas("tiny-unchecked", tiny_settings)
    assert reconstruction.load("tiny-unchecked", tiny_settings) is None
    values = [o["value"] for o in materials.map_color_options("tiny-unchecked", tiny_settings)]
    assert reconstruction.COLUMN not in values and reconstruction.RMS_COLUMN not in values
    points = materials.map_points("tiny-unchecked", reconstruction.COLUMN, tiny_settings)
    assert points["color_by"] == "source" and points["reconstruction"] is None
    view = views.known_view("tiny-unchecked", points["ids"][0], tiny_settings)
    assert view["reconstruction"] == {"matched": None, "message": reconstruction.message(None)}
    assert "not checked yet" in view["reconstruction"]["message"]


def test_an_interpolation_marks_an_end_the_decoder_does_not_reproduce(recon, tiny_settings):
    a = views.known_view(recon, _id_of(recon, "NaCl", tiny_settings), tiny_settings)
    b = views.known_view(recon, _id_of(recon, "MgAl2O4", tiny_settings), tiny_settings)
    path = views.interpolation(a, b, recon, tiny_settings, steps=4, method="linear")
    assert path["ends"] == {"a": True, "b": False}
    from explorer.ui.components import frame_strip

    strip = frame_strip(path, 0)
    assert "endpoint-missed" in strip[-1].className and "endpoint-missed" not in strip[0].className
    assert "does not reproduce B" in strip[-1].title


def test_the_check_is_stored_beside_the_map_and_read_back(recon, tiny_settings):
    path = reconstruction.path_of(recon, tiny_settings)
    assert path.is_file() and path.parent.name.startswith(f"{recon}-")
    again = reconstruction.compute(recon, tiny_settings)  # stored: not computed again
    assert np.array_equal(again.frame["matched"], reconstruction.load(recon, tiny_settings).frame["matched"])
    with pytest.raises(ValueError):
        reconstruction.path_of("../x", tiny_settings)


def test_a_new_version_of_the_search_makes_a_new_check(recon, tiny_settings, monkeypatch):
    """A stored check was made by one version of the search: after a change that can change decodes it is not read."""
    from models.crystal import search

    old = reconstruction.path_of(recon, tiny_settings)
    legacy = old.parent / reconstruction.LEGACY_FILE_NAME.format(n=tiny_settings.known_starts)  # before the version
    legacy.write_bytes(old.read_bytes())
    monkeypatch.setattr(search, "SEARCH_VERSION", search.SEARCH_VERSION + 1)
    assert not reconstruction.path_of(recon, tiny_settings).is_file()
    assert reconstruction.load(recon, tiny_settings) is None
    reconstruction.compute(recon, tiny_settings)  # the new check replaces the old ones
    assert reconstruction.path_of(recon, tiny_settings).is_file() and not old.exists() and not legacy.exists()
    monkeypatch.undo()  # the other tests of this module read the check of the current version
    reconstruction.compute(recon, tiny_settings)
    assert old.is_file()


def test_a_check_names_the_version_of_the_known_map_its_decodes_drew_on(recon, tiny_settings):
    """A check's decodes were offered the crystals of the known-starts dataset's map, when it is built: another
    version of that map (or its first build) makes another check, never a stale one read as current."""
    from explorer.atlas import atlas_key, build_atlas
    from models.crystal.search import SEARCH_VERSION

    path = reconstruction.path_of(recon, tiny_settings)
    assert path.name.endswith("-with-none.parquet")  # the tests' "known" map is not built: no known crystals offered
    build_atlas("tiny", tiny_settings)
    drawing_on_tiny = tiny_settings.model_copy(update={"known_starts_dataset": "tiny"})
    named = reconstruction.path_of(recon, drawing_on_tiny)
    assert named.parent == path.parent and named != path
    assert named.name.endswith(f"-with-tiny-{atlas_key('tiny', tiny_settings)[:16]}.parquet")
    assert reconstruction.load(recon, drawing_on_tiny) is None  # a check to make, not the one made without it
    plain = reconstruction.FILE_NAME.format(n=8, v=SEARCH_VERSION)
    assert reconstruction.path_of("tiny", drawing_on_tiny).name == plain  # its own check: its folder names the map
    assert reconstruction.path_of(recon, tiny_settings.model_copy(update={"known_starts": 0})).name == \
        reconstruction.FILE_NAME.format(n=0, v=SEARCH_VERSION)
    assert reconstruction.path_of(recon, tiny_settings.model_copy(update={"known_starts_dataset": "../x"})).name \
        .endswith("-with-none.parquet")


def test_the_check_records_the_known_crystal_a_decode_was_made_from(recon, tiny_settings):
    """Each entry keeps ``properties["decoded_from"]`` of its decode ("" for the decoder's own crystal): the panel then
    says when a material comes back through another known crystal's geometry, and the status how many do."""
    import pandas as pd

    from explorer.atlas import get_atlas
    from models.crystal.autoencoder import DecodedArrays
    from models.crystal.search import Cell

    stored = reconstruction.load(recon, tiny_settings)
    the_map = get_atlas(recon, tiny_settings)
    for record_id in stored.frame["id"]:  # as an independent decode of the same latent says
        decoded = model.decode(the_map.latents[the_map.ids.index(record_id)], tiny_settings).structure
        assert stored.of(record_id)["decoded_from"] == decoded.properties.get("decoded_from", "")
    salt = Cell(numbers=np.array([11, 17]), frac=np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), lattice=np.eye(3) * 5.64)
    arrays = DecodedArrays.from_cells([salt, Cell(salt.numbers, salt.frac, salt.lattice, origin="mp-22862")])
    own, borrowed = reconstruction.entries([arrays.structure(0), arrays.structure(1)], [arrays.structure(0)] * 2)
    assert own["matched"] and own["decoded_from"] == "" and borrowed["decoded_from"] == "mp-22862"
    assert "known crystal" not in reconstruction.message(own)
    assert reconstruction.message(borrowed).endswith("the search chose the geometry of known crystal mp-22862, "
                                                     "renamed to its elements")
    missed = {**borrowed, "matched": False, "rms": None, "decoded_spacegroup": "Fm-3m (225)"}
    assert "(not a match): the search chose the geometry of known crystal mp-22862" in reconstruction.message(missed)
    assert "known crystal" not in reconstruction.message({**borrowed, "decoded_from": None})  # a check of before
    frame = pd.DataFrame({"id": ["a", "b", "c"], "matched": [True, True, False], "rms": [0.1, 0.1, np.nan],
                          "decoded_formula": ["NaCl"] * 3, "decoded_spacegroup": ["", "", "P1 (1)"],
                          "decoded_from": ["", "mp-1", "mp-2"]})
    assert reconstruction.Reconstruction("x", frame).sentence().endswith(
        "reconstructs 2 of 3 materials of x (66.7 %), 1 of them through the geometry of another known crystal")
    older = reconstruction.Reconstruction("x", frame.drop(columns="decoded_from"))
    assert older.sentence().endswith("(66.7 %)") and older.of("b")["decoded_from"] is None
