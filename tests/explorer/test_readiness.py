"""The warm-up: after it, the first click finds the model loaded and UMAP's transform compiled."""

from __future__ import annotations

import time

from explorer.services import materials, readiness, views


def test_warm_up_readies_the_first_decode(tiny_settings):
    thread = readiness.warm_in_background(["tiny", "not-built"], tiny_settings)
    thread.join(timeout=120)
    assert not thread.is_alive()
    state = readiness.state()
    assert state["ready"] and state["step"] == "ready" and state["errors"] == []
    points = materials.map_points("tiny", None, tiny_settings)
    start = time.perf_counter()
    view = views.hypothetical_view("tiny", max(points["x"]) + 1, max(points["y"]) + 1, tiny_settings)
    assert view["kind"] == "hypothetical"
    assert time.perf_counter() - start < 5  # nothing left to load or compile (a cold start took 8-20 s)


def test_a_server_process_started_later_is_waited_for(tmp_path, monkeypatch):
    """In a group of server processes the page is ready only while every current process is marked warm: a process
    the parent starts later (gunicorn replacing one that died) makes it "not ready" again until it marks itself."""
    import psutil

    children = [101, 102]

    class Parent:
        def __init__(self, pid):
            assert pid == 4242

        def children(self):
            return [type("Child", (), {"pid": pid})() for pid in children]

    monkeypatch.setattr(psutil, "Process", Parent)
    monkeypatch.setattr(readiness, "_GROUP", {})
    readiness.join_group(tmp_path)
    monkeypatch.setitem(readiness._GROUP, "parent", 4242)
    mark = lambda pid: (tmp_path / f"4242.{pid}").touch()  # noqa: E731 - what _mark_warm writes in each process
    mark(101)
    assert not readiness._group_warm()
    mark(102)
    assert readiness._group_warm()
    children[:] = [101, 103]  # 102 died, the parent started 103
    assert not readiness._group_warm()
    mark(103)
    assert readiness._group_warm()
