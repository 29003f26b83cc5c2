"""The page's state in its address: what a link holds, and how a hostile or stale link is read."""

from __future__ import annotations

import pytest
from dash import no_update

from explorer.services import cells, links, materials, views
from explorer.ui import link_panel


def test_a_state_round_trips_through_its_query_string():
    state = {"dataset": "known", "map": "structure", "color": "density", "q": "Ti octahedral", "el": "Li O",
             "smin": 2.0, "pmax": 3.5, "show": "pt:crystals:1.5:-2", "ck": "0123456789ab", "a": "id:amcsd:0000008",
             "b": "env:12", "steps": 12, "method": "slerp", "cell": "2x2x1", "style": "spheres", "uc": "primitive",
             "path": "1", "frame": 3}
    read, ignored = links.read(links.write(state))
    assert read == state and ignored == []
    assert links.write({"map": "crystals", "steps": 10, "q": "", "show": None, "uc": cells.DEFAULT_CELL}) == ""


@pytest.mark.parametrize("search, words", [
    ("?steps=999", "steps are whole numbers"), ("?steps=2.5", "steps are whole numbers"),
    ("?smin=nan", "not a finite number"), ("?pmax=inf", "not a finite number"), ("?map=../x", "not a map kind"),
    ("?method=cubic", "not a method"), ("?cell=9x9x9", "not a supercell"), ("?style=<script>", "not a style"),
    ("?uc=../../etc", "not a cell choice"),
    ("?show=pt:crystals:nan:1", "finite numbers"), ("?show=file:/etc/passwd", "not a structure of the page"),
    ("?show=env:../1", "env:<number>"), ("?ck=zz", "short hash"), ("?zzz=1", "unknown"),
    ("?path=yes", "not 'path=1'"), ("?frame=31", "frames are whole numbers"), ("?frame=-1", "frames are whole"),
    ("?q=" + "x" * 300, "longer than 200"), ("?" + "&".join(f"k{i}=1" for i in range(50)), "more than 40"),
    ("?" + "q=a&" * 2000, "longer than 4,000"),
])
def test_hostile_links_are_read_with_what_was_ignored_in_words(search, words):
    state, ignored = links.read(search)
    assert any(words in text for text in ignored), ignored
    assert set(state) <= {"q"}


def test_views_name_themselves_in_links(tiny_settings):
    record_id = materials.table("tiny", tiny_settings)["id"].iloc[0]
    known = views.known_view("tiny", record_id, tiny_settings)
    assert links.spec_of(known) == f"id:{record_id}"
    decoded = views.hypothetical_view("tiny", 1.25, -0.5, tiny_settings)
    assert links.spec_of(decoded) == "pt:crystals:1.25:-0.5"
    again = links.view_of(links.spec_of(decoded), "tiny", tiny_settings)
    assert again["structure"] == decoded["structure"]  # the same point decodes the same structure
    assert links.spec_of(views.decode_of_known("tiny", record_id, tiny_settings)) == f"decode:{record_id}"
    upload = {"kind": "upload", "id": "upload:x.cif", "xy": [0.5, -1.0], "map": "crystals", "formula": "NaCl"}
    assert links.spec_of(upload) == "up:crystals:0.5:-1:NaCl"
    assert links.upload_mark("up:crystals:0.5:-1:NaCl") == {"xy": [0.5, -1.0], "formula": "NaCl", "map": "crystals"}
    assert links.spec_of({**upload, "formula": "<img src=x>"}) is None
    assert links.check_spec("up:crystals:0:0:<b>") and links.check_spec("up:motifs:0:0:NaCl")
    assert links.spec_of({"kind": "frame", "id": "path-frame-01", "xy": [0, 0]}) is None
    with pytest.raises(ValueError):
        links.view_of("id:nope", "tiny", tiny_settings)


def test_opening_a_link_sets_only_what_differs_and_names_what_it_ignored(tiny_settings):
    keys = [key for _, key in link_panel.FIELDS]
    values = {key: None for key in keys} | {"dataset": "tiny", "map": "crystals", "color": "source", "steps": 10,
                                             "method": "linear", "cell": "1x1x1", "style": "ball-and-stick", "q": "",
                                             "el": ""}
    record_id = materials.table("tiny", tiny_settings)["id"].iloc[1]
    out = link_panel.apply(f"?dataset=tiny&show=id%3A{record_id}&steps=7&dataset=..%2Fx", values, None, {},
                           tiny_settings)
    fields = dict(zip(keys, out[:len(keys)], strict=True))
    view, ends, status = out[len(keys)], out[len(keys) + 1], out[len(keys) + 3]
    assert fields["steps"] == 7 and fields["dataset"] is no_update and fields["color"] is no_update
    assert view["id"] == record_id and ends is no_update
    assert "not on this server" in status and out[-1] is True
    # the address the page wrote itself for this state changes nothing
    again = link_panel.apply(links.write(link_panel.link_state({**values, "steps": 7}, view, {})),
                             {**values, "steps": 7}, view, {}, tiny_settings)
    assert all(value is no_update for value in again[:len(keys) + 3]) and again[len(keys) + 3] == ""
    # a first visit without an address leaves the page as it is (empty inputs are None before they are typed in)
    fresh = link_panel.apply("", {**values, "q": None, "el": None}, None, {}, tiny_settings)
    assert all(value is no_update for value in fresh[:len(keys) + 3]) and fresh[-1] is True


def test_a_path_on_screen_is_in_the_link_and_a_link_to_a_path_decodes_it_again(tiny_settings):
    """A path cannot travel in a link (its latents would not fit), so the link says ``path=1`` (and the frame on
    screen) with the ends, steps and method, and the page that opens it presses Interpolate: the same path."""
    keys = [key for _, key in link_panel.FIELDS]
    values = {key: None for key in keys} | {"dataset": "tiny", "map": "crystals", "steps": 5, "method": "slerp"}
    table = materials.table("tiny", tiny_settings)
    a, b = (views.known_view("tiny", table["id"].iloc[k], tiny_settings) for k in (0, 1))
    path = views.interpolation(a, b, "tiny", tiny_settings, steps=5, method="slerp")
    frame = path["frames"][3]
    state = link_panel.link_state(values, frame, {"a": a, "b": b}, path)
    assert state["path"] == "1" and state["frame"] == 3 and state["show"] is None
    assert "path" not in link_panel.link_state({**values, "method": "linear"}, frame, {"a": a, "b": b}, path)
    assert "path" not in link_panel.link_state(values, frame, {"a": a, "b": a}, path)  # B changed since
    on_screen = link_panel.link_state(values, a, {"a": a, "b": b}, path)  # a known material on screen, not a frame
    assert "path" not in on_screen and "frame" not in on_screen
    both = "?" + links.write({**on_screen, "path": "1"})  # written by hand: the structure wins, no path is run
    out = link_panel.apply(both, values, None, {}, tiny_settings)
    assert link_panel.linked_path(both, out, values=values, endpoints={}, path=None, current=None) == (False, None)

    search = links.write(state)
    fresh = {key: None for key in keys} | {"dataset": "tiny", "map": "crystals", "steps": 10, "method": "linear"}
    out = link_panel.apply(search, fresh, None, {}, tiny_settings)
    assert link_panel.linked_path(search, out, values=fresh, endpoints={}, path=None, current=None) == (True, 3)
    fields = dict(zip(keys, out[:len(keys)], strict=True))
    ends = out[len(keys) + 1]
    assert fields["steps"] == 5 and fields["method"] == "slerp"
    assert [ends["a"]["id"], ends["b"]["id"]] == [a["id"], b["id"]]
    # the page that wrote the address, with the path on screen, runs nothing again
    own = link_panel.apply(search, values, frame, {"a": a, "b": b}, tiny_settings)
    assert link_panel.linked_path(search, own, values=values, endpoints={"a": a, "b": b}, path=path,
                                  current=frame) == (False, None)
    # the back button to the address of another frame of the path on screen: that frame opens, nothing is decoded
    back = search.replace("frame=3", "frame=1")
    own = link_panel.apply(back, values, frame, {"a": a, "b": b}, tiny_settings)
    assert link_panel.linked_path(back, own, values=values, endpoints={"a": a, "b": b}, path=path,
                                  current=frame) == (False, 1)
    # an end that cannot be opened: nothing is run (the status line names the end)
    broken = search.replace(links.spec_of(b).replace(":", "%3A"), "id%3Anope")
    out = link_panel.apply(broken, fresh, None, {}, tiny_settings)
    assert link_panel.linked_path(broken, out, values=fresh, endpoints={}, path=None, current=None) == (False, None)
    assert "endpoint B" in out[len(keys) + 3]
