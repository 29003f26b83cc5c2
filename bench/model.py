"""Speed of the autoencoder on this machine: encode throughput and decode latency.

    .venv/bin/python bench/model.py [--checkpoint models/checkpoints/default.pt] [--device cpu]

Prints encode throughput (crystals/s, batches of 64 real crystals from the known-materials table or,
without it, the tiny crystals below), decode latency for one crystal and for a batch of 256 (p50/p95
over repeated runs, each run on the next of 256 latents of real crystals), both for the default decode
(with the encoder's check of compositions and sublattices, ``models.crystal.search``), the decode as the app runs it
(also offered the nearest crystals of the known map, ``explorer.services.model.known_cells``, when that map is built;
alone, alone through a server's decode workers, ``explorer.services.batching.DecodeBatcher``, and in batches of 16 on
one torch thread, each on latents of its own; the last three as a server process runs them, with its decode workers
and the encoder's compiled kernels, ``models.kernels.use_kernels``, and the batches also without them) and the
plain one-pass decode,
and, as a baseline measured in the same process, the time pymatgen takes to write one decoded crystal as CIF (what
every click must do anyway), with the ratios to it.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.crystal.autoencoder import CrystalAutoencoder, ModelConfig  # noqa: E402
from models.crystal.checkpoint import load_checkpoint  # noqa: E402
from models.crystal.data import crystal_to_structure, read_tables  # noqa: E402
from models.device import resolve_device  # noqa: E402


def timings(fn, *, repeat: int, warmup: int = 3) -> np.ndarray:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return np.array(out)


def sample_structures(n: int, max_atoms: int):
    table = ROOT / "data" / "tables" / "known.parquet"
    if table.exists():
        crystals = read_tables([table], max_atoms=max_atoms).crystals
        picks = np.random.default_rng(0).choice(len(crystals), size=min(n, len(crystals)), replace=False)
        return [crystal_to_structure(crystals[i]) for i in picks], "known.parquet"
    from pymatgen.core import Lattice, Structure

    salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return [salt] * n, "NaCl (no table built)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "checkpoints" / "default.pt")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.checkpoint.exists():
        model, label = load_checkpoint(args.checkpoint, device=device).model, str(args.checkpoint.name)
    else:
        model, label = CrystalAutoencoder(config=ModelConfig()).to(device).eval(), "untrained default config"
    print(f"device {device}, torch threads {torch.get_num_threads()}, model: {label}")
    structures, origin = sample_structures(768, model.config.max_atoms)
    # latents of their own for the decodes that offer known crystals alone, through the workers and in batches: a known
    # crystal's encodings are kept (models.crystal.search.KNOWN_ENCODINGS), so a latent decoded again would time less
    # than a new click
    structures, served, batched = structures[:512], structures[512:640], structures[640:]
    batches = [structures[i : i + 64] for i in range(0, len(structures), 64)]
    for primitive, what in ((False, "any cell: reduced to the primitive cell first"),
                            (True, "canonical cells, as when building a map: no reduction")):
        start = time.perf_counter()
        for batch in batches:
            model.encode_structures(batch, batch_size=64, primitive=primitive)
        encode_rate = len(structures) / (time.perf_counter() - start)
        print(f"encode: {encode_rate:.0f} crystals/s (batch 64, {len(structures)} crystals from {origin}, "
              f"graphs built on the fly; {what})")

    z = model.encode_structures(structures[:256])[0]
    cycle = itertools.count()
    next_one = lambda: z[[next(cycle) % len(z)]]  # noqa: E731
    one = timings(lambda: model.decode(next_one(), validate=False), repeat=256)
    one_plain = timings(lambda: model.decode(next_one(), validate=False, search=False), repeat=256)
    from explorer.services.model import known_cells
    from explorer.settings import Settings

    found = known_cells(Settings()) if args.checkpoint == Settings().checkpoint else None
    known = found[1] if found else None
    one_known = timings(lambda: model.decode(next_one(), validate=False, known=known), repeat=256) if known else None
    one_served, batch_known, batch_eager, one_kernels, workers = None, None, None, None, 0
    if known:  # as a server process decodes (explorer.serving.server_process): its workers and compiled kernels
        from explorer.services.batching import DecodeBatcher
        from explorer.serving import auto_decode_workers, auto_workers
        from models.kernels import use_kernels

        z_served = model.encode_structures(served)[0].cpu().numpy()
        z_batched = model.encode_structures(batched)[0]
        z_kernels, other = model.encode_structures(structures[256:])[0], itertools.count()
        use_kernels(True)  # built on the first decode through them (a few seconds; the warm-up's, in a server)
        one_kernels = timings(lambda: model.decode(z_kernels[[next(other) % len(z_kernels)]], validate=False,
                                                   known=known), repeat=len(z_kernels) - 3)
        workers = auto_decode_workers(0, processes=auto_workers(0))
        batcher, turn = DecodeBatcher(model, workers=workers), itertools.count()
        one_served = timings(lambda: batcher.decode(z_served[[next(turn)]], known), repeat=len(z_served) - 3)
        # a server decode worker: batches of concurrent requests, one torch thread, with and without the kernels,
        # alternated (8 batches of 16 latents of their own, each decoded both ways)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        batch_known, batch_eager = [], []
        for k in range(8):
            sixteen = z_batched[16 * k : 16 * (k + 1)]
            for kernel, out in ((True, batch_known), (False, batch_eager)) if k % 2 else ((False, batch_eager),
                                                                                          (True, batch_known)):
                use_kernels(kernel)
                if k == 0:
                    model.decode_arrays(sixteen, known=known)  # warm-up (the kernels' first build)
                known.forget_encodings()  # both ways encode the same known crystals anew
                out.extend(timings(lambda: model.decode_arrays(sixteen, known=known), repeat=1, warmup=0))  # noqa: B023
        use_kernels(False)
        torch.set_num_threads(threads)
    one_valid = timings(lambda: model.decode(next_one()), repeat=128)
    batch = timings(lambda: model.decode_arrays(z), repeat=5, warmup=1)
    batch_plain = timings(lambda: model.decode_arrays(z, search=False), repeat=20)
    decoded = model.decode(z[:1], validate=False)[0].structure
    from pymatgen.io.cif import CifWriter

    baseline = timings(lambda: str(CifWriter(decoded)), repeat=200)
    p = lambda t: f"p50 {np.median(t) * 1e3:.2f} ms, p95 {np.percentile(t, 95) * 1e3:.2f} ms"  # noqa: E731
    per = lambda t: f"({np.median(t) / len(z) * 1e3:.3f} ms/crystal)"  # noqa: E731
    print(f"decode 1 crystal -> Structure:            {p(one)}")
    print(f"  plain one-pass decode (search=False):  {p(one_plain)}")
    if one_known is not None:
        print(f"  as the app decodes ({known.k} of {len(known)} known crystals offered): {p(one_known)}")
    if one_kernels is not None:
        print(f"  the same with a server process's compiled kernels (other latents): {p(one_kernels)}")
    if one_served is not None:
        print(f"  the same through a server process's decode workers ({workers}, one torch thread each, compiled "
              f"kernels): {p(one_served)}")
    if batch_known is not None:
        print(f"  batches of 16 as the app decodes, 1 torch thread (a server decode worker), compiled kernels: "
              f"{p(batch_known)} ({np.median(batch_known) / 16 * 1e3:.2f} ms/crystal); without it "
              f"{p(batch_eager)} ({np.median(batch_eager) / 16 * 1e3:.2f} ms/crystal): "
              f"{np.median(batch_known) / np.median(batch_eager):.2f}x")
    print(f"decode 1 crystal + validity report:      {p(one_valid)}")
    print(f"decode batch of 256 -> arrays:           {p(batch)} {per(batch)}")
    print(f"  plain one-pass decode (search=False):  {p(batch_plain)} {per(batch_plain)}")
    print(f"baseline, pymatgen CIF of 1 crystal:     {p(baseline)}")
    print(f"ratios to baseline (p50): decode {np.median(one) / np.median(baseline):.2f}x, "
          f"plain decode {np.median(one_plain) / np.median(baseline):.2f}x, "
          f"decode+validity {np.median(one_valid) / np.median(baseline):.2f}x; target 20 ms p50 -> "
          f"{np.median(one) * 1e3 / 20:.2f} of budget")


if __name__ == "__main__":
    main()
