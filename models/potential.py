"""A universal interatomic potential (CHGNet 0.3.0, whose weights ship inside the ``chgnet`` wheel): energy,
forces and stress of a crystal, and relaxation of positions and cell.

The potential is loaded once per process and device (``load_potential``); calls into it are serialised by a
lock (the server runs callbacks in several threads). Relaxation is a generator of steps (``relax_steps``), so a
caller can report progress after every step and stop between steps.

Units: energies in eV per atom, forces in eV/Å, stress in GPa (ASE's sign convention, as
``CHGNet.predict_structure`` returns it: a compressed cell has negative diagonal stress), lengths in Å.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from models.device import resolve_device

POTENTIAL = "CHGNet 0.3.0"
"""Name and version of the potential (part of every cache key of energies)."""
ENERGY_SCHEME = ("CHGNet 0.3.0 energies as predicted: the potential learned the Materials Project's MP2020-corrected "
                 "GGA/GGA+U energies (MPtrj), so no further correction is applied, to any entry")
"""The correction scheme, said once for the UI, the CLI and the README."""
_LOCK = threading.RLock()


class PotentialUnavailable(RuntimeError):
    """The potential cannot be loaded here (package missing or broken); the message says why."""


@dataclass(frozen=True)
class Prediction:
    """Energy ``energy_per_atom`` (eV/atom), ``forces`` (n_atoms, 3) eV/Å and ``stress`` (3, 3) GPa of a crystal."""

    energy_per_atom: float
    forces: np.ndarray
    stress: np.ndarray

    @property
    def max_force(self) -> float:
        """Largest force on any atom (eV/Å)."""
        return float(np.linalg.norm(self.forces, axis=1).max()) if len(self.forces) else 0.0

    @property
    def pressure(self) -> float:
        """Pressure -trace(stress)/3 (GPa): positive when the cell would expand if it could."""
        return float(-np.trace(self.stress) / 3.0)

    @property
    def max_stress(self) -> float:
        """Largest absolute stress component (GPa)."""
        return float(np.abs(self.stress).max())


@dataclass(frozen=True)
class RelaxStep:
    """One step of a relaxation: ``step`` (0 is the start), ``energy_per_atom`` (eV/atom), ``max_force`` (eV/Å),
    ``structure`` at this step, ``converged`` (largest force ≤ fmax, with the cell's stress when it relaxes)."""

    step: int
    energy_per_atom: float
    max_force: float
    structure: Structure
    converged: bool


class RelaxationFailed(ValueError):
    """A relaxation that went wrong (atoms flew apart or together, energy not finite); the message says how."""


@functools.lru_cache(maxsize=2)
def _load(device: str):
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints as it loads
            warnings.simplefilter("ignore")
            from chgnet.model import CHGNet

            return CHGNet.load(model_name="0.3.0", use_device=device, verbose=False)
    except Exception as exc:  # any import or load failure: the caller says why and carries on
        raise PotentialUnavailable(f"{POTENTIAL} could not be loaded ({type(exc).__name__}: {exc})") from None


def load_potential(device: str | None = None):
    """The CHGNet model on ``resolve_device(device)`` (loaded once per process and device).

    Raises:
        PotentialUnavailable: when the ``chgnet`` package or its weights cannot be loaded.
    """
    with _LOCK:
        return _load(str(resolve_device(device)))


def _check(structure: Structure, key: str) -> None:
    if not isinstance(structure, Structure) or len(structure) == 0:
        raise ValueError(f"{key}: not a crystal with atoms")
    if not structure.is_ordered:
        raise ValueError(f"{key}: has partially occupied sites; the potential needs an ordered crystal")


def _run(structures: list[Structure], task: str, device: str | None, batch_size: int) -> list[dict]:
    for k, structure in enumerate(structures):
        _check(structure, f"crystal {k}")
    if not structures:
        return []
    model = load_potential(device)
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = model.predict_structure(structures, task=task, batch_size=batch_size)
    raw = raw if isinstance(raw, list) else [raw]
    for k, (structure, p) in enumerate(zip(structures, raw, strict=True)):
        if not all(np.isfinite(np.asarray(value)).all() for value in p.values()):
            raise ValueError(f"{structure.composition.reduced_formula} (crystal {k}): the potential gives no finite "
                             "energy for it (atoms too close or too far apart?)")
    return raw


def predict(structures: Sequence[Structure], *, device: str | None = None, batch_size: int = 16) -> list[Prediction]:
    """Energy, forces and stress of each crystal (one batched pass per ``batch_size`` crystals).

    Raises:
        ValueError: a crystal is disordered or empty, or the potential returns a non-finite value (naming it).
        PotentialUnavailable: when the potential cannot be loaded.
    """
    raw = _run(list(structures), "efs", device, batch_size)
    return [Prediction(energy_per_atom=float(np.asarray(p["e"])), forces=np.asarray(p["f"], dtype=float).reshape(-1, 3),
                       stress=np.asarray(p["s"], dtype=float).reshape(3, 3)) for p in raw]


def energies(structures: Sequence[Structure], *, device: str | None = None, batch_size: int = 16) -> list[float]:
    """Energy per atom (eV/atom) of each crystal, without forces and stress (about 4× faster than ``predict``).

    Raises:
        ValueError, PotentialUnavailable: as ``predict``.
    """
    return [float(np.asarray(p["e"])) for p in _run(list(structures), "e", device, batch_size)]


def _sane(atoms, n_atoms: int, start_volume: float) -> str | None:
    """Why the relaxation has gone wrong, or None."""
    volume = float(atoms.get_volume())
    if not math.isfinite(volume) or volume > 8 * start_volume or volume < start_volume / 8:
        return f"the cell volume went from {start_volume:.1f} to {volume:.1f} Å³"
    if n_atoms > 1:
        distances = atoms.get_all_distances(mic=True)
        closest = float(distances[np.triu_indices(n_atoms, 1)].min())
        if closest < 0.5:
            return f"two atoms are {closest:.2f} Å apart"
    return None


def relax_steps(structure: Structure, *, fmax: float = 0.1, max_steps: int = 300, relax_cell: bool = True,
                device: str | None = None) -> Iterator[RelaxStep]:
    """Relax positions (and the cell, through ASE's ``FrechetCellFilter``, as CHGNet's ``StructOptimizer``) with
    FIRE, yielding every step from step 0 (the start); stops when converged or after ``max_steps``.

    Raises:
        RelaxationFailed: when the energy is not finite, the cell volume changes more than 8-fold or two atoms
            come closer than 0.5 Å (the potential left the region it knows): the message says which.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    _check(structure, structure.composition.reduced_formula if isinstance(structure, Structure) else "structure")
    if not 0 < fmax < 10 or not 0 <= max_steps <= 100_000:
        raise ValueError(f"fmax must be in (0, 10) eV/Å and max_steps in [0, 100000], got {fmax!r} and {max_steps!r}")
    model = load_potential(device)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device it runs on
        atoms.calc = CHGNetCalculator(model=model, use_device=str(resolve_device(device)), on_isolated_atoms="ignore")
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    optimizer = FIRE(target, logfile=None)
    n, start_volume, formula = len(atoms), float(atoms.get_volume()), structure.composition.reduced_formula
    step = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for converged in optimizer.irun(fmax=fmax, steps=max_steps):
            energy = float(atoms.get_potential_energy()) / n  # computed by the step already: no new pass
            forces = atoms.get_forces()
            problem = None if math.isfinite(energy) else "the energy is not finite"
            problem = problem or _sane(atoms, n, start_volume)
            if problem:
                raise RelaxationFailed(f"{formula}: the relaxation was stopped at step {step}: {problem}; the "
                                       "decoded crystal is probably far from any stable arrangement")
            yield RelaxStep(step=step, energy_per_atom=energy, max_force=float(np.linalg.norm(forces, axis=1).max()),
                            structure=AseAtomsAdaptor.get_structure(atoms), converged=bool(converged))
            step += 1


def relax(structure: Structure, *, fmax: float = 0.1, max_steps: int = 300, device: str | None = None) -> Structure:
    """The crystal at the end of ``relax_steps`` (converged, or after ``max_steps``).

    Raises:
        RelaxationFailed: as ``relax_steps``.
    """
    last = None
    for last in relax_steps(structure, fmax=fmax, max_steps=max_steps, device=device):  # noqa: B007
        pass
    return last.structure
