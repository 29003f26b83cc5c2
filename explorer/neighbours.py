"""Nearest known materials in latent space for maps too big to search exhaustively on every click.

Up to ``settings.umap_fit_max`` materials ``Atlas.nearest`` compares the latent with every known one (about 7 ms
for 11k latents of 222 numbers here; 0.7 s for a million). A bigger map gets an approximate index built with it:
pynndescent's ``NNDescent`` (the nearest-neighbour search umap-learn itself uses), stored in the map's folder as
``neighbours.pkl`` and queried in well under a millisecond. It is pickled by the app into a folder the app named,
as the UMAP reducer is, so nothing a request points at is ever unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

INDEX_FILE = "neighbours.pkl"
INDEX_NEIGHBOURS = 15
"""The k of the index's neighbour graph (pynndescent's default is 30; 15 as the map's UMAP)."""


def build_index(latents: np.ndarray, *, seed: int):
    """An NNDescent index of (n, d) latents (euclidean), prepared for queries (minutes for a million)."""
    from pynndescent import NNDescent

    index = NNDescent(np.asarray(latents, dtype=np.float32), metric="euclidean", n_neighbors=INDEX_NEIGHBOURS,
                      random_state=seed, low_memory=True)
    index.prepare()
    return index


def write_index(folder: Path, index) -> None:
    with open(folder / INDEX_FILE, "wb") as handle:
        pickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)


def load_index(folder: Path):
    """The index ``write_index`` left in a map folder the app named, or None when the map has none."""
    path = folder / INDEX_FILE
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        return pickle.load(handle)


def query(index, latent: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, euclidean distances) of the about-k nearest indexed latents of one (d,) latent, nearest first."""
    indices, distances = index.query(np.asarray(latent, dtype=np.float32).reshape(1, -1), k=k)
    return indices[0], distances[0]
