"""Validity reports: CDVAE's structural and SMACT compositional checks, and the model's range."""

from __future__ import annotations

import pytest
from conftest import TINY_CRYSTALS, nacl
from pymatgen.core import Composition, Lattice, Structure

from models.crystal.validity import charge_balanced, check_validity, min_interatomic_distance


@pytest.mark.parametrize("name", sorted(TINY_CRYSTALS))
def test_real_crystals_are_valid(name):
    report = check_validity(TINY_CRYSTALS[name](), max_atoms=40)
    assert report.valid and report.structurally_valid and report.charge_balanced and report.in_range
    assert report.reasons == ()


def test_min_distance_counts_periodic_images():
    assert min_interatomic_distance(nacl()) == pytest.approx(5.64 / 2)
    single = Structure(Lattice.cubic(0.4), ["Cu"], [[0, 0, 0]])
    assert min_interatomic_distance(single) == pytest.approx(0.4)
    report = check_validity(single, max_atoms=40)
    assert not report.structurally_valid and "0.400 Å apart" in report.reasons[0]


def test_overlapping_atoms_are_invalid():
    crowded = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    report = check_validity(crowded, max_atoms=40)
    assert report.min_distance == pytest.approx(0.2)
    assert not report.structurally_valid and report.charge_balanced and not report.valid


@pytest.mark.parametrize(("formula", "expected"), [
    ("NaCl", True), ("SrTiO3", True), ("NaCl2", False), ("C", True), ("CuZn3", True), ("Fe3Al", True),
    ("LiFePO4", True), ("NaO3", False),
])
def test_charge_balance_follows_smact(formula, expected):
    assert charge_balanced(Composition(formula)) is expected


def test_range_checks():
    report = check_validity(nacl(), max_atoms=4, latent_norm=3.0, latent_norm_bound=2.0)
    assert not report.in_range and len(report.reasons) == 2
    assert report.as_dict()["in_range"] is False and report.as_dict()["valid"] is True
