"""Reconstruction metrics: does a decoded crystal match its input (pymatgen StructureMatcher)?"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Structure

from models.crystal.autoencoder import CrystalAutoencoder
from models.crystal.data import CrystalGraph, collate, crystal_to_structure

MATCHER_TOLERANCES = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
"""StructureMatcher tolerances of the reconstruction targets (as CDVAE)."""


def rms_if_match(decoded: Structure, target: Structure) -> float | None:
    """Normalised RMS displacement (``StructureMatcher.get_rms_dist`` at ``MATCHER_TOLERANCES``) when ``decoded``
    matches ``target``, else None. Different reduced compositions never match (the matcher compares them
    first), so they are answered without a search."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    if decoded.composition.reduced_composition != target.composition.reduced_composition:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = StructureMatcher(**MATCHER_TOLERANCES).get_rms_dist(decoded, target)
    return None if result is None else float(result[0])


@dataclass(frozen=True)
class ReconstructionReport:
    """Per-crystal reconstruction results (arrays of length n_crystals) and their rates."""

    ids: list[str]
    matched: np.ndarray
    rms_dist: np.ndarray
    count_correct: np.ndarray

    @property
    def match_rate(self) -> float:
        """Share of crystals matched by StructureMatcher."""
        return float(self.matched.mean()) if len(self.matched) else float("nan")

    @property
    def count_accuracy(self) -> float:
        """Share of crystals decoded with the right number of atoms."""
        return float(self.count_correct.mean()) if len(self.count_correct) else float("nan")


@torch.no_grad()
def reconstruct(model: CrystalAutoencoder, graphs: Sequence[CrystalGraph], *,
                batch_size: int = 256) -> ReconstructionReport:
    """Encode (posterior mean) and decode each crystal (the default decode, with the encoder's check of
    ``models.crystal.search``), and match the result against the input."""
    was_training = model.training
    model.eval()
    matched, rms, counts, ids = [], [], [], []
    for start in range(0, len(graphs), batch_size):
        part = graphs[start : start + batch_size]
        mu, _ = model.encode(collate(part))
        arrays = model.decode_arrays(mu)
        for k, graph in enumerate(part):
            result = rms_if_match(arrays.structure(k), crystal_to_structure(graph.crystal))
            matched.append(result is not None)
            rms.append(result if result is not None else float("nan"))
            counts.append(int(arrays.n_atoms[k]) == graph.crystal.n_atoms)
            ids.append(graph.crystal.id)
    model.train(was_training)
    return ReconstructionReport(ids=ids, matched=np.array(matched, dtype=bool), rms_dist=np.array(rms),
                                count_correct=np.array(counts, dtype=bool))
