"""Is a crystal a candidate? Its energy, forces and stress under the potential (``models.potential``), its
relaxation, its stability against the known materials of the map (``hull``) and whether it is new.

Plain data in and out: pymatgen structures in, JSON-able dicts out (the keys of ``python -m explorer assess``).
Novelty: a crystal is novel when no known material of the dataset with the same reduced formula matches it under
pymatgen's ``StructureMatcher`` at its default tolerances (ltol 0.2, stol 0.3, angle_tol 5°: the usual test of
generative-model papers), else it names the material it matches.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from explorer.services import hull, materials
from explorer.settings import Settings


def potential_problem(settings: Settings) -> str | None:
    """Why the potential cannot be used here, or None when it loads."""
    from models.potential import PotentialUnavailable, load_potential

    try:
        load_potential(settings.device or None)
    except (PotentialUnavailable, ValueError) as exc:
        return str(exc)
    return None


VOLUME_NOTE = 0.1
"""A match whose volume per atom differs by more than this fraction is said to (``volume_words``)."""


def volume_words(ratio: float | None) -> str:
    """'' when a match's volume per atom is within ``VOLUME_NOTE`` of the crystal's, else e.g. "at 0.46x its volume per
    atom": StructureMatcher scales volumes, so a decode compressed to half the volume of rock salt still "is" rock salt,
    and its energy and pressure say otherwise."""
    if ratio is None or abs(ratio - 1.0) <= VOLUME_NOTE:
        return ""
    return f"at {ratio:.2f}x its volume per atom"


def novelty(structure: Structure, dataset: str, settings: Settings) -> dict:
    """{"novel": bool, "match_id": id | None, "match_formula": formula | None, "match_volume_ratio": this crystal's
    volume per atom over the match's | None, "compared": n}: is there a known material of ``dataset`` with the same
    reduced formula that ``StructureMatcher()`` matches (the same structure type, volumes scaled)?"""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from explorer.datasets.records import canonical_structure

    frame = materials.table(dataset, settings)
    formula = structure.composition.reduced_formula
    same = frame.index[frame["reduced_formula"] == formula]
    matcher = StructureMatcher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in same:
            row = frame.iloc[k]
            match = canonical_structure(row)
            if matcher.fit(structure, match):
                ratio = (structure.volume / len(structure)) / (match.volume / len(match))
                return {"novel": False, "match_id": row["id"], "match_formula": formula,
                        "match_volume_ratio": round(ratio, 3), "compared": len(same)}
    return {"novel": True, "match_id": None, "match_formula": None, "match_volume_ratio": None, "compared": len(same)}


def energy(structure: Structure, settings: Settings) -> dict:
    """{"energy_per_atom" eV/atom, "max_force" eV/Å, "pressure" GPa, "max_stress" GPa} under the potential.

    Raises:
        ValueError: the potential gives no finite energy (the message names the crystal).
        PotentialUnavailable: the potential cannot be loaded.
    """
    from models.potential import predict

    p = predict([structure], device=settings.device or None)[0]
    return {"energy_per_atom": round(p.energy_per_atom, 5), "max_force": round(p.max_force, 4),
            "pressure": round(p.pressure, 3), "max_stress": round(p.max_stress, 3)}


def stability(structure: Structure, energy_per_atom: float, dataset: str, settings: Settings) -> dict:
    """``hull.Stability.as_dict()`` plus "sentence"; e_above_hull None (with the reason) when there is no hull."""
    try:
        result = hull.stability(structure.composition, energy_per_atom, dataset, settings)
    except ValueError as exc:
        return {"e_above_hull": None, "decomposition": [], "system": "", "n_entries": 0, "missing": [],
                "sentence": str(exc)}
    return {**result.as_dict(), "sentence": result.sentence}


def assess(structure: Structure, dataset: str, settings: Settings, *, record_id: str = "",
           with_novelty: bool = True) -> dict:
    """Energy, stability and novelty of one crystal: {"id", "formula", "n_atoms", "energy_per_atom", "max_force",
    "pressure", "max_stress", "e_above_hull", "decomposition", "hull": sentence, "novel", "match_id",
    "match_volume_ratio", "ms"}."""
    start = time.perf_counter()
    found = {"id": record_id, "formula": structure.composition.reduced_formula, "n_atoms": len(structure),
             **energy(structure, settings)}
    stable = stability(structure, found["energy_per_atom"], dataset, settings)
    e_above = stable["e_above_hull"]
    found.update(e_above_hull=None if e_above is None else round(e_above, 5),
                 decomposition=stable["decomposition"], hull=stable["sentence"])
    if with_novelty:
        new = novelty(structure, dataset, settings)
        found.update(novel=new["novel"], match_id=new["match_id"], match_volume_ratio=new["match_volume_ratio"])
    found["ms"] = round(1000 * (time.perf_counter() - start), 1)
    return found


@dataclass(frozen=True)
class Relaxation:
    """A finished (or stopped) relaxation: ``structure`` at its end, ``steps`` taken, energies per atom before and
    after (eV/atom), ``max_force`` at the end (eV/Å), ``rms_displacement`` of the atoms (Å, in the final cell,
    periodic minimum image), ``converged``, ``stopped`` (by the caller) and space groups before and after."""

    structure: Structure
    steps: int
    energy_before: float
    energy_after: float
    max_force: float
    rms_displacement: float
    converged: bool
    stopped: bool
    space_group_before: str
    space_group_after: str

    def summary(self) -> dict:
        """JSON-able numbers and words for the UI and the CLI."""
        return {"steps": self.steps, "energy_before": round(self.energy_before, 5),
                "energy_after": round(self.energy_after, 5),
                "energy_drop": round(self.energy_before - self.energy_after, 5),
                "max_force": round(self.max_force, 4), "rms_displacement": round(self.rms_displacement, 4),
                "converged": self.converged, "stopped": self.stopped,
                "space_group_before": self.space_group_before, "space_group_after": self.space_group_after}


_SUMMARY_NUMBERS = ("energy_before", "energy_after", "energy_drop", "max_force", "rms_displacement")


def check_summary(summary: object) -> dict:
    """A relaxation summary that came back from the browser, checked: finite numbers, whole steps, flags and
    short space-group labels; ValueError saying what is wrong."""
    if not isinstance(summary, dict):
        raise ValueError("the relaxation result holds no summary")
    numbers = [summary.get(k) for k in _SUMMARY_NUMBERS]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise ValueError("the relaxation summary's energies and distances must be finite numbers")
    steps = summary.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= 100_000:
        raise ValueError(f"the relaxation summary's step count {str(steps)[:20]!r} is not a whole number of steps")
    return {**dict(zip(_SUMMARY_NUMBERS, numbers, strict=True)), "steps": steps,
            **{k: bool(summary.get(k)) for k in ("converged", "stopped")},
            **{k: str(summary.get(k, ""))[:40] for k in ("space_group_before", "space_group_after")}}


def rms_displacement(before: Structure, after: Structure) -> float:
    """RMS distance (Å) each atom moved, as fractional moves wrapped to the nearest image, in ``after``'s cell."""
    delta = np.asarray(after.frac_coords) - np.asarray(before.frac_coords)
    delta -= np.round(delta)
    moved = delta @ after.lattice.matrix
    return float(np.sqrt((moved ** 2).sum(axis=1).mean())) if len(moved) else 0.0


def relax(structure: Structure, settings: Settings, *, on_step: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> Relaxation:
    """Relax positions and cell (``models.potential.relax_steps``: FIRE, ``settings.relax_fmax``,
    ``settings.relax_max_steps``). ``on_step({"step", "energy_per_atom", "max_force"})`` after every step;
    ``should_stop()`` is asked after every step and ends the relaxation early (the result says ``stopped``).

    Raises:
        models.potential.RelaxationFailed (a ValueError): the crystal blew up or collapsed (message says how).
    """
    from explorer.reconstruction import space_group_of
    from models.potential import relax_steps

    first = last = None
    stopped = False
    for step in relax_steps(structure, fmax=settings.relax_fmax, max_steps=settings.relax_max_steps,
                            device=settings.device or None):
        first = first or step
        last = step
        if on_step is not None:
            on_step({"step": step.step, "energy_per_atom": step.energy_per_atom, "max_force": step.max_force})
        if should_stop is not None and not step.converged and should_stop():
            stopped = True
            break
    if first is None or last is None or not math.isfinite(last.energy_per_atom):
        raise ValueError(f"{structure.composition.reduced_formula}: the relaxation ended without a finite energy")
    return Relaxation(structure=last.structure, steps=last.step, energy_before=first.energy_per_atom,
                      energy_after=last.energy_per_atom, max_force=last.max_force,
                      rms_displacement=rms_displacement(structure, last.structure), converged=last.converged,
                      stopped=stopped, space_group_before=space_group_of(structure),
                      space_group_after=space_group_of(last.structure))


def check_assessable(view: object, dataset: object, settings: Settings) -> tuple[dict, str]:
    """(view, dataset) checked for ``assess_view``: ValueError in words when the page sent something else, or an
    environment of the motif map (a cluster, not a crystal), before anything is computed or loaded for it."""
    from explorer.services import views
    from explorer.services.motif_views import require_crystal

    dataset = materials.check_dataset(dataset, settings)
    view = views.check_view(view, settings)
    require_crystal(view, "energy, stability and novelty")
    return view, dataset


def check_path(path: object, dataset: object, settings: Settings) -> tuple[list[dict], list, str]:
    """(frames, their structures, dataset) of a path checked for ``path_energies``, as ``check_assessable``."""
    from explorer.services import views
    from explorer.services.motif_views import require_crystal

    dataset = materials.check_dataset(dataset, settings)
    frames = views.path_frames(path)
    require_crystal(frames[0], "the energy along a path")
    return frames, [views.structure_of(frame) for frame in frames], dataset


def assess_view(view: object, dataset: object, settings: Settings) -> dict:
    """``assess`` of the structure on screen (a view from the browser, checked first). Novelty is asked for
    everything but known materials; a known material's own id is never its "match"."""
    from explorer.services import views

    view, dataset = check_assessable(view, dataset, settings)
    result = assess(views.structure_of(view), dataset, settings, record_id=str(view["id"]),
                    with_novelty=view["kind"] != "known")
    return {**result, "kind": view["kind"], "title": view["title"]}


def path_energies(path: object, dataset: object, settings: Settings) -> dict:
    """Energy per atom (and energy above the known hull, where there is one) of every frame of an interpolation
    path: {"index": [...], "t": [...], "formula": [...], "energy_per_atom": [float | None], "e_above_hull":
    [float | None], "problems": [str], "ms"}. A frame the potential cannot handle gets None and a problem."""
    start = time.perf_counter()
    frames, structures, dataset = check_path(path, dataset, settings)
    found: dict = {"index": list(range(len(frames))), "t": [], "formula": [], "energy_per_atom": [],
                   "e_above_hull": [], "problems": []}
    computed = hull.energies_or_problems(structures, settings)
    for k, (frame, structure, e) in enumerate(zip(frames, structures, computed, strict=True)):
        t = frame.get("t")
        found["t"].append(float(t) if isinstance(t, int | float) and math.isfinite(t) else k / max(len(frames) - 1, 1))
        found["formula"].append(structure.composition.reduced_formula)
        if isinstance(e, str):
            found["energy_per_atom"].append(None)
            found["e_above_hull"].append(None)
            found["problems"].append(f"frame {k}: {e}")
            continue
        found["energy_per_atom"].append(round(e, 5))
        above = stability(structure, e, dataset, settings)["e_above_hull"]
        found["e_above_hull"].append(None if above is None else round(above, 5))
    found["ms"] = round(1000 * (time.perf_counter() - start), 1)
    return found


def assess_candidate(structure: Structure, dataset: str, settings: Settings, *, record_id: str = "",
                     relax_it: bool = False) -> tuple[dict, Structure | None]:
    """``assess`` of a crystal and, with ``relax_it``, of its relaxation: (row, relaxed structure or None). The row
    is that of ``python -m explorer assess`` and ``generate``: {..assess keys.., "relaxed": {..assess keys..,
    "steps", "rms_displacement", "converged", "space_group_before", "space_group_after"} | None, "error": the
    relaxation's problem | None}."""
    found = {**assess(structure, dataset, settings, record_id=record_id), "relaxed": None, "error": None}
    if relax_it:
        try:
            relaxation = relax(structure, settings)
        except ValueError as exc:
            return {**found, "error": str(exc)}, None
        summary = relaxation.summary()
        found["relaxed"] = {**assess(relaxation.structure, dataset, settings, record_id=record_id),
                            **{k: summary[k] for k in ("steps", "rms_displacement", "converged", "space_group_before",
                                                       "space_group_after")}}
        return found, relaxation.structure
    return found, None
