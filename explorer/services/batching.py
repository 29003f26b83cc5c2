"""Decodes of many users at once: concurrent requests batched into forward passes, and recent decodes kept.

``DecodeBatcher`` runs the model on a few worker threads, each pass holding the latents of whatever requests were
waiting (the one due first, and what fits with it); ``DecodeCache`` keeps the last decodes by latent.
``explorer.services.model`` makes one of each per loaded checkpoint; ``MODEL_LOCK`` serialises the model calls that do
not go through a batcher.
"""

from __future__ import annotations

import collections
import copy
import itertools
import queue
import threading
import time

import numpy as np
from pymatgen.core import Structure

CLICK_WAIT = 1.5
"""Seconds after its arrival that a one-latent decode (a click on empty space) is due (``DecodeBatcher``). Under
``bench/load.py``'s load (session 30, about 55 requests/s, two runs each): at 0.5 s decodes p95 0.5-0.8 s and paths
p95 3.4-4.3 s (a path waited for every decode that arrived within 3.5 s of it); at 1.0 s 0.53 and 3.4-3.5 s; at 1.5 s
0.49-0.56 and 3.1 s; at 2.0 s (one run) 0.81 and 3.1 s. With the cores overloaded (session 27, about 30 requests/s),
what paths gained decodes lost: at 2 s decodes p95 2.5 s and paths 5.8 s, at 0.5 s 1.9 and 6.2 s."""

PATH_WAIT = 4.0
"""Seconds after its arrival that a decode of several latents (an interpolation path) is due: #12's target for a
path's 95th percentile under ``bench/load.py``'s load."""

CLICK_COMPANY = 12
"""Most latents of a pass led by a click (a decode of one latent) when it takes a path that is not due yet: a click and
one 10-step path's new frames. A pass of one latent costs about twice as much CPU per latent as one of 8 (15 against
6.6 ms, the load's decodes in one process, session 30). Under ``bench/load.py``'s load with ``CLICK_WAIT`` 1.5 s, two
runs each: decodes p95 0.49-0.56 s and paths p95 3.1 s, against 0.63-0.88 and 3.3-3.6 s with clicks alone."""

MODEL_LOCK = threading.Lock()
"""Held by model calls outside a ``DecodeBatcher`` (encodes, unbatched decodes, a batcher with one worker)."""


class DecodeBatcher:
    """Decodes of concurrent requests in one forward pass, earliest deadline first, on ``workers`` threads.

    A request's latents go to a queue; a worker thread takes what is waiting, decodes up to ``max_batch`` latents of
    it as one batch and hands each request its crystals. Alone, a decode runs at once (nothing waits for company);
    under load, the decodes that arrived while the model was busy run together next.

    Which requests go first: each has a deadline, its arrival plus ``click_wait`` for one latent (a click on empty
    space) or ``path_wait`` for more (an interpolation path), and a pass takes the request due first, then whatever
    else of the same known crystals fits in ``max_batch`` latents, in order of their deadlines (earliest deadline
    first); a pass led by a click takes a path that is not due only while the pass stays within ``click_company``
    latents (one path's frames), so a click waits for at most one path's latents. Under heavy load the requests are
    about equally late for their deadlines: a path waits about ``path_wait - click_wait`` longer than a click, and
    never starves, as its deadline comes (``PATH_WAIT``). The
    encoder's check costs about the same per latent in a batch of 10 as of 200, so small batches lose little
    throughput.

    Workers: the model runs in ``workers`` threads at once (no gradient: its forward pass only reads the weights),
    each on one torch thread: in a process alone on two cores, two workers overlap one's Python (neighbour graphs,
    candidates) with the other's tensor work; with a server process per core, one each (``settings.decode_workers``,
    ``explorer.serving.auto_decode_workers``; ``bench/load.py`` measures it). One torch thread each, because
    every thread that runs torch's parallel ops keeps an OpenMP team of its own, and with two teams in a process each
    decode took 2.3x as long, while a lone decode on one thread took as long as on the best team of two
    (``explorer.serving.server_threads``). While one worker
    decodes a large batch (more than half of ``max_batch`` latents), the others take at most half of ``max_batch``:
    a click that arrives while every worker is busy waits for a small batch, not for a large one.
    """

    def __init__(self, model, *, max_batch: int = 32, workers: int = 1, click_wait: float = CLICK_WAIT,
                 path_wait: float = PATH_WAIT, click_company: int = CLICK_COMPANY) -> None:
        self.model, self.max_batch, self.workers = model, max_batch, workers
        self.click_wait, self.path_wait, self.click_company = click_wait, path_wait, click_company
        self._taking, self._counting = threading.Lock(), threading.Lock()
        self._large = 0  # workers decoding a batch of more than max_batch // 2 latents now
        self.largest_batch = 0  # most requests decoded in one pass so far (for tests and benchmarks)
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._backlog: list[dict] = []  # taken from the queue, not decoded yet (one worker at a time: ``_taking``)
        self._arrivals = itertools.count()
        self._threads = [threading.Thread(target=self._loop, name=f"decode-batcher-{k}", daemon=True)
                         for k in range(workers)]
        for thread in self._threads:
            thread.start()

    def decode(self, z: np.ndarray, known=None) -> list:
        """Crystals (``model.decode`` results) of (n, d) latents ``z``, decoded with whatever else is waiting (with the
        same ``known`` crystals, ``models.crystal.search.KnownCells``)."""
        wait = self.click_wait if len(z) == 1 else self.path_wait
        request = {"z": z, "known": known, "done": threading.Event(), "result": None, "error": None,
                   "due": time.monotonic() + wait, "arrival": next(self._arrivals)}
        self._pending.put(request)
        request["done"].wait()
        if request["error"] is not None:
            raise request["error"]
        return request["result"]

    def limit(self) -> int:
        """The most latents the next pass may take: ``max_batch``, or half of it while a large batch is decoded."""
        return self.max_batch if self._large == 0 else max(1, self.max_batch // 2)

    def next_batch(self, limit: int | None = None) -> list[dict]:
        """The requests of the next pass of at most ``limit`` latents (default ``max_batch``; a request larger than
        that runs alone), earliest deadline first, blocking until there is one: see the class docstring."""
        limit = self.max_batch if limit is None else limit
        if not self._backlog:
            self._backlog.append(self._pending.get())
        while True:
            try:
                self._backlog.append(self._pending.get_nowait())
            except queue.Empty:
                break
        everyone = sorted(self._backlog, key=lambda r: (r["due"], r["arrival"]))
        first, now = everyone[0], time.monotonic()
        batch, size = [], 0
        for request in everyone:
            if request["known"] is not first["known"]:  # one library per pass: the first request's
                continue
            if len(first["z"]) == 1 and len(request["z"]) > 1 and request["due"] > now \
                    and size + len(request["z"]) > min(limit, self.click_company):
                continue  # a click waits for no more of a path's latents not due yet than ``click_company``
            if not batch or size + len(request["z"]) <= limit:
                batch.append(request)
                size += len(request["z"])
        chosen = {id(r) for r in batch}
        self._backlog = [r for r in everyone if id(r) not in chosen]
        return batch

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(1)  # this thread's count, and that of threads which have not run torch yet
        while True:
            with self._taking:
                batch = self.next_batch(self.limit())
                large = sum(len(r["z"]) for r in batch) > self.max_batch // 2
                if large:
                    with self._counting:
                        self._large += 1
            try:
                self._run(batch)
            finally:
                if large:
                    with self._counting:
                        self._large -= 1

    def _run(self, batch: list[dict]) -> None:
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            z = np.concatenate([r["z"] for r in batch])
            known = batch[0]["known"]
            if self.workers > 1:
                crystals = self.model.decode(z, known=known)
            else:
                with MODEL_LOCK:
                    crystals = self.model.decode(z, known=known)
            start = 0
            for request in batch:
                request["result"] = crystals[start : start + len(request["z"])]
                start += len(request["z"])
        except Exception as exc:  # every waiting request learns of it; the thread goes on
            for request in batch:
                request["error"] = exc
        finally:
            for request in batch:
                request["done"].set()


class DecodeCache:
    """The last ``size`` decodes, keyed by the checkpoint and the latent's bytes (least recently used go first).

    A decode is a deterministic function of the latent, so a latent decoded again (the first frame of every path
    from one material, a link opened twice, "show the decode") is not. Each caller gets its own copy of the
    structure (views may change theirs)."""

    def __init__(self, size: int) -> None:
        self.size, self.hits, self.misses = size, 0, 0
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> tuple[Structure, dict] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
        return item[0].copy(), copy.deepcopy(item[1])

    def put(self, key: bytes, structure: Structure, validity: dict) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = (structure.copy(), copy.deepcopy(validity))
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
