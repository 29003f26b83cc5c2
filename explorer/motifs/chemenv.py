"""ChemEnv's finer coordination labels (pymatgen's ``LocalGeometryFinder`` with the simplest strategy: 'O:6
Octahedron', 'T:4 Tetrahedron', 'C:12 Cuboctahedron', 'PB:7 Pentagonal bipyramid', … from a catalogue of 65 model
geometries with their continuous symmetry measure) for the structure on screen, on demand: it takes 0.1 to 9 s a
structure here, too slow for every site of a map. One site per Wyckoff orbit, as ``environments``.
"""

from __future__ import annotations

import warnings

from pymatgen.core import Structure

MAX_SITES = 200
"""Larger cells are refused (ChemEnv's time grows fast with the cell)."""


def chemenv_labels(structure: Structure, symprec: float = 0.1) -> list[dict]:
    """[{"site", "element", "symbol" ('O:6'), "name" ('Octahedron'), "csm", "fraction"}] of one site per Wyckoff
    orbit of an ordered ``structure``: the environment ChemEnv finds likeliest (several when the strategy splits
    the site between them; symbol None when it finds none). ValueError for a disordered, empty or too large cell."""
    from pymatgen.analysis.chemenv.coordination_environments.chemenv_strategies import SimplestChemenvStrategy
    from pymatgen.analysis.chemenv.coordination_environments.coordination_geometries import (
        AllCoordinationGeometries,
    )
    from pymatgen.analysis.chemenv.coordination_environments.coordination_geometry_finder import (
        LocalGeometryFinder,
    )
    from pymatgen.analysis.chemenv.coordination_environments.structure_environments import (
        LightStructureEnvironments,
    )
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if not len(structure) or not structure.is_ordered:
        raise ValueError("ChemEnv needs an ordered crystal with atoms")
    if len(structure) > MAX_SITES:
        raise ValueError(f"{len(structure)} sites: ChemEnv labels cells of up to {MAX_SITES} sites here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sites = sorted(group[0] for group in SpacegroupAnalyzer(structure, symprec=symprec)
                           .get_symmetrized_structure().equivalent_indices)
        except Exception:  # noqa: BLE001 - spglib finds no symmetry: every site
            sites = list(range(len(structure)))
        finder = LocalGeometryFinder()
        finder.setup_structure(structure)
        found = finder.compute_structure_environments(only_indices=sites, maximum_distance_factor=1.41)
        light = LightStructureEnvironments.from_structure_environments(strategy=SimplestChemenvStrategy(),
                                                                       structure_environments=found)
    geometries = AllCoordinationGeometries()
    rows = []
    for site in sites:
        element = structure[site].specie.symbol
        choices = light.coordination_environments[site] or [{"ce_symbol": None, "csm": None, "ce_fraction": None}]
        for choice in choices:
            symbol = choice["ce_symbol"]
            name = geometries.get_geometry_from_mp_symbol(symbol).name if symbol else None
            rows.append({"site": site, "element": element, "symbol": symbol, "name": name,
                         "csm": None if choice["csm"] is None else round(float(choice["csm"]), 3),
                         "fraction": None if choice["ce_fraction"] is None else round(float(choice["ce_fraction"]), 3)})
    return rows
