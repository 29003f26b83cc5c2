"""Latent Materials Explorer: ``python app.py [--host H] [--port P] [--threads N] [--dev]`` serves the app.

It serves with waitress, a production WSGI server (many requests at once; the model's decodes are batched
across them), unless ``--dev`` asks for Flask's development server. Any WSGI server can also serve
``app:server`` (e.g. ``waitress-serve --listen 127.0.0.1:8050 app:server``).
"""

from __future__ import annotations

import argparse

from dash import Dash

from explorer.settings import Settings
from explorer.ui.factory import make_app


def create_app(settings: Settings | None = None) -> Dash:
    """The Dash app for ``settings`` (environment settings when None)."""
    return make_app(settings or Settings())


# A worker process started by multiprocessing re-imports this file as ``__mp_main__``: it must not build an app.
app = create_app() if __name__ != "__mp_main__" else None
server = app.server if app is not None else None


def serve(settings: Settings, *, host: str, port: int, threads: int, dev: bool) -> None:
    """Serve ``app`` on host:port: waitress with ``threads`` threads, or Flask's development server."""
    print(f"Latent Materials Explorer on http://{host}:{port}/ "
          f"({'Flask development server' if dev else f'waitress, {threads} threads'})", flush=True)
    if dev:
        app.run(host=host, port=port, debug=settings.debug)
        return
    from waitress import serve as waitress_serve

    waitress_serve(server, host=host, port=port, threads=threads, connection_limit=settings.connection_limit,
                   channel_timeout=120, max_request_body_size=server.config["MAX_CONTENT_LENGTH"],
                   ident="latent-materials-explorer")


if __name__ == "__main__":
    defaults = Settings()
    parser = argparse.ArgumentParser(description="Serve the Latent Materials Explorer")
    parser.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help=f"request threads of the server (default {defaults.threads})")
    parser.add_argument("--dev", action="store_true", help="Flask's development server instead of waitress")
    args = parser.parse_args()
    serve(defaults, host=args.host, port=args.port, threads=args.threads, dev=args.dev)
