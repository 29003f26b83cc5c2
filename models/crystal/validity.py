"""Validity report of a decoded crystal: distances, volume, charge balance and whether the model can vouch for it.

Structural and compositional validity follow CDVAE (Xie et al. 2022, ``eval_utils``):

* structurally valid: every interatomic distance (periodic images included) >= ``MIN_DISTANCE`` Å and
  cell volume >= ``MIN_CELL_VOLUME`` Å^3;
* compositionally valid (charge balanced): SMACT's ``smact_validity`` with the SMACT 2014 oxidation
  states (the set CDVAE used), the Pauling electronegativity test, and elemental crystals and all-metal
  alloys counted as valid.

"In range" means the model is on known ground: the atom count fits the model and the latent's norm
is within the bound learned from the training latents.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Structure

MIN_DISTANCE = 0.5
"""Smallest interatomic distance (Å) of a structurally valid crystal (CDVAE)."""

MIN_CELL_VOLUME = 0.1
"""Smallest cell volume (Å^3) of a structurally valid crystal (CDVAE)."""


@dataclass(frozen=True)
class ValidityReport:
    """Checks of one crystal; ``reasons`` explains every failed check in words.

    Attributes:
        n_atoms: atoms in the cell.
        min_distance: shortest interatomic distance in Å, periodic images (and an atom's own images) included.
        volume_per_atom: Å^3.
        charge_balanced: SMACT compositional validity (see the module docstring).
        structurally_valid: min_distance >= MIN_DISTANCE and cell volume >= MIN_CELL_VOLUME.
        in_range: n_atoms <= max_atoms and (when known) latent_norm <= latent_norm_bound.
        latent_norm: |z| of the decoded latent, or None.
        latent_norm_bound: the largest |z| the model vouches for, or None when not known.
        reasons: one sentence per failed check.
    """

    n_atoms: int
    min_distance: float
    volume_per_atom: float
    charge_balanced: bool
    structurally_valid: bool
    in_range: bool
    latent_norm: float | None
    latent_norm_bound: float | None
    reasons: tuple[str, ...]

    @property
    def valid(self) -> bool:
        """Structurally and compositionally valid."""
        return self.structurally_valid and self.charge_balanced

    def as_dict(self) -> dict:
        """Plain JSON-able dict (reasons as a list, plus ``valid``)."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["valid"] = self.valid
        return data


def min_interatomic_distance(structure: Structure) -> float:
    """Shortest distance (Å) between two atoms of the periodic crystal, including an atom and its own images."""
    shortest_image = _shortest_lattice_vector(structure.lattice.matrix)
    if len(structure) < 2:
        return shortest_image
    distances = structure.distance_matrix
    off_diagonal = distances[~np.eye(len(structure), dtype=bool)]
    return float(min(off_diagonal.min(), shortest_image))


def _shortest_lattice_vector(matrix: np.ndarray) -> float:
    """Length (Å) of the shortest non-zero lattice vector, searched over -2..2 combinations of the LLL basis."""
    from pymatgen.core import Lattice

    basis = Lattice(matrix).get_lll_reduced_lattice().matrix
    coefficients = np.array([c for c in itertools.product(range(-2, 3), repeat=3) if any(c)], dtype=np.float64)
    return float(np.linalg.norm(coefficients @ basis, axis=1).min())


MAX_OXIDATION_COMBINATIONS = 20_000
"""Most oxidation-state combinations the SMACT test tries; a composition that needs more (about seven or
more non-metal-only elements) is reported as not charge-balanced, with its reason, instead of taking
seconds to minutes (random latents far from the data can decode to a dozen elements)."""


@lru_cache(maxsize=65536)
def _smact_valid(formula: str) -> bool | None:
    """SMACT validity of a formula, or None when it needs more than MAX_OXIDATION_COMBINATIONS checks."""
    from smact import Element, metals
    from smact.screening import smact_validity

    composition = Composition(formula)
    symbols = [el.symbol for el in composition.elements]
    with warnings.catch_warnings():  # SMACT warns about elements without electronegativity (noble gases)
        warnings.simplefilter("ignore", UserWarning)
        if len(symbols) > 1 and not all(sym in metals for sym in symbols):
            combinations = 1
            for sym in symbols:
                combinations *= max(1, len(Element(sym).oxidation_states_smact14 or ()))
            if combinations > MAX_OXIDATION_COMBINATIONS:
                return None
        return bool(smact_validity(composition, use_pauling_test=True, include_alloys=True,
                                   oxidation_states_set="smact14"))


def charge_balanced(composition: Composition) -> bool:
    """SMACT compositional validity as in CDVAE (elements and all-metal alloys count as valid).

    False, too, when the composition has too many oxidation-state combinations to check.
    """
    return bool(_smact_valid(_formula_key(composition)))


def _formula_key(composition: Composition) -> str:
    """Reduced formula with elements in alphabetical order, e.g. "Cl1 Na1" (no electronegativity look-ups)."""
    amounts = {symbol: int(round(amount)) for symbol, amount in composition.get_el_amt_dict().items()}
    divisor = math.gcd(*amounts.values()) or 1
    return " ".join(f"{symbol}{amount // divisor}" for symbol, amount in sorted(amounts.items()))


def check_validity(structure: Structure, *, max_atoms: int, latent_norm: float | None = None,
                   latent_norm_bound: float | None = None) -> ValidityReport:
    """The ``ValidityReport`` of a crystal (about 1-3 ms for 20 atoms; SMACT results are cached by formula)."""
    n_atoms = len(structure)
    if n_atoms == 0:
        raise ValueError("check_validity got a structure with no atoms")
    volume = float(structure.volume)
    min_distance = min_interatomic_distance(structure)
    smact_result = _smact_valid(_formula_key(structure.composition))
    balanced = bool(smact_result)
    reasons = []
    if min_distance < MIN_DISTANCE:
        reasons.append(f"two atoms are {min_distance:.3f} Å apart (< {MIN_DISTANCE} Å)")
    if volume < MIN_CELL_VOLUME:
        reasons.append(f"the cell volume {volume:.3g} Å^3 is below {MIN_CELL_VOLUME} Å^3")
    if smact_result is None:
        reasons.append(f"{_formula_key(structure.composition)} has too many elements to check charge balance")
    elif not balanced:
        reasons.append(f"{_formula_key(structure.composition)} has no charge-balanced oxidation states (SMACT)")
    in_range = n_atoms <= max_atoms
    if not in_range:
        reasons.append(f"{n_atoms} atoms exceed the model's maximum of {max_atoms}")
    if latent_norm is not None and latent_norm_bound is not None and latent_norm > latent_norm_bound:
        in_range = False
        reasons.append(f"latent norm {latent_norm:.3g} is beyond the training range (<= {latent_norm_bound:.3g})")
    return ValidityReport(n_atoms=n_atoms, min_distance=min_distance, volume_per_atom=volume / n_atoms,
                          charge_balanced=balanced, structurally_valid=min_distance >= MIN_DISTANCE
                          and volume >= MIN_CELL_VOLUME, in_range=in_range, latent_norm=latent_norm,
                          latent_norm_bound=latent_norm_bound, reasons=tuple(reasons))
