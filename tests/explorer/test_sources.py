"""The package-shipped sources: pinned files, verified, read into real records with their properties."""

from __future__ import annotations

import itertools

import pytest

from explorer.datasets.build import limits_of
from explorer.datasets.catalog import DEFAULT_DATASET, build_all
from explorer.datasets.packages import PackageDataError, PackageFile, locate
from explorer.datasets.records import Rejected, make_record
from explorer.datasets.sources import package_sources
from explorer.settings import Settings

SETTINGS = Settings()  # the project's own data/ folder: package files are downloaded once, by `make data`
EXPECTED_READ = {"matbench_dielectric": 4764, "amcsd": 9275, "aflow_prototypes": 288, "dcdft": 71}


@pytest.fixture(scope="module")
def sources():
    return {s.name: s for s in package_sources(SETTINGS)}


def first_records(source, n: int) -> tuple[list[dict], list[Rejected]]:
    kept, rejected = [], []
    for item in itertools.islice(source.items(), n):
        try:
            kept.append(make_record(item, source=source.name, origin="package", limits=limits_of(SETTINGS)))
        except Rejected as rejection:
            rejected.append(rejection)
    return kept, rejected


def test_every_package_source_has_its_pinned_size(sources):
    assert {name: sum(1 for _ in s.items()) for name, s in sources.items()} == EXPECTED_READ


def test_amcsd_minerals_expand_symmetry_and_keep_name_and_citation(sources):
    kept, rejected = first_records(sources["amcsd"], 40)
    assert len(kept) >= 20
    assert {r.reason for r in rejected} <= {"partial_occupancy", "ambiguous_site_label", "overlapping_atoms"}
    named = [r for r in kept if r["mineral"]]
    assert named and all(r["citation"] and "(" in r["citation"] for r in named)
    # symmetry was expanded: the full cell holds more sites than the asymmetric unit listed
    assert any(len(r["original_species"]) > len(set(r["original_species"])) * 2 for r in kept)


def test_matbench_dielectric_carries_refractive_index(sources):
    kept, rejected = first_records(sources["matbench_dielectric"], 10)
    assert not rejected and all(1.0 < r["refractive_index"] < 10 for r in kept)


def test_aflow_prototypes_and_dcdft(sources):
    kept, _ = first_records(sources["aflow_prototypes"], 10)
    assert all(r["prototype"] and r["pearson_symbol"] for r in kept)
    kept, rejected = first_records(sources["dcdft"], 71)
    assert len(kept) == 71 and not rejected
    assert {r["reduced_formula"] for r in kept} >= {"Si", "Cu", "Fe"}


def test_wrong_hash_is_refused(tmp_path):
    spec = PackageFile(package="ase", version="3.29.0", member="ase/collections/dcdft.json", sha256="0" * 64,
                       installed=True)
    with pytest.raises(PackageDataError, match="does not match the pinned"):
        locate(spec, cache_dir=tmp_path)


def test_default_table_has_ten_thousand_known_structures():
    """`python -m explorer data info --json` must report >= 10,000 kept from >= 4 package sources."""
    (report,) = build_all(SETTINGS, names=[DEFAULT_DATASET], progress=False)
    package = [s for s in report.sources if s.origin == "package"]
    assert len(package) >= 4 and sum(s.kept for s in package) >= 10_000
    for source in report.sources:
        assert source.read == EXPECTED_READ[source.name] == source.kept + sum(source.rejected.values())
