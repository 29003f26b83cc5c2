"""The autoencoder can memorise a dozen real crystals: every one decodes back within StructureMatcher tolerance."""

from __future__ import annotations

import time

import torch
from tiny_tables import real_crystals

from models.crystal.autoencoder import CrystalAutoencoder, ModelConfig
from models.crystal.data import build_graphs, collate, crystal_from_structure
from models.crystal.lattice import lattice_parameters
from models.crystal.losses import LossWeights
from models.crystal.metrics import reconstruct

TIME_LIMIT = 50.0  # seconds of training (2 CPU cores need about 10-20)


def test_overfit_a_dozen_real_crystals():
    torch.manual_seed(0)
    config = ModelConfig(max_atoms=12, latent_dim=64, d_model=64, decoder_layers=2, mlp_hidden=128,
                         readout_hidden=64)
    crystals = [crystal_from_structure(s, crystal_id=f"{s.composition.reduced_formula}:{k}")
                for k, s in enumerate(real_crystals())]
    graphs = build_graphs(crystals, cutoff=config.cutoff)
    batch = collate(graphs)
    model = CrystalAutoencoder(config=config)
    model.decoder.set_lattice_statistics(lattice_parameters(batch.lattice))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    weights = LossWeights(kl=0.0)
    start, report = time.monotonic(), None
    while time.monotonic() - start < TIME_LIMIT:
        for _ in range(50):
            loss, _, _ = model.loss(batch, weights=weights, sample=False)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        report = reconstruct(model, graphs)
        if report.match_rate == 1.0:
            break
    missed = [i for i, ok in zip(report.ids, report.matched, strict=True) if not ok]
    assert not missed, f"not reconstructed after {time.monotonic() - start:.0f} s: {missed}"
    assert report.count_accuracy == 1.0
