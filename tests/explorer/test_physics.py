"""Energy, stability, novelty and relaxation of structures on screen, and the assess / generate commands, on the
tiny dataset (a dozen real crystals) with the real potential."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import nacl, silicon
from pymatgen.core import Composition, Lattice, Structure

from explorer.cli import main
from explorer.services import hull, materials, physics, views


def _id_of(formula, settings, dataset="tiny") -> str:
    frame = materials.table(dataset, settings)
    return frame.loc[frame["reduced_formula"] == formula, "id"].iloc[0]


@pytest.mark.parametrize("make,formula", [(silicon, "Si"), (nacl, "NaCl")])
def test_diamond_si_and_rock_salt_sit_on_the_known_hull_and_are_not_novel(make, formula, tiny_settings):
    found = physics.assess(make(), "tiny", tiny_settings)
    assert found["e_above_hull"] is not None and abs(found["e_above_hull"]) <= 0.02
    assert found["novel"] is False and found["match_id"] == _id_of(formula, tiny_settings)
    assert "on this map" in found["hull"]


def test_the_hull_has_element_references_and_is_cached_per_chemical_system(tiny_settings):
    # tiny holds NaCl but neither Na nor Cl metal: ASE's dcdft crystals give the corners
    entries = hull.known_entries("tiny", ("Cl", "Na"), tiny_settings)
    assert {e["id"] for e in entries} >= {"ASE dcdft:Na", "ASE dcdft:Cl", _id_of("NaCl", tiny_settings)}
    cached = hull._folder("tiny", tiny_settings) / "Cl-Na.json"  # keyed by the potential and the table
    assert cached.parent.name.startswith("tiny-") and cached.parent.parent == tiny_settings.data_dir / "physics"
    assert json.loads(cached.read_text())["entries"][0]["id"] == _id_of("NaCl", tiny_settings)
    stable = hull.stability(Composition("NaCl"), -3.0, "tiny", tiny_settings)  # 0.67 eV/atom above rock salt
    assert 0.5 < stable.e_above_hull < 0.8
    assert stable.decomposition[0][1] == "NaCl"
    below = hull.stability(Composition("NaCl"), -4.5, "tiny", tiny_settings)
    assert below.e_above_hull < 0 and "below the hull" in below.sentence


def test_an_element_without_any_reference_has_no_hull_and_says_why(tiny_settings):
    stable = physics.stability(Structure(Lattice.cubic(3.0), ["Pu"], [[0, 0, 0]]), -10.0, "tiny", tiny_settings)
    assert stable["e_above_hull"] is None and "Pu" in stable["sentence"]


def test_a_decode_equal_to_a_known_material_is_reported_with_its_id(tiny_settings):
    known = views.known_view("tiny", _id_of("Si", tiny_settings), tiny_settings)
    decoded_like = {**known, "kind": "hypothetical", "id": "hypothetical@0,0", "title": "Si (hypothetical)"}
    found = physics.assess_view(decoded_like, "tiny", tiny_settings)
    assert found["novel"] is False and found["match_id"] == known["id"]
    assert "novel" not in physics.assess_view(known, "tiny", tiny_settings)  # a known material is not asked
    assert found["match_volume_ratio"] == 1.0
    strained = Structure(Lattice.cubic(4.2), ["Si"], [[0, 0, 0]])  # simple-cubic Si: not in the table
    assert physics.novelty(strained, "tiny", tiny_settings)["novel"] is True


def test_a_match_at_another_volume_says_so(tiny_settings):
    """StructureMatcher scales volumes: rock salt squeezed to half its volume still matches the known NaCl. The match
    stands (the structure type is known) and says at what volume, which the panel and `assess` put in words."""
    from explorer.ui.physics_panel import physics_info

    squeezed = nacl()
    squeezed.scale_lattice(squeezed.volume * 0.5)
    found = physics.assess(squeezed, "tiny", tiny_settings)
    assert found["novel"] is False and found["match_id"] == _id_of("NaCl", tiny_settings)
    assert found["match_volume_ratio"] == pytest.approx(0.5, abs=0.01)  # the table's NaCl is the one nacl() makes
    words = str(physics_info(found))
    assert "its structure type at 0.50x its volume per atom" in words and found["pressure"] > 10
    assert physics.volume_words(1.05) == "" and physics.volume_words(None) == ""


def test_a_view_from_the_browser_is_checked_before_the_potential_sees_it(tiny_settings):
    with pytest.raises(ValueError, match="unknown dataset"):
        physics.assess_view({"kind": "known"}, "../../etc", tiny_settings)
    with pytest.raises(ValueError, match="not a structure view"):
        physics.assess_view({"kind": "bogus", "title": "x"}, "tiny", tiny_settings)


def test_relax_reports_every_step_and_can_be_stopped(tiny_settings):
    rattled = silicon()
    rattled.perturb(0.1)
    steps: list[dict] = []
    result = physics.relax(rattled, tiny_settings, on_step=steps.append)
    assert result.converged and not result.stopped and result.energy_after < result.energy_before
    assert [s["step"] for s in steps] == list(range(result.steps + 1))
    assert result.space_group_after.startswith("Fd-3m") and 0 < result.rms_displacement < 0.2
    stopped = physics.relax(rattled, tiny_settings, should_stop=lambda: True)
    assert stopped.stopped and stopped.steps == 0
    summary = physics.check_summary(result.summary())
    assert summary == result.summary()
    for bad in ({**summary, "energy_after": float("nan")}, {**summary, "steps": True}, "x"):
        with pytest.raises(ValueError):
            physics.check_summary(bad)


def test_a_relaxed_view_is_placed_on_the_map_with_its_summary(tiny_settings):
    source = views.known_view("tiny", _id_of("Si", tiny_settings), tiny_settings)
    rattled = views.structure_of(source)
    rattled.perturb(0.05)
    result = physics.relax(rattled, tiny_settings)
    view = views.relaxed_view(source, result.structure, result.summary(), "tiny", tiny_settings)
    assert view["kind"] == "relaxed" and view["title"] == "Si (relaxed)" and len(view["xy"]) == 2
    assert views.check_view(view, tiny_settings) is view
    assert any(label == "relaxation" for label, _ in view["details"])


def test_energies_along_a_path(tiny_settings):
    a = views.known_view("tiny", _id_of("NaCl", tiny_settings), tiny_settings)
    b = views.known_view("tiny", _id_of("Si", tiny_settings), tiny_settings)
    path = views.interpolation(a, b, "tiny", tiny_settings, steps=4, method="linear")
    series = physics.path_energies(path, "tiny", tiny_settings)
    assert series["index"] == [0, 1, 2, 3] and len(series["energy_per_atom"]) == 4
    assert all(e is None or np.isfinite(e) for e in series["energy_per_atom"])
    assert len(series["problems"]) == sum(e is None for e in series["energy_per_atom"])
    with pytest.raises(ValueError, match="no interpolation path"):
        physics.path_energies({"frames": []}, "tiny", tiny_settings)


def test_assess_a_folder_reports_the_broken_file_and_does_the_rest(tiny_settings, tmp_path, capsys, monkeypatch):
    from explorer.services.export import structure_to_bytes

    rattled = silicon()
    rattled.perturb(0.1)
    (tmp_path / "NaCl.cif").write_bytes(structure_to_bytes(nacl(), fmt="cif"))
    (tmp_path / "Si-rattled.cif").write_bytes(structure_to_bytes(rattled, fmt="cif"))
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\nloop_\n")
    for key, value in {"DATA_DIR": tiny_settings.data_dir, "CHECKPOINT": tiny_settings.checkpoint,
                       "WORKERS": "1"}.items():
        monkeypatch.setenv(f"EXPLORER_{key}", str(value))
    code = main(["assess", str(tmp_path), "--dataset", "tiny", "--relax", "--json"])
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert code == 1 and set(rows) == {"NaCl.cif", "Si-rattled.cif", "broken.cif"}
    assert "not a valid CIF" in rows["broken.cif"]["error"]
    si = rows["Si-rattled.cif"]
    assert si["novel"] is False and si["relaxed"]["energy_per_atom"] < si["energy_per_atom"]
    assert si["relaxed"]["steps"] > 0 and abs(si["relaxed"]["e_above_hull"]) <= 0.02
    assert {"formula", "max_force", "e_above_hull", "decomposition", "match_id"} <= set(rows["NaCl.cif"])


def test_generate_writes_crystals_rows_and_a_consistent_summary(tiny_settings, tmp_path):
    from explorer.atlas import get_atlas
    from explorer.generate import SUMMARY_KEYS, generate, sample_latents

    summary = generate("tiny", tiny_settings, n=6, seed=3, out=tmp_path)
    assert set(SUMMARY_KEYS) <= set(summary) and summary["n"] == 6
    assert summary["valid"] <= min(summary["structurally_valid"], summary["compositionally_valid"])
    assert summary["novel"] + summary["rediscovered"] <= summary["unique"] <= summary["valid"]
    assert summary["stable_0"] <= summary["stable_0.1"]
    rows = pd.read_csv(tmp_path / "generated.csv")
    assert len(rows) == 6 and rows["valid"].sum() == summary["valid"]
    kept = pd.read_csv(tmp_path / "candidates.csv")
    assert len(list((tmp_path / "cif").glob("gen-*.cif"))) == len(kept) == summary["kept"] == summary["unique"]
    assert set(kept["material_id"]) == set(rows.loc[rows["unique"], "id"]) and kept["cif"].str.contains("_cell").all()
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 6
    the_map = get_atlas("tiny", tiny_settings)
    first, _ = sample_latents(the_map, 6, seed=3)
    again, origins = sample_latents(the_map, 6, seed=3)
    assert np.array_equal(first, again) and sum(o.startswith("midpoint") for o in origins) == 3


def test_without_the_potential_everything_else_works_and_the_panel_says_why(monkeypatch, tiny_settings):
    from explorer.ui.physics_panel import physics_info
    from models import potential

    def broken(device):
        raise potential.PotentialUnavailable("CHGNet 0.3.0 could not be loaded (ImportError: no module chgnet)")

    monkeypatch.setattr(potential, "_load", broken)
    problem = physics.potential_problem(tiny_settings)
    assert "could not be loaded" in problem
    panel = str(physics_info(None, f"The potential is not available, so there is no energy: {problem}"))
    assert "no module chgnet" in panel
    assert views.known_view("tiny", _id_of("Si", tiny_settings), tiny_settings)["kind"] == "known"


def test_a_relaxed_structure_exports_like_any_other(tiny_settings):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from explorer.services import downloads

    source = views.known_view("tiny", _id_of("NaCl", tiny_settings), tiny_settings)
    result = physics.relax(views.structure_of(source), tiny_settings)
    view = views.relaxed_view(source, result.structure, result.summary(), "tiny", tiny_settings)
    name, data = downloads.structure_file(view, "cif")
    assert name.endswith(".cif") and "relaxed" in name
    back = Structure.from_str(data.decode(), fmt="cif")
    assert StructureMatcher().fit(back, result.structure)
    assert downloads.basket_item(view)["hypothetical"] is True
