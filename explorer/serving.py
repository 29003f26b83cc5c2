"""Serving the app: gunicorn with one process per core (the default of ``python app.py``), waitress in one process, or
Flask's development server.

Why processes: under load the server's Python work (the search's neighbour graphs, Dash's JSON) holds the
interpreter lock for about half of the wall time, and the two decode threads of one process queue for it. Two
processes with their own lock served 14.8-15.1 requests/s against 12.1-12.5 for one (``bench/load.py``'s mix of
clicks, decodes and paths, 50 sessions, the same code, on 2 cores). Each process holds its own model and maps
(about 1.35 GB under load with the default map), so the default is one per core, at most ``MAX_AUTO_WORKERS``.

The processes answer the page at once and warm up side by side (``services.readiness``); the page says "ready" only
when every one of them is warm, since its clicks may reach any, and only one of them runs the background checks
(``readiness.checks_in_background``). gunicorn runs on Unix; where it cannot be imported, ``python app.py`` serves
with waitress in one process and says so.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from explorer.settings import Settings

MAX_AUTO_WORKERS = 4
"""Most server processes ``workers=0`` (one per core) starts: each holds a model and the maps in memory."""


def auto_workers(workers: int) -> int:
    """``workers``, or for 0 one per CPU core (at most ``MAX_AUTO_WORKERS``)."""
    return workers if workers > 0 else max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


MAX_AUTO_DECODE_WORKERS = 2
"""Most decode threads per process ``decode_workers=0`` gives: a process's decode threads share one interpreter lock
(the search's Python work holds it for about half of a decode), and a third thread on 2 cores gave no more
throughput than two (README, session 22)."""


def auto_decode_workers(decode_workers: int, processes: int = 1) -> int:
    """``decode_workers``, or for 0 the CPU cores shared out among the server's ``processes`` (at least one, at most
    ``MAX_AUTO_DECODE_WORKERS``): with gunicorn's one process per core, one decode thread each.

    Two decode threads in each of two processes put four model threads on 2 cores: under ``bench/load.py``'s load,
    28.1-29.1 requests/s against 32.5-34.8 with one thread per process (paths p95 5.9-6.4 s against 5.1-5.7 s; runs
    alternated, session 28). Alone, a process on two cores keeps two."""
    if decode_workers > 0:
        return decode_workers
    return max(1, min((os.cpu_count() or 1) // max(1, processes), MAX_AUTO_DECODE_WORKERS))


def server_process(settings: Settings) -> None:
    """Set up a server process: its compute threads (``server_threads``) and the encoder's compiled kernels
    (``settings.compile_encoder``, ``models.kernels.use_kernels``: built by its first decode, the warm-up's)."""
    from models.kernels import use_kernels

    server_threads()
    use_kernels(settings.compile_encoder)


def server_threads() -> None:
    """Set up a server process's compute threads: one torch thread and one BLAS thread per calling thread.

    torch on the CPU runs its parallel ops on an OpenMP team of the calling thread, and every thread that calls it
    gets a team of its own: a server's request and decode threads would each keep one. Once two threads of a process
    held a team of two, a lone decode on either took 2.3x as long (45.6-53.0 against 20.7-24.6 ms p50, empty map
    points, 2 cores; even when the two never ran at the same time), while a thread on one torch thread took as long
    as the best team (21.7-25.6 ms). The server's parallelism comes from its processes and its two decode threads.
    A request's numpy products are small, and a second BLAS thread spins while torch and the other requests hold the
    cores: with two, the server answered 10.9-11.3 requests/s under ``bench/load.py``'s load, with one 12.4 (runs
    alternated, 2 cores)."""
    import numpy  # noqa: F401 - both OpenBLAS builds must be loaded for threadpoolctl to find them
    import scipy.linalg  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # also the count of every thread that has not run a parallel op yet
    threadpool_limits(limits=1, user_api="blas")


def serve(settings: Settings, *, host: str, port: int, threads: int, workers: int, dev: bool) -> None:
    """Serve the app on host:port: Flask's development server (``dev``), waitress with ``threads`` threads in this
    process (one worker, or no gunicorn here), or gunicorn with ``workers`` processes (0: ``auto_workers``) of
    ``threads`` request threads each."""
    from explorer.ui.factory import make_app

    workers = auto_workers(workers)
    if dev:
        _say(host, port, "Flask development server")
        app = make_app(settings)
        app.run(host=host, port=port, debug=settings.debug)
        return
    if workers > 1:
        try:
            from gunicorn.app.base import BaseApplication
        except ImportError as exc:  # no gunicorn (e.g. on Windows): one process
            print(f"gunicorn is not available ({exc}): serving with waitress in one process", flush=True)
        else:
            # each process's share of the cores for its decodes (a process cannot count the others)
            shared = settings.model_copy(update={"decode_workers": auto_decode_workers(settings.decode_workers,
                                                                                       workers)})
            _serve_gunicorn(BaseApplication, shared, host=host, port=port, threads=threads, workers=workers)
            return
    _say(host, port, f"waitress, {threads} threads")
    from waitress import serve as waitress_serve

    server_process(settings)
    server = make_app(settings).server
    waitress_serve(server, host=host, port=port, threads=threads, connection_limit=settings.connection_limit,
                   channel_timeout=120, max_request_body_size=server.config["MAX_CONTENT_LENGTH"],
                   ident="latent-materials-explorer")


def _say(host: str, port: int, how: str) -> None:
    print(f"Latent Materials Explorer on http://{host}:{port}/ ({how})", flush=True)


def _serve_gunicorn(base: type, settings: Settings, *, host: str, port: int, threads: int, workers: int) -> None:
    """gunicorn's arbiter in this process, ``workers`` processes of ``threads`` request threads each (a thread that
    waits for a path's decodes holds no CPU, and when a process has no free thread, a click it accepted would queue
    behind paths: with 32 each, clicks took 1.5 s at the 95th percentile under ``bench/load.py``); each process builds
    its own app after the fork (nothing with threads is forked), and the page says "ready" once all are warm.
    ``base``: gunicorn's ``BaseApplication``."""

    class Explorer(base):
        def load_config(self) -> None:
            for key, value in {"bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread",
                               "threads": threads,
                               "worker_connections": max(1, settings.connection_limit // workers),
                               "timeout": 120, "graceful_timeout": 30, "keepalive": 5,
                               "proc_name": "latent-materials-explorer", "control_socket_disable": True}.items():
                self.cfg.set(key, value)

        def load(self):
            from explorer.services import readiness
            from explorer.ui.factory import make_app

            server_process(settings)
            readiness.join_group(settings.cache_dir / "server-processes")
            return make_app(settings).server

    _say(host, port, f"gunicorn, {workers} processes x {threads} threads")
    Explorer().run()
