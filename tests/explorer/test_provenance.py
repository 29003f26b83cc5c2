"""Reproducible exports: every exported decode (CIF, POSCAR, extended XYZ, pymatgen JSON, path frames, the
basket's files and manifest) carries the checkpoint's sha256, its latent, its map position and how it was made,
and ``python -m explorer decode --from FILE`` decodes it again to the same crystal."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest

from explorer.cli import main
from explorer.services import downloads, materials, model, provenance, views
from explorer.services.export import FORMATS


@pytest.fixture(scope="module")
def decoded(tiny_settings):
    from explorer.atlas import get_atlas

    the_map = get_atlas("tiny", tiny_settings)
    x, y = (float(v) for v in the_map.xy.mean(axis=0))
    return views.hypothetical_view("tiny", x, y, tiny_settings)


@pytest.fixture()
def cli_settings(tiny_settings, monkeypatch):
    for name in ("data_dir", "checkpoint", "shared_data_dir"):
        monkeypatch.setenv(f"EXPLORER_{name.upper()}", str(getattr(tiny_settings, name)))
    return tiny_settings


def test_latents_travel_exactly_as_base64():
    latent = np.random.default_rng(0).normal(size=64).astype(np.float32)
    text = provenance.latent_b64(latent)
    assert "=" not in text and np.array_equal(provenance.latent_from_b64(text), latent)
    for bad in ("not base64!", "", "AAA", provenance.latent_b64([np.nan])):
        with pytest.raises(ValueError):
            provenance.latent_from_b64(bad)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_of_a_decode_says_what_made_it_and_decodes_again(decoded, tiny_settings, fmt, tmp_path):
    name, data = downloads.structure_file(decoded, fmt)
    path = tmp_path / name
    path.write_bytes(data)
    _, _, found = provenance.read(data, name, tiny_settings)
    assert found["checkpoint_sha256"] == model.checkpoint_sha256(tiny_settings)
    assert np.array_equal(provenance.latent_from_b64(found["latent_b64"]), np.asarray(decoded["latent"], np.float32))
    assert found["made"].startswith("map point (") and found["map_kind"] == "crystals"
    assert np.allclose([found["map_x"], found["map_y"]], decoded["xy"], atol=1e-5)
    verdict = provenance.redecode(path, tiny_settings)
    assert verdict["matches"] and verdict["rms"] < 1e-3, verdict


def test_decode_from_on_the_command_line(decoded, cli_settings, tmp_path, capsys):
    name, data = downloads.structure_file(decoded, "cif")
    path = tmp_path / name
    path.write_bytes(data)
    assert main(["decode", "--from", str(path)]) == 0
    assert "matches the file" in capsys.readouterr().out
    assert main(["decode", "--from", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matches"] is True
    # another decode's latent in this file: decoded again, it is not the file's crystal
    other = next(v for v in (views.known_view("tiny", i, cli_settings)
                             for i in materials.table("tiny", cli_settings)["id"])
                 if model.decode(np.asarray(v["latent"]), cli_settings).formula != decoded["formula"])
    tampered = data.decode().replace(provenance.latent_b64(decoded["latent"]), provenance.latent_b64(other["latent"]))
    path.write_text(tampered)
    assert main(["decode", "--from", str(path)]) == 1
    assert "does NOT match" in capsys.readouterr().out


def test_files_without_a_decode_or_with_another_checkpoint_are_named(tiny_settings, cli_settings, tmp_path, capsys):
    known = views.known_view("tiny", materials.table("tiny", tiny_settings)["id"].iloc[0], tiny_settings)
    name, data = downloads.structure_file(known, "cif")
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match="carries no latent"):
        provenance.redecode(tmp_path / name, tiny_settings)
    assert main(["decode", "--from", str(tmp_path / name)]) == 2
    assert "carries no latent" in capsys.readouterr().err
    decoded = views.hypothetical_view("tiny", 0.0, 0.0, tiny_settings)
    name, data = downloads.structure_file(decoded, "poscar")
    (tmp_path / name).write_bytes(data)  # a decode the validity check refuses (atoms too close) comes back too
    assert provenance.redecode(tmp_path / name, tiny_settings)["matches"]
    name, data = downloads.structure_file({**decoded, "checkpoint": "0" * 64}, "poscar")
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match="pass --checkpoint"):
        provenance.redecode(tmp_path / name, tiny_settings)
    with pytest.raises(ValueError, match="no such file"):
        provenance.redecode(tmp_path / "missing.cif", tiny_settings)


def test_path_frames_and_the_basket_carry_it_too(decoded, tiny_settings, tmp_path):
    import ase.io

    ids = materials.table("tiny", tiny_settings)["id"].tolist()
    a, b = (views.known_view("tiny", i, tiny_settings) for i in ids[:2])
    path = views.interpolation(a, b, "tiny", tiny_settings, steps=4, method="linear")
    _, data = downloads.path_file(path, "extxyz")
    frames = ase.io.read(io.StringIO(data.decode()), index=":", format="extxyz")
    for k, (atoms, frame) in enumerate(zip(frames, path["frames"], strict=True)):
        assert atoms.info["made"].endswith(f"frame {k} of 3 (linear)")
        assert np.array_equal(provenance.latent_from_b64(atoms.info["latent_b64"]),
                              np.asarray(frame["latent"], np.float32))
    _, data = downloads.path_file(path, "cif")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        first = sorted(archive.namelist())[1]
        (tmp_path / first).write_bytes(archive.read(first))
    assert provenance.redecode(tmp_path / first, tiny_settings)["matches"]
    basket = [downloads.basket_item(decoded), downloads.basket_item(a)]
    name, data = downloads.basket_file(basket, "poscar")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        assert rows[0]["checkpoint_sha256"] == model.checkpoint_sha256(tiny_settings)
        assert rows[0]["made"].startswith("map point") and rows[0]["latent_b64"]
        assert rows[1]["latent_b64"] == "" and rows[1]["hypothetical"] == "False"  # a known material: no decode
        (tmp_path / rows[0]["filename"]).write_bytes(archive.read(rows[0]["filename"]))
    assert provenance.redecode(tmp_path / rows[0]["filename"], tiny_settings)["matches"]
    hostile = {**basket[0], "provenance": {"checkpoint_sha256": "x", "latent_b64": "!!"}}
    name, data = downloads.basket_file([hostile], "cif")  # a broken provenance from the browser is left out
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "explorer {" not in archive.read(next(n for n in archive.namelist() if n.endswith(".cif"))).decode()
