"""Physics of decodes on 2 cores: the panel, the first and cached stability answers, relaxation, and the
reconstruction of held-out crystals before and after a CHGNet relaxation.

    .venv/bin/python bench/physics.py [--dataset known] [--decodes 40] [--relax 10] [--recon 40]

The maps come from data/atlas (built with ``python -m explorer build``); the energies of the known materials are
computed into a scratch folder, so every chemical system starts cold as on a fresh install.

1. Panel (``physics.assess``: energy, forces, stress, hull, novelty) of decodes of seeded map points with at
   most 40 atoms, first pass (chemical systems new) and second pass (cached); target p50 <= 300 ms.
2. Stability alone (``physics.stability``): first answer for each new chemical system (target <= 10 s) and the
   cached answer (target <= 50 ms).
3. Relaxation (``physics.relax``) of decodes with at most 20 atoms: time, steps and the longest gap between two
   progress reports (targets: p50 <= 30 s, a report at least every second).
4. Click -> structure: ``model.decode`` p50 before and after the potential is loaded in the same process (the
   physics panel is a second callback; the click itself must not get slower).
5. With ``--recon N``: N held-out crystals per family of bench/heldout.py, decoded, matched (CDVAE protocol,
   ``models.crystal.metrics.rms_if_match``), then relaxed and matched again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from explorer.settings import Settings  # noqa: E402


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary_ms(values: list[float]) -> str:
    return f"p50 {p(values, 50):.0f} ms, p95 {p(values, 95):.0f} ms, max {max(values, default=float('nan')):.0f} ms"


def decodes(dataset: str, settings: Settings, n: int, *, seed: int = 7) -> list:
    from explorer.atlas import get_atlas
    from explorer.generate import sample_latents
    from explorer.services import model

    latents, _ = sample_latents(get_atlas(dataset, settings), n, seed=seed)
    return [d.structure for d in model.decode_many(latents, settings)]


def decode_times(dataset: str, settings: Settings, runs: int = 30) -> list[float]:
    from explorer.atlas import get_atlas
    from explorer.generate import sample_latents
    from explorer.services import model

    latents, _ = sample_latents(get_atlas(dataset, settings), runs, seed=11)
    times = []
    for z in latents:
        start = time.perf_counter()
        model.decode(z, settings)
        times.append(1000 * (time.perf_counter() - start))
    return times


def bench_panel_and_hull(dataset: str, settings: Settings, structures: list) -> dict:
    from explorer.services import physics

    small = [s for s in structures if len(s) <= 40]
    first, second, hull_first, hull_cached = [], [], [], []
    for structure in small:
        start = time.perf_counter()
        energy = physics.energy(structure, settings)["energy_per_atom"]
        t_hull = time.perf_counter()
        physics.stability(structure, energy, dataset, settings)
        hull_first.append(1000 * (time.perf_counter() - t_hull))
        physics.novelty(structure, dataset, settings)
        first.append(1000 * (time.perf_counter() - start))
    for structure in small:
        start = time.perf_counter()
        energy = physics.assess(structure, dataset, settings)["energy_per_atom"]
        second.append(1000 * (time.perf_counter() - start))
        t_hull = time.perf_counter()
        physics.stability(structure, energy, dataset, settings)
        hull_cached.append(1000 * (time.perf_counter() - t_hull))
    print(f"panel, {len(small)} decodes <= 40 atoms, first pass (systems new): {summary_ms(first)}")
    print(f"panel, same decodes again (energies cached): {summary_ms(second)}   target p50 <= 300 ms")
    print(f"stability, first answer per new system: {summary_ms(hull_first)}   target <= 10 s")
    print(f"stability, cached: {summary_ms(hull_cached)}   target <= 50 ms")
    return {"panel_first_ms": first, "panel_ms": second, "hull_first_ms": hull_first, "hull_cached_ms": hull_cached}


def bench_relax(settings: Settings, structures: list, n: int) -> dict:
    from explorer.services import physics

    chosen = [s for s in structures if len(s) <= 20][:n]
    seconds, steps, gaps, failed, converged = [], [], [], [], 0
    for structure in chosen:
        stamps = []
        start = time.perf_counter()
        try:
            result = physics.relax(structure, settings, on_step=lambda _s, stamps=stamps: stamps.append(
                time.perf_counter()))
        except ValueError as exc:
            failed.append(str(exc))
            continue
        seconds.append(time.perf_counter() - start)
        steps.append(result.steps)
        converged += result.converged
        marks = [start, *stamps]
        gaps.append(max(b - a for a, b in zip(marks, marks[1:], strict=False)))
    print(f"relaxation of {len(chosen)} decodes <= 20 atoms: p50 {p(seconds, 50):.1f} s, p95 {p(seconds, 95):.1f} s"
          f" (target p50 <= 30 s); steps p50 {p(steps, 50):.0f}; converged {converged}, stopped by the explosion "
          f"check {len(failed)}; longest gap between progress reports {max(gaps, default=float('nan')):.2f} s "
          "(the first includes loading the potential)")
    return {"relax_s": seconds, "steps": steps, "gaps_s": gaps, "failed": failed, "converged": converged}


def bench_recon_after_relax(settings: Settings, n: int) -> dict:
    from heldout import SHARED_FAMILIES, known_rows, shared_rows

    from explorer.services import model, physics
    from models.crystal.metrics import rms_if_match

    held_out = set(json.loads((ROOT / "models" / "checkpoints" / "default.split.json").read_text())["val_ids"])
    families = {f: shared_rows(f, held_out, settings.shared_data_dir) for f in SHARED_FAMILIES
                if (settings.shared_data_dir / f).is_dir()}
    families["known/matbench_dielectric"] = known_rows(held_out, "matbench_dielectric")
    results = {}
    for family, rows in families.items():
        rows = [r for r in rows if r.structure is not None][:n]
        if not rows:
            continue
        targets = [r.structure for r in rows]
        decoded = [d.structure for d in model.decode_many(model.encode(targets, settings), settings)]
        plain = relaxed = failed = 0
        for target, structure in zip(targets, decoded, strict=True):
            plain += rms_if_match(structure, target) is not None
            try:
                after = physics.relax(structure, settings).structure
            except ValueError:
                failed += 1
                continue
            relaxed += rms_if_match(after, target) is not None
        results[family] = {"n": len(rows), "plain": plain / len(rows), "relaxed": relaxed / len(rows),
                           "relax_failed": failed}
        print(f"{family:<28} n={len(rows):<4} match rate decoded {100 * plain / len(rows):5.1f} %   after CHGNet "
              f"relaxation {100 * relaxed / len(rows):5.1f} %   ({failed} relaxations stopped)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="known")
    parser.add_argument("--decodes", type=int, default=40, help="decodes for the panel and hull figures")
    parser.add_argument("--relax", type=int, default=10, help="decodes to relax")
    parser.add_argument("--recon", type=int, default=0, help="held-out crystals per family to relax (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    built = Settings()
    with tempfile.TemporaryDirectory(prefix="explorer-physics-") as scratch:
        for name in ("tables", "atlas"):
            (Path(scratch) / name).symlink_to(built.data_dir / name, target_is_directory=True)
        settings = Settings(data_dir=Path(scratch))
        before = decode_times(args.dataset, settings)
        from explorer.services import physics

        start = time.perf_counter()
        problem = physics.potential_problem(settings)
        if problem:
            sys.exit(problem)
        print(f"potential loaded in {time.perf_counter() - start:.1f} s")
        structures = decodes(args.dataset, settings, args.decodes)
        figures = bench_panel_and_hull(args.dataset, settings, structures)
        after = decode_times(args.dataset, settings)
        print(f"click decode: p50 {p(before, 50):.1f} ms before the potential is loaded, {p(after, 50):.1f} ms after "
              f"(ratio {p(after, 50) / p(before, 50):.2f})")
        figures["decode_before_ms"], figures["decode_after_ms"] = before, after
        figures["relax"] = bench_relax(settings, structures, args.relax)
        if args.recon:
            figures["recon_after_relax"] = bench_recon_after_relax(settings, args.recon)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
