"""The explorer from Python (``explorer.api.Explorer``) on tiny real crystals and the small model trained for the
tests, and the example notebook of docs/, executed end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import nacl, silicon, srtio3
from pymatgen.io.ase import AseAtomsAdaptor

from explorer.api import Explorer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ex(tiny_settings):
    from explorer.atlas import build_atlas

    build_atlas("tiny", tiny_settings)
    return Explorer("tiny", settings=tiny_settings)


def test_every_input_kind_gives_the_same_latent(ex, tmp_path):
    from explorer.services.export import structure_to_bytes

    (tmp_path / "NaCl.cif").write_bytes(structure_to_bytes(nacl(), fmt="cif"))
    from explorer.services import model

    z = ex.encode(nacl())
    assert z.shape == (model.latent_dim(ex.settings),) and z.dtype == np.float32
    np.testing.assert_allclose(ex.encode(AseAtomsAdaptor.get_atoms(nacl())), z, atol=1e-5)
    np.testing.assert_allclose(ex.encode(str(tmp_path / "NaCl.cif")), z, atol=1e-5)
    np.testing.assert_allclose(ex.encode(tmp_path / "NaCl.cif"), z, atol=1e-5)
    table = ex.table
    record = table.loc[table["reduced_formula"] == "NaCl", "id"].iloc[0]
    np.testing.assert_allclose(ex.encode(record), z, atol=1e-4)
    table["reduced_formula"] = "changed"  # a copy: the app's table is untouched
    assert "changed" not in set(ex.table["reduced_formula"])


@pytest.mark.parametrize("bad, words", [("no-such-id", "no material 'no-such-id'"), (3.5, "expected a pymatgen"),
                                        ("/etc", "not a file")])
def test_bad_inputs_get_the_apps_messages(ex, bad, words):
    with pytest.raises(ValueError, match=words):
        ex.encode(bad)


def test_a_broken_file_is_named(ex, tmp_path):
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\nloop_\n")
    with pytest.raises(ValueError, match="broken.cif"):
        ex.encode(tmp_path / "broken.cif")


def test_decode_and_decode_at_say_what_made_them(ex):
    from explorer.services import model

    s = ex.decode(ex.encode(silicon()))
    assert len(s) >= 1 and set(s.properties) >= {"validity", "latent", "checkpoint_sha256"}
    assert s.properties["checkpoint_sha256"] == model.checkpoint_sha256(ex.settings)
    x, y = ex.place(srtio3())
    point = ex.decode_at(x + 0.2, y)
    assert point.properties["map"] == "crystals" and point.properties["map_x"] == pytest.approx(x + 0.2)
    with pytest.raises(ValueError, match="latent must be finite"):
        ex.decode([1.0, 2.0])
    with pytest.raises(ValueError, match="not a pair of finite numbers"):
        ex.decode_at(float("nan"), 0)


def test_interpolate_nearest_and_place(ex):
    table = ex.table
    record = table.loc[table["reduced_formula"] == "SrTiO3", "id"].iloc[0]
    frames = ex.interpolate(record, nacl(), steps=5, method="slerp")
    assert len(frames) == 5 and [f.properties["frame"] for f in frames] == list(range(5))
    near = ex.nearest(record, k=3)
    assert list(near.columns) == ["id", "formula", "distance"] and len(near) == 3 and record not in set(near["id"])
    assert near["distance"].is_monotonic_increasing
    assert ex.nearest(srtio3(), k=1)["formula"].iloc[0] == "SrTiO3"  # its own table entry is nearest
    from explorer.atlas import get_atlas

    the_map = get_atlas("tiny", ex.settings)
    assert ex.place(record) == tuple(float(v) for v in the_map.xy[the_map.index_of(record)])
    with pytest.raises(ValueError, match="k must be"):
        ex.nearest(record, k=0)


def test_map_and_show_need_no_network(ex):
    figure = ex.map(color_by="density")
    assert len(figure.data[1].x) == 12 and "density" in figure.layout.title.text
    view = ex.show(srtio3(), supercell=(2, 1, 1), polyhedra=True)
    page = view._make_html()
    inline, rest = page.split("var $3Dmolpromise = Promise.resolve();", 1)  # 3Dmol.js itself, before the loader
    assert "$3Dmol" in inline and len(inline) > 100_000
    assert "jsdelivr" not in page and "3dmol.org" not in rest.lower() and 'src="http' not in page
    assert rest.count(".addCustom(") == 2  # one TiO6 octahedron per cell, two cells


def test_motifs_and_physics(ex):
    sites = ex.motifs(srtio3())
    assert sorted(zip(sites["element"], sites["motif"], strict=True)) == [
        ("O", "linear"), ("Sr", "cuboctahedral"), ("Ti", "octahedral")]
    row = ex.assess(nacl())
    assert row["formula"] == "NaCl" and row["energy_per_atom"] < 0
    rattled = silicon()
    rattled.perturb(0.05)
    relaxed = ex.relax(rattled)
    assert relaxed.properties["relaxation"]["energy_after"] <= relaxed.properties["relaxation"]["energy_before"]


def test_the_motif_map_from_python(ex):
    from explorer import motif_map

    motif_map.build("tiny", ex.settings)
    figure = ex.map(kind="motifs", color_by="element")
    assert "distinct environments" in figure.layout.title.text and figure.layout.meta["kind"] == "motifs"
    frame = motif_map.environments_of("tiny", ex.settings)
    ti = f"env:{frame.index[(frame['element'] == 'Ti') & (frame['motif'] == 'octahedral')][0]}"
    octahedron = ex.environment(ti)
    assert [str(s.specie) for s in octahedron] == ["Ti"] + ["O"] * 6 and np.allclose(octahedron[0].coords, 0)
    assert octahedron.properties["motif"] == "octahedral" and len(octahedron.properties["latent"]) == 222
    hypothetical = ex.decode_at(-50.0, -50.0, kind="motifs")
    assert hypothetical.properties["map"] == "motifs" and "hypothetical" in hypothetical.properties["title"]
    frames = ex.interpolate_motifs(ti, "env:0", steps=4)
    assert [f.properties["frame"] for f in frames] == [0, 1, 2, 3]
    assert np.allclose(frames[0].properties["latent"], octahedron.properties["latent"], atol=1e-6)
    with pytest.raises(ValueError, match="no environment"):
        ex.environment("env:-1")


def test_the_example_notebook_runs(tiny_settings, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for field in ("data_dir", "shared_data_dir", "checkpoint", "workers", "umap_n_neighbors"):
        monkeypatch.setenv(f"EXPLORER_{field.upper()}", str(getattr(tiny_settings, field)))
    monkeypatch.setenv("EXPLORER_EXAMPLE_DATASET", "tiny")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(ROOT / "docs" / "explorer.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "nearest" in text and "frames" in text


def test_a_link_from_python_opens_the_same_view_in_the_app(ex):
    """``ex.link`` writes the address the page reads: a known material, a map point decoded again, a path's frame."""
    from dash import no_update

    from explorer.services import links, materials
    from explorer.ui import link_panel

    a, b = materials.table("tiny", ex.settings)["id"].iloc[:2]
    address = ex.link(a)
    assert address.startswith(f"http://{ex.settings.host}:{ex.settings.port}/?")
    search = "?" + address.split("?", 1)[1]
    keys = [key for _, key in link_panel.FIELDS]
    page = {key: None for key in keys} | {"dataset": "tiny", "map": "crystals", "steps": 10, "method": "linear"}
    out = link_panel.apply(search, page, None, {}, ex.settings)
    assert out[len(keys)]["id"] == a and out[len(keys) + 3] == ""  # the view, and nothing ignored
    point = ex.link((0.25, -1.5), base_url="https://explorer.example.org/lab/")
    assert point.startswith("https://explorer.example.org/lab/?")
    state = links.read(point.split("?", 1)[1])[0]
    assert state["show"] == "pt:crystals:0.25:-1.5" and len(state["ck"]) == 12
    path = links.read(ex.link(a=a, b=b, steps=5, method="slerp", frame=3).split("?", 1)[1])[0]
    assert path == {"dataset": "tiny", "a": f"id:{a}", "b": f"id:{b}", "steps": 5, "method": "slerp", "path": "1",
                    "frame": 3}
    out = link_panel.apply("?" + links.write(path), page, None, {}, ex.settings)
    assert link_panel.linked_path("?" + links.write(path), out, values=page, endpoints={}, path=None,
                                  current=None) == (True, 3)
    assert out[len(keys) + 2] is not no_update
    for bad, words in ((dict(show="nope"), "nope"), (dict(a=a, b=b, frame=99), "frames are whole numbers"),
                       (dict(a=a, frame=1), "give a and b"), (dict(show=(float("nan"), 0.0)), "finite"),
                       (dict(show=3), "table id"), (dict(steps=99), "steps are whole numbers")):
        with pytest.raises(ValueError, match=words):
            ex.link(**bad)
