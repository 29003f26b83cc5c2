"""Assemble the Dash app: layout (built per page load, so new datasets appear), callbacks, the background job
manager (diskcache; a few jobs at once, ``explorer.ui.background_jobs``) and the map warm-up."""

from __future__ import annotations

from dash import Dash

from explorer.settings import PROJECT_ROOT, Settings
from explorer.storage import clean_stale_temporaries


def make_app(settings: Settings) -> Dash:
    """The app for ``settings``. Cheap: the maps and the model are loaded in a background thread (the warm-up of
    ``services.readiness``) while the server already answers; the page says when they are ready."""
    import multiprocessing

    import diskcache
    import multiprocess
    from dash.exceptions import DependencyException

    from explorer.datasets.catalog import DEFAULT_DATASET
    from explorer.services import readiness
    from explorer.services.materials import datasets_with_tables
    from explorer.ui import callbacks
    from explorer.ui.background_jobs import BoundedJobManager
    from explorer.ui.layout import layout

    # Background jobs run in a fresh interpreter: a forked child of a server that has run numba's OpenMP
    # (UMAP) or torch threads is terminated ("fork() called from a process already using GNU OpenMP").
    multiprocess.set_start_method("spawn", force=True)
    jobs = BoundedJobManager(diskcache.Cache(str(settings.data_dir / "cache" / "jobs")), max_running=settings.max_jobs,
                             max_waiting=settings.max_waiting_jobs)
    app = Dash(__name__, title="Latent Materials Explorer", assets_folder=str(PROJECT_ROOT / "assets"),
               suppress_callback_exceptions=True, background_callback_manager=jobs, on_error=callbacks.report_error)
    # A request body is at most an upload (base64: 4/3 of the file) plus the page's stores.
    app.server.config["MAX_CONTENT_LENGTH"] = int(settings.max_upload_mb * 1e6 * 4 / 3) + 16 * 2**20

    def page():
        names = datasets_with_tables(settings)
        default = DEFAULT_DATASET if DEFAULT_DATASET in names else (names[0] if names else None)
        return layout(names, default, max_upload_mb=settings.max_upload_mb)

    app.server.before_request(lambda: _refuse_malformed_callback_requests(app))
    # Dash raises this for a script path it does not serve (/_dash-component-suites/<any package>/<any file>): a
    # request for something that does not exist is a 404, not a 500 with a traceback in the log for each one.
    app.server.register_error_handler(DependencyException, lambda _exc: ("Not Found", 404))
    app.layout = page
    callbacks.register(app, settings)
    if multiprocess.parent_process() is None and multiprocessing.parent_process() is None:  # not in a worker
        for folder in (settings.tables_dir, settings.atlas_dir):  # what a killed build left behind
            clean_stale_temporaries(folder)
        names = datasets_with_tables(settings)
        # The warm-up thread (CHGNet) and the first requests (pymatgen's phase diagrams, the map's images) import
        # matplotlib and PIL: imported here first (0.3 s), never by two threads at once, in which case Python hands one
        # of them a half-imported module ("partially initialized module 'PIL.Image' has no attribute 'Image'": an HTTP
        # 500 seen once in the hostile-request tests).
        import matplotlib.pyplot  # noqa: F401
        import PIL.Image  # noqa: F401

        readiness.warm_in_background(sorted(names, key=lambda n: n != DEFAULT_DATASET), settings)
    return app


def _refuse_malformed_callback_requests(app: Dash):
    """HTTP 400 for a callback request that is not of the shape Dash's own page sends (a crafted body made
    Dash's dispatcher fail with a 500); the values inside are checked by the callbacks themselves."""
    from flask import abort, request

    if request.path.endswith("/_dash-update-component") and request.method == "POST":
        body = request.get_json(silent=True)
        if not (isinstance(body, dict) and body.get("output") in app.callback_map
                and isinstance(body.get("outputs"), dict | list) and isinstance(body.get("inputs"), list)
                and isinstance(body.get("state", []), list) and isinstance(body.get("changedPropIds", []), list)
                and all(isinstance(item, dict) and "id" in item and "property" in item
                        for item in [*body["inputs"], *body.get("state", [])] if not isinstance(item, list))):
            abort(400, description="malformed callback request")
        declared = app.callback_map[body["output"]]
        if "callback" not in declared:  # a clientside callback: the page runs it, the server has no function for it
            abort(400, description="this callback runs in the browser, not on the server")
        # as many inputs and states as the callback declares: Dash's dispatcher indexes them by position
        if (len(body["inputs"]) != len(declared.get("inputs", []))
                or len(body.get("state", [])) != len(declared.get("state", []))):
            abort(400, description="callback request with the wrong number of inputs or states")
