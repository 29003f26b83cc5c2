"""A small real autoencoder checkpoint and a small ingested dataset for the explorer and browser tests.

The model is the real ``CrystalAutoencoder`` with a small ``ModelConfig``, trained for a fixed number of
steps (a few seconds) on a dozen real crystals: with the composition carried by the latent that is enough
to decode each of them back (StructureMatcher at the model card's tolerances), though not to generalise;
saved with ``save_checkpoint``. Nothing is faked. ``reconstruction_dataset`` adds a dataset with a crystal
that no model of ``max_atoms`` 12 can give back (spinel, 14 atoms in its primitive cell).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from pymatgen.core import Structure

from explorer.settings import Settings

_TINY_TABLES = Path(__file__).resolve().parent / "models" / "tiny_tables.py"
TRAIN_STEPS = 100


def real_crystals() -> list[Structure]:
    """The dozen real crystals of tests/models/tiny_tables.py (primitive cells, 2-10 atoms)."""
    spec = importlib.util.spec_from_file_location("tiny_tables", _TINY_TABLES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.real_crystals()


def small_checkpoint(path: Path, *, steps: int = TRAIN_STEPS) -> Path:
    """Train a small model on the dozen real crystals for ``steps`` full-batch steps and save it to ``path``."""
    from models.crystal.autoencoder import CrystalAutoencoder, ModelConfig
    from models.crystal.checkpoint import save_checkpoint
    from models.crystal.data import build_graphs, collate, crystal_from_structure
    from models.crystal.lattice import lattice_parameters
    from models.crystal.losses import LossWeights

    torch.manual_seed(0)
    config = ModelConfig(max_atoms=12, latent_dim=16, d_model=32, decoder_layers=1, mlp_hidden=64,
                         readout_hidden=32, n_interactions=2, mul_scalar=16, mul_vector=4, mul_tensor=2)
    crystals = [crystal_from_structure(s, crystal_id=f"tiny:{k}") for k, s in enumerate(real_crystals())]
    batch = collate(build_graphs(crystals, cutoff=config.cutoff))
    model = CrystalAutoencoder(config=config)
    model.decoder.set_lattice_statistics(lattice_parameters(batch.lattice))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _, _ = model.loss(batch, weights=LossWeights(kl=0.0), sample=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        mu, _ = model.encode(batch)
    model.set_latent_norm_bound(mu.norm(dim=1), quantile=1.0)
    return save_checkpoint(path, model=model, data_hash="tiny", metrics={"loss": float(loss.detach())})


def small_dataset(root: Path, *, name: str = "tiny") -> Settings:
    """Settings for a fresh data dir under ``root`` holding dataset ``name`` (the dozen crystals as CIFs,
    ingested) and a small checkpoint."""
    settings = Settings(data_dir=root / "data", shared_data_dir=root / "no-shared", workers=1,
                        checkpoint=root / "model.pt", umap_n_neighbors=5)
    ingest_crystals(settings, name, real_crystals(), root / "cifs")
    small_checkpoint(settings.checkpoint)
    return settings


def ingest_crystals(settings: Settings, name: str, structures: list[Structure], folder: Path) -> None:
    """Write ``structures`` as CIFs '00_NaCl.cif', ... into ``folder`` and ingest them as dataset ``name``."""
    from explorer.datasets import catalog
    from explorer.services.export import structure_to_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for k, structure in enumerate(structures):
        (folder / f"{k:02d}_{structure.composition.reduced_formula}.cif").write_bytes(
            structure_to_bytes(structure, fmt="cif"))
    catalog.ingest(folder, name=name, settings=settings, progress=False)


def spinel() -> Structure:
    """MgAl2O4 spinel (Fd-3m, a = 8.08 Å): 14 atoms in its primitive cell."""
    from pymatgen.core import Lattice

    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(8.08), ["Mg", "Al", "O"],
                                     [[0, 0, 0], [0.625, 0.625, 0.625], [0.387, 0.387, 0.387]])  # origin choice 1


def perovskites() -> list[Structure]:
    """Six perovskites of 5-10 atoms: tetragonal SrZrO3 (I4/mcm: body-centred, so its primitive cell is skewed and
    its conventional cell has 20 atoms), BaTiO3 and PbTiO3 (P4mm), cubic SrTiO3, KNbO3 (Amm2), LaAlO3 (R-3c)."""
    from pymatgen.core import Lattice

    spec = [("I4/mcm", Lattice.tetragonal(5.80, 8.20), ["Sr", "Zr", "O", "O"],
             [[0, 0.5, 0.25], [0, 0, 0], [0, 0, 0.25], [0.2275, 0.7275, 0]]),
            ("P4mm", Lattice.tetragonal(3.99, 4.03), ["Ba", "Ti", "O", "O"],
             [[0, 0, 0], [0.5, 0.5, 0.515], [0.5, 0.5, -0.016], [0.5, 0, 0.49]]),
            ("P4mm", Lattice.tetragonal(3.90, 4.15), ["Pb", "Ti", "O", "O"],
             [[0, 0, 0], [0.5, 0.5, 0.54], [0.5, 0.5, 0.11], [0.5, 0, 0.62]]),
            ("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
            ("Amm2", Lattice.orthorhombic(3.97, 5.69, 5.72), ["K", "Nb", "O", "O"],
             [[0, 0, 0], [0.5, 0, 0.487], [0, 0, 0.521], [0.5, 0.254, 0.285]]),
            ("R-3c", Lattice.hexagonal(5.36, 13.11), ["La", "Al", "O"], [[0, 0, 0.25], [0, 0, 0], [0.545, 0, 0.25]])]
    return [Structure.from_spacegroup(*args).get_primitive_structure() for args in spec]


def perovskite_dataset(settings: Settings, *, name: str = "tiny-perovskites") -> str:
    """Dataset ``name`` of the six ``perovskites``, with its map built."""
    from explorer.atlas import build_atlas
    from explorer.datasets.build import table_path

    if not table_path(name, settings).is_file():
        ingest_crystals(settings, name, perovskites(), settings.data_dir.parent / f"{name}-cifs")
    build_atlas(name, settings)
    return name


def reconstruction_dataset(settings: Settings, *, name: str = "tiny-recon") -> str:
    """Dataset ``name`` (NaCl, Si, SrTiO3 and spinel) with its map and reconstruction check built; the small
    model gives the first three back and cannot give spinel back (more atoms than its ``max_atoms``)."""
    from explorer import reconstruction
    from explorer.atlas import build_atlas
    from explorer.datasets.build import table_path

    if not table_path(name, settings).is_file():
        ingest_crystals(settings, name, [*real_crystals()[:3], spinel()], settings.data_dir.parent / f"{name}-cifs")
    build_atlas(name, settings)
    reconstruction.compute(name, settings)
    return name
