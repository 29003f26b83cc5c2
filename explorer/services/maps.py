"""The maps of a dataset by kind: ``crystals`` (the crystal autoencoder's latents, ``explorer.atlas``),
``structure`` (crystals by geometry alone, ``explorer.structure_map``) and ``motifs`` (the distinct local
environments by their motif latents, ``explorer.motif_map``). Which one a request means, whether it is built, where
a new crystal goes on it, and the whole map as a table for ``python -m explorer export-map``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer import atlas, motif_map, structure_map
from explorer.settings import Settings

KINDS = ("crystals", "structure", "motifs")
"""The maps of a dataset (the values of the page's ``map-kind`` selector)."""
KIND_LABELS = {"crystals": "crystals (autoencoder)", "structure": "structure (geometry only)",
               "motifs": "motifs (local environments)"}
CRYSTAL_KINDS = ("crystals", "structure")
"""The maps whose points are crystals (the motif map's are environments)."""


def check_kind(kind: object) -> str:
    """``kind`` if it names a map kind ('crystals' when None); ValueError naming it and the kinds there are."""
    if kind is None:
        return "crystals"
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown map kind {str(kind)[:40]!r} (kinds: {', '.join(KINDS)})")
    return kind


_MODULES = {"crystals": atlas, "structure": structure_map, "motifs": motif_map}


def is_built(dataset: str, kind: str, settings: Settings) -> bool:
    return _MODULES[check_kind(kind)].is_built(dataset, settings)


def get_map(dataset: str, kind: str, settings: Settings) -> atlas.Atlas:
    """The map of ``kind`` of a checked ``dataset``: the crystal map is built when missing; the structure and
    motif maps never are here (ValueError saying how to build them)."""
    kind = check_kind(kind)
    if kind == "crystals":
        return atlas.get_atlas(dataset, settings)
    if kind == "structure":
        return structure_map.get_structure_map(dataset, settings)
    return motif_map.get_motif_map(dataset, settings)


def size(dataset: str, kind: str, settings: Settings) -> int:
    """Points on the built map of ``kind`` (materials, or environments on the motif map)."""
    return len(get_map(dataset, kind, settings).ids)


def place(dataset: str, kind: str, structures: list, latents: np.ndarray, settings: Settings) -> np.ndarray:
    """(m, 2) positions of new crystals (with their (m, d) crystal latents) on the crystal or structure map;
    ValueError for the motif map (its points are environments, not crystals)."""
    kind = check_kind(kind)
    if kind == "crystals":
        return atlas.get_atlas(dataset, settings).place(latents)
    if kind == "structure":
        return structure_map.place_structures(dataset, structures, settings)
    raise ValueError("a crystal has no place on the motif map (its points are local environments): switch to the "
                     "crystal or structure map")


def map_frame(dataset: str, kind: str, settings: Settings) -> pd.DataFrame:
    """Every material of the map of ``kind`` as a table: ``id``, ``x``, ``y``, the crystal latent (``z0`` …), for
    the structure map its descriptor (``g0`` …) and structure type, and the table's colouring columns (formula,
    source, space group, crystal system, numbers of sites and elements, and every numeric property)."""
    from explorer import reconstruction
    from explorer.services import materials

    if check_kind(kind) == "motifs":
        return motif_map.map_frame(dataset, settings)
    the_map = get_map(dataset, kind, settings)
    frame = materials.table(dataset, settings).set_index("id").loc[the_map.ids]
    out = pd.DataFrame({"id": the_map.ids, "x": the_map.xy[:, 0], "y": the_map.xy[:, 1]})
    parts = [out, pd.DataFrame(the_map.latents, columns=[f"z{k}" for k in range(the_map.latents.shape[1])])]
    if kind == "structure":
        features = structure_map.features_of(dataset, settings)
        parts.append(pd.DataFrame(features, columns=[f"g{k}" for k in range(features.shape[1])]))
        types = structure_map.types_of(dataset, settings)
        out["structure_type"] = [types.get(i, "") for i in the_map.ids]
    colouring = [c for c in ("reduced_formula", "source", "spacegroup_symbol", "spacegroup_number",
                             "crystal_system", "nsites", "n_elements") if c in frame]
    numeric = [o["value"] for o in materials.color_options(frame.reset_index()) if o["kind"] == "continuous"
               and o["value"] in frame and o["value"] not in colouring]
    parts.append(frame[colouring + numeric].reset_index(drop=True))
    rebuilt = reconstruction.load(dataset, settings)
    if rebuilt is not None:
        checked = pd.DataFrame(rebuilt.columns()).set_index(pd.Index(rebuilt.frame["id"]))
        parts.append(checked.reindex(the_map.ids).reset_index(drop=True))
    return pd.concat(parts, axis=1)


def write_map(dataset: str, kind: str, out, settings: Settings) -> int:
    """Write ``map_frame`` to ``out`` (CSV or Parquet by its extension); the number of rows written."""
    from pathlib import Path

    from explorer.storage import atomic_file

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"{out.name}: the map is written as CSV (.csv) or Parquet (.parquet), not "
                         f"{suffix or 'a file without extension'}")
    frame = map_frame(dataset, check_kind(kind), settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        atomic_file(out, lambda tmp: frame.to_csv(tmp, index=False))
    else:
        atomic_file(out, lambda tmp: frame.to_parquet(tmp, index=False))
    return len(frame)
