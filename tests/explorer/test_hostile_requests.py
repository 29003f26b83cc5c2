"""Hostile callback values, POSTed as a browser (or anyone who can reach the port) could: every one gets a
clear message in the page, never an HTTP 500, never a file read or written outside data/, never an import
or an unpickling of something the request names."""

from __future__ import annotations

import json
import math
import pickle
import sys
import time
from pathlib import Path

import pytest

from explorer.ui import ids

MARKER = "hostile-pickle-ran"


class Exploit:
    """Unpickling this writes a marker file: proof that a pickle chosen by a request was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))


@pytest.fixture(scope="module")
def client(tiny_settings):
    from app import create_app
    from explorer.atlas import build_atlas

    build_atlas("tiny", tiny_settings)
    app = create_app(tiny_settings)
    test_client = app.server.test_client()
    assert test_client.get("/").status_code == 200
    return app, test_client


def _outputs(key: str) -> list[str]:
    parts = key.strip(".").split("...") if key.startswith("..") else [key]
    return [p.split("@")[0] for p in parts]


def request_body(app, outputs: list[str], values: dict, changed: list[str]) -> dict:
    """The body the page sends for the callback with ``outputs``, its inputs and states valued from ``values``
    ({"id.property": value}, None for the others); of several, the first whose outputs carry no ``@`` duplicate mark,
    else the first."""
    found = [(k, e) for k, e in app.callback_map.items() if _outputs(k) == outputs]
    key, entry = next(((k, e) for k, e in found if "@" not in k), found[0])

    def spec(items):
        return [{"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
                for i in items]

    out = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in _outputs(key)]
    return {"output": key, "outputs": out if key.startswith("..") else out[0], "inputs": spec(entry["inputs"]),
            "state": spec(entry["state"]), "changedPropIds": changed}


def call(client, outputs: list[str], values: dict, changed: list[str]):
    """(HTTP status, JSON answer or None) of the callback with ``outputs``, given input/state values."""
    app, test_client = client
    body = request_body(app, outputs, values, changed)
    response = test_client.post("/_dash-update-component", data=json.dumps(body, allow_nan=True),
                                content_type="application/json")
    answer = json.loads(response.get_data()) if response.status_code == 200 else None
    return response.status_code, answer


def page_error(answer: dict) -> str:
    """The message the page shows in its error banner (Dash's side update of ``app-error``)."""
    return ((answer or {}).get("sideUpdate") or {}).get(ids.APP_ERROR, {}).get("children", "")


def files_outside(root: Path, data_dir: Path) -> set[Path]:
    return {p for p in root.rglob("*") if data_dir not in p.parents and p != data_dir}


MAP_OUTPUTS = [f"{ids.MAP}.figure", f"{ids.COLOR_LEGEND}.children", f"{ids.MAP_STATUS}.children",
               f"{ids.MAP_BUILD}-row.style"]
RUN_OUTPUTS = [f"{ids.STORE_PATH}.data", f"{ids.INTERP_STATUS}.children", f"{ids.INTERP_FRAME}.max",
               f"{ids.INTERP_FRAME}.value", f"{ids.INTERP_FRAME}.disabled", f"{ids.STORE_LINK_FRAME}.data"]


def test_a_dataset_value_never_becomes_a_path(client, tiny_settings, tmp_path):
    # what an attacker placed outside data/: a table, and a "map" whose reducer.pkl runs code when unpickled
    evil = tmp_path / "evil"
    (evil / "atlas" / "x-0000000000000000").mkdir(parents=True)
    for name in ("x.parquet", "x.report.json"):
        (evil / name).write_text("{}")
    marker = tmp_path / MARKER
    (evil / "atlas" / "x-0000000000000000" / "reducer.pkl").write_bytes(pickle.dumps(Exploit(str(marker))))
    root = tiny_settings.data_dir.parent
    before = files_outside(root, tiny_settings.data_dir)
    relative = Path("..") / ".." / Path(*Path(str(evil)).parts[1:])
    for dataset in (f"../{relative}/x", str(evil / "x"), "../tiny", ".hidden", "tiny/../tiny", "a" * 500, 42,
                    ["tiny"], {"$ne": 1}, "nope"):
        status, answer = call(client, MAP_OUTPUTS, {f"{ids.DATASET}.value": dataset}, [f"{ids.DATASET}.value"])
        assert status == 200, (dataset, status)
        assert "unknown dataset" in page_error(answer), (dataset, answer)
    assert not marker.exists()
    assert files_outside(root, tiny_settings.data_dir) == before
    status, answer = call(client, MAP_OUTPUTS, {f"{ids.DATASET}.value": "tiny"}, [f"{ids.DATASET}.value"])
    assert status == 200 and "12 materials" in json.dumps(answer["response"])


CLICK = [f"{ids.STORE_CURRENT}.data"]


@pytest.mark.parametrize(("point", "words"), [
    ({"x": 0, "y": 0, "customdata": "tiny:no-such-id"}, "no material"),
    ({"x": 0, "y": 0, "customdata": "../../etc/passwd"}, "no material"),
    ({"x": "abc", "y": 1}, "not a pair of finite numbers"),
    ({"x": math.nan, "y": 1}, "not a pair of finite numbers"),
    ({"x": 1e308 * 10, "y": 1}, "not a pair of finite numbers"),
    ({"x": 0, "y": 0, "customdata": "frame:999"}, "no interpolation path"),
])
def test_bad_clicks_get_a_message(client, point, words):
    values = {f"{ids.MAP}.clickData": {"points": [point]}, f"{ids.DATASET}.value": "tiny"}
    status, answer = call(client, CLICK, values, [f"{ids.MAP}.clickData"])
    assert status == 200 and words in page_error(answer), answer


@pytest.mark.parametrize("click", [None, {}, {"points": "x"}, {"points": [1]}, [], "zzz"])
def test_malformed_click_data_is_ignored(client, click):
    status, _ = call(client, CLICK, {f"{ids.MAP}.clickData": click, f"{ids.DATASET}.value": "tiny"},
                     [f"{ids.MAP}.clickData"])
    assert status == 204  # nothing to do: PreventUpdate


def a_view(client, tiny_settings) -> dict:
    from explorer.services import materials

    record_id = materials.table("tiny", tiny_settings)["id"].iloc[0]
    values = {f"{ids.MAP}.clickData": {"points": [{"x": 0, "y": 0, "customdata": record_id}]},
              f"{ids.DATASET}.value": "tiny"}
    status, answer = call(client, CLICK, values, [f"{ids.MAP}.clickData"])
    assert status == 200
    return answer["response"][ids.STORE_CURRENT]["data"]


def test_bad_interpolations_get_a_message(client, tiny_settings):
    view = a_view(client, tiny_settings)
    nan_latent = {**view, "latent": [math.nan] * len(view["latent"])}
    short_latent = {**view, "latent": [0.0, 1.0]}
    sites = [{**site, "properties": {"x": {"@module": "this", "@class": "Nothing"}}}
             for site in view["structure"]["sites"]]
    with_module = {**view, "structure": {**view["structure"], "sites": sites}}
    cases = [({"a": view, "b": nan_latent}, 10, "finite numbers"),
             ({"a": view, "b": short_latent}, 10, "finite numbers"),
             ({"a": view, "b": "not a view"}, 10, "expected a structure view"),
             ({"a": view, "b": {"kind": "known"}}, 10, "not a structure view"),
             ({"a": view, "b": view}, 10**9, "steps must be"),
             ({"a": view, "b": view}, "ten", "steps must be"),
             ({"a": view, "b": view}, 2.5, "steps must be"),
             ({"a": view, "b": {**view, "structure": {"lattice": "x", "sites": []}}}, 10, "no lattice matrix")]
    for endpoints, steps, words in cases:
        values = {f"{ids.STORE_ENDPOINTS}.data": endpoints, f"{ids.INTERP_STEPS}.value": steps,
                  f"{ids.INTERP_METHOD}.value": "slerp", f"{ids.DATASET}.value": "tiny"}
        status, answer = call(client, RUN_OUTPUTS, values, [f"{ids.INTERP_RUN}.n_clicks"])
        assert status == 200, (words, status)
        shown = page_error(answer) or json.dumps(answer["response"].get(ids.INTERP_STATUS, {}))
        assert words in shown, (words, answer)
    values = {f"{ids.STORE_ENDPOINTS}.data": {"a": view, "b": with_module}, f"{ids.INTERP_STEPS}.value": 3,
              f"{ids.INTERP_METHOD}.value": "linear", f"{ids.DATASET}.value": "tiny"}
    status, answer = call(client, RUN_OUTPUTS, values, [f"{ids.INTERP_RUN}.n_clicks"])
    assert status == 200 and len(answer["response"][ids.STORE_PATH]["data"]["frames"]) == 3
    assert "this" not in sys.modules  # the site property naming a module was never imported
    for odd_id in ([1, 2], None, {"x": 1}):  # a known view's id that is no id: its end is matched, not looked up
        values[f"{ids.STORE_ENDPOINTS}.data"] = {"a": {**view, "id": odd_id}, "b": view}
        status, answer = call(client, RUN_OUTPUTS, values, [f"{ids.INTERP_RUN}.n_clicks"])
        assert status == 200 and len(answer["response"][ids.STORE_PATH]["data"]["frames"]) == 3, (odd_id, answer)


UPLOAD = [f"{ids.STORE_CURRENT}.data", f"{ids.UPLOAD_ERROR}.children", f"{ids.STORE_UPLOADS}.data"]


@pytest.mark.parametrize(("contents", "words"), [
    ("data:chemical/x-cif;base64", "did not arrive as a file"),
    (["data:x;base64,AAAA"], "did not arrive as a file"),
    ({"a": 1}, "did not arrive as a file"),
    ("data:x;base64,@@@@", "not valid base64"),
    ("data:x;base64," + "A" * (15 * 10**6), "more than the upload limit"),
])
def test_bad_uploads_get_a_message(client, contents, words):
    values = {f"{ids.UPLOAD}.contents": contents, f"{ids.UPLOAD}.filename": "../../x.cif",
              f"{ids.DATASET}.value": "tiny"}
    status, answer = call(client, UPLOAD, values, [f"{ids.UPLOAD}.contents"])
    assert status == 200
    shown = page_error(answer) or json.dumps(answer["response"])
    assert words in shown and "x.cif" in shown and "../" not in shown, answer


def test_bad_stores_for_frames_exports_and_the_panel(client, tiny_settings):
    frame_out = [f"{ids.STORE_CURRENT}.data", f"{ids.INTERP_STRIP}.children"]
    for path, frame in (({"frames": "x"}, 0), ({"frames": [{}]}, 5), ([1, 2], 0), ({"frames": []}, "a")):
        status, answer = call(client, frame_out, {f"{ids.STORE_PATH}.data": path, f"{ids.INTERP_FRAME}.value": frame},
                              [f"{ids.INTERP_FRAME}.value"])
        assert status == 200 and page_error(answer), (path, frame, answer)
    show = [f"{ids.STRUCTURE_INFO}.children", f"{ids.STORE_VIEWER}.data", f"{ids.VIEWER_CELL_INFO}.children"]
    for view in ({"kind": "known"}, [1], {"kind": "known", "title": "t", "structure": {"lattice": [[1, 0, 0]] * 3,
                                                                                        "sites": "x"}}):
        status, answer = call(client, show, {f"{ids.STORE_CURRENT}.data": view}, [f"{ids.STORE_CURRENT}.data"])
        assert status == 200 and page_error(answer), (view, answer)
    export = [f"{ids.DOWNLOAD}.data", f"{ids.EXPORT_ERROR}.children"]
    for basket in ([{"id": 1}], "x", [{"structure": {"@module": "this", "@class": "X"}}]):
        status, answer = call(client, export, {f"{ids.STORE_BASKET}.data": basket, f"{ids.EXPORT_FORMAT}.value": "cif"},
                              [f"{ids.BASKET_EXPORT}.n_clicks"])
        assert status == 200 and (page_error(answer) or answer["response"][ids.EXPORT_ERROR]["children"])
    assert "this" not in sys.modules


def test_bad_viewer_values_get_a_message(client, tiny_settings):
    """A cell choice, picked atoms or a comparison the page never offers: a message, never a 500."""
    from explorer.services import views

    view = views.known_view("tiny", "tiny:00_NaCl.cif", tiny_settings)
    show = [f"{ids.STRUCTURE_INFO}.children", f"{ids.STORE_VIEWER}.data", f"{ids.VIEWER_CELL_INFO}.children"]
    for cell in ("../../etc/passwd", 5, ["conventional"]):
        status, answer = call(client, show, {f"{ids.STORE_CURRENT}.data": view, f"{ids.VIEWER_CELL}.value": cell},
                              [f"{ids.VIEWER_CELL}.value"])
        assert status == 200 and "unknown cell choice" in page_error(answer), (cell, answer)
    measure = [f"{ids.VIEWER_MEASURE}.children"]
    for picks, words in (([{"site": 99, "cell": [0, 0, 0]}], "not a site"), ([{"site": 0, "cell": [0, 0, 9]}],
                                                                               "not a cell"),
                         ([{"site": True, "cell": [0, 0, 0]}], "not a site"), ("x" * 10, "at most 4"),
                         ([{"site": 0, "cell": [0, 0, 0]}] * 5, "at most 4"), ([{"site": 0, "cell": [0, "a", 0]}],
                                                                                "not a cell")):
        values = {f"{ids.STORE_PICKS}.data": picks, f"{ids.STORE_CURRENT}.data": view,
                  f"{ids.VIEWER_CELL}.value": "conventional"}
        status, answer = call(client, measure, values, [f"{ids.STORE_PICKS}.data"])
        assert status == 200 and words in json.dumps(answer), (picks, answer)
    compare = [f"{ids.STORE_COMPARE}.data", f"{ids.COMPARE_TABLE}.children"]
    for pair, endpoints, words in (("../x", {}, "unknown comparison"), ("ab", {"a": view}, "Set A and B first"),
                                   ("ab", {"a": view, "b": {"kind": "known"}}, "B"),
                                   ("relaxed", None, "Relax a structure first"), ("nearest", None, "Show a structure")):
        values = {f"{ids.COMPARE_PAIR}.value": pair, f"{ids.STORE_ENDPOINTS}.data": endpoints,
                  f"{ids.COMPARE_RUN}.n_clicks": 1}
        status, answer = call(client, compare, values, [f"{ids.COMPARE_RUN}.n_clicks"])
        assert status == 200 and words in json.dumps(answer), (pair, answer)


def test_malformed_request_bodies_are_refused_with_400(client):
    _, test_client = client
    for body in (b"{", b"[]", b'{"output": "store-current.data"}', b'{"output": 5, "inputs": 7}',
                 b'{"output": "nope.data", "outputs": {"id": "nope", "property": "data"}, "inputs": []}',
                 b'{"output": "store-current.data", "outputs": {}, "inputs": [1, 2]}'):
        response = test_client.post("/_dash-update-component", data=body, content_type="application/json")
        assert response.status_code in (400, 204), (body, response.status_code)


def test_input_and_state_lists_of_the_wrong_length_are_refused_with_400(client):
    """Dash's dispatcher indexes inputs and states by position: a body with fewer (or more) than the callback
    declares made it fail with HTTP 500 before any of our code ran."""
    app, test_client = client
    key = next(k for k, e in app.callback_map.items() if _outputs(k) == RUN_OUTPUTS)
    entry = app.callback_map[key]
    out = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in _outputs(key)]
    inputs = [{"id": i["id"], "property": i["property"], "value": None} for i in entry["inputs"]]
    state = [{"id": i["id"], "property": i["property"], "value": None} for i in entry["state"]]
    assert state, "the interpolation's run callback has states"
    wrong = ((inputs, state[:-1]), (inputs, []), (inputs[:0], state), (inputs, state + state[:1]))
    for inputs_sent, state_sent in wrong:
        body = {"output": key, "outputs": out, "inputs": inputs_sent, "state": state_sent,
                "changedPropIds": [f"{ids.INTERP_RUN}.n_clicks"]}
        response = test_client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
        assert response.status_code == 400, (len(inputs_sent), len(state_sent), response.status_code)
    body = {"output": key, "outputs": out, "inputs": inputs, "state": state, "changedPropIds": []}
    response = test_client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 204), response.status_code


SWEEP_VALUES = [None, "", "../../../etc/passwd", -1, 10**18, math.nan, [], {}, [[1, 2]], "x" * 5000, True,
                {"kind": "known", "id": {"a": 1}, "dataset": "../tiny"}, [math.nan] * 3]


def test_every_callback_answers_any_value_without_a_500(client, tiny_settings):
    """Every callback the page declares, sent each value above in every input and state at once: a server callback
    answers (200 or 204: a message, or nothing to update), one that runs in the browser is refused with 400 (Dash's
    dispatcher failed with a 500 on it), and no file appears outside data/."""
    app, test_client = client
    root = tiny_settings.data_dir.parent
    before = files_outside(root, tiny_settings.data_dir)
    answered = refused = 0
    for key, entry in app.callback_map.items():
        outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in _outputs(key)]
        changed = [f"{entry['inputs'][0]['id']}.{entry['inputs'][0]['property']}"] if entry["inputs"] else []
        for value in SWEEP_VALUES:
            body = {"output": key, "outputs": outputs if key.startswith("..") else outputs[0],
                    "inputs": [{**item, "value": value} for item in entry["inputs"]],
                    "state": [{**item, "value": value} for item in entry["state"]], "changedPropIds": changed}
            response = test_client.post("/_dash-update-component", data=json.dumps(body, allow_nan=True),
                                        content_type="application/json")
            expected = (200, 204) if "callback" in entry else (400,)
            assert response.status_code in expected, (key, value, response.status_code)
            answered, refused = answered + ("callback" in entry), refused + ("callback" not in entry)
    app._background_manager.terminate_all()  # the jobs the values above started (a page would end them on leaving)
    assert answered > 30 * len(SWEEP_VALUES) and refused > 0  # the page's server and clientside callbacks were all sent
    assert files_outside(root, tiny_settings.data_dir) == before


@pytest.mark.parametrize("url", ["/_dash-component-suites/pickle/x.js", "/_dash-component-suites/os/path.py",
                                 "/_dash-component-suites/dash/../../../../etc/passwd",
                                 "/_dash-component-suites/dash/..%2f..%2fdash.py", "/assets/../app.py",
                                 "/assets/..%2fapp.py"])
def test_files_the_server_does_not_serve_are_404(client, url):
    """Dash's script route raised an exception for a package or file it does not serve: a 500 per request."""
    _, test_client = client
    response = test_client.get(url)
    assert response.status_code == 404, (url, response.status_code)
    assert b"import" not in response.get_data() and b"passwd" not in response.get_data()


def test_background_callbacks_have_one_progress_line_at_most(client):
    """A waiting job's place is written as a one-item progress list (``explorer.ui.background_jobs``): Dash reads
    one item per progress output, so a background callback with two would fail while its job waits."""
    app, _ = client
    background = [entry["background"] for entry in app.callback_map.values() if entry.get("background")]
    assert len(background) >= 3  # relax, ChemEnv, map build
    assert all(len(b.get("progress") or []) <= 1 for b in background)


def test_the_basket_has_a_limit_said_in_words(client):
    from explorer.services.downloads import BASKET_LIMIT

    full = [{"id": f"x{k}", "formula": "NaCl"} for k in range(BASKET_LIMIT)]
    add = [f"{ids.STORE_BASKET}.data", f"{ids.BASKET}.children"]
    status, answer = call(client, add, {f"{ids.BASKET_ADD}.n_clicks": 1, f"{ids.STORE_BASKET}.data": full,
                                        f"{ids.STORE_CURRENT}.data": {"kind": "known"}}, [f"{ids.BASKET_ADD}.n_clicks"])
    assert status == 200 and f"holds at most {BASKET_LIMIT} structures" in json.dumps(answer)
    assert "store-basket" not in answer["response"]  # the basket stays as it was
    status, answer = call(client, add, {f"{ids.BASKET_CLEAR}.n_clicks": 1, f"{ids.STORE_BASKET}.data": full},
                          [f"{ids.BASKET_CLEAR}.n_clicks"])
    assert status == 200 and answer["response"]["store-basket"]["data"] == []
    export = [f"{ids.DOWNLOAD}.data", f"{ids.EXPORT_ERROR}.children"]
    values = {f"{ids.BASKET_EXPORT}.n_clicks": 1, f"{ids.EXPORT_FORMAT}.value": "cif",
              f"{ids.STORE_BASKET}.data": [*full, *full[:1]]}
    status, answer = call(client, export, values, [f"{ids.BASKET_EXPORT}.n_clicks"])
    assert status == 200 and f"more than the {BASKET_LIMIT} it exports at once" in json.dumps(answer)


def test_a_path_longer_than_any_the_app_makes_is_refused_in_words(client):
    """A path store holds at most the frames of the longest interpolation: its export and its energies (a potential
    evaluation per frame) would otherwise do as much work as the browser asks for."""
    from explorer.services.model import MAX_STEPS

    frame = {"kind": "decoded", "title": "t", "formula": "NaCl", "t": 0.0}
    path = {"frames": [frame] * (MAX_STEPS + 2)}
    export = [f"{ids.DOWNLOAD}.data", f"{ids.EXPORT_ERROR}.children"]
    status, answer = call(client, export, {f"{ids.PATH_EXPORT_CIF}.n_clicks": 1, f"{ids.STORE_PATH}.data": path},
                          [f"{ids.PATH_EXPORT_CIF}.n_clicks"])
    assert status == 200 and f"at most {MAX_STEPS}" in answer["response"][ids.EXPORT_ERROR]["children"]
    energies = [f"{ids.PATH_ENERGY}.figure", f"{ids.PATH_ENERGY}.style", f"{ids.PATH_ENERGY_STATUS}.children"]
    status, answer = call(client, energies, {f"{ids.STORE_PATH}.data": path, f"{ids.DATASET}.value": "tiny"},
                          [f"{ids.STORE_PATH}.data"])
    assert status == 200 and f"at most {MAX_STEPS}" in json.dumps(answer), answer


def test_a_bad_value_inside_a_background_job_is_said_in_words(client):
    """The map build runs as a background job: its ValueError reaches the page as Dash's BackgroundCallbackError,
    which showed as "an unexpected error"; the page now says what was wrong."""
    app, test_client = client
    body = request_body(app, [f"{ids.STORE_MAP_VERSION}.data"], {f"{ids.MAP_BUILD}.n_clicks": 1,
                                                                 f"{ids.DATASET}.value": "../nope",
                                                                 f"{ids.MAP_KIND}.value": "crystals"},
                        [f"{ids.MAP_BUILD}.n_clicks"])
    started = json.loads(test_client.post("/_dash-update-component", json=body).get_data())
    query = f"?cacheKey={started['cacheKey']}&job={started['job']}"
    deadline = time.perf_counter() + 180
    while time.perf_counter() < deadline:
        answer = test_client.post(f"/_dash-update-component{query}", json=body)
        assert answer.status_code in (200, 204)
        if answer.status_code == 200 and (error := page_error(json.loads(answer.get_data()))):
            assert "unknown dataset" in error, error
            return
        time.sleep(0.25)
    raise AssertionError("the job never answered")


def test_a_job_beyond_the_limit_is_refused_in_words_in_the_page(client, tiny_settings):
    """With one job slot and none to wait in, a second "Relax" is refused: the page's error line says so (Dash hands
    the refusal to the error handler as a background callback error)."""
    from app import create_app
    from explorer.services import views

    app = create_app(tiny_settings.model_copy(update={"max_jobs": 1, "max_waiting_jobs": 0}))
    test_client = app.server.test_client()
    view = views.known_view("tiny", str(views.materials.table("tiny", tiny_settings)["id"].iloc[0]), tiny_settings)
    body = request_body(app, [f"{ids.STORE_RELAX_RESULT}.data"],
                        {f"{ids.RELAX}.n_clicks": 1, f"{ids.STORE_CURRENT}.data": view}, [f"{ids.RELAX}.n_clicks"])
    first = json.loads(test_client.post("/_dash-update-component", json=body).get_data())
    second = json.loads(test_client.post("/_dash-update-component", json=body).get_data())
    try:
        assert app._background_manager.counts() == (1, 0)
        poll = test_client.post(f"/_dash-update-component?cacheKey={second['cacheKey']}&job={second['job']}", json=body)
        assert poll.status_code == 200
        assert page_error(json.loads(poll.get_data())).startswith("The server is busy: 1 background job is running")
        # the same request from another page (the same material, the same button) has a key of its own: the refusal
        # above is not the first page's answer, and its poll leaves its relaxation running
        assert first["cacheKey"] != second["cacheKey"]
        poll = test_client.post(f"/_dash-update-component?cacheKey={first['cacheKey']}&job={first['job']}", json=body)
        assert poll.status_code in (200, 204) and not page_error(json.loads(poll.get_data() or b"{}"))
        assert app._background_manager.counts() == (1, 0)
    finally:
        app._background_manager.terminate_all()


def test_the_physics_panel_checks_what_it_is_sent_before_it_loads_the_potential(client, tiny_settings, monkeypatch):
    """A view or a path the page never makes gets its message, and the potential (0.6 GB, seconds to load) is not even
    asked for."""
    from explorer.services import physics

    asked = []
    monkeypatch.setattr(physics, "potential_problem", lambda settings: asked.append(1))
    panel = [f"{ids.PHYSICS}.children"]
    for view in ({"kind": "known"}, [1], {"kind": "known", "title": "t", "structure": {"sites": "x"}}):
        status, answer = call(client, panel, {f"{ids.STORE_VIEWER}.data": {"cause": "click"},
                                              f"{ids.STORE_CURRENT}.data": view, f"{ids.DATASET}.value": "tiny"},
                              [f"{ids.STORE_VIEWER}.data"])
        assert status == 200 and ("not a structure view" in json.dumps(answer) or "expected" in json.dumps(answer)), \
            answer
    energy = [f"{ids.PATH_ENERGY}.figure", f"{ids.PATH_ENERGY}.style", f"{ids.PATH_ENERGY_STATUS}.children"]
    for path in ({"frames": "x"}, {"frames": [{"kind": "frame", "structure": {"sites": []}}]}):
        status, answer = call(client, energy, {f"{ids.STORE_PATH}.data": path, f"{ids.DATASET}.value": "tiny"},
                              [f"{ids.STORE_PATH}.data"])
        assert status == 200 and answer["response"][ids.PATH_ENERGY_STATUS]["children"], answer
    assert not asked
