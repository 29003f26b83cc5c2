"""The potential wrapper (CHGNet 0.3.0 from its wheel) on tiny real crystals: energies, forces, relaxation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import nacl, silicon
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from models import potential


def test_rock_salt_has_no_force_and_energies_agree_with_predict():
    found = potential.predict([nacl(), silicon()])
    assert [len(p.forces) for p in found] == [8, 8]
    assert all(p.max_force < 1e-3 for p in found)  # every atom sits on a centre of symmetry
    assert -4.0 < found[0].energy_per_atom < -3.3 and -5.6 < found[1].energy_per_atom < -5.0
    assert np.allclose(potential.energies([nacl(), silicon()]), [p.energy_per_atom for p in found], atol=1e-5)
    assert found[0].stress.shape == (3, 3)


def test_a_compressed_cell_has_positive_pressure():
    squeezed = silicon()
    squeezed.scale_lattice(0.9 * squeezed.volume)
    assert potential.predict([squeezed])[0].pressure > 5 > potential.predict([silicon()])[0].pressure


def test_a_rattled_silicon_relaxes_back_to_diamond_with_a_lower_energy():
    rattled = silicon()
    rattled.perturb(0.1)
    steps = list(potential.relax_steps(rattled, fmax=0.05, max_steps=200))
    assert steps[0].step == 0 and steps[-1].converged
    assert steps[-1].energy_per_atom < steps[0].energy_per_atom
    assert steps[-1].max_force <= 0.05
    assert StructureMatcher().fit(steps[-1].structure, silicon())


def test_atoms_on_top_of_each_other_stop_the_relaxation_in_words():
    crushed = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.075, 0, 0]])  # 0.3 Å apart
    with pytest.raises(potential.RelaxationFailed, match=r"NaCl: the relaxation was stopped at step 0: two atoms "
                                                         r"are 0\.30 Å apart"):
        list(potential.relax_steps(crushed))


def test_disordered_or_empty_crystals_are_refused_by_name():
    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="partially occupied"):
        potential.predict([disordered])
    with pytest.raises(ValueError, match="fmax"):
        next(potential.relax_steps(nacl(), fmax=math.nan))
