"""Model service: a small real checkpoint encodes, decodes and interpolates to plain data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import nacl, silicon, srtio3
from pymatgen.core import Structure

from explorer.services import model


def test_checkpoint_is_loaded_once(tiny_settings):
    first = model.loaded_checkpoint(tiny_settings)
    assert model.loaded_checkpoint(tiny_settings) is first
    assert len(model.checkpoint_sha256(tiny_settings)) == 64


def test_missing_checkpoint_names_the_path(tiny_settings, tmp_path):
    settings = tiny_settings.model_copy(update={"checkpoint": tmp_path / "nope.pt"})
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        model.encode([nacl()], settings)


def test_encode_gives_float32_latents_invariant_to_the_cell(tiny_settings):
    d = model.latent_dim(tiny_settings)
    z = model.encode([nacl(), silicon(), srtio3()], tiny_settings)
    assert z.shape == (3, d) and z.dtype == np.float32 and np.isfinite(z).all()
    primitive = model.encode([nacl().get_primitive_structure()], tiny_settings)
    np.testing.assert_allclose(primitive[0], z[0], atol=1e-4)
    assert model.encode([], tiny_settings).shape == (0, d)


def test_decode_gives_structure_and_json_validity(tiny_settings):
    z = model.encode([srtio3()], tiny_settings)[0]
    decoded = model.decode(z, tiny_settings)
    assert isinstance(decoded.structure, Structure) and len(decoded.structure) >= 1
    assert decoded.n_atoms == len(decoded.structure)
    json.dumps(decoded.validity)
    assert {"valid", "reasons", "min_distance", "in_range"} <= set(decoded.validity)
    with pytest.raises(ValueError, match="latent must be finite"):
        model.decode(np.full(z.shape, np.nan), tiny_settings)
    with pytest.raises(ValueError, match="latent must be finite"):
        model.decode(np.zeros(3), tiny_settings)


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolate_frames_run_from_a_to_b(tiny_settings, method):
    a, b = model.encode([nacl(), srtio3()], tiny_settings)
    frames = model.interpolate(a, b, tiny_settings, steps=10, method=method)
    assert [f.index for f in frames] == list(range(10))
    assert frames[0].t == 0.0 and frames[-1].t == 1.0
    np.testing.assert_allclose(frames[0].latent, a, atol=1e-5)
    np.testing.assert_allclose(frames[-1].latent, b, atol=1e-5)
    assert frames[0].formula == model.decode(a, tiny_settings).formula
    assert frames[-1].formula == model.decode(b, tiny_settings).formula
    assert all(f.n_atoms == len(f.structure) and "valid" in f.validity for f in frames)


def test_slerp_interpolates_the_norm_and_stays_on_the_arc():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 1.0])
    path = model.path_latents(a, b, steps=5, method="slerp")
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linspace(3, 1, 5), atol=1e-5)
    angles = np.arctan2(path[:, 1], path[:, 0])
    np.testing.assert_allclose(angles, np.linspace(0, np.pi / 2, 5), atol=1e-5)
    linear = model.path_latents(a, b, steps=3, method="linear")
    np.testing.assert_allclose(linear[1], [1.5, 0.5])
    counts = model.path_latents(np.array([3.0, 0.0, 6.0]), np.array([0.0, 1.0, 4.0]), steps=5, method="slerp",
                                linear_tail=1)  # a count at the end goes straight: 6 to 4 is 5 halfway
    np.testing.assert_allclose(counts[:, :2], path, atol=1e-5)
    np.testing.assert_allclose(counts[:, 2], np.linspace(6, 4, 5), atol=1e-5)


@pytest.mark.parametrize("steps", [1, 31, 2.5, True])
def test_interpolation_steps_are_checked(steps):
    with pytest.raises(ValueError, match="steps must be an integer from 2 to 30"):
        model.path_latents(np.zeros(2), np.ones(2), steps=steps)


def test_interpolation_method_is_checked():
    with pytest.raises(ValueError, match="'cubic'"):
        model.path_latents(np.zeros(2), np.ones(2), steps=3, method="cubic")


def test_concurrent_decodes_are_batched_and_equal_to_decoding_alone(tiny_settings):
    import threading

    z = model.encode([nacl(), silicon(), srtio3(), nacl().get_primitive_structure()], tiny_settings)
    rng = np.random.default_rng(0)
    latents = np.concatenate([z, z + 0.05 * rng.normal(size=z.shape).astype(np.float32)])
    alone = [model.decode(latent, tiny_settings.model_copy(update={"decode_batching": False})) for latent in latents]
    batched: list = [None] * len(latents)
    barrier = threading.Barrier(len(latents))

    def decode(k: int) -> None:
        barrier.wait()
        batched[k] = model.decode(latents[k], tiny_settings)

    threads = [threading.Thread(target=decode, args=(k,)) for k in range(len(latents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batcher = model._batcher(model.loaded_checkpoint(tiny_settings).model)
    assert batcher.largest_batch > 1  # at least two requests shared a forward pass
    for one, many in zip(alone, batched, strict=True):
        assert [s.specie.symbol for s in one.structure] == [s.specie.symbol for s in many.structure]
        np.testing.assert_allclose(one.structure.frac_coords, many.structure.frac_coords, atol=1e-4)
        np.testing.assert_allclose(one.structure.lattice.matrix, many.structure.lattice.matrix, atol=1e-4)
