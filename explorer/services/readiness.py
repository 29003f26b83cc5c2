"""Is this server ready for the first click? The warm-up that makes it so, and its state for the page.

After a start, the first decode used to wait for the model to load while UMAP's transform compiled on the
same cores (8-20 s). The warm-up does all of that once, in a background thread, in the order the first
click needs it: the default map's table and coordinates, the model and one decode (with the encoder's
check), UMAP's transform (numba compiles it), then the other maps, and the worker that reads uploads.
The page asks ``state()`` every second and says "loading" until it is done; the server answers the page
and the map from the start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from explorer.settings import Settings
from explorer.storage import exclusive, process_alive

LOG = logging.getLogger("explorer")
_STATE = {"ready": False, "step": "starting", "seconds": 0.0, "errors": []}
_LOCK = threading.Lock()
_GROUP: dict = {}
"""When this process is one of a server's processes (``join_group``): the folder of their marks and their parent."""


def join_group(folder: Path) -> None:
    """This process is one of the server processes that its parent (gunicorn's arbiter) started: the page's clicks
    may reach any of them, so it says "ready" only once every one is warm. Each marks itself in ``folder`` when it
    is (``{parent}.{pid}``); marks of parents that no longer run are removed then."""
    _GROUP.update(folder=folder, parent=os.getppid(), warm=set())


def _mark_warm() -> None:
    if not _GROUP:
        return
    folder = _GROUP["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    for mark in folder.glob("*.*"):
        parent = mark.name.split(".")[0]
        if parent.isdigit() and not process_alive(int(parent)):
            mark.unlink(missing_ok=True)
    (folder / f"{_GROUP['parent']}.{os.getpid()}").touch()


def _group_warm() -> bool:
    """Whether every process of this server's group is warm now (True outside a group): a process that the parent
    started later (gunicorn replaces one that died) counts from its own mark, not from its siblings' being warm once."""
    if not _GROUP:
        return True
    import psutil

    try:
        siblings = [p.pid for p in psutil.Process(_GROUP["parent"]).children()]
    except psutil.Error:  # the parent is gone: this process stands alone
        return True
    warm = _GROUP["warm"]  # the processes seen marked (a mark stays while its parent runs)
    warm.update(pid for pid in siblings if pid not in warm
                and (_GROUP["folder"] / f"{_GROUP['parent']}.{pid}").exists())
    return all(pid in warm for pid in siblings)


def state() -> dict:
    """{"ready": bool, "step": what is being loaded, "seconds": time the warm-up took, "errors": [...]}"""
    with _LOCK:
        found = {**_STATE, "errors": list(_STATE["errors"])}
    if found["ready"] and not _group_warm():
        found.update(ready=False, step="the server's other processes")
    return found


def _step(text: str) -> None:
    with _LOCK:
        _STATE["step"] = text


def warm_up(datasets: list[str], settings: Settings) -> None:
    """Load and exercise everything the first click on ``datasets[0]`` needs, then the other maps' transforms.

    A failure (no checkpoint, a map not built) is recorded and logged, never raised: the page says why.
    """
    from explorer import atlas
    from explorer.services import lod, materials, model

    start = time.perf_counter()
    with _LOCK:
        _STATE.update(ready=False, step="starting", seconds=0.0, errors=[])
    for k, name in enumerate(datasets):
        try:
            if not atlas.is_built(name, settings):
                continue
            _step(f"the map of {name}")
            materials.table(name, settings)
            the_map = atlas.get_atlas(name, settings)
            if lod.is_big(len(the_map.ids), settings):  # a density-image map: its points as arrays, once
                _step(f"the points of {name}'s map ({len(the_map.ids):,})")
                lod.layer(name, "crystals", "source", settings).tree()  # and the KD-tree a click on it uses
                the_map.index_of(the_map.ids[0])  # the row of each id, for the nearest materials' formulas
                _step(f"the latent index of {name}'s map")
                the_map.nearest(np.asarray(the_map.latents[0]), k=1)  # loads the index, compiles its search
            if k == 0:
                _step("the model (one decode)")
                x, y = (float(v) + 0.5 for v in the_map.xy[0])
                model.decode(the_map.latent_at(x, y).latent, settings)
            _step(f"UMAP's transform for {name} (compiled once per start)")
            the_map.warm()
        except Exception as exc:  # warming is an optimisation: report and go on
            LOG.warning("warming the map of %r failed: %s", name, exc)
            with _LOCK:
                _STATE["errors"].append(f"{name}: {exc}")
    try:
        _step("the motif autoencoder (for the motif map)")
        from explorer.services import motif_model

        motif_model.loaded(settings)
    except Exception as exc:  # the motif map says why; everything else works
        LOG.warning("the motif autoencoder is not available: %s", exc)
        with _LOCK:
            _STATE["errors"].append(f"motif autoencoder: {exc}")
    try:
        _step("the potential (CHGNet, for energies)")
        from explorer.services import physics

        problem = physics.potential_problem(settings)
        if problem:
            raise RuntimeError(problem)
    except Exception as exc:  # the physics panel says why; everything else works
        LOG.warning("the potential is not available: %s", exc)
        with _LOCK:
            _STATE["errors"].append(f"potential: {exc}")
    try:
        _step("the known shells of the motif map")
        _warm_motif_library(datasets, settings)
    except Exception as exc:  # the motif map's own requests say why
        LOG.warning("loading the known shells of the motif map failed: %s", exc)
    try:
        _step("the file reader (for uploads)")
        _start_reader(settings)
    except Exception as exc:
        LOG.warning("starting the file reader failed: %s", exc)
        with _LOCK:
            _STATE["errors"].append(f"file reader: {exc}")
    try:
        _mark_warm()
    except OSError as exc:
        LOG.warning("marking this server process warm failed: %s", exc)
    with _LOCK:
        _STATE.update(ready=True, step="ready", seconds=round(time.perf_counter() - start, 1))
    checks_in_background(datasets, settings)  # after a build outside `python -m explorer build`


def _warm_motif_library(datasets: list[str], settings: Settings) -> None:
    """The first dataset's motif map and its known shells, from which every motif decode starts (a few seconds, once;
    otherwise the first decode on the motif map would wait for them). Before the page says "ready": loaded after it,
    in one process, they held the interpreter for the first click's decode, which took 1.2-1.7 s instead of 0.1 s."""
    from explorer import motif_map

    if datasets and motif_map.is_built(datasets[0], settings):
        motif_map.library(datasets[0], settings)


def checks_in_background(datasets: list[str], settings: Settings) -> threading.Thread:
    """In one daemon thread, one job after the other (2 cores): the reconstruction check of each map, then the
    environments of each dataset's sites, then its structure map and its motif map, where they are missing
    (``explorer.reconstruction``, ``explorer.motifs.table``, ``explorer.structure_map``, ``explorer.motif_map``);
    failures are logged, never raised. Datasets of more than ``settings.background_checks_max`` materials are left
    to ``python -m explorer build`` (hours on one machine: a cluster's job). Of a server's processes only one runs
    them (``storage.exclusive`` on a lock file in the cache folder)."""
    from explorer import motif_map, reconstruction, structure_map
    from explorer.motifs import table as motif_table
    from explorer.services import materials

    def small(name: str) -> bool:
        try:
            n = len(materials.table(name, settings))
        except (FileNotFoundError, ValueError):
            return True  # the jobs themselves say what is missing
        if n > settings.background_checks_max:
            LOG.info("%s: %d materials, more than EXPLORER_BACKGROUND_CHECKS_MAX (%d): its checks and maps are built "
                     "by `python -m explorer build --dataset %s` (with --workers or --scheduler), not by the server",
                     name, n, settings.background_checks_max, name)
            return False
        return True

    datasets = [name for name in datasets if small(name)]

    def run() -> None:
        held = exclusive(settings.cache_dir / "background-checks.lock")
        if held is None:
            LOG.info("another process of this server runs the background checks")
            return
        try:
            reconstruction.compute_in_background(datasets, settings).join()
            motif_table.compute_in_background(datasets, settings).join()
            structure_map.build_in_background(datasets, settings).join()
            motif_map.build_in_background(datasets, settings).join()
        finally:
            held.close()

    thread = threading.Thread(target=run, name="explorer-checks", daemon=True)
    thread.start()
    return thread


_ROCK_SALT = b"NaCl\n1.0\n0 2.82 2.82\n2.82 0 2.82\n2.82 2.82 0\nNa Cl\n1 1\ndirect\n0 0 0\n0.5 0.5 0.5\n"


def _start_reader(settings: Settings) -> None:
    """Start the limited worker pool that reads uploads (a forkserver preloading pymatgen: seconds, once)."""
    from explorer.datasets.build import limits_of
    from explorer.datasets.records import RawItem, read_file_structure
    from explorer.datasets.sandbox import run_limited

    run_limited(read_file_structure, RawItem(key="POSCAR", kind="bytes", payload=_ROCK_SALT), limits_of(settings),
                key="POSCAR", seconds=60, memory_mb=settings.parse_memory_mb)


def warm_in_background(datasets: list[str], settings: Settings) -> threading.Thread:
    """``warm_up`` in a daemon thread (the server answers meanwhile; the page says it is loading)."""
    thread = threading.Thread(target=warm_up, args=(datasets, settings), name="explorer-warm-up", daemon=True)
    thread.start()
    return thread
