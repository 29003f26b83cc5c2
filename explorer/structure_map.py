"""The structure map: known crystals placed by their geometry alone (``explorer.motifs.geometry``'s descriptor of
the environments of their sites, no element names), so that crystals of one structure type sit together whatever
their elements: NaCl beside KBr and MgO.

It is an ``Atlas`` like the crystal map, with the same ids (those whose environments are known), the crystal
autoencoder's latents (a click on empty space decodes the distance-weighted average of the latents of the nearest
crystals *on this map*: a hypothetical of their common geometry), and 2D coordinates from UMAP of the descriptors.
New structures (a decode, an upload) are placed by describing them the same way (``place_structures``: CrystalNN
environments, about 0.1 s per structure) with the dataset's scales and the fitted reducer.

Cached under ``data/atlas/structure/<dataset>-<key>/``; the key covers the crystal map's key (checkpoint, table,
UMAP parameters), the descriptor's version and weights. It needs the dataset's environments
(``explorer.motifs.table``), computed by ``python -m explorer build``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from explorer.atlas import (
    Atlas,
    BuiltMaps,
    atlas_key,
    build_missing_in_background,
    fit_umap,
    get_atlas,
    load_folder,
    umap_params,
    write_folder,
)
from explorer.settings import Settings


def cache_dir(settings: Settings):
    return settings.atlas_dir / "structure"


def structure_key(dataset: str, settings: Settings) -> str:
    """Short hash of what the structure map depends on."""
    from explorer.motifs.geometry import DESCRIPTOR_VERSION, GROUP_WEIGHTS

    payload = json.dumps({"crystal map": atlas_key(dataset, settings), "descriptor": DESCRIPTOR_VERSION,
                          "weights": GROUP_WEIGHTS, "symprec": settings.symprec}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _folder(dataset: str, settings: Settings):
    from explorer.datasets.build import check_dataset_name

    return cache_dir(settings) / f"{check_dataset_name(dataset)}-{structure_key(dataset, settings)}"


def is_built(dataset: str, settings: Settings) -> bool:
    """True when the structure map of ``dataset`` for the current checkpoint and table is cached."""
    try:
        return (_folder(dataset, settings) / "done").exists()
    except (FileNotFoundError, ValueError):
        return False


def build(dataset: str, settings: Settings, *, progress: bool = False,
          on_progress: Callable[[str], None] | None = None) -> Atlas:
    """The structure map of ``dataset``: loaded, or described and projected now (the crystal map and the
    environments are built first when missing)."""
    from explorer.motifs import geometry
    from explorer.motifs import table as motif_table
    from explorer.services import materials

    folder = _folder(dataset, settings)
    if not (folder / "done").exists():
        say = on_progress or (lambda text: None)
        say("the crystal map")
        crystals = get_atlas(dataset, settings)
        say("the environments of every site")
        environments = motif_table.compute(dataset, settings, progress=progress)
        say("structure types")
        types = geometry.structure_types(dataset, settings, progress=progress)
        say("describing and projecting")
        frame = materials.table(dataset, settings)
        ids, features, scales = geometry.descriptors(environments, frame)
        if len(ids) < 3:
            raise ValueError(f"dataset {dataset!r}: {len(ids)} materials have environments; a map needs at least 3")
        reducer, xy = fit_umap(features, umap_params(settings))
        position = {record_id: k for k, record_id in enumerate(crystals.ids)}
        latents = crystals.latents[[position[i] for i in ids]]

        def extra(tmp) -> None:
            (tmp / "types.json").write_text(json.dumps([str(types.get(i, "")) for i in ids]))
            (tmp / "scales.json").write_text(json.dumps(scales))
            np.save(tmp / "features.npy", features)

        write_folder(folder, dataset=dataset, ids=ids, latents=latents, xy=xy, reducer=reducer, extra=extra)
    return load_folder(folder, dataset=dataset, kind="structure", inverse_k=settings.inverse_k)


@functools.lru_cache(maxsize=8)
def _types(folder: str) -> dict[str, str]:
    ids, types = (json.loads(Path(folder, name).read_text()) for name in ("ids.json", "types.json"))
    return dict(zip(ids, types, strict=True))


@functools.lru_cache(maxsize=4)
def _features(folder: str) -> np.ndarray:
    return np.load(Path(folder, "features.npy"))


def types_of(dataset: str, settings: Settings) -> dict[str, str]:
    """{id: structure type} of the materials on the structure map of ``dataset`` (built; read once per map
    folder: a folder's name is the hash of what it holds, so it never changes)."""
    return _types(str(_folder(dataset, settings)))


def features_of(dataset: str, settings: Settings) -> np.ndarray:
    """(n, d) descriptors of the materials on the structure map of ``dataset`` (built), in its id order."""
    return _features(str(_folder(dataset, settings)))


def describe(structures: list, settings: Settings, *, scales: dict[str, float]) -> np.ndarray:
    """(m, d) descriptors of new ``structures`` with a map's ``scales``; ValueError naming a structure whose
    environments cannot be found."""
    import pandas as pd

    from explorer.datasets.canonical import canonicalize
    from explorer.motifs import geometry
    from explorer.motifs.table import site_rows

    rows, table = [], []
    for k, structure in enumerate(structures):
        try:  # the rows the stored table has for known materials, so that both are described alike
            rows += site_rows(str(k), structure, settings.symprec)
        except ValueError as exc:
            raise ValueError(f"structure {k + 1} ({structure.composition.reduced_formula}): {exc}") from None
        group = canonicalize(structure, symprec=settings.symprec).spacegroup_number
        table.append({"id": str(k), "spacegroup_number": group, "numbers": [site.specie.Z for site in structure]})
    _, features, _ = geometry.descriptors(pd.DataFrame(rows), pd.DataFrame(table), scales=scales)
    return features


def place_structures(dataset: str, structures: list, settings: Settings) -> np.ndarray:
    """(m, 2) positions of ``structures`` on the structure map of ``dataset``."""
    the_map = get_structure_map(dataset, settings)
    scales = json.loads((_folder(dataset, settings) / "scales.json").read_text())
    return np.asarray(the_map.reducer.transform(describe(structures, settings, scales=scales)), dtype=np.float32)


def build_in_background(datasets: list[str], settings: Settings) -> threading.Thread:
    """``build`` the missing structure maps of the datasets whose crystal map and environments exist, in a daemon
    thread; failures are logged, never raised."""
    from explorer import atlas
    from explorer.motifs import table as motif_table

    return build_missing_in_background(
        "structure", datasets, built=lambda name: is_built(name, settings), build=lambda name: build(name, settings),
        ready=lambda name: atlas.is_built(name, settings) and motif_table.load(name, settings) is not None)


_MAPS = BuiltMaps("structure")


def get_structure_map(dataset: str, settings: Settings) -> Atlas:
    """The built structure map of ``dataset``, kept in memory per (data dir, dataset, key). It is never built here
    (minutes: a request must not wait for it): ValueError saying how to build it when it is missing."""
    return _MAPS.get(dataset, settings, key=structure_key(dataset, settings), built=lambda: is_built(dataset, settings),
                     load=lambda: build(dataset, settings))
