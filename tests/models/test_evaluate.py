"""The CDVAE-protocol metric code on known cases, and the evaluate / reconstruct commands end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from conftest import graphite, nacl, silicon, srtio3
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from scipy.spatial.transform import Rotation

from models.crystal import evaluate, reconstruct
from models.crystal.autoencoder import CrystalAutoencoder, ModelConfig
from models.crystal.checkpoint import load_checkpoint, save_checkpoint
from models.crystal.evaluate import InputCrystal, interpolation_metrics, reconstruction_metrics

SMALL = ModelConfig(max_atoms=12, latent_dim=16, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4,
                    n_interactions=2, readout_hidden=32, d_model=32, n_heads=2, decoder_layers=1, mlp_hidden=32)


def rotated_permuted(s: Structure) -> Structure:
    matrix = Rotation.random(random_state=7).as_matrix()
    order = np.random.default_rng(7).permutation(len(s))
    return Structure(Lattice(s.lattice.matrix @ matrix.T), [s.species[i] for i in order], s.frac_coords[order] + 0.3)


def test_a_crystal_against_itself_rotated_and_permuted_is_a_match_with_zero_rmse():
    rows = [InputCrystal(name, make()) for name, make in
            (("nacl", nacl), ("si", silicon), ("sto", srtio3), ("graphite", graphite))]
    metrics = reconstruction_metrics(rows, [rotated_permuted(r.structure.get_primitive_structure()) for r in rows])
    assert metrics["match_rate"] == 1.0 and metrics["rmse"] < 1e-6
    assert metrics["composition_match_rate"] == 1.0 and metrics["atom_count_accuracy"] == 1.0
    assert metrics["lattice_mae_lengths"] < 1e-6 and metrics["lattice_mae_angles"] < 1e-4
    assert metrics["struct_validity"] == 1.0 and metrics["comp_validity"] == 1.0
    assert metrics["volume_error"] < 1e-9


def test_the_volume_error_is_the_median_over_decodes_of_the_volume_per_atom():
    """The match and the RMSE normalise the volume away; ``volume_error`` does not (a supercell has the same volume per
    atom as its cell)."""
    rows = [InputCrystal(name, make()) for name, make in (("nacl", nacl), ("si", silicon), ("sto", srtio3))]
    decoded = [r.structure.copy() for r in rows]
    for structure, factor in zip(decoded, (1.1, 0.8, 1.0), strict=True):
        structure.scale_lattice(structure.volume * factor)
    decoded[2].make_supercell([2, 1, 1])
    metrics = reconstruction_metrics(rows, decoded)
    assert metrics["match_rate"] == 1.0
    assert metrics["volume_error"] == pytest.approx(0.1)  # the median of 0.1, 0.2 and 0


def test_misses_count_over_all_crystals():
    crowded = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])  # 0.11 Å apart: invalid
    rows = [InputCrystal("ok", nacl()), InputCrystal("invalid", nacl()), InputCrystal("wrong", silicon()),
            InputCrystal("unreadable", None, "ValueError: bad CIF"), InputCrystal("failed", srtio3())]
    decoded = [nacl(), crowded, nacl(), None, None]
    metrics = reconstruction_metrics(rows, decoded)
    assert metrics["n"] == 5 and metrics["n_unreadable"] == 1
    assert metrics["match_rate"] == pytest.approx(1 / 5)  # an invalid decode is a miss even if it would match
    assert metrics["struct_validity"] == pytest.approx(2 / 5)


def test_read_cdvae_csv_keeps_unreadable_rows(tmp_path):
    path = tmp_path / "set.csv"
    pd.DataFrame({"material_id": ["a", "b"], "cif": [str(CifWriter(nacl())), "data_broken\n_cell_length_a"]}
                 ).to_csv(path, index=False)
    rows = evaluate.read_cdvae_csv(path)
    assert [r.material_id for r in rows] == ["a", "b"]
    assert rows[0].structure is not None and rows[1].structure is None and rows[1].error
    with pytest.raises(ValueError, match="needs a 'cif' column"):
        pd.DataFrame({"material_id": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
        evaluate.read_cdvae_csv(tmp_path / "bad.csv")


def test_interpolation_uses_nine_interior_frames_per_pair():
    model = CrystalAutoencoder(config=SMALL).eval()
    latents = np.random.default_rng(0).normal(size=(6, model.latent_size))
    metrics = interpolation_metrics(model, latents, n_pairs=5)
    assert metrics["interp_pairs"] == 5 and metrics["interp_frames"] == 45
    assert 0.0 <= metrics["interp_struct_validity"] <= 1.0 and 0.0 <= metrics["interp_comp_validity"] <= 1.0


def test_evaluate_and_reconstruct_commands(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "small.pt", model=CrystalAutoencoder(config=SMALL), data_hash="test",
                                 metrics={})
    data = tmp_path / "set.csv.gz"
    frame = pd.DataFrame({"material_id": ["nacl", "si", "broken"],
                          "cif": [str(CifWriter(nacl())), str(CifWriter(silicon())), "not a cif"]})
    frame.to_csv(data, index=False, compression="gzip")
    out = tmp_path / "metrics.json"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    for key in ("n", "match_rate", "rmse", "composition_match_rate", "struct_validity", "comp_validity",
                "interp_struct_validity", "interp_comp_validity"):
        assert key in metrics
    assert metrics["n"] == 3 and metrics["n_unreadable"] == 1
    decoded = tmp_path / "decoded.csv"
    assert reconstruct.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(decoded)]) == 0
    with open(decoded) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["material_id"] for r in rows] == ["nacl", "si", "broken"]
    assert rows[2]["cif"] == "" and Structure.from_str(rows[0]["cif"], fmt="cif").is_ordered
    plain = tmp_path / "plain.csv"
    assert reconstruct.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(plain), "--plain"]) == 0
    with open(plain) as handle:
        written = Structure.from_str(list(csv.DictReader(handle))[1]["cif"], fmt="cif")
    model = load_checkpoint(checkpoint).model
    expected = model.decode(model.encode_structures([silicon()])[0], search=False)[0].structure
    assert written.composition == expected.composition
    assert np.allclose(written.lattice.abc, expected.lattice.abc, atol=1e-4)
    assert evaluate.main(["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data), "--out", str(out)]) == 2


def test_reconstruct_can_relax_every_decode_with_the_potential(tmp_path):
    from small_model import small_checkpoint

    from models import potential

    checkpoint = small_checkpoint(tmp_path / "small.pt")  # trained on a dozen real crystals: near-real decodes
    data = tmp_path / "set.csv.gz"
    pd.DataFrame({"material_id": ["nacl", "si"], "cif": [str(CifWriter(nacl())), str(CifWriter(silicon()))]}).to_csv(
        data, index=False, compression="gzip")
    plain, relaxed = tmp_path / "plain.csv", tmp_path / "relaxed.csv"
    assert reconstruct.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(plain)]) == 0
    assert reconstruct.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(relaxed),
                             "--relax"]) == 0
    with open(plain) as a, open(relaxed) as b:
        before, after = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert list(after[0]) == ["material_id", "cif", "relax_error"]
    for old, new in zip(before, after, strict=True):
        first, last = (Structure.from_str(r["cif"], fmt="cif") for r in (old, new))
        if new["relax_error"]:
            assert "the relaxation was stopped" in new["relax_error"] and last == first
        else:
            assert potential.energies([last])[0] <= potential.energies([first])[0] + 1e-3


def test_a_runs_training_crystals_are_offered_to_the_search_never_its_held_out_ones(tmp_path):
    """``--known SPLIT``: the tables of the split without its held-out ids, encoded by the model; a bad split file
    is an error in words, exit 2."""
    from tiny_tables import write_table

    table = write_table(tmp_path / "t.parquet", [nacl(), silicon(), srtio3(), graphite()], prefix="t")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"tables": [str(table)], "val_ids": ["t:1"]}))
    model = CrystalAutoencoder(config=SMALL)
    known = evaluate.known_training_cells(model, split)
    assert len(known) == 3 and known.latents.shape == (3, model.latent_size)
    assert sorted(len(c.numbers) for c in known.cells) == sorted([len(nacl()), len(srtio3()), len(graphite())])
    checkpoint = save_checkpoint(tmp_path / "small.pt", model=model, data_hash="test", metrics={})
    data = tmp_path / "set.csv.gz"
    pd.DataFrame({"material_id": ["si"], "cif": [str(CifWriter(silicon()))]}).to_csv(data, index=False,
                                                                                       compression="gzip")
    out = tmp_path / "m.json"
    assert evaluate.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                          "--known", str(split)]) == 0
    assert json.loads(out.read_text())["n"] == 1
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert reconstruct.main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                             "--known", str(tmp_path / "bad.json")]) == 2
