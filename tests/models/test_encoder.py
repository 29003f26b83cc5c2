"""The latent does not move (float64, <= 1e-5) when the same crystal is written differently.

Rotation, translation, atom permutation, supercells, another cell setting and reflection (mirror
images share a latent by design, see ``models.crystal.encoder``) on real crystals.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CRYSTALS
from e3nn import o3
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from models.crystal.autoencoder import CrystalAutoencoder, ModelConfig
from models.crystal.data import build_graph, collate, crystal_from_structure

TOLERANCE = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def quartz() -> Structure:
    """Alpha quartz in P3_221 (chiral), 9 atoms, Si-O 1.60 Å."""
    return Structure.from_spacegroup("P3_221", Lattice.hexagonal(4.913, 5.405), ["Si", "O"],
                                     [[0.4697, 0.0, 2 / 3], [0.4135, 0.2669, 0.7858]])


CRYSTALS = {**TINY_CRYSTALS, "quartz": quartz}


@pytest.fixture(scope="module", params=[False, True], ids=["mean-pooled", "with-primitive-count"])
def model(request) -> CrystalAutoencoder:
    torch.manual_seed(0)
    config = ModelConfig(latent_dim=16, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4,
                         readout_hidden=16, d_model=16, n_heads=2, decoder_layers=1, mlp_hidden=16,
                         primitive_count=request.param)
    return CrystalAutoencoder(config=config).double().eval()


def _latent(model: CrystalAutoencoder, structure: Structure) -> np.ndarray:
    mu, _ = model.encode_structures([structure])
    return mu[0].numpy()


def _transformed(structure: Structure, matrix: np.ndarray) -> Structure:
    """Lattice and positions mapped together by the orthogonal ``matrix`` (cartesian, 3x3)."""
    return Structure(Lattice(structure.lattice.matrix @ matrix.T), structure.species, structure.frac_coords)


def _variants(structure: Structure, rng: np.random.Generator) -> dict[str, Structure]:
    rotation = o3.rand_matrix(dtype=torch.float64).numpy()
    reflection = rotation @ np.diag([1.0, 1.0, -1.0])
    permutation = rng.permutation(len(structure))
    return {
        "rotation": _transformed(structure, rotation),
        "translation": Structure(structure.lattice, structure.species, structure.frac_coords + rng.random(3)),
        "permutation": Structure(structure.lattice, [structure.species[i] for i in permutation],
                                 structure.frac_coords[permutation]),
        "supercell 2x1x1": structure * (2, 1, 1),
        "skewed supercell": structure * [[1, 1, 0], [0, 1, 0], [0, 0, 2]],
        "primitive cell": SpacegroupAnalyzer(structure).get_primitive_standard_structure(),
        "reflection": _transformed(structure, reflection),
        "inversion": Structure(structure.lattice, structure.species, -structure.frac_coords),
    }


@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_latent_is_invariant(model, name):
    structure = CRYSTALS[name]()
    reference = _latent(model, structure)
    assert np.abs(reference).max() > 1e-3, "a constant latent would pass trivially"
    for variant, changed in _variants(structure, np.random.default_rng(1)).items():
        error = np.abs(_latent(model, changed) - reference).max()
        assert error <= TOLERANCE, f"{name}: latent moved by {error:.2e} under {variant}"


def test_mirror_images_share_a_latent(model):
    """Quartz and its mirror image (P3_221 -> P3_121, a different crystal for spglib) map to one latent."""
    right = quartz()
    left = Structure(right.lattice, right.species, -right.frac_coords)
    assert SpacegroupAnalyzer(left).get_space_group_symbol() == "P3_121"
    assert SpacegroupAnalyzer(right).get_space_group_symbol() == "P3_221"
    assert np.abs(_latent(model, left) - _latent(model, right)).max() <= TOLERANCE


def test_latent_tells_crystals_apart(model):
    latents = [_latent(model, make()) for make in CRYSTALS.values()]
    for i in range(len(latents)):
        for j in range(i):
            assert np.abs(latents[i] - latents[j]).max() > 1e-3


def test_batched_encoding_equals_one_by_one(model):
    structures = [make() for make in CRYSTALS.values()]
    mu, logvar = model.encode_structures(structures, batch_size=2)
    assert mu.shape == logvar.shape == (len(structures), model.latent_size)
    for k, structure in enumerate(structures):
        np.testing.assert_allclose(mu[k].numpy(), _latent(model, structure), atol=1e-10)


def test_primitive_input_needs_no_reduction(model):
    """``primitive=True`` (the tables' canonical cells) gives the latent of the reduction it skips."""
    from models.crystal.data import primitive_structure

    for make in CRYSTALS.values():
        structure = make() * (1, 1, 2)
        reduced = primitive_structure(structure)
        fast = model.encode_structures([reduced], primitive=True)[0][0].numpy()
        assert np.abs(fast - _latent(model, structure)).max() <= TOLERANCE


def test_the_edge_features_kernel_is_built_once_for_one_crystal_or_many():
    """The edge features' kernel takes no input sized by the number of crystals: a lone crystal after a batch (a decode
    of one latent) needs no kernel of its own (dynamo's ``error_on_recompile`` makes a second build fail, which would
    turn the kernels off), and gives the eager features."""
    from models.kernels import kernels_on, use_kernels

    model = CrystalAutoencoder(config=ModelConfig(latent_dim=16, mul_scalar=8, mul_vector=4, mul_tensor=2,
                                                  mul_message=4, readout_hidden=16, d_model=16, n_heads=2,
                                                  decoder_layers=1, mlp_hidden=16)).eval()
    graphs = [build_graph(crystal_from_structure(make()), cutoff=model.config.cutoff) for make in CRYSTALS.values()]
    eager = model.encoder.edge_features(collate(graphs[2:3]))
    torch._dynamo.reset()  # no kernel of an earlier test's model counts as a first build
    use_kernels(True)
    try:
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
            model.encoder.edge_features(collate(graphs))
            alone = model.encoder.edge_features(collate(graphs[2:3]))
        assert kernels_on()
    finally:
        use_kernels(False)
    for compiled, expected in zip(alone, eager, strict=True):
        torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)


def test_the_servers_compiled_kernels_give_the_eager_latents_and_keep_them_invariant():
    """With the kernels a server process runs (``models.kernels.use_kernels``: edge features, radial networks,
    messages), the latents of NaCl, Si, SrTiO3, graphite and quartz, one by one and batched, are the eager ones to
    float32 rounding, and a rotated, translated supercell still shares its crystal's latent."""
    from models.kernels import kernels_on, use_kernels

    torch.manual_seed(0)
    config = ModelConfig(latent_dim=16, mul_scalar=8, mul_vector=4, mul_tensor=2, mul_message=4, readout_hidden=16,
                         d_model=16, n_heads=2, decoder_layers=1, mlp_hidden=16)
    model = CrystalAutoencoder(config=config).eval()  # float32, as the app
    structures = [make() for make in CRYSTALS.values()]
    eager = model.encode_structures(structures, batch_size=2)[0]
    use_kernels(True)
    try:
        compiled = model.encode_structures(structures, batch_size=2)[0]
        alone = torch.cat([model.encode_structures([s])[0] for s in structures])
        moved = _variants(structures[2], np.random.default_rng(0))
        variants = model.encode_structures(list(moved.values()))[0]
        assert kernels_on()  # built and used here
    finally:
        use_kernels(False)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, eager, rtol=1e-5, atol=1e-5)
    assert (variants - eager[2]).abs().max() <= 1e-4
