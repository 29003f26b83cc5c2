"""A map drawn as a density image (services.lod) in headless Chromium: the tiny dataset's 12 materials with the
threshold set to 5 and at most 4 markers per window, so that every big-map path runs on a real server."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect

from explorer.atlas import build_atlas
from explorer.services import materials
from tests.browser.conftest import opened, serving
from tests.browser.test_app import GRAPH, click_map, drag_box

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def big_settings(tiny_settings):
    build_atlas("tiny", tiny_settings)
    return tiny_settings.model_copy(update={"map_markers_max": 5, "map_window_max": 4})


@pytest.fixture(scope="module")
def big_page(browser, big_settings):
    with serving(big_settings) as url, opened(browser, url) as page:
        yield page


def markers(page) -> list[str]:
    return page.evaluate(f"() => document.querySelector('{GRAPH}').data[1].customdata || []")


def image_x(page) -> float | None:
    return page.evaluate(f"() => (document.querySelector('{GRAPH}').layout.images || [])[0]?.x ?? null")


def relayout(page, update: dict) -> None:
    page.wait_for_function("() => !document.querySelector('[data-dash-is-loading]')")
    page.evaluate(f"(u) => Plotly.relayout(document.querySelector('{GRAPH}'), u)", update)


def test_a_big_map_is_an_image_of_every_point_and_markers_once_few_are_in_view(big_page, big_settings):
    page = big_page
    page.wait_for_function(f"() => document.querySelector('{GRAPH}')?.layout?.meta?.big === true")
    expect(page.locator("#map-status")).to_contain_text("12 materials, drawn as a density image (more than 5)")
    expect(page.locator("#map-status")).to_contain_text("12 in view: zoom in to at most 4")
    source = page.evaluate(f"() => document.querySelector('{GRAPH}').layout.images[0].source")
    assert source.startswith("data:image/png;base64,") and len(source) > 200
    assert markers(page) == []
    # the image is drawn (a WebGL-free <image> element under the traces)
    expect(page.locator(f"{GRAPH} .imagelayer image")).to_have_count(1)

    # a click on the image opens the nearest material, resolved on the server
    points = materials.map_points("tiny", None, big_settings)
    k = points["ids"].index(materials.table("tiny", big_settings).query("reduced_formula == 'SrTiO3'")["id"].iloc[0])
    x, y, record_id = points["x"][k], points["y"][k], points["ids"][k]
    click_map(page, x, y)
    expect(page.locator("#structure-info .info-title")).to_contain_text(record_id)

    # zoom in round it: the image of the window, and its points as markers with hover
    xy = np.column_stack([points["x"], points["y"]])
    gap = np.sort(np.linalg.norm(xy - xy[k], axis=1))[1]
    half = gap / 2
    before = image_x(page)
    relayout(page, {"xaxis.range": [x - half, x + half], "yaxis.range": [y - half, y + half]})
    page.wait_for_function(f"(id) => (document.querySelector('{GRAPH}').data[1].customdata || []).includes(id)",
                           arg=record_id)
    expect(page.locator("#map-status")).to_contain_text("1 in view, shown as points")
    assert image_x(page) == pytest.approx(x - half) and image_x(page) != before

    # back out: the whole map again, the markers go
    relayout(page, {"xaxis.autorange": True, "yaxis.autorange": True})
    page.wait_for_function(f"() => (document.querySelector('{GRAPH}').data[1].customdata || []).length === 0")
    page.wait_for_function(f"(x) => document.querySelector('{GRAPH}').layout.images[0].x === x", arg=before)
    assert not page.errors


def test_a_box_on_a_big_map_selects_every_point_inside_it_and_filters_apply(big_page, big_settings):
    page = big_page
    page.wait_for_function(f"() => document.querySelector('{GRAPH}')?.layout?.meta?.big === true")
    frame = materials.table("tiny", big_settings)
    with_oxygen = int(materials.filter_mask(frame, elements="O").sum())
    page.fill("#filter-elements", "O")
    page.press("#filter-elements", "Enter")
    expect(page.locator("#map-status")).to_contain_text(f"{with_oxygen} materials of 12 (filters)")

    relayout(page, {"dragmode": "select"})
    drag_box(page)
    expect(page.locator("#selection-status")).to_contain_text(f"{with_oxygen} materials selected")
    page.fill("#filter-elements", "")
    page.press("#filter-elements", "Enter")
    expect(page.locator("#map-status")).to_contain_text("12 materials, drawn")
    relayout(page, {"dragmode": "zoom"})
    assert not page.errors
