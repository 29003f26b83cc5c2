"""The motif autoencoder on real environments: invariances of its latent, the canonical frame, the alignment that
scores it, a small model that learns a handful of motifs, and a resumable training run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import graphite, nacl, silicon, srtio3
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from models.motif.data import MAX_NEIGHBOURS, canonical, canonical_frame, concat, from_points, read_table
from models.motif.evaluate import _orthogonal, align, decoded_points, missing_neighbour, reconstruction
from models.motif.model import MotifAutoencoder, MotifConfig, loss, shell_of, shell_slots
from models.motif.train import MotifTrainConfig, batch_of, load, run


def wurtzite() -> Structure:
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])


def shells(structure: Structure, cutoff: float) -> list[tuple[str, list[str], np.ndarray]]:
    """(centre, neighbour elements, (k, 3) vectors) of every site: neighbours within ``cutoff`` Å, periodic."""
    found = []
    for site in structure:
        near = sorted(structure.get_neighbors(site, cutoff), key=lambda n: n.nn_distance)[:MAX_NEIGHBOURS]
        found.append((site.specie.symbol, [n.specie.symbol for n in near], np.array([n.coords - site.coords
                                                                                      for n in near])))
    return found


def real_environments():
    """Na and Cl octahedra, the Si tetrahedron, Ti octahedron, Sr cuboctahedron and O of SrTiO3, graphite's
    trigonal C, wurtzite's tetrahedra."""
    found = shells(nacl(), 3.0)[:1] + shells(nacl(), 3.0)[4:5] + shells(silicon(), 2.5)[:1] + shells(srtio3(), 2.8) \
        + shells(graphite(), 1.5)[:1] + shells(wurtzite(), 2.1)
    return concat([from_points(c, n, v) for c, n, v in found])


def tensors(envs):
    return (torch.as_tensor(envs.centre), torch.as_tensor(envs.species), torch.as_tensor(envs.vectors))


@pytest.mark.parametrize("shell", [True, False], ids=["version 2", "version 1"])
def test_the_latent_ignores_rotation_reflection_and_neighbour_order(shell):
    torch.manual_seed(0)
    model = MotifAutoencoder(config=MotifConfig(composition_in_latent=shell)).double()
    centre, species, vectors = tensors(real_environments())
    vectors = vectors.double()
    z = model.encode(centre, species, vectors)
    rotation = torch.as_tensor(Rotation.random(random_state=3).as_matrix())
    order = torch.randperm(MAX_NEIGHBOURS)
    for moved, kinds in ((vectors @ rotation.T, species), (-vectors, species), (vectors[:, order], species[:, order]),
                         ((-vectors @ rotation.T)[:, order], species[:, order])):
        assert (model.encode(centre, kinds, moved) - z).abs().max() < 1e-5
    assert (z[0] - z[2]).abs().max() > 1e-3  # an octahedron and a tetrahedron differ


def test_the_canonical_frame_is_a_rotation_that_forgets_the_input_orientation():
    envs = real_environments()
    target = canonical(envs)
    for k in range(len(envs)):
        n = envs.count[k]
        frame = canonical_frame(envs.vectors[k, :n].astype(float), envs.species[k, :n])
        assert np.allclose(frame @ frame.T, np.eye(3), atol=1e-6) and np.linalg.det(frame) > 0
        rotated = envs.vectors[k, :n] @ Rotation.random(random_state=k).as_matrix().T
        again = rotated @ canonical_frame(rotated.astype(float), envs.species[k, :n]).T
        rms, _ = align(again, envs.species[k, :n], target[k, :n].astype(float), envs.species[k, :n])
        assert rms < 1e-4


def test_align_undoes_rotation_reflection_and_order_and_sees_a_wrong_shape():
    envs = real_environments()
    n = envs.count[0]  # the Na octahedron of NaCl
    q, species = envs.vectors[0, :n].astype(float), envs.species[0, :n]
    order = np.random.default_rng(1).permutation(n)
    p = -(q @ Rotation.random(random_state=2).as_matrix().T)[order]
    rms, assigned = align(p, species[order], q, species)
    rotation = _orthogonal(p[assigned], q)  # an octahedron has many equally good orders: any must overlay exactly
    assert rms < 1e-6 and np.allclose(p[assigned] @ rotation.T, q, atol=1e-6)
    squashed = q * np.array([1.0, 1.0, 0.8])
    assert align(squashed, species, q, species)[0] > 0.1


@pytest.fixture(scope="module")
def trained():
    """A small model trained on the real environments until it knows them."""
    torch.manual_seed(0)
    envs = real_environments()
    targets = canonical(envs)
    model = MotifAutoencoder(config=MotifConfig(hidden=128, composition_in_latent=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(400):
        batch = batch_of(envs, targets, np.arange(len(envs)), rng, 0.0, torch.device("cpu"))
        total, _ = loss(model, batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return model.eval(), envs


def test_a_small_model_reconstructs_the_motifs_it_learned(trained):
    model, envs = trained
    found = reconstruction(model, envs)
    assert found["n"] == len(envs) and found["reconstructed"] == 1.0 and found["rms_median"] < 0.2
    assert 0.0 <= missing_neighbour(model, envs)["recovered"] <= 1.0


def test_the_shell_part_of_the_latent_gives_the_elements_and_reads_mixtures_as_whole_counts():
    envs = real_environments()
    torch.manual_seed(0)
    model = MotifAutoencoder(config=MotifConfig(hidden=64, composition_in_latent=True)).eval()
    with torch.no_grad():
        z = model.encode(*tensors(envs))
        out = model.decode(z)
        decoded = decoded_points({**out, "count": torch.zeros_like(out["count"])}, missing=None)  # no opinion
        out["count"][:, -1] = 1e3  # a count head that wants 16 adds one neighbour to the shell, no more
        more = decoded_points(out, missing=None)
        complete = decoded_points(out)  # a complete environment: the shell's count, whatever the count head says
        told = decoded_points({**out, "count": torch.zeros_like(out["count"])}, missing=1)
    assert [len(s) for _, s, _ in more] == [len(s) for _, s, _ in told] == [n + 1 for n in envs.count]
    assert [len(s) for _, s, _ in complete] == list(envs.count)
    assert z.shape == (len(envs), model.latent_size) and model.latent_size == 32 + 2 * 95
    for k, (centre, species, points) in enumerate(decoded):  # untrained: the geometry is noise, the elements exact
        n = envs.count[k]
        assert centre == envs.centre[k] and sorted(species) == sorted(envs.species[k, :n]) and points.shape == (n, 3)
    octahedron, tetrahedron = np.zeros(95), np.zeros(95)
    octahedron[8], tetrahedron[8] = 6, 4  # O6 and O4 shells: halfway is O5
    assert shell_of(np.eye(95)[22], (octahedron + tetrahedron) / 2)[1][8] == 5
    one_o, one_s = np.eye(95)[8], np.eye(95)[16]
    centre, counts = shell_of(0.4 * np.eye(95)[22] + 0.6 * np.eye(95)[14], (one_o + one_s) / 2)
    assert centre == 14 and counts.sum() == 1 and counts[8] + counts[16] == 1
    logits = np.full((16, 95), -5.0)
    logits[3, 8] = logits[7, 8] = logits[9, 11] = 5.0  # two slots like O, one likes Na
    slots, species = shell_slots(logits, counts=np.bincount([8, 8], minlength=95), n=3)
    assert slots.tolist() == [3, 7, 9] and species.tolist() == [8, 8, 11]  # one more than the shell: the best other


def test_training_is_resumable_and_its_checkpoint_loads_safely(tmp_path, capsys):
    rows = []
    for k, (centre, neighbours, vectors) in enumerate(shells(nacl(), 3.0) + shells(srtio3(), 2.8)
                                                      + shells(silicon(), 2.5) + shells(wurtzite(), 2.1)):
        rows.append({"id": f"tiny:{k % 7}", "element": centre,
                     "neighbours": json.dumps([[e, float(np.linalg.norm(v))] for e, v in zip(neighbours, vectors,
                                                                                             strict=True)]),
                     "vectors": json.dumps(vectors.round(4).tolist())})
    table = tmp_path / "tiny-v2.parquet"
    pd.DataFrame(rows).to_parquet(table)
    assert len(read_table(table)) == len(rows)
    config = MotifTrainConfig(table=str(table), out=str(tmp_path / "run"), epochs=1, batch_size=8, val_fraction=0.3)
    run(config, MotifConfig(hidden=64))
    run(MotifTrainConfig(**{**config.__dict__, "epochs": 2, "resume": True}), MotifConfig(hidden=64))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and "resumed" in capsys.readouterr().out
    model, payload = load(tmp_path / "run" / "last.pt")
    assert payload["training"]["epoch"] == 2 and isinstance(model, MotifAutoencoder)
    held = set(json.loads((tmp_path / "run" / "split.json").read_text())["val_ids"])
    assert held and held < {f"tiny:{k}" for k in range(7)}


def test_the_encoder_pulls_a_shaken_shell_back_to_the_environment(trained):
    """``refine`` moves points so that their latent meets z: shells shaken by 0.15 Å go back towards the true ones
    (the true shell has z's latent exactly), elements untouched, the model's weights untouched."""
    from models.motif.refine import refine

    model, envs = trained
    centre, species, vectors = tensors(envs)
    with torch.no_grad():
        z = model.encode(centre, species, vectors)
    rng = np.random.default_rng(1)
    shaken = [(int(envs.centre[i]), envs.species[i, :n].copy(),
               envs.vectors[i, :n] + rng.normal(scale=0.15, size=(n, 3)).astype(np.float32))
              for i, n in enumerate(envs.count)]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moved = refine(model, z, shaken, steps=150, learning_rate=0.02)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    def rms(points_of):
        return np.array([align(points_of(i).astype(np.float64), shaken[i][1], envs.vectors[i, :n].astype(np.float64),
                               envs.species[i, :n])[0] for i, n in enumerate(envs.count)])

    def latent_gap(points_of):
        padded = torch.zeros_like(vectors)
        for i, n in enumerate(envs.count):
            padded[i, :n] = torch.as_tensor(points_of(i))
        with torch.no_grad():
            return float(((model.encode(centre, species, padded) - z)[:, : model.config.latent_dim] ** 2).sum())

    before, after = rms(lambda i: shaken[i][2]), rms(lambda i: moved[i])
    assert [len(m) for m in moved] == list(envs.count)
    assert latent_gap(lambda i: moved[i]) < 0.5 * latent_gap(lambda i: shaken[i][2])
    assert after.mean() < 0.8 * before.mean(), (before.mean(), after.mean())
    assert (after < before).mean() >= 0.75, (before, after)  # most shells, not one or two, come closer


def test_decode_refines_only_shells_of_the_latent_size(trained):
    """A decode asked to add a neighbour (an input missing one) is left as the decoder gave it."""
    from models.motif import refine

    model, envs = trained
    centre, species, vectors = tensors(envs)
    with torch.no_grad():
        z = model.encode(centre, species, vectors)
        plain = decoded_points(model.decode(z))
    refined = refine.decode(model, z, steps=20)
    assert [(c, list(s)) for c, s, _ in refined] == [(c, list(s)) for c, s, _ in plain]
    assert any(not np.allclose(p, q) for (_, _, p), (_, _, q) in zip(plain, refined, strict=True))
    partial = species.clone()
    partial[:, 0] = 0  # every shell loses its first neighbour: the latent's shell is one smaller
    keep = envs.count >= 2
    with torch.no_grad():
        z_partial = model.encode(centre[keep], partial[keep], vectors[keep])
        plain = decoded_points(model.decode(z_partial), missing=1)
    refined = refine.decode(model, z_partial, steps=20, missing=1)
    shell = z_partial[:, model.config.latent_dim + model.shell_size // 2:].sum(-1).round().long().tolist()
    for (_, s, p), (_, _, q), total in zip(plain, refined, shell, strict=True):
        assert len(s) == total + 1  # a neighbour was added: not refined
        np.testing.assert_array_equal(p, q)


def test_known_shells_are_offered_with_the_shells_elements():
    """``Library.starts``: known shells with the same pattern of counts, nearest first, renamed to the shell's
    elements (most numerous to most numerous); no start for a pattern the library lacks."""
    from models.motif.data import atomic_number
    from models.motif.refine import Library

    envs = real_environments()  # Na, Cl, Si, Sr, Ti, O (SrTiO3), C, Zn, O (wurtzite)
    learned = np.random.default_rng(0).normal(size=(len(envs), 4)).astype(np.float32)
    library = Library(learned=learned, environments=envs)
    ti = next(i for i in range(len(envs)) if envs.centre[i] == atomic_number("Ti"))
    o_perovskite = next(i for i in range(len(envs)) if envs.centre[i] == atomic_number("O"))  # O8 Sr4 Ti2
    counts = np.zeros(119, dtype=np.int64)
    counts[atomic_number("S")] = 6
    starts = library.starts(learned[ti] + 0.01, counts, k=2)
    assert len(starts) == 2  # the O6 of Ti first (nearest), then another shell of six of one element
    species, points = starts[0]
    assert species.tolist() == [atomic_number("S")] * 6
    np.testing.assert_allclose(points, envs.vectors[ti, :6])
    own = library.starts(learned[ti], counts, k=5)  # Ti's own latent: its own shell is not offered
    assert len(own) == 2 and not any(np.allclose(p, envs.vectors[ti, :6]) for _, p in own)
    mixed = np.zeros(119, dtype=np.int64)
    mixed[atomic_number("Se")], mixed[atomic_number("Ba")], mixed[atomic_number("Zr")] = 8, 4, 2
    starts = library.starts(learned[o_perovskite], mixed, k=5)
    assert len(starts) == 2  # the three O of SrTiO3 hold the pattern 8, 4, 2; the first one's own is left out
    species, points = starts[0]
    distance = np.linalg.norm(points, axis=1)
    assert species[distance < 2.2].tolist() == [atomic_number("Zr")] * 2  # Ti's places, 1.95 Å
    far = species[distance > 2.2].tolist()
    assert far.count(atomic_number("Ba")) == 4 and far.count(atomic_number("Se")) == 8
    three_three = np.zeros(119, dtype=np.int64)
    three_three[8], three_three[16] = 3, 3
    assert library.starts(learned[ti] + 0.01, three_three) == []
    with pytest.raises(ValueError, match="latents for"):
        Library(learned=learned[:3], environments=envs)


def test_a_decode_that_starts_from_known_shells_gives_a_known_environment_back(trained):
    """With the environments in the library, a shell whose geometry another centre element shares (Na and Cl of
    rock salt, wurtzite's Zn and O) decodes to that shell, renamed: exact, since the true shell has z's latent and
    refining it moves nothing. Its own entry, and any with the same latent (the three equivalent O of SrTiO3), is
    never offered. The decoder's guess alone is not that exact."""
    from models.motif import refine

    model, envs = trained
    centre, species, vectors = tensors(envs)
    with torch.no_grad():
        z = model.encode(centre, species, vectors)
    library = refine.Library.encode(model, envs)
    started = refine.decode(model, z, steps=5, library=library)
    alone = refine.decode(model, z, steps=5)

    def rms(decoded):
        return np.array([align(points.astype(np.float64), found, envs.vectors[i, :n].astype(np.float64),
                               envs.species[i, :n])[0]
                         for i, ((_, found, points), n) in enumerate(zip(decoded, envs.count, strict=True))])

    distances = np.sort(np.linalg.norm(envs.vectors, axis=-1), axis=1)
    twins = [i for i in range(len(envs)) if any(
        envs.centre[j] != envs.centre[i] and envs.count[j] == envs.count[i]
        and np.allclose(distances[j], distances[i]) for j in range(len(envs)))]
    assert len(twins) == 6  # Na, Cl; the two Zn and two O of wurtzite
    assert [c for c, _, _ in started] == list(envs.centre)
    assert (rms(started)[twins] < 1e-4).all(), rms(started)
    assert (rms(alone)[twins] > 1e-3).any()
    assert all(sorted(s.tolist()) == sorted(envs.species[i, :n].tolist())
               for i, ((_, s, _), n) in enumerate(zip(started, envs.count, strict=True)))


def test_only_the_known_shells_closest_to_z_as_they_are_get_refined(trained):
    """``refine.decode(..., starts, refined)``: the known shells are ranked by their latent as they are and only the
    ``refined`` closest are refined beside the decoder's guess: none refined is the decode without a library, all
    refined the decode without the ranking (this library has fewer than 7 shells of any one pattern), and the twins
    of rock salt and wurtzite, whose own shells are the closest starts, still come back exact when only one is
    refined."""
    from models.motif import refine

    model, envs = trained
    centre, species, vectors = tensors(envs)
    with torch.no_grad():
        z = model.encode(centre, species, vectors)
    library = refine.Library.encode(model, envs)

    def points(decoded):
        return [p for _, _, p in decoded]

    none = refine.decode(model, z, steps=5, library=library, starts=8, refined=0)
    for a, b in zip(points(none), points(refine.decode(model, z, steps=5)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    every = refine.decode(model, z, steps=5, library=library, starts=8, refined=8)  # no ranking
    ranked = refine.decode(model, z, steps=5, library=library, starts=8, refined=7)  # ranked, none of these dropped
    for a, b in zip(points(every), points(ranked), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    one = refine.decode(model, z, steps=5, library=library, starts=8, refined=1)
    for i, (_, found, p) in enumerate(one):
        n = envs.count[i]
        rms = align(p.astype(np.float64), found, envs.vectors[i, :n].astype(np.float64), envs.species[i, :n])[0]
        if envs.centre[i] in (11, 17):  # Na and Cl of rock salt: each other's shell, renamed
            assert rms < 1e-4, (i, rms)
