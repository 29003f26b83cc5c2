"""Command line: ``python -m explorer data build | info [--json] | ingest PATH --name NAME | check PATH``,
``python -m explorer build [--dataset NAME] [--skip-reconstruction] [--skip-motifs]`` (the maps: embed every
material, fit UMAP, then check which materials the model gives back, ``explorer.reconstruction``, and find the
environment of every site, ``explorer.motifs.table``), ``python -m explorer
assess PATH [--relax] [--dataset NAME] [--json]`` (energy, stability and novelty of structure files) and
``python -m explorer generate --dataset NAME --n N [--relax] [--skip-physics] [--no-search] [--keep K] --out DIR``
(``explorer.generate``) and
``python -m explorer motifs PATH [--json]`` (the environment of every distinct site: ``explorer.motifs``),
``python -m explorer decode --from FILE [--checkpoint PATH] [--json]`` (decode again the latent an exported decode
carries, ``services.provenance``) and
``python -m explorer export-map --dataset NAME --kind crystals|structure|motifs --out FILE`` (a map as CSV or
Parquet). ``generate``, ``build``, ``data build`` and ``data ingest`` take ``--workers N`` (a Dask cluster of N
processes here) or ``--scheduler ADDRESS`` (an existing one): ``explorer.jobs``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explorer.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer", description="Latent Materials Explorer")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="build, inspect and ingest tables of known materials")
    actions = data.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build the tables (reused when their inputs did not change)")
    build.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    build.add_argument("--force", action="store_true", help="rebuild even if the inputs did not change")
    _where_arguments(build)
    info = actions.add_parser("info", help="per source: records read, kept and rejected by reason")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--rejections", metavar="DATASET", help="list every rejected record of DATASET")
    ingest = actions.add_parser("ingest", help="read your own structures (file or folder) into a new dataset")
    ingest.add_argument("path", type=Path, help="CIF/POSCAR folder, CDVAE-style CSV, extended XYZ or pymatgen JSON")
    ingest.add_argument("--name", required=True, help="name of the new dataset (shown in the app's map list)")
    _where_arguments(ingest)
    check = actions.add_parser("check", help="say whether each structure of a file or folder would be kept, and "
                                             "why not (the verdict of an upload or an ingest), without building")
    check.add_argument("path", type=Path, help="a structure file, or a folder of them")
    check.add_argument("--json", action="store_true", help="one JSON list of verdicts")
    maps = commands.add_parser("build", help="build the maps: encode every material with the checkpoint, fit UMAP, "
                                             "and check which materials the model gives back")
    maps.add_argument("--dataset", action="append", help="only this dataset (repeatable); default: every built one")
    maps.add_argument("--skip-reconstruction", action="store_true",
                      help="build the maps only; the server then checks which materials the model gives back in "
                           "the background after it starts (about 10 minutes for the 11k known materials)")
    assess = commands.add_parser("assess", help="energy, forces, energy above the known hull and novelty of each "
                                                "structure of a file or folder (CHGNet)")
    assess.add_argument("path", type=Path, help="a CIF/POSCAR/extxyz/JSON file, or a folder of them")
    assess.add_argument("--relax", action="store_true", help="also relax each structure and assess the result")
    assess.add_argument("--dataset", default="known", help="the map whose known materials give the hull and "
                                                           "novelty (default: known)")
    assess.add_argument("--json", action="store_true", help="one JSON list, a row per structure")
    gen = commands.add_parser("generate", help="sample, decode and judge hypothetical crystals of a map")
    gen.add_argument("--dataset", default="known", help="the map to sample (default: known)")
    gen.add_argument("--n", type=int, required=True, help="how many latents to sample and decode")
    gen.add_argument("--seed", type=int, default=0, help="random seed of the sample (default 0)")
    gen.add_argument("--relax", action="store_true", help="relax every valid unique crystal before the hull")
    gen.add_argument("--out", type=Path, required=True,
                     help="folder for the partitions, generated.parquet/.csv, summary.json, cif/ and candidates.csv "
                          "(run the same command again to go on with a stopped run)")
    gen.add_argument("--skip-physics", action="store_true",
                     help="decode, check and remove duplicates only (no CHGNet energy, hull or novelty)")
    gen.add_argument("--no-search", action="store_true",
                     help="decode without the encoder's check of other candidate compositions and site labels: about "
                          "15 times faster on a CPU (fewer decodes are right), for runs of 10^5 crystals and more")
    gen.add_argument("--keep", type=int, default=10_000,
                     help="how many unique valid crystals (lowest energy above the hull first) to write as CIFs "
                          "and to candidates.csv (default 10000)")
    _where_arguments(gen)
    decode = commands.add_parser("decode", help="decode again the latent an exported decode carries (CIF, POSCAR, "
                                 "extended XYZ, pymatgen JSON) and say whether it gives the file's crystal")
    decode.add_argument("--from", dest="source", type=Path, required=True, help="the exported file")
    decode.add_argument("--checkpoint", type=Path, default=None,
                        help="the checkpoint to use (default: the one the file names, found among the configured "
                             "checkpoint and models/checkpoints/*.pt)")
    decode.add_argument("--json", action="store_true", help="print the verdict as JSON")
    motifs = commands.add_parser("motifs", help="coordination and motif of every symmetry-distinct site of each "
                                                "structure of a file or folder")
    motifs.add_argument("path", type=Path, help="a CIF/POSCAR/extxyz/JSON file, or a folder of them")
    motifs.add_argument("--json", action="store_true", help="one JSON list, a row per distinct site")
    maps.add_argument("--skip-motifs", action="store_true",
                      help="do not compute the environments of every site (motif search) nor the structure map; the "
                           "server then computes them in the background after it starts")
    _where_arguments(maps)
    export_map = commands.add_parser("export-map", help="write a map (ids, coordinates, latents, colouring columns) "
                                                        "as CSV or Parquet for your own analysis")
    export_map.add_argument("--dataset", default="known", help="the dataset (default: known)")
    export_map.add_argument("--kind", default="crystals", choices=["crystals", "structure", "motifs"],
                            help="crystals: the autoencoder's map; structure: crystals placed by geometry alone; "
                                 "motifs: the distinct local environments")
    export_map.add_argument("--out", type=Path, required=True, help="the file to write: .csv or .parquet")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        if args.command == "build":
            return _run_build(args, settings)
        if args.command == "assess":
            return _run_assess(args, settings)
        if args.command == "generate":
            return _run_generate(args, settings)
        if args.command == "motifs":
            return _run_motifs(args, settings)
        if args.command == "export-map":
            return _run_export_map(args, settings)
        if args.command == "decode":
            return _run_decode(args, settings)
        return _run_data(args, settings)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: the partitions already written are kept; run the same command again to go on",
              file=sys.stderr)
        return 130


def _where_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None,
                       help="run on a Dask cluster of N worker processes on this machine (default: in this process)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (what `dask scheduler` "
                            "prints); its workers must see this folder and the checkpoint")


def _where(args: argparse.Namespace):
    from explorer.jobs import Where

    return Where(workers=args.workers, scheduler=args.scheduler)


def _run_build(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from explorer import reconstruction
    from explorer.atlas import build_atlas
    from explorer.datasets import catalog
    from explorer.jobs import client_for

    names = args.dataset or [r.dataset for r in catalog.reports(settings)]
    if not names:
        raise ValueError("no tables built yet: run `python -m explorer data build` first")
    where = _where(args)
    with client_for(where) as client:
        if client is not None:
            print(f"encoding and reconstruction checks run on {where.describe()}")
        for name in names:
            start = time.perf_counter()
            atlas = build_atlas(name, settings, progress=True, client=client)
            print(f"{name}: {len(atlas.ids)} materials on the map ({time.perf_counter() - start:.0f} s, "
                  f"cache {settings.atlas_dir / f'{name}-{atlas.key}'})")
            if not args.skip_reconstruction:
                start = time.perf_counter()
                print(f"{name}: {reconstruction.compute(name, settings, progress=True, client=client).sentence()} "
                      f"({time.perf_counter() - start:.0f} s)")
            if not args.skip_motifs:
                _build_motifs(name, settings)
    return 0


def _build_motifs(name: str, settings: Settings) -> None:
    import time

    from explorer import motif_map, structure_map
    from explorer.motifs import table as motif_table

    start = time.perf_counter()
    sites = motif_table.compute(name, settings, progress=True)
    print(f"{name}: environments of {len(sites)} distinct sites of {sites['id'].nunique()} materials "
          f"({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    placed = structure_map.build(name, settings, progress=True)
    print(f"{name}: {len(placed.ids)} materials on the structure map ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    environments = motif_map.build(name, settings, progress=True)
    print(f"{name}: {len(environments.ids)} distinct environments on the motif map "
          f"({time.perf_counter() - start:.0f} s)")


def _run_decode(args: argparse.Namespace, settings: Settings) -> int:
    """0 when the file's latent decodes to the file's crystal with the checkpoint it names, 1 when not."""
    from explorer.services.provenance import redecode

    verdict = redecode(args.source, settings, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(verdict, indent=1))
    else:
        sha = verdict["checkpoint_sha256"][:12]
        how = (f"matches the file (StructureMatcher RMS {verdict['rms']:.2e})" if verdict["matches"] else
               f"does NOT match the file ({verdict['decoded_formula']} decoded, {verdict['formula']} in the file)")
        print(f"{verdict['file']}: made as {verdict['made'] or 'a decode'}; decoded again with checkpoint {sha} "
              f"({verdict['checkpoint']}): {how}")
    return 0 if verdict["matches"] else 1


def _run_export_map(args: argparse.Namespace, settings: Settings) -> int:
    from explorer.services import maps, materials

    dataset = materials.check_dataset(args.dataset, settings)
    rows = maps.write_map(dataset, args.kind, args.out, settings)
    what = "distinct environments" if args.kind == "motifs" else "materials"
    print(f"{dataset}: {rows} {what} of the {args.kind} map written to {args.out}")
    return 0


def _run_assess(args: argparse.Namespace, settings: Settings) -> int:
    """Every structure of ``args.path`` assessed; a file that cannot be read or assessed gets its error, the rest
    are done. Exit 1 when any failed."""
    from explorer.datasets.catalog import read_structures
    from explorer.datasets.rejections import Rejected
    from explorer.services import materials, physics

    dataset = materials.check_dataset(args.dataset, settings)
    problem = physics.potential_problem(settings)
    if problem:
        raise RuntimeError(problem)
    rows = []
    for key, structure in read_structures(args.path, settings=settings):
        if isinstance(structure, Rejected):
            rows.append({"id": key, "error": structure.sentence})
            continue
        try:
            row, _ = physics.assess_candidate(structure, dataset, settings, record_id=key, relax_it=args.relax)
        except ValueError as exc:
            row = {"id": key, "error": str(exc)}
        rows.append(row)
        if not args.json:
            print(_assess_line(row), flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            if "energy_per_atom" not in row:
                print(f"{row['id']}\terror\t{row['error']}")
    return 1 if any(row.get("error") for row in rows) else 0


def _assess_line(row: dict) -> str:
    from explorer.services import physics

    above = "no hull" if row["e_above_hull"] is None else f"{1000 * row['e_above_hull']:+.0f} meV/atom above hull"
    line = (f"{row['id']}\t{row['formula']}\t{row['energy_per_atom']:.4f} eV/atom\t{above}\t"
            f"{'novel' if row['novel'] else 'known: ' + str(row['match_id'])}")
    volume = physics.volume_words(row.get("match_volume_ratio"))
    if volume:
        line += f" ({volume})"
    if row.get("relaxed"):
        r = row["relaxed"]
        r_above = "no hull" if r["e_above_hull"] is None else f"{1000 * r['e_above_hull']:+.0f} meV/atom"
        line += f"\trelaxed ({r['steps']} steps): {r['energy_per_atom']:.4f} eV/atom, {r_above}"
    elif row.get("error"):
        line += f"\trelaxation failed: {row['error']}"
    return line


def _run_generate(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from explorer.generate import generate

    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.setdefault(stage, tqdm(total=total, desc=stage, unit="crystal"))
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    summary = generate(args.dataset, settings, n=args.n, seed=args.seed, relax_it=args.relax,
                       physics=not args.skip_physics, search=not args.no_search, out=args.out, where=_where(args),
                       keep=args.keep, on_progress=progress)
    print(json.dumps(summary, indent=1))
    return 0


def _run_motifs(args: argparse.Namespace, settings: Settings) -> int:
    """Per distinct site of every readable structure: {"file", "site", "element", "cn", "motif", "score",
    "neighbours"}; a file that cannot be read gets {"file", "error"}. Exit 1 when any failed."""
    from explorer.datasets.catalog import read_structures
    from explorer.datasets.rejections import Rejected
    from explorer.motifs.environments import describe, environments

    rows, failed = [], False
    for key, structure in read_structures(args.path, settings=settings):
        if isinstance(structure, Rejected):
            rows.append({"file": key, "error": structure.sentence})
            failed = True
            continue
        try:
            found = environments(structure, symprec=settings.symprec)
        except ValueError as exc:
            rows.append({"file": key, "error": str(exc)})
            failed = True
            continue
        rows += [{"file": key, **env.as_dict()} for env in found]
        if not args.json:
            print(f"{key}\t{structure.composition.reduced_formula}\t{describe(structure, found)}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['file']}\terror\t{row['error']}")
    return 1 if failed else 0


def _run_data(args: argparse.Namespace, settings: Settings) -> int:
    from explorer.datasets import catalog
    from explorer.jobs import client_for

    if args.action == "build":
        with client_for(_where(args)) as client:
            for report in catalog.build_all(settings, names=args.dataset, force=args.force, client=client):
                print(f"{report.dataset}: {report.kept} structures kept ({report.seconds:.0f} s)")
        return 0
    if args.action == "check":
        verdicts = catalog.check(args.path, settings=settings)
        if args.json:
            print(json.dumps(verdicts, indent=1))
        else:
            for v in verdicts:
                print(f"{v['id']}\tok\t{v['formula']} ({v['sites']} sites)" if v["ok"] else
                      f"{v['id']}\t{v['reason']}\t{v['detail']}")
        return 0 if all(v["ok"] for v in verdicts) else 1
    if args.action == "ingest":
        with client_for(_where(args)) as client:
            report = catalog.ingest(args.path, name=args.name, settings=settings, client=client)
        print(format_reports([report]))
        return 0
    reports = catalog.reports(settings)
    if args.rejections:
        chosen = [r for r in reports if r.dataset == args.rejections]
        if not chosen:
            raise ValueError(f"no built dataset {args.rejections!r}; built: {[r.dataset for r in reports]}")
        rows = chosen[0].rejections
        print(json.dumps(rows, indent=1) if args.json else "\n".join(f"{r['id']}\t{r['reason']}\t{r['detail']}"
                                                                     for r in rows))
        return 0
    if args.json:
        sources = [{"name": s.name, "origin": s.origin, "dataset": r.dataset, "read": s.read, "kept": s.kept,
                    "rejected": s.rejected} for r in reports for s in r.sources]
        print(json.dumps({"sources": sources, "total_kept": sum(s["kept"] for s in sources)}, indent=1))
    elif not reports:
        print("No tables built yet: run `python -m explorer data build` (or `make data`).")
    else:
        print(format_reports(reports))
    return 0


def format_reports(reports) -> str:
    """A readable table: one line per source, then its rejection reasons."""
    header = f"{'dataset':<14}{'source':<22}{'origin':<9}{'read':>7}{'kept':>7}{'rejected':>9}"
    lines = [header, "-" * len(header)]
    for report in reports:
        for s in report.sources:
            lines.append(f"{report.dataset:<14}{s.name:<22}{s.origin:<9}{s.read:>7}{s.kept:>7}"
                         f"{s.read - s.kept:>9}")
            for reason, count in sorted(s.rejected.items(), key=lambda kv: -kv[1]):
                lines.append(f"{'':<45}{count:>7}  {reason}")
    total = sum(s.kept for r in reports for s in r.sources)
    lines.append("-" * len(header))
    lines.append(f"{len(reports)} dataset(s), {total} structures kept. "
                 "Every rejected record: python -m explorer data info --rejections DATASET")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
