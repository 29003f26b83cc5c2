"""Latent Materials Explorer: ``python app.py [--host H] [--port P] [--workers N] [--threads N] [--dev]`` serves it.

It serves with gunicorn, one process per core (``--workers 1``: waitress in one process), or with Flask's
development server (``--dev``); ``explorer.serving`` says why. Any WSGI server can also serve ``app:server`` (e.g.
``waitress-serve --listen 127.0.0.1:8050 app:server``).
"""

from __future__ import annotations

import argparse

from dash import Dash

from explorer.serving import serve
from explorer.settings import Settings
from explorer.ui.factory import make_app


def create_app(settings: Settings | None = None) -> Dash:
    """The Dash app for ``settings`` (environment settings when None)."""
    return make_app(settings or Settings())


# `python app.py` builds the app in each server process it starts (explorer.serving), not in the one that forks them;
# a worker process started by multiprocessing re-imports this file as ``__mp_main__``: it must not build one either.
app = create_app() if __name__ not in ("__main__", "__mp_main__") else None
server = app.server if app is not None else None


if __name__ == "__main__":
    defaults = Settings()
    parser = argparse.ArgumentParser(description="Serve the Latent Materials Explorer")
    parser.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    parser.add_argument("--workers", type=int, default=defaults.server_workers,
                        help="server processes (default: one per CPU core, at most 4; 1: waitress in one process)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help=f"request threads of each process (default {defaults.threads})")
    parser.add_argument("--dev", action="store_true", help="Flask's development server instead")
    args = parser.parse_args()
    serve(defaults, host=args.host, port=args.port, threads=args.threads, workers=args.workers, dev=args.dev)
