"""Local environments of real crystals: coordination numbers, ideal shapes and how polyhedra share neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import graphite, nacl, silicon, srtio3
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from explorer.cli import main
from explorer.motifs.environments import describe, environments
from explorer.motifs.shapes import IDEAL_SHAPES, _template, best_shape, shape_measure


def wurtzite() -> Structure:
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


def cscl() -> Structure:
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def nias() -> Structure:
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.61, 5.03), ["Ni", "As"],
                                     [[0, 0, 0], [1 / 3, 2 / 3, 0.25]])


EXPECTED = {  # element: (CN, motif) of the real crystals the issue names
    "NaCl": (nacl, {"Na": (6, "octahedral"), "Cl": (6, "octahedral")}),
    "Si": (silicon, {"Si": (4, "tetrahedral")}),
    "SrTiO3": (srtio3, {"Sr": (12, "cuboctahedral"), "Ti": (6, "octahedral"), "O": (2, "linear")}),
    "ZnO": (wurtzite, {"Zn": (4, "tetrahedral"), "O": (4, "tetrahedral")}),
    "graphite": (graphite, {"C": (3, "trigonal planar")}),
    "CsCl": (cscl, {"Cs": (8, "cubic"), "Cl": (8, "cubic")}),
    "NiAs": (nias, {"Ni": (6, "octahedral"), "As": (6, "trigonal prismatic")}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_crystals_have_their_textbook_environments(name):
    make, expected = EXPECTED[name]
    found = environments(make())
    assert {(e.element, e.cn, e.motif) for e in found} == {(el, cn, m) for el, (cn, m) in expected.items()}
    assert all(e.csm is not None and e.csm < 3 for e in found)


def test_one_environment_per_wyckoff_orbit_and_neighbours_across_the_cell_boundary():
    found = environments(nacl())  # conventional cell: 8 atoms, two orbits
    assert [(e.element, e.wyckoff) for e in found] == [("Na", "4a"), ("Cl", "4b")]
    na = found[0]  # at the origin: every Cl neighbour but three sits in a neighbouring cell
    assert len(na.neighbours) == 6 and all(abs(d - 2.82) < 1e-6 for _, d, _, _ in na.neighbours)
    assert sum(any(i != 0 for i in image) for *_, image in na.neighbours) >= 3


def test_polyhedra_sharing_in_words():
    assert describe(srtio3(), environments(srtio3())) == ("Sr: cuboctahedral, CN 12, face-sharing; Ti: octahedral, "
                                                          "CN 6, corner-sharing; O: linear, CN 2")
    assert "Si: tetrahedral, CN 4, corner-sharing" == describe(silicon(), environments(silicon()))
    assert "Ni: octahedral, CN 6, face-sharing" in describe(nias(), environments(nias()))
    assert "Na: octahedral, CN 6, edge-sharing" in describe(nacl(), environments(nacl()))


@pytest.mark.parametrize("cn,name", [(cn, name) for cn, shapes in IDEAL_SHAPES.items() for name in shapes])
def test_every_ideal_shape_is_found_in_any_orientation_order_and_size(cn, name):
    rng = np.random.default_rng(cn)
    ideal = _template(cn, name)
    for turn in Rotation.random(3, random_state=cn).as_matrix():
        q = 2.7 * ideal[rng.permutation(cn)] @ turn.T
        assert best_shape(q)[0] == name and shape_measure(q, name) < 1e-6
        assert abs(shape_measure(-q, name) - shape_measure(q, name)) < 1e-6  # a mirror image of an achiral shape


def test_shape_measures_have_their_published_values():
    # CShM between ideal shapes (Pinsky & Avnir; Alvarez et al.): octahedron / trigonal prism 16.74,
    # cube / square antiprism 10.99, tetrahedron / square 33.33
    assert shape_measure(_template(6, "trigonal prismatic"), "octahedral") == pytest.approx(16.737, abs=0.01)
    assert shape_measure(_template(8, "square antiprismatic"), "cubic") == pytest.approx(10.989, abs=0.01)
    assert shape_measure(_template(4, "square planar"), "tetrahedral") == pytest.approx(33.333, abs=0.01)
    distorted = _template(6, "octahedral") * np.array([[1.0], [1.0], [1.0], [1.0], [1.2], [1.2]])
    assert 0 < shape_measure(distorted, "octahedral") < 2


def test_the_motifs_command_reports_every_site_and_the_broken_file(tmp_path, capsys):
    from explorer.services.export import structure_to_bytes

    (tmp_path / "SrTiO3.cif").write_bytes(structure_to_bytes(srtio3(), fmt="cif"))
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\nloop_\n")
    code = main(["motifs", str(tmp_path), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1
    by_element = {row["element"]: row for row in rows if "element" in row}
    assert by_element["Ti"]["motif"] == "octahedral" and by_element["Ti"]["cn"] == 6
    assert by_element["Ti"]["neighbours"][0][0] == "O" and abs(by_element["Ti"]["neighbours"][0][1] - 1.9525) < 1e-3
    assert {"file", "site", "score"} <= set(by_element["Sr"])
    assert [row["file"] for row in rows if "error" in row] == ["broken.cif"]


def test_the_map_search_finds_materials_by_motif_once_the_environments_are_computed(tiny_settings, tmp_path):
    from small_model import ingest_crystals

    from explorer.motifs import table as motif_table
    from explorer.services import materials

    ingest_crystals(tiny_settings, "tiny-motifs", [srtio3(), silicon(), nacl(), wurtzite()], tmp_path / "cifs")
    waiting = materials.search_points("tiny-motifs", "Ti octahedral", tiny_settings)
    assert waiting["count"] == 0 and "not computed yet" in waiting["note"]
    sites = motif_table.compute("tiny-motifs", tiny_settings)
    assert sites["id"].nunique() == 4 and set(sites.columns) >= {"element", "wyckoff", "cn", "motif", "csm", "vectors"}
    for cn, neighbours, vectors in zip(sites["cn"], sites["neighbours"], sites["vectors"], strict=True):
        distances = [d for _, d in json.loads(neighbours)]  # the vectors the motif autoencoder learns from
        assert len(json.loads(vectors)) == cn and np.allclose(np.linalg.norm(json.loads(vectors), axis=1), distances,
                                                               atol=2e-3)
    assert motif_table.load("tiny-motifs", tiny_settings) is not None
    frame = materials.table("tiny-motifs", tiny_settings)

    def formulas(query):
        found = materials.search_points("tiny-motifs", query, tiny_settings)
        return sorted(frame.set_index("id").loc[found["ids"], "reduced_formula"])

    assert formulas("Ti octahedral") == ["SrTiO3"]
    assert formulas("contains a tetrahedral Si") == ["Si"]
    assert formulas("tetrahedral") == ["Si", "ZnO"]
    assert formulas("octahedral") == ["NaCl", "SrTiO3"]
    assert formulas("Na octahedron") == ["NaCl"]
    assert formulas("NaCl") == ["NaCl"]  # formulas are no motif queries
    assert "a octahedral Ti" in materials.search_points("tiny-motifs", "Ti octahedral", tiny_settings)["note"]
    perovskite = sites[sites["id"] == frame.loc[frame["reduced_formula"] == "SrTiO3", "id"].item()]
    assert sorted(zip(perovskite["element"], perovskite["cn"], perovskite["motif"], strict=True)) == [
        ("O", 2, "linear"), ("Sr", 12, "cuboctahedral"), ("Ti", 6, "octahedral")]


def test_polyhedra_for_the_viewer_are_the_cation_centred_ones():
    from explorer.motifs.environments import _faces, polyhedra

    shapes = polyhedra(srtio3(), environments(srtio3()))
    assert [(s["element"], len(s["vertices"]), len(s["faces"])) for s in shapes] == [("Ti", 6, 8)]  # no SrO12 cage
    ti = srtio3()[1].coords
    assert all(abs(np.linalg.norm(np.array(v) - ti) - 1.9525) < 1e-3 for v in shapes[0]["vertices"])
    assert polyhedra(silicon(), environments(silicon())) == []  # Si-Si bonds: no centre
    assert len(_faces(np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]]))) == 2  # flat: a fan


def test_every_site_has_a_hover_line_from_its_wyckoff_orbit():
    from explorer.motifs.environments import site_labels

    structure = srtio3() * (1, 1, 2)  # two copies of every orbit's sites
    found = environments(structure)
    labels = site_labels(structure, found)
    assert len(labels) == len(structure)
    for k, site in enumerate(structure):
        assert labels[k].startswith(f"{site.specie.symbol} {k} (")
        if site.specie.symbol == "Ti":
            assert "octahedral, CN 6 — O 1.95 Å ×6" in labels[k]
        if site.specie.symbol == "Sr":
            assert "cuboctahedral, CN 12 — O 2.76 Å ×12" in labels[k]
    assert sorted(k for e in found for k in e.members) == list(range(len(structure)))


def test_chemenv_gives_its_finer_labels_on_demand():
    from explorer.motifs.chemenv import chemenv_labels

    found = {(r["element"], r["symbol"], r["name"]) for r in chemenv_labels(srtio3())}
    assert found == {("Sr", "C:12", "Cuboctahedron"), ("Ti", "O:6", "Octahedron"), ("O", "L:2", "Linear")}
    assert {r["symbol"] for r in chemenv_labels(silicon())} == {"T:4"}
    with pytest.raises(ValueError, match="ordered crystal"):
        chemenv_labels(Structure(Lattice.cubic(3), [], []))
