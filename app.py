"""Latent Materials Explorer: ``python app.py [--host H] [--port P]`` serves the app (defaults from settings)."""

from __future__ import annotations

import argparse

from dash import Dash

from explorer.settings import Settings
from explorer.ui.factory import make_app


def create_app(settings: Settings | None = None) -> Dash:
    """The Dash app for ``settings`` (environment settings when None)."""
    return make_app(settings or Settings())


app = create_app()
server = app.server


if __name__ == "__main__":
    defaults = Settings()
    parser = argparse.ArgumentParser(description="Serve the Latent Materials Explorer")
    parser.add_argument("--host", default=defaults.host, help=f"address to listen on (default {defaults.host})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, debug=defaults.debug)
