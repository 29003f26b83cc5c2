"""The default sources of known materials: package-shipped sets, and extra sets from ../shared/data.

Each source yields RawItems; parsing and checking happen in ``records.make_record``.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from base64 import b64decode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explorer.datasets.packages import PackageFile, locate, sha256_of
from explorer.datasets.records import RawItem
from explorer.settings import Settings

MATBENCH_DIELECTRIC = PackageFile(
    package="crystal-toolkit", version="2026.7.20",
    member="crystal_toolkit/apps/examples/matbench_dielectric.json.gz",
    sha256="a9ce0587b3f719f65c74d05c623edaf983a451770f2917443b9e82924cbceb25")
AMCSD = PackageFile(
    package="larixite", version="2026.1.0", member="larixite/amcsd_cif1.db",
    sha256="991b2c197bb13537bda2383eb9621cac2b80ebfb2fe8960900db15083a8a0e33")
AFLOW_PROTOTYPES = PackageFile(
    package="pymatgen", version="2026.10.24", member="pymatgen/analysis/prototypes/aflow_prototypes.json.gz",
    sha256="a1b349b062f1734f2ed248bdc117db143f0da4a9f5b43d9e14d3f2505d664f97", installed=True)
DCDFT = PackageFile(
    package="ase", version="3.29.0", member="ase/collections/dcdft.json",
    sha256="150e0700f334871e82aa6b73379748e854d1a419f49588966c3125156dedb6de", installed=True)


@dataclass(frozen=True)
class Source:
    """A named set of crystals.

    origin: 'package' (from a pinned PyPI package), 'shared' (../shared/data) or 'user' (ingested).
    fingerprint: identifies the exact input (sha256 of its files), so built tables can be reused.
    """

    name: str
    origin: str
    description: str
    citation: str
    fingerprint: Callable[[], str]
    items: Callable[[], Iterator[RawItem]]


def package_sources(settings: Settings) -> list[Source]:
    """The known materials that any machine can get from the package registry."""
    def path(spec: PackageFile) -> Path:
        return locate(spec, cache_dir=settings.cache_dir, python=settings.pip_executable)

    return [
        Source("matbench_dielectric", "package",
               "Materials Project structures with refractive index (matbench_dielectric, via crystal-toolkit)",
               "Dunn et al., npj Comput. Mater. 6, 138 (2020); Materials Project, CC BY 4.0",
               lambda: MATBENCH_DIELECTRIC.sha256, lambda: _matbench_items(path(MATBENCH_DIELECTRIC))),
        Source("amcsd", "package",
               "American Mineralogist Crystal Structure Database, experimental mineral structures (via larixite)",
               "Downs & Hall-Wallace, Am. Mineral. 88, 247 (2003); cite each structure's publication",
               lambda: AMCSD.sha256, lambda: _amcsd_items(path(AMCSD))),
        Source("aflow_prototypes", "package", "AFLOW library of crystallographic prototypes (via pymatgen)",
               "Mehl et al., Comput. Mater. Sci. 136, S1 (2017)",
               lambda: AFLOW_PROTOTYPES.sha256, lambda: _aflow_items(path(AFLOW_PROTOTYPES))),
        Source("dcdft", "package", "Elemental crystals of the Delta DFT benchmark (via ase.collections)",
               "Lejaeghere et al., Science 351, aad3000 (2016)",
               lambda: DCDFT.sha256, lambda: _dcdft_items(path(DCDFT))),
    ]


def shared_sources(settings: Settings) -> list[Source]:
    """One source per folder of gzip CSV files (CDVAE style, ``cif`` column) in ../shared/data."""
    root = settings.shared_data_dir
    if not root.is_dir():
        return []
    sources = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.csv.gz")) + sorted(folder.glob("*.csv"))
        if files:
            sources.append(Source(folder.name, "shared", f"{folder.name} from {root} (training set, not committed)",
                                  f"see {root / 'README.md'}", _files_fingerprint(files),
                                  _csv_items_factory(files, split_column=len(files) > 1)))
    return sources


def _files_fingerprint(files: list[Path]) -> Callable[[], str]:
    return lambda: ",".join(f"{f.name}:{sha256_of(f)}" for f in files)


def _csv_items_factory(files: list[Path], *, split_column: bool) -> Callable[[], Iterator[RawItem]]:
    from explorer.datasets.readers import read_csv_items

    def items() -> Iterator[RawItem]:
        for file in files:
            extra = {"split": file.name.split(".")[0]} if split_column else {}
            yield from read_csv_items(file, key_prefix="", extra_properties=extra)
    return items


def _matbench_items(path: Path) -> Iterator[RawItem]:
    with gzip.open(path, "rt") as handle:
        table = json.load(handle)
    for key, structure in table["structure"].items():
        yield RawItem(key=f"{int(key):05d}", kind="pmg_dict", payload=structure,
                      properties={"refractive_index": float(table["n"][key])})


def _aflow_items(path: Path) -> Iterator[RawItem]:
    with gzip.open(path, "rt") as handle:
        entries = json.load(handle)
    for entry in entries:
        tags = entry["tags"]
        snl = {k: v for k, v in entry["snl"].items() if k in ("lattice", "sites", "charge")}
        snl.update({"@module": "pymatgen.core.structure", "@class": "Structure"})
        yield RawItem(key=tags["aflow"], kind="pmg_dict", payload=snl,
                      properties={"mineral": tags.get("mineral") or None, "prototype": tags["aflow"],
                                  "strukturbericht": tags.get("strukturbericht") or None,
                                  "pearson_symbol": tags.get("pearson")})


def _dcdft_items(path: Path) -> Iterator[RawItem]:
    with open(path) as handle:
        rows = json.load(handle)
    for row_id in rows["ids"]:
        row = rows[str(row_id)]
        kv = row.get("key_value_pairs", {})
        yield RawItem(key=kv["name"], kind="ase_dict",
                      payload={"cell": row["cell"], "numbers": row["numbers"], "positions": row["positions"]},
                      properties={"bulk_modulus_wien2k": kv.get("wien2k_B"),
                                  "volume_per_atom_wien2k": kv.get("wien2k_volume")})


def _farray(encoded: str | None) -> np.ndarray | None:
    """Decode one of AMCSD's base64 int32 coordinate arrays (value * 4e6); None when absent."""
    if encoded in (None, "0", 0):
        return None
    return np.frombuffer(b64decode(encoded), dtype=np.int32) / 4.0e6


def _amcsd_items(path: Path) -> Iterator[RawItem]:
    """Rows of the AMCSD SQLite file as CIF texts (asymmetric unit + symmetry operations)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        groups = {i: (hm, json.loads(ops)) for i, hm, ops in db.execute(
            "select id, hm_notation, symmetry_xyz from spacegroups")}
        minerals = dict(db.execute("select id, name from minerals"))
        citations = _amcsd_citations(db)
        rows = db.execute("select id, mineral_id, spacegroup_id, publication_id, formula, pub_title, a, b, c, "
                          "alpha, beta, gamma, atoms_sites, atoms_x, atoms_y, atoms_z, atoms_occupancy "
                          "from cif order by id").fetchall()
    finally:
        db.close()
    for (cif_id, mineral_id, group_id, pub_id, formula, title, a, b, c, alpha, beta, gamma,
         sites, xs, ys, zs, occupancy) in rows:
        hm, ops = groups[group_id]
        cif = _amcsd_cif(cell=(a, b, c, alpha, beta, gamma), ops=ops, sites=json.loads(sites or "[]"),
                         xyz=(_farray(xs), _farray(ys), _farray(zs)), occupancy=_farray(occupancy))
        mineral = minerals.get(mineral_id)
        yield RawItem(key=f"{cif_id:07d}", kind="cif", payload=cif, properties={
            "mineral": None if mineral in (None, "<missing>") else mineral,
            "citation": citations.get(pub_id), "publication_title": (title or "").strip() or None,
            "amcsd_formula": formula, "amcsd_spacegroup": hm.split("%var")[0]})


def _amcsd_citations(db: sqlite3.Connection) -> dict[int, str]:
    authors: dict[int, list[str]] = {}
    for pub_id, name in db.execute("select pa.publication_id, a.name from publication_authors pa "
                                   "join authors a on a.id = pa.author_id order by pa.rowid"):
        authors.setdefault(pub_id, []).append(name)
    citations = {}
    for pub_id, journal, volume, year, first, last in db.execute(
            "select id, journalname, volume, year, page_first, page_last from publications"):
        names = authors.get(pub_id, [])
        who = ", ".join(names[:3]) + (" et al." if len(names) > 3 else "")
        citations[pub_id] = f"{who}, {journal} {volume}, {first}-{last} ({year})".strip(", ")
    return citations


def _amcsd_cif(*, cell, ops, sites, xyz, occupancy) -> str:
    a, b, c, alpha, beta, gamma = cell
    lines = ["data_amcsd", f"_cell_length_a {a}", f"_cell_length_b {b}", f"_cell_length_c {c}",
             f"_cell_angle_alpha {alpha}", f"_cell_angle_beta {beta}", f"_cell_angle_gamma {gamma}",
             "loop_", "_space_group_symop_operation_xyz", *[f"'{op}'" for op in ops],
             "loop_", "_atom_site_label", "_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z",
             "_atom_site_occupancy"]
    x, y, z = xyz
    for i, label in enumerate(sites):
        occ = 1.0 if occupancy is None else occupancy[i]
        coords = " ".join(_amcsd_coordinate(v[i]) for v in (x, y, z))
        lines.append(f"{'_'.join(label.split())} {coords} {occ:.4f}")
    return "\n".join(lines) + "\n"


def _amcsd_coordinate(value: float) -> str:
    """AMCSD stores an unknown coordinate ('?' or '.') as 2 or 3: write it back as '?'."""
    return "?" if min(abs(value - 2.0), abs(value - 3.0)) < 1e-5 else f"{value:.6f}"
