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
