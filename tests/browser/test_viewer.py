"""The viewer as a crystallographer uses it, in headless Chromium: cell choices (and the CIF of the chosen cell),
picking atoms to measure, looking along an axis, the view as a PNG, comparing two structures, unselecting, and the
page at two screen sizes (the README's screenshots)."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect
from pymatgen.core import Structure

from explorer.services import materials
from tests.browser.test_app import (
    GRAPH,
    choose,
    click_known,
    click_map,
    download,
    set_endpoints,
    unselect,
    wait_for_map,
)

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ("docs" if os.environ.get("EXPLORER_UPDATE_SCREENSHOT") == "1" else "build")


def drawn(page) -> None:
    """Until the viewer has drawn the structure whose title the panel shows."""
    page.wait_for_function("() => { const s = document.getElementById('viewer-status').innerText;"
                           " return s.includes('atoms') && !s.startsWith('drawing'); }")


def show_tiny(page) -> None:
    wait_for_map(page)
    choose(page, "dataset", "tiny")
    page.wait_for_function(f"() => document.querySelector('{GRAPH}')?.layout?.meta?.kind === 'crystals'")
    wait_for_map(page)


def test_the_conventional_cell_of_a_tetragonal_perovskite_in_the_panel_and_its_cif(page, tiny_settings):
    wait_for_map(page)
    choose(page, "dataset", "tiny-perovskites")
    wait_for_map(page)
    click_known(page, tiny_settings, "SrZrO3", dataset="tiny-perovskites")
    cell = page.locator("#viewer-cell-info")
    expect(cell).to_contain_text("conventional standard cell of I4/mcm")
    expect(cell).to_contain_text("α=90.00° β=90.00° γ=90.00°, 20 atoms")
    drawn(page)  # with the atoms on its faces, edges and corners, as VESTA draws it; 20 without them
    page.get_by_label("atoms on the cell boundary").uncheck()
    expect(page.locator("#viewer")).to_have_attribute("data-atoms", "20")
    page.get_by_label("atoms on the cell boundary").check()
    choose(page, "export-format", "CIF")
    name, data = download(page, "export-button")
    structure = Structure.from_str(data.decode(), fmt="cif")
    assert len(structure) == 20 and np.allclose(structure.lattice.angles, 90, atol=1e-3), structure.lattice
    assert structure.composition.reduced_formula == "SrZrO3"
    page.get_by_label("primitive").check()  # the skewed cell, and the model's own
    expect(cell).to_contain_text("primitive standard cell of I4/mcm")
    expect(cell).to_contain_text(", 10 atoms")
    assert "α=90.00° β=90.00° γ=90.00°" not in cell.inner_text()
    page.get_by_label("model cell").check()
    expect(cell).to_contain_text("the model's cell")
    _, data = download(page, "export-button")
    assert len(Structure.from_str(data.decode(), fmt="cif")) == 10
    page.get_by_label("conventional").check()
    expect(cell).to_contain_text("20 atoms")
    assert not page.errors, page.errors


def test_picking_atoms_of_rock_salt_measures_them_and_the_camera_looks_along_an_axis(page, tiny_settings):
    show_tiny(page)
    click_known(page, tiny_settings, "NaCl")
    drawn(page)
    # looking along c, the frontmost Na (largest z) and the nearest Cl beside it: real mouse clicks on them
    page.locator("#viewer").scroll_into_view_if_needed()
    page.click("#view-c")
    expect(page.locator("#viewer-camera")).to_contain_text("looking along c")
    targets = page.evaluate(
        "() => { const v = document.getElementById('viewer')._viewer;"
        " const atoms = v.getModel().selectedAtoms({});"
        " const na = atoms.filter(a => a.elem === 'Na').sort((p, q) => q.z - p.z)[0];"
        " const cl = atoms.filter(a => a.elem === 'Cl' && Math.abs(a.z - na.z) < 0.1)"
        "   .sort((p, q) => Math.hypot(p.x - na.x, p.y - na.y) - Math.hypot(q.x - na.x, q.y - na.y))[0];"
        " return [na, cl].map(a => { const s = v.modelToScreen(a);"
        "   return [s.x - window.pageXOffset, s.y - window.pageYOffset]; }); }")
    for x, y in targets:
        page.mouse.click(x, y)
    measure = page.locator("#viewer-measure")
    expect(measure).to_contain_text("distance")
    text = measure.inner_text()
    value = float(text.split("distance ")[1].split(" Å")[0])
    assert 2.82 <= value <= 2.85, text
    assert page.locator("#viewer").get_attribute("data-picks") == "2"
    page.click("#picks-clear")
    expect(measure).to_be_empty()
    expect(page.locator("#viewer")).to_have_attribute("data-picks", "0")
    # look along c (after the user has turned the view): the rotation takes c to the screen's normal, a to its own
    page.evaluate("() => { const v = document.getElementById('viewer')._viewer; v.rotate(35, 'y'); v.render(); }")
    before = page.evaluate("() => document.getElementById('viewer')._viewer.getView()")
    lattice = page.evaluate("() => document.getElementById('viewer')._data.lattice")
    for axis in "ca":
        page.click(f"#view-{axis}")
        expect(page.locator("#viewer-camera")).to_contain_text(f"looking along {axis}")
        page.wait_for_function("(b) => document.getElementById('viewer')._viewer.getView().slice(4)"
                               ".some((v, i) => Math.abs(v - b[i]) > 1e-3)", arg=before[4:])
        after = page.evaluate("() => document.getElementById('viewer')._viewer.getView()")
        assert not np.allclose(before[4:], after[4:], atol=1e-3)
        toward = rotate(after[4:], lattice["abc".index(axis)])
        assert np.allclose(toward / np.linalg.norm(toward), [0, 0, 1], atol=1e-6), (axis, toward)
        assert np.allclose(after[:4], before[:4])  # the same centre and zoom
    page.click("#view-reset")
    expect(page.locator("#viewer-camera")).to_contain_text("view reset")
    # the camera stays when only the supercell changes
    page.click("#view-b")
    expect(page.locator("#viewer-camera")).to_contain_text("looking along b")  # the click's effect, not before it
    kept = page.evaluate("() => document.getElementById('viewer')._viewer.getView()")
    choose(page, "viewer-supercell", "2x2x1")
    expect(page.locator("#viewer-status")).to_contain_text("2×2×1 cell")
    assert np.allclose(page.evaluate("() => document.getElementById('viewer')._viewer.getView()")[4:], kept[4:])
    choose(page, "viewer-supercell", "1x1x1")
    assert not page.errors, page.errors


def rotate(q: list[float], v: list[float]) -> np.ndarray:
    """``v`` turned by the unit quaternion ``q`` = [x, y, z, w] (3Dmol.js's order)."""
    x, y, z, w = q
    u = np.array([x, y, z])
    v = np.asarray(v, dtype=float)
    return v + 2 * w * np.cross(u, v) + 2 * np.cross(u, np.cross(u, v))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_view_saves_as_a_png_of_the_chosen_size_and_boundary_atoms_and_bonds(page, tiny_settings):
    show_tiny(page)
    click_known(page, tiny_settings, "NaCl")
    drawn(page)
    page.fill("#png-width", "640")
    page.fill("#png-height", "480")
    page.locator("#png-height").press("Enter")
    name, data = download(page, "png-save")
    assert name.endswith(".png") and png_size(data) == (640, 480)
    page.get_by_label("transparent").check()
    _, data = download(page, "png-save")
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    assert image.size == (640, 480) and image.mode == "RGBA" and image.getpixel((2, 2))[3] == 0
    # bonds are the server's (Na-Cl only, 2.82 Å), drawn only between drawn atoms; the boundary adds the atoms on
    # the faces, edges and corners (8 + 19 in rock salt's conventional cell) and the images toggle the bonds' ends
    viewer = page.locator("#viewer")
    expect(viewer).to_have_attribute("data-atoms", "27")  # atoms on the boundary are drawn by default
    page.get_by_label("atoms on the cell boundary").uncheck()
    expect(viewer).to_have_attribute("data-atoms", "8")
    assert 0 < int(viewer.get_attribute("data-bonds")) < 24
    page.get_by_label("atoms on the cell boundary").check()
    expect(viewer).to_have_attribute("data-atoms", "27")
    assert int(viewer.get_attribute("data-bonds")) == 54  # every Na-Cl contact inside the drawn cube
    page.get_by_label("bonds to periodic images").check()
    expect(viewer).not_to_have_attribute("data-atoms", "27")
    page.get_by_label("bonds to periodic images").uncheck()
    expect(viewer).to_have_attribute("data-atoms", "27")
    assert not page.errors, page.errors


def test_compare_two_known_materials_and_unselect(page, tiny_settings):
    show_tiny(page)
    set_endpoints(page, tiny_settings, "NaCl", "CsCl")
    page.locator("summary", has_text="Compare two structures").click()
    page.click("#compare-run")
    table = page.locator("#compare-table")
    expect(table).to_contain_text("Fm-3m (225)")
    expect(table).to_contain_text("Pm-3m (221)")
    expect(table).to_contain_text("not the same crystal")
    page.wait_for_function("() => ['compare-left', 'compare-right'].every(i =>"
                           " Number(document.getElementById(i).getAttribute('data-atoms')) > 0)")
    assert page.locator("#compare-left").get_attribute("data-title").startswith("NaCl")
    # the two viewers turn together
    page.evaluate("() => document.getElementById('compare-left')._viewer.rotate(40, 'y')")
    page.wait_for_function("() => { const l = document.getElementById('compare-left')._viewer.getView(),"
                           " r = document.getElementById('compare-right')._viewer.getView();"
                           " return [4, 5, 6, 7].every(k => Math.abs(l[k] - r[k]) < 1e-6) && Math.abs(l[5]) > 0.1; }")
    # unselect: Escape, or a second click on the selected point, clears the mark, the viewer and the panel
    mark = page.locator("#map .map-mark.current")
    expect(mark).to_have_count(1)
    unselect(page)
    expect(mark).to_have_count(0)
    expect(page.locator("#viewer")).to_have_attribute("data-atoms", "0")
    record_id = click_known(page, tiny_settings, "NaCl")
    expect(mark).to_have_count(1)
    points = materials.map_points("tiny", None, tiny_settings)
    k = points["ids"].index(record_id)
    click_map(page, points["x"][k], points["y"][k], expect_id=record_id)
    expect(mark).to_have_count(0)
    expect(page.locator("#structure-info")).to_contain_text("Click a point of the map")
    assert not page.errors, page.errors


def _check_layout(page, width: int, height: int) -> None:
    """The map and viewer side by side, both inside the window, the map the larger; the map's plot drawn at the
    map's new size; then the README's screenshot."""
    page.wait_for_function("""() => { const box = document.getElementById('map').getBoundingClientRect();
        const svg = document.querySelector('#map .main-svg');
        return svg && Math.abs(Number(svg.getAttribute('width')) - box.width) < 2; }""")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"page-{width}x{height}.png"))
    the_map, viewer = page.locator("#map").bounding_box(), page.locator("#viewer").bounding_box()
    assert the_map["x"] + the_map["width"] <= viewer["x"] and viewer["x"] + viewer["width"] <= width
    assert the_map["y"] + the_map["height"] <= height and viewer["y"] + viewer["height"] <= height
    assert the_map["width"] * the_map["height"] > viewer["width"] * viewer["height"]
    # the lines above and below the map keep their height: a long status line (the known map's is two lines at
    # 1280 px) wraps and the map gives way, instead of the map covering its second line
    page.evaluate("() => { document.getElementById('map-status').textContent = 'a long status line '.repeat(30); }")
    page.wait_for_function("""() => {
        const kids = [...document.querySelector('.left').children].filter(e => e.offsetParent !== null);
        return kids.length > 3 && kids.every((e, k) => e.scrollHeight <= e.clientHeight + 1
            && (k === 0 || kids[k - 1].getBoundingClientRect().bottom <= e.getBoundingClientRect().top + 1)); }""",
                           timeout=10_000)


def test_the_page_at_two_screen_sizes(browser, app_url, tiny_settings):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(app_url)
    show_tiny(page)
    click_known(page, tiny_settings, "SrTiO3")
    page.get_by_label("polyhedra").check()
    page.wait_for_function("() => Number(document.getElementById('viewer').getAttribute('data-polyhedra')) > 0")
    _check_layout(page, 1280, 800)
    page.set_viewport_size({"width": 1920, "height": 1080})
    _check_layout(page, 1920, 1080)
    context.close()
    assert not errors, errors
