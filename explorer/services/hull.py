"""Stability of a crystal against the known materials of a map: energy above their convex hull.

The hull of a chemical system (say Li-Fe-O) is built from the known materials of the dataset whose elements
all lie in it (every subsystem, elements included), plus one reference structure per element from ASE's
``dcdft`` set (71 elements, the Delta-test crystals) so that a system always has its corners where it can.
Every energy comes from the same potential with the same scheme (``models.potential.ENERGY_SCHEME``). This is
the hull "of the known materials on this map", not of every known phase: the UI says so.

Energies of known materials are computed lazily, one exact element set at a time (``Fe-O`` holds the known
materials made of Fe and O and nothing else), and cached on disk under ``data/physics/`` in a folder keyed by
the potential and the table's signature, so a new table or potential never reuses stale energies. File
names are built from element symbols of the periodic table only.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Composition, Element, Structure

from explorer.settings import Settings

REFERENCE_SOURCE = "ASE dcdft"
MAX_ELEMENTS = 8
"""Largest chemical system answered (2^8 - 1 subsystems)."""
_SYMBOLS = frozenset(e.symbol for e in Element)
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Stability:
    """Energy above the known hull of one crystal: ``e_above_hull`` (eV/atom; negative: below it, a new lowest
    phase), ``decomposition`` [[id, formula, fraction]] of the phases it would separate into (itself when on the
    hull), ``system`` ('Fe-O-Li'), ``n_entries`` known entries the hull rests on, and ``missing`` elements without
    any reference (then ``e_above_hull`` is None)."""

    e_above_hull: float | None
    decomposition: list[list]
    system: str
    n_entries: int
    missing: list[str]

    def as_dict(self) -> dict:
        return {"e_above_hull": self.e_above_hull, "decomposition": self.decomposition, "system": self.system,
                "n_entries": self.n_entries, "missing": self.missing}

    @property
    def sentence(self) -> str:
        if self.e_above_hull is None:
            return (f"no hull for {self.system}: no known material or reference crystal of "
                    f"{', '.join(self.missing)}")
        where = "on" if abs(self.e_above_hull) < 1e-6 else "below" if self.e_above_hull < 0 else "above"
        return (f"{1000 * self.e_above_hull:+.0f} meV/atom: {where} the hull of the {self.n_entries} known "
                f"materials of {self.system} on this map")


def chemical_system(composition: Composition) -> tuple[str, ...]:
    """Sorted element symbols of a composition; ValueError when it has none or too many."""
    symbols = tuple(sorted({el.symbol for el in composition.elements}))
    if not symbols or len(symbols) > MAX_ELEMENTS:
        raise ValueError(f"{composition.reduced_formula}: a hull needs 1 to {MAX_ELEMENTS} elements, got "
                         f"{len(symbols)}")
    return symbols


def _folder(dataset: str, settings: Settings) -> Path:
    from explorer.datasets.build import check_dataset_name, load_report
    from models.potential import POTENTIAL

    report = load_report(dataset, settings)
    if report is None:
        raise FileNotFoundError(f"dataset {dataset!r} has no built table: run `python -m explorer data build`")
    key = hashlib.sha256(f"{POTENTIAL}|{report.signature}".encode()).hexdigest()[:16]
    return settings.data_dir / "physics" / f"{check_dataset_name(dataset)}-{key}"


@functools.lru_cache(maxsize=8)
def _by_element_set(path: str, mtime_ns: int, dataset: str, data_dir: str) -> dict[tuple[str, ...], list[int]]:
    from explorer.services import materials

    frame = materials.table(dataset, Settings(data_dir=Path(data_dir)))
    groups: dict[tuple[str, ...], list[int]] = {}
    for k, elements in enumerate(frame["elements"]):
        groups.setdefault(tuple(sorted(elements)), []).append(k)
    return groups


def _rows_by_system(dataset: str, settings: Settings) -> dict[tuple[str, ...], list[int]]:
    from explorer.datasets.build import table_path

    path = table_path(dataset, settings)
    return _by_element_set(str(path), path.stat().st_mtime_ns, dataset, str(settings.data_dir))


@functools.lru_cache(maxsize=1)
def _references() -> dict[str, Structure]:
    from ase.collections import dcdft
    from pymatgen.io.ase import AseAtomsAdaptor

    return {name: AseAtomsAdaptor.get_structure(dcdft[name]) for name in dcdft.names}


def _lock_of(path: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(str(path), threading.Lock())


def _system_entries(dataset: str, system: tuple[str, ...], settings: Settings) -> list[dict]:
    """[{"id", "formula", "n_atoms", "energy_per_atom"}] of the known materials made of exactly ``system`` (and
    of the element's reference crystal for a one-element system): from the cache, or computed and stored."""
    from explorer.datasets.records import canonical_structure
    from explorer.services import materials
    from explorer.storage import atomic_file
    if not all(s in _SYMBOLS for s in system):
        raise ValueError(f"not a chemical system: {'-'.join(system)[:60]!r}")
    path = _folder(dataset, settings) / f"{'-'.join(system)}.json"
    with _lock_of(path):
        if path.is_file():
            return json.loads(path.read_text())["entries"]
        frame = materials.table(dataset, settings)
        rows = _rows_by_system(dataset, settings).get(system, [])
        ids = [frame.iloc[k]["id"] for k in rows]
        structures = [canonical_structure(frame.iloc[k]) for k in rows]
        if len(system) == 1 and system[0] in _references():
            ids.append(f"{REFERENCE_SOURCE}:{system[0]}")
            structures.append(_references()[system[0]])
        entries, failed = [], []
        computed = energies_or_problems(structures, settings)
        for record_id, structure, energy in zip(ids, structures, computed, strict=True):
            if isinstance(energy, str):
                failed.append({"id": record_id, "error": energy})
            else:
                entries.append({"id": record_id, "formula": structure.composition.formula.replace(" ", ""),
                                "n_atoms": len(structure), "energy_per_atom": energy})
        atomic_file(path, lambda tmp: Path(tmp).write_text(json.dumps({"system": list(system), "entries": entries,
                                                                        "failed": failed})))
        return entries


def energies_or_problems(structures: list[Structure], settings: Settings) -> list[float | str]:
    """Energy per atom of each structure, or the reason it has none (batched; one by one when a batch fails)."""
    from models.potential import energies

    try:
        return energies(structures, device=settings.device or None)
    except ValueError:
        found: list[float | str] = []
        for structure in structures:
            try:
                found.extend(energies([structure], device=settings.device or None))
            except ValueError as exc:
                found.append(str(exc))
        return found


def known_entries(dataset: str, system: tuple[str, ...], settings: Settings) -> list[dict]:
    """Entries of every subsystem of ``system`` (elements included): the known hull's material."""
    found = []
    for size in range(1, len(system) + 1):
        for subsystem in itertools.combinations(system, size):
            found += _system_entries(dataset, subsystem, settings)
    return found


@functools.lru_cache(maxsize=256)
def _phase_diagram(folder: str, system: tuple[str, ...], entries_json: str):
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

    entries = [PDEntry(Composition(e["formula"]), e["energy_per_atom"] * e["n_atoms"], name=e["id"])
               for e in json.loads(entries_json)]
    return PhaseDiagram(entries, elements=[Element(s) for s in system])


def stability(composition: Composition, energy_per_atom: float, dataset: str, settings: Settings) -> Stability:
    """Energy above the hull of the known materials of ``composition``'s chemical system (see the module)."""
    from pymatgen.analysis.phase_diagram import PDEntry

    system = chemical_system(composition)
    entries = known_entries(dataset, system, settings)
    present = {el.symbol for e in entries for el in Composition(e["formula"]).elements
               if len(Composition(e["formula"]).elements) == 1}
    missing = [s for s in system if s not in present]
    label = "-".join(system)
    if missing:
        return Stability(None, [], label, len(entries), missing)
    diagram = _phase_diagram(str(_folder(dataset, settings)), system, json.dumps(entries, sort_keys=True))
    target = PDEntry(composition, energy_per_atom * composition.num_atoms, name="this crystal")
    decomposition, e_above = diagram.get_decomp_and_e_above_hull(target, allow_negative=True)
    parts = sorted(([e.name, e.composition.reduced_formula, round(float(amount), 4)]
                    for e, amount in decomposition.items()), key=lambda p: -p[2])
    return Stability(float(e_above), parts, label, len(entries), [])

