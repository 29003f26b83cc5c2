"""Decodes of many users at once: concurrent requests batched into forward passes, and recent decodes kept.

``DecodeBatcher`` runs the model on a few worker threads, each pass holding the latents of whatever requests were
waiting (clicks first); ``DecodeCache`` keeps the last decodes by latent. ``explorer.services.model`` makes one of each
per loaded checkpoint; ``MODEL_LOCK`` serialises the model calls that do not go through a batcher.
"""

from __future__ import annotations

import collections
import copy
import itertools
import queue
import threading

import numpy as np
from pymatgen.core import Structure

MODEL_LOCK = threading.Lock()
"""Held by model calls outside a ``DecodeBatcher`` (encodes, unbatched decodes, a batcher with one worker)."""


class DecodeBatcher:
    """Decodes of concurrent requests in one forward pass, clicks first, on ``workers`` threads.

    A request's latents go to a queue; a worker thread takes what is waiting, decodes up to ``max_batch`` latents of
    it as one batch and hands each request its crystals. Alone, a decode runs at once (nothing waits for company);
    under load, the decodes that arrived while the model was busy run together next.

    Which requests go first: one-latent requests (a click on empty space), together and without paths, so a click
    waits for no path's latents; then paths, the smallest first, except that a path passed over ``max_skips``
    times goes first (oldest first), so paths are never starved. The encoder's check costs about the same per
    latent in a batch of 10 as of 200, so small batches lose little throughput.

    Workers: the model runs in ``workers`` threads at once (no gradient: its forward pass only reads the weights),
    each on one torch thread: under load two workers overlap one's Python (neighbour graphs, candidates) with the
    other's tensor work (``settings.decode_workers``; ``bench/load.py`` measures it). One torch thread each, because
    every thread that runs torch's parallel ops keeps an OpenMP team of its own, and with two teams in a process each
    decode took 2.3x as long, while a lone decode on one thread took as long as on the best team of two
    (``explorer.serving.server_threads``). While one worker
    decodes a large batch (more than half of ``max_batch`` latents), the others take at most half of ``max_batch``:
    a click that arrives while every worker is busy waits for a small batch, not for a large one.
    """

    def __init__(self, model, *, max_batch: int = 32, max_skips: int = 2, workers: int = 1) -> None:
        self.model, self.max_batch, self.max_skips, self.workers = model, max_batch, max_skips, workers
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
        request = {"z": z, "known": known, "done": threading.Event(), "result": None, "error": None, "skips": 0,
                   "arrival": next(self._arrivals)}
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
        that runs alone), blocking until there is one: see the class docstring."""
        limit = self.max_batch if limit is None else limit
        if not self._backlog:
            self._backlog.append(self._pending.get())
        while True:
            try:
                self._backlog.append(self._pending.get_nowait())
            except queue.Empty:
                break
        everyone = sorted(self._backlog, key=lambda r: r["arrival"])
        first = next((r for r in everyone if len(r["z"]) == 1), everyone[0])
        waiting = [r for r in everyone if r["known"] is first["known"]]  # one library per pass
        singles = [r for r in waiting if len(r["z"]) == 1]
        if singles:  # one-latent requests (clicks) go together, without any path's latents to wait for
            batch = singles[:limit]
        else:
            overdue = [r for r in waiting if r["skips"] >= self.max_skips]
            rest = sorted((r for r in waiting if r["skips"] < self.max_skips), key=lambda r: len(r["z"]))
            batch, size = [], 0
            for request in overdue + rest:
                if not batch or size + len(request["z"]) <= limit:
                    batch.append(request)
                    size += len(request["z"])
        chosen = {id(r) for r in batch}
        self._backlog = [r for r in everyone if id(r) not in chosen]
        for request in self._backlog:
            request["skips"] += 1
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
