"""The map: built once per (checkpoint, table, UMAP parameters), cached atomically, with a fast inverse."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.atlas import Atlas, UmapParams, build_atlas, cache_key, is_built, load_or_build
from explorer.cli import main
from explorer.datasets.build import load_table
from explorer.services import model


def test_build_embeds_every_material_and_is_cached(tiny_settings):
    table = load_table("tiny", tiny_settings)
    first = build_atlas("tiny", tiny_settings)
    assert first.ids == table["id"].tolist()
    assert first.latents.shape == (len(table), model.latent_dim(tiny_settings))
    assert first.xy.shape == (len(table), 2) and np.isfinite(first.xy).all()
    assert is_built("tiny", tiny_settings)
    again = build_atlas("tiny", tiny_settings)
    assert again.key == first.key
    np.testing.assert_array_equal(again.xy, first.xy)


def test_cache_key_changes_with_checkpoint_table_or_umap():
    base = dict(model_hash="m", table_signature="t", params=UmapParams())
    key = cache_key(**base)
    assert cache_key(**base) == key
    assert cache_key(**{**base, "model_hash": "m2"}) != key
    assert cache_key(**{**base, "table_signature": "t2"}) != key
    assert cache_key(**{**base, "params": UmapParams(n_neighbors=5)}) != key


def test_load_or_build_encodes_only_once(tmp_path):
    calls = []
    latents = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)

    def encode():
        calls.append(1)
        return latents

    ids = [f"x:{k}" for k in range(20)]
    kwargs = dict(dataset="d", cache_dir=tmp_path, key="k1", ids=ids, encode=encode, params=UmapParams(n_neighbors=5))
    first = load_or_build(**kwargs)
    second = load_or_build(**kwargs)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.xy, second.xy)
    assert not list(tmp_path.glob(".d-k1.*")), "no temporary folder left behind"


def test_a_big_map_fits_umap_on_a_seeded_sample_and_places_the_rest(tmp_path):
    from explorer.atlas import fit_umap_sampled

    latents = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
    params = UmapParams(n_neighbors=5)
    reducer, xy = fit_umap_sampled(latents, params, sample=25)
    again, xy_again = fit_umap_sampled(latents, params, sample=25)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, xy_again)  # the same seed, the same sample and map
    chosen = np.sort(np.random.default_rng(params.seed).choice(40, size=25, replace=False))
    rest = np.setdiff1d(np.arange(40), chosen)
    np.testing.assert_allclose(xy[rest], reducer.transform(latents[rest]), atol=1e-4)
    assert cache_key(model_hash="m", table_signature="t", params=params, sample=25) != cache_key(
        model_hash="m", table_signature="t", params=params)
    # the batched inverse of the map gives what a click gives, point by point
    atlas = load_or_build(dataset="d", cache_dir=tmp_path, key="big", ids=[f"x:{k}" for k in range(40)],
                          encode=lambda: latents, params=params, sample=25)
    points = xy[:5] + 0.1
    batch = atlas.latents_at(points)
    for k, (x, y) in enumerate(points):
        np.testing.assert_allclose(batch[k], atlas.latent_at(float(x), float(y)).latent, atol=1e-6)
    # its nearest known materials come from an approximate index stored with it, and agree with a full search
    assert atlas.neighbour_index() is not None and (atlas.folder / "neighbours.pkl").is_file()
    for k in (0, 7, 33):
        d = np.linalg.norm(latents - latents[k], axis=1)
        exact = [f"x:{i}" for i in np.argsort(d)[1:4]]
        found = atlas.nearest(latents[k], k=3, exclude=f"x:{k}")
        assert [i for i, _ in found] == exact
        np.testing.assert_allclose([dist for _, dist in found], np.sort(d)[1:4], rtol=1e-4)
    small = load_or_build(dataset="d", cache_dir=tmp_path, key="small", ids=[f"x:{k}" for k in range(40)],
                          encode=lambda: latents, params=params)
    assert small.neighbour_index() is None  # all of them fit UMAP: searched exhaustively


def test_old_maps_of_a_dataset_are_pruned(tmp_path):
    latents = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    ids = [f"x:{k}" for k in range(12)]
    common = dict(cache_dir=tmp_path, ids=ids, encode=lambda: latents, params=UmapParams(n_neighbors=5))
    load_or_build(dataset="d-other", key="k0", **common)  # another dataset whose name starts with "d-"
    for key in ("k1", "k2", "k3"):  # three checkpoints in turn
        load_or_build(dataset="d", key=key, **common)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d-k2", "d-k3", "d-other-k0"]


def test_place_latent_at_and_nearest(tiny_settings):
    atlas = build_atlas("tiny", tiny_settings)
    placed = atlas.place(atlas.latents[:3])
    assert placed.shape == (3, 2) and np.isfinite(placed).all()
    x, y = atlas.xy[0]
    on_point = atlas.latent_at(float(x), float(y))
    np.testing.assert_allclose(on_point.latent, atlas.latents[0], atol=1e-4)
    assert on_point.distance_2d < 1e-5 and "nearest known latents" in on_point.method
    far = atlas.latent_at(float(x) + 100, float(y))
    assert far.distance_2d > 50 and far.typical_spacing > 0 and np.isfinite(far.latent).all()
    near = atlas.nearest(atlas.latents[2], k=5, exclude=atlas.ids[2])
    assert len(near) == 5 and atlas.ids[2] not in [i for i, _ in near]
    assert [d for _, d in near] == sorted(d for _, d in near)
    with pytest.raises(ValueError, match="not finite"):
        atlas.latent_at(float("nan"), 0.0)


def test_cli_build_prints_the_map(tiny_settings, monkeypatch, capsys):
    monkeypatch.setattr("explorer.cli.Settings", lambda: tiny_settings)
    assert main(["build", "--dataset", "tiny", "--skip-reconstruction"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 12 materials on the map" in out and "reconstructs" not in out
    assert main(["build", "--dataset", "tiny"]) == 0
    assert "tiny: the autoencoder reconstructs " in capsys.readouterr().out


def test_nearest_without_an_index_agrees_with_a_full_search(tmp_path):
    """A map without an approximate index ranks by one matrix-vector product and measures a shortlist exactly:
    the same materials and distances as measuring every one, duplicates in table order."""
    rng = np.random.default_rng(3)
    latents = rng.normal(size=(600, 16)).astype(np.float32) * 5 + 40  # large norms: float32 rounding matters
    latents[100] = latents[7]  # a duplicate material
    atlas = Atlas(dataset="d", key="k", ids=[f"x:{k}" for k in range(600)], latents=latents,
                  xy=np.zeros((600, 2), dtype=np.float32), reducer_path=tmp_path / "none.pkl", folder=tmp_path)
    for k in (0, 7, 100, 599):
        query = latents[k] + rng.normal(scale=0.01, size=16).astype(np.float32)
        d = np.linalg.norm(latents - query, axis=1)
        exact = [f"x:{i}" for i in np.lexsort((np.arange(600), d)) if i != k][:6]
        found = atlas.nearest(query, k=6, exclude=f"x:{k}")
        assert [i for i, _ in found] == exact
        np.testing.assert_allclose([dist for _, dist in found], sorted(d[[int(i[2:]) for i in exact]]), rtol=1e-6)
    assert atlas.nearest(latents[7], k=2)[:2] == [("x:7", 0.0), ("x:100", 0.0)]
    assert atlas.neighbour_index() is None
