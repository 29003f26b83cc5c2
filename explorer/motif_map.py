"""The motif map: every distinct local environment of a dataset as a point, placed by UMAP of its motif latent
(``models.motif``, through ``services.motif_model``), so that octahedra sit with octahedra and tetrahedra with
tetrahedra whatever the crystal they come from.

Environments are distinct when their centre element, motif label, neighbour elements and distances (rounded to
``DISTINCT_TOLERANCE`` Å) agree; each point keeps the crystals that hold it ("Ti octahedral in SrTiO3 (and 3
other crystals)"). It is an ``Atlas`` whose ids are 'env:<n>', whose latents are motif latents: a click on empty
space decodes the distance-weighted average of the latents of the nearest environments (a hypothetical
environment), and an interpolation path is placed with the fitted reducer.

Cached under ``data/atlas/motifs/<dataset>-<key>/``; the key covers the environment table (its signature and
version), the motif checkpoint's sha256, the UMAP parameters and ``MAP_VERSION``. It needs the dataset's
environments (``explorer.motifs.table``): ``python -m explorer build`` computes both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd

from explorer.atlas import (
    Atlas,
    BuiltMaps,
    build_missing_in_background,
    fit_umap,
    load_folder,
    umap_params,
    write_folder,
)
from explorer.settings import Settings

MAP_VERSION = 2  # 2: placed by the leading part of the motif latent (``placed_by``)
DISTINCT_TOLERANCE = 0.05
"""Å: neighbour distances rounded to this decide whether two environments are the same point."""
COLOR_OPTIONS = [{"value": "motif", "label": "motif", "kind": "categorical"},
                 {"value": "element", "label": "centre element", "kind": "categorical"},
                 {"value": "cn", "label": "coordination number", "kind": "continuous"},
                 {"value": "csm", "label": "shape measure (CShM)", "kind": "continuous"},
                 {"value": "count", "label": "crystals holding it", "kind": "continuous"}]
CATEGORIES = 8
"""A categorical colouring shows the 7 commonest values and "other" (the hover names each point's own)."""
CRYSTALS_KEPT = 50
"""Crystals listed per environment (the count covers them all)."""


def cache_dir(settings: Settings):
    return settings.atlas_dir / "motifs"


def motif_key(dataset: str, settings: Settings) -> str:
    """Short hash of what the motif map depends on."""
    from explorer.motifs.table import TABLE_VERSION, table_stem
    from explorer.services.motif_model import checkpoint_sha256

    payload = json.dumps({"table": table_stem(dataset, settings), "table version": TABLE_VERSION,
                          "model": checkpoint_sha256(settings), "umap": umap_params(settings).__dict__,
                          "version": MAP_VERSION, "tolerance": DISTINCT_TOLERANCE}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _folder(dataset: str, settings: Settings):
    from explorer.datasets.build import check_dataset_name

    return cache_dir(settings) / f"{check_dataset_name(dataset)}-{motif_key(dataset, settings)}"


def is_built(dataset: str, settings: Settings) -> bool:
    """True when the motif map of ``dataset`` for the current table and motif checkpoint is cached."""
    try:
        return (_folder(dataset, settings) / "done").exists()
    except (FileNotFoundError, ValueError):
        return False


def distinct(environments: pd.DataFrame, formulas: dict[str, str]) -> pd.DataFrame:
    """One row per distinct environment of the environment table (see the module docstring), with 1 to 16
    neighbours: element, cn, motif, csm, neighbours, vectors (JSON, of its first occurrence), id and site of that
    occurrence, its formula, ``crystals`` (JSON list of up to ``CRYSTALS_KEPT`` ids) and ``count`` (crystals)."""
    from models.motif.data import MAX_NEIGHBOURS

    frame = environments[(environments["cn"] >= 1) & (environments["cn"] <= MAX_NEIGHBOURS)]

    def key(element: str, motif: str, neighbours: str) -> str:
        shell = sorted((e, round(d / DISTINCT_TOLERANCE)) for e, d in json.loads(neighbours))
        return json.dumps([element, motif, shell])

    keys = [key(*row) for row in zip(frame["element"], frame["motif"], frame["neighbours"], strict=True)]
    frame = frame.assign(key=keys)
    groups = frame.groupby("key", sort=False)
    first = groups.head(1).set_index("key")
    crystals = groups["id"].agg(lambda ids: list(dict.fromkeys(ids)))
    out = first[["element", "cn", "motif", "csm", "neighbours", "vectors", "id", "site"]].copy()
    out["formula"] = out["id"].map(lambda i: formulas.get(i, i))
    out["count"] = crystals.loc[out.index].map(len).to_numpy()
    out["crystals"] = crystals.loc[out.index].map(lambda ids: json.dumps(ids[:CRYSTALS_KEPT])).to_numpy()
    return out.reset_index(drop=True)


def as_environments(frame: pd.DataFrame):
    """``models.motif.data.Environments`` of the rows of ``distinct``."""
    from models.motif.data import concat, from_points

    return concat([from_points(element, [e for e, _ in json.loads(shell)], np.asarray(json.loads(vectors)),
                               record_id=str(record_id))
                   for element, shell, vectors, record_id in zip(frame["element"], frame["neighbours"],
                                                                 frame["vectors"], frame["id"], strict=True)])


def build(dataset: str, settings: Settings, *, progress: bool = False,
          on_progress: Callable[[str], None] | None = None) -> Atlas:
    """The motif map of ``dataset``: loaded, or its distinct environments encoded and projected now (the
    environments are computed first when missing)."""
    from explorer.motifs import table as motif_table
    from explorer.services import materials, motif_model

    folder = _folder(dataset, settings)
    if not (folder / "done").exists():
        say = on_progress or (lambda text: None)
        say("the environments of every site")
        environments = motif_table.compute(dataset, settings, progress=progress)
        say("distinct environments")
        table = materials.table(dataset, settings)
        rows = distinct(environments, dict(zip(table["id"], table["reduced_formula"], strict=True)))
        if len(rows) < 3:
            raise ValueError(f"dataset {dataset!r}: {len(rows)} distinct environments; a map needs at least 3")
        say(f"encoding {len(rows)} environments")
        latents = motif_model.encode(as_environments(rows), settings)
        say("projecting")
        reducer, xy = fit_umap(latents[:, : placed_by(settings)], umap_params(settings))
        write_folder(folder, dataset=dataset, ids=[f"env:{k}" for k in range(len(rows))], latents=latents, xy=xy,
                     reducer=reducer, extra=lambda tmp: rows.to_parquet(tmp / "environments.parquet", index=False))
    return load_folder(folder, dataset=dataset, kind="motifs", inverse_k=settings.inverse_k,
                       place_columns=placed_by(settings))


def placed_by(settings: Settings) -> int:
    """How many leading numbers of a motif latent place it on the map (the model's ``placed_size``): with the shell
    in the latent (version 2), the learned part and the centre's element; the neighbour counts after them would
    group the map by the shell's chemistry. Among each distinct known environment's 10 nearest, 70.1 % share its
    motif in the whole version-2 latent, 71.8 % in the placed part (and 67.1 % instead of 54.3 % its centre element
    too; session 13, ``bench/motif_map.py``)."""
    from explorer.services import motif_model

    return int(motif_model.loaded(settings).placed_size)


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def environments_of(dataset: str, settings: Settings) -> pd.DataFrame:
    """The distinct environments of the built motif map of ``dataset``, in its id order (``distinct``'s columns)."""
    path = _folder(dataset, settings) / "environments.parquet"
    return _read(str(path), path.stat().st_mtime_ns)


def environment(dataset: str, env_id: object, settings: Settings) -> tuple[int, pd.Series]:
    """(row, record) of the environment ``env_id`` ('env:<n>') of the motif map; ValueError naming an unknown one."""
    the_map = get_motif_map(dataset, settings)
    row = the_map.index_of(env_id) if isinstance(env_id, str) else None
    if row is None:
        raise ValueError(f"no environment {str(env_id)[:40]!r} on the motif map of {dataset!r}")
    return row, environments_of(dataset, settings).iloc[row]


_LIBRARIES: dict[tuple[str, int], object] = {}
_LIBRARIES_LOCK = threading.Lock()


def library(dataset: str, settings: Settings):
    """The distinct environments of the built motif map of ``dataset`` as known shells from which its decodes start
    (``models.motif.refine.Library``; about 1 s for the 30,599 known ones, then kept per map folder and version)."""
    from explorer.services import motif_model
    from models.motif.refine import Library

    path = _folder(dataset, settings) / "environments.parquet"
    key = (str(path), path.stat().st_mtime_ns)
    with _LIBRARIES_LOCK:
        found = _LIBRARIES.get(key)
    if found is None:
        learned = get_motif_map(dataset, settings).latents[:, : motif_model.loaded(settings).config.latent_dim]
        found = Library(learned=np.ascontiguousarray(learned, dtype=np.float32),
                        environments=as_environments(environments_of(dataset, settings)))
        with _LIBRARIES_LOCK:
            while len(_LIBRARIES) >= 4:
                _LIBRARIES.pop(next(iter(_LIBRARIES)))
            _LIBRARIES[key] = found
    return found


def label(record) -> str:
    """'Ti octahedral (CN 6)' of a ``distinct`` row."""
    return f"{record['element']} {record['motif']} (CN {int(record['cn'])})"


def map_points(dataset: str, color_by: str | None, settings: Settings, *, hover: bool = True) -> dict:
    """The motif map's points as ``materials.map_points`` gives a crystal map's (x, y, ids, hover, colour);
    ``hover=False``: numpy arrays, no hover texts (``hover_of``)."""
    the_map = get_motif_map(dataset, settings)
    frame = environments_of(dataset, settings)
    options = {o["value"]: o for o in COLOR_OPTIONS}
    color_by = color_by if color_by in options else "motif"
    option = options[color_by]
    if option["kind"] == "categorical":
        values = frame[color_by].astype(str)
        categories = values.value_counts().index[:CATEGORIES - 1].tolist()  # commonest first
        if values.nunique() > CATEGORIES:  # the rest as "other": 8 colours a reader can tell apart (Okabe-Ito)
            values = values.where(values.isin(categories), "other")
            categories.append("other")
        else:
            categories = values.value_counts().index.tolist()
        codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)
        colour = {"kind": "categorical", "codes": codes.tolist() if hover else codes, "categories": categories,
                  "label": option["label"]}
    else:
        numbers = pd.to_numeric(frame[color_by], errors="coerce").to_numpy(dtype=float)
        colour = {"kind": "continuous", "label": option["label"],
                  "values": [float(v) if np.isfinite(v) else None for v in numbers] if hover else numbers}
    x, y, rows = the_map.xy[:, 0], the_map.xy[:, 1], np.arange(len(the_map.ids))
    return {"x": x.tolist() if hover else x, "y": y.tolist() if hover else y, "ids": list(the_map.ids),
            "rows": rows.tolist() if hover else rows, "kind": "motifs",
            "hover": _hover(frame) if hover else None, "colour": colour, "color_by": color_by,
            "reconstruction": None}


def _hover(frame: pd.DataFrame) -> list[str]:
    """'Ti octahedral (CN 6) in SrTiO3 (and 3 other crystals)' and the shell of each environment of ``frame``."""
    others = frame["count"] - 1
    return ("<b>" + frame["element"] + " " + frame["motif"] + "</b> (CN " + frame["cn"].astype(str) + ")<br>in "
            + frame["formula"] + np.where(others > 0, " (and " + others.astype(str) + " other crystal"
                                          + np.where(others > 1, "s", "") + ")", "")
            + "<br>" + frame["neighbours"].map(_shell_text)).tolist()


def hover_of(dataset: str, index: np.ndarray, settings: Settings) -> list[str]:
    """Hover texts of the motif map's points at ``index``."""
    return _hover(environments_of(dataset, settings).iloc[index])


def _shell_text(neighbours: str) -> str:
    """'O 1.95 Å ×6' summary of a stored neighbour list (JSON [[element, distance]])."""
    from explorer.motifs.environments import shell_text

    return shell_text(json.loads(neighbours))


def search(dataset: str, query: str, settings: Settings) -> tuple[np.ndarray, str]:
    """Rows of the motif map that ``query`` asks for, and a note: a motif query ('Ti octahedral') matches those
    environments; anything else is a search of the crystals (formula, elements, id) and matches their
    environments."""
    from explorer.motifs.table import motif_query
    from explorer.services import materials

    frame = environments_of(dataset, settings)
    wanted = motif_query(query)
    if wanted is not None:
        element, motif = wanted
        hits = (frame["motif"] == motif) & ((frame["element"] == element) if element else True)
        return np.flatnonzero(hits.to_numpy()), f"{motif} {element or 'environments'}"
    table = materials.table(dataset, settings)
    found = set(table["id"].to_numpy()[materials.search(table, query)])
    hits = frame["crystals"].map(lambda ids: not found.isdisjoint(json.loads(ids)))
    return np.flatnonzero(hits.to_numpy()), "environments of the matching crystals"


def map_frame(dataset: str, settings: Settings) -> pd.DataFrame:
    """The motif map as a table for ``export-map``: id, x, y, the motif latent (``m0`` …), and element, cn, motif,
    csm, count, formula, crystal (its first crystal), site and neighbours."""
    the_map = get_motif_map(dataset, settings)
    frame = environments_of(dataset, settings)
    out = pd.DataFrame({"id": the_map.ids, "x": the_map.xy[:, 0], "y": the_map.xy[:, 1]})
    latents = pd.DataFrame(the_map.latents, columns=[f"m{k}" for k in range(the_map.latents.shape[1])])
    described = frame[["element", "cn", "motif", "csm", "count", "formula", "id", "site", "neighbours"]]
    return pd.concat([out, latents, described.rename(columns={"id": "crystal"}).reset_index(drop=True)], axis=1)


def build_in_background(datasets: list[str], settings: Settings) -> threading.Thread:
    """``build`` the missing motif maps of the datasets whose environments exist, in a daemon thread; failures
    are logged, never raised."""
    from explorer.motifs import table as motif_table

    return build_missing_in_background(
        "motif", datasets, built=lambda name: is_built(name, settings), build=lambda name: build(name, settings),
        ready=lambda name: motif_table.load(name, settings) is not None)


_MAPS = BuiltMaps("motif")


def get_motif_map(dataset: str, settings: Settings) -> Atlas:
    """The built motif map of ``dataset``, kept in memory per (data dir, dataset, key). It is never built here:
    ValueError saying how to build it when it is missing."""
    return _MAPS.get(dataset, settings, key=motif_key(dataset, settings), built=lambda: is_built(dataset, settings),
                     load=lambda: build(dataset, settings))
