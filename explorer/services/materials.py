"""Known materials for the app: tables (read once per file version), which datasets exist, search, filters
and the points of the map. Plain data in, plain data out. The structures on screen are ``views``.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Element

from explorer import reconstruction
from explorer.datasets.build import check_dataset_name, load_table, table_path
from explorer.settings import Settings

CATEGORICAL = {"source": "source", "crystal_system": "crystal system", "spacegroup_number": "space group number",
               "n_elements": "number of elements"}
_BASE_COLUMNS = {"id", "source", "origin", "source_key", "formula", "reduced_formula", "elements", "nsites",
                 "spacegroup_symbol", "spacegroup_number", "crystal_system", "n_elements", "lattice", "numbers",
                 "frac_coords", "original_lattice", "original_species", "original_frac_coords", "split"}
_CONTINUOUS_FIRST = ("density", "volume_per_atom", "nsites", "a", "c")
_SEARCH_LIMIT = 20000
SELECTION_KEPT = 20000
"""Most ids of a lasso or box selection kept in the browser's store (the summary gives the full count)."""


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, dataset: str, data_dir: str) -> pd.DataFrame:
    table = load_table(dataset, Settings(data_dir=Path(data_dir)))
    return table.reset_index(drop=True)


def table(dataset: str, settings: Settings) -> pd.DataFrame:
    """The built table of ``dataset`` (cached per file version); do not modify it."""
    path = table_path(dataset, settings)
    if not path.exists():
        raise FileNotFoundError(f"no table for dataset {dataset!r}: run `python -m explorer data build`")
    return _read(str(path), path.stat().st_mtime_ns, dataset, str(settings.data_dir))


@functools.lru_cache(maxsize=8)
def _index(path: str, mtime_ns: int, dataset: str, data_dir: str) -> dict[str, int]:
    return {record_id: k for k, record_id in enumerate(_read(path, mtime_ns, dataset, data_dir)["id"])}


def check_dataset(dataset: object, settings: Settings) -> str:
    """``dataset`` if it names a dataset with a built table; ValueError naming it and the datasets there are.

    Every dataset value a browser sends goes through here before anything is built from it.
    """
    try:
        name = check_dataset_name(dataset)
    except ValueError:
        name = None
    if name is None or not table_path(name, settings).is_file():
        available = ", ".join(datasets_with_tables(settings)) or "none built yet"
        raise ValueError(f"unknown dataset {str(dataset)[:80]!r} (datasets here: {available})")
    return name


def _index_of(dataset: str, settings: Settings) -> dict[str, int]:
    path = table_path(dataset, settings)
    return _index(str(path), path.stat().st_mtime_ns, dataset, str(settings.data_dir))


def _located(dataset: str, record_id: str, settings: Settings) -> tuple[pd.DataFrame, int]:
    """(the table of ``dataset``, the position of ``record_id`` in it); ValueError naming the id and dataset when
    there is none."""
    frame = table(check_dataset(dataset, settings), settings)
    index = _index_of(dataset, settings)
    if not isinstance(record_id, str) or record_id not in index:
        raise ValueError(f"no material {str(record_id)[:80]!r} in dataset {dataset!r}")
    return frame, index[record_id]


def row_of(dataset: str, record_id: str, settings: Settings) -> pd.Series:
    """The table row of ``record_id``; ValueError naming the id and dataset when there is none."""
    frame, position = _located(dataset, record_id, settings)
    return frame.iloc[position]


def value_of(dataset: str, record_id: str, column: str, settings: Settings):
    """``row_of(dataset, record_id, settings)[column]`` without making the whole row (a path's frames ask for the
    formulas of the known crystals they were made from: a row of every column cost about 0.2 ms each)."""
    frame, position = _located(dataset, record_id, settings)
    return frame[column].iat[position]


def known_ids(frame: pd.DataFrame, ids: list, *, limit: int = SELECTION_KEPT) -> list[str]:
    """The entries of ``ids`` that are ids of ``frame`` (in order, at most ``limit``): a selection sent by a
    browser may hold anything."""
    present = set(frame["id"])
    return [i for i in ids if isinstance(i, str) and i in present][:limit]


_ELEMENT_SYMBOLS = frozenset(e.symbol for e in Element)


RECONSTRUCTION_OPTIONS = ({"value": reconstruction.COLUMN, "label": "reconstruction (decodes back to itself?)",
                           "kind": "categorical"},
                          {"value": reconstruction.RMS_COLUMN, "label": "reconstruction RMS", "kind": "continuous"})
"""Colour options of a map whose reconstruction has been computed (``explorer.reconstruction``)."""


def color_options(frame: pd.DataFrame, *, reconstructed: bool = False) -> list[dict]:
    """[{value, label, kind: 'continuous' | 'categorical'}]: categorical groupings, then numeric properties;
    with ``reconstructed``, the reconstruction options after the groupings and after the properties."""
    options = [{"value": c, "label": label, "kind": "categorical"} for c, label in CATEGORICAL.items() if c in frame]
    if reconstructed:
        options.append(dict(RECONSTRUCTION_OPTIONS[0]))
    numeric = [c for c in frame.columns if c not in _BASE_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
               and frame[c].notna().any()]
    ordered = [c for c in _CONTINUOUS_FIRST if c in numeric or c in ("nsites",)] + sorted(
        c for c in numeric if c not in _CONTINUOUS_FIRST)
    options += [{"value": c, "label": c.replace("_", " "), "kind": "continuous"} for c in ordered if c in frame]
    if reconstructed:
        options.append(dict(RECONSTRUCTION_OPTIONS[1]))
    return options


def map_color_options(dataset: str, settings: Settings) -> list[dict]:
    """``color_options`` of a dataset's map (with the reconstruction options once they are computed)."""
    return color_options(table(dataset, settings), reconstructed=reconstruction.load(dataset, settings) is not None)


def _symbols(text: str | None) -> list[str]:
    """'Li-Fe-O', 'Li, Fe O' -> ['Li', 'Fe', 'O'] (unchecked)."""
    return [p for p in re.split(r"[-,\s]+", (text or "").strip()) if p]


def _element_set(query: str) -> set[str] | None:
    parts = _symbols(query)
    if len(parts) < 2 and "-" not in query:
        return None
    try:
        elements = {str(e) for p in parts for e in Composition(p).elements} if parts else None
    except Exception:
        return None
    return elements if elements and all(re.fullmatch(r"[A-Z][a-z]?", p) for p in parts) else None


def search(frame: pd.DataFrame, query: str) -> np.ndarray:
    """Row positions matching ``query``: an id, a formula (any multiple: 'NaCl' finds Na4Cl4), an element
    set ('Li-Fe-O': exactly those elements) or part of a mineral name (case-insensitive)."""
    query = (query or "").strip()
    if not query:
        return np.zeros(0, dtype=int)
    hits = frame["id"].str.lower() == query.lower()
    elements = _element_set(query)
    if elements is not None:
        hits |= frame["elements"].map(lambda e: set(e) == elements)
    else:
        try:
            reduced = Composition(query).reduced_formula
            hits |= frame["reduced_formula"] == reduced
        except Exception:
            pass
    if "mineral" in frame and len(query) >= 3:
        hits |= frame["mineral"].astype("string").str.contains(query, case=False, regex=False).fillna(False)
    return np.flatnonzero(hits.to_numpy())[:_SEARCH_LIMIT]


def _fmt(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return None if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def details_of(row: pd.Series) -> list[list[str]]:
    """[[label, value]] of a known material: formula, space group, lattice, density, source, properties."""
    items = [["formula", row["formula"]], ["space group", f"{row['spacegroup_symbol']} ({row['spacegroup_number']})"],
             ["crystal system", row["crystal_system"]],
             ["lattice", f"a={row['a']:.3f} b={row['b']:.3f} c={row['c']:.3f} Å, "
                         f"α={row['alpha']:.1f} β={row['beta']:.1f} γ={row['gamma']:.1f}°"],
             ["density", f"{row['density']:.3f} g/cm³"], ["volume per atom", f"{row['volume_per_atom']:.2f} Å³"],
             ["source", row["source"]]]
    skip = _BASE_COLUMNS | {"a", "b", "c", "alpha", "beta", "gamma", "density", "volume_per_atom"}
    for column, value in row.items():
        text = _fmt(value)
        if column not in skip and text is not None:
            items.append([column.replace("_", " "), text])
    return items


def datasets_with_tables(settings: Settings) -> list[str]:
    """Names of every dataset with a built table (known first)."""
    from explorer.datasets import catalog

    return [report.dataset for report in catalog.reports(settings)]


def map_problem(dataset: str, settings: Settings, kind: str = "crystals") -> str | None:
    """Why the map of ``kind`` of ``dataset`` cannot be shown yet (no checkpoint, not built), or None when it can."""
    from explorer.services import maps

    if not Path(settings.checkpoint).is_file():
        return (f"No model checkpoint at {settings.checkpoint}: train one (see models/) or point "
                "EXPLORER_CHECKPOINT at a checkpoint file.")
    if not maps.is_built(dataset, "crystals", settings):
        return (f"The map of {dataset!r} is not built for this checkpoint yet: build it here (a background job) "
                f"or run `python -m explorer build --dataset {dataset}`.")
    if kind == "structure" and not maps.is_built(dataset, kind, settings):
        return (f"The structure map of {dataset!r} is not built yet (it places crystals by the environments of their "
                f"sites): build it here (a background job, minutes for thousands of crystals) or run "
                f"`python -m explorer build --dataset {dataset}`.")
    if kind == "motifs" and not maps.is_built(dataset, kind, settings):
        return (f"The motif map of {dataset!r} is not built yet (every distinct environment of its sites, placed by "
                f"the motif autoencoder): build it here (a background job, a few minutes for thousands of crystals) "
                f"or run `python -m explorer build --dataset {dataset}`.")
    return None


def map_points(dataset: str, color_by: str | None, settings: Settings, kind: str = "crystals", *,
               hover: bool = True) -> dict:
    """Every known material of ``dataset`` on the map of ``kind``: x, y, ids, hover texts and colour values (the
    structure map leaves out the materials whose environments could not be found, and names each one's type).

    colour: {"kind": "continuous", "values", "label"} (NaN as None) or {"kind": "categorical",
    "codes": per point, "categories": [names], "label"}. ``hover=False`` (a big map, ``services.lod``): numpy
    arrays instead of lists, no hover texts (``hover_of`` makes them for the points sent).
    """
    from explorer.services import maps

    if maps.check_kind(kind) == "motifs":
        from explorer import motif_map

        return motif_map.map_points(dataset, color_by, settings, hover=hover)
    frame = table(dataset, settings)
    atlas = maps.get_map(dataset, kind, settings)
    index = _index_of(dataset, settings)
    rows = np.fromiter((index.get(i, -1) for i in atlas.ids), dtype=np.int64, count=len(atlas.ids))
    if (rows < 0).any() or (kind == "crystals" and len(rows) != len(frame)):
        raise ValueError(f"the map of {dataset!r} does not match its table: rebuild with `python -m explorer build`")
    frame = frame.iloc[rows]
    rebuilt = reconstruction.load(dataset, settings)
    options = {o["value"]: o for o in color_options(frame, reconstructed=rebuilt is not None)}
    color_by = color_by if color_by in options else "source"
    option = options[color_by]
    extra = rebuilt.columns() if rebuilt is not None else {}
    column = pd.Series(extra[color_by]).iloc[rows] if color_by in extra else frame[color_by]
    if option["kind"] == "categorical":
        values = column.astype(str)
        categories = sorted(values.unique(), key=lambda v: (len(v), v) if v.isdigit() else (0, v))
        codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)
        colour = {"kind": "categorical", "codes": codes.tolist() if hover else codes, "categories": categories,
                  "label": option["label"]}
    else:
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        colour = {"kind": "continuous", "label": option["label"],
                  "values": [None if not math.isfinite(v) else float(v) for v in numbers] if hover else numbers}
    x, y = atlas.xy[:, 0], atlas.xy[:, 1]
    return {"x": x.tolist() if hover else x, "y": y.tolist() if hover else y, "ids": frame["id"].tolist(),
            "rows": rows.tolist() if hover else rows, "kind": kind,
            "hover": _hover(dataset, kind, frame, settings) if hover else None, "colour": colour,
            "color_by": color_by, "reconstruction": rebuilt.sentence() if rebuilt is not None else None}


def _hover(dataset: str, kind: str, frame: pd.DataFrame, settings: Settings) -> list[str]:
    """The hover text of each material of ``frame`` (rows of the table) on the map of ``kind``."""
    hover = ("<b>" + frame["reduced_formula"] + "</b><br>" + frame["spacegroup_symbol"].astype(str) + " ("
             + frame["spacegroup_number"].astype(str) + ")<br>" + frame["id"] + "<br>" + frame["source"])
    if kind == "structure":
        from explorer import structure_map

        types = structure_map.types_of(dataset, settings)
        hover = hover + "<br>structure type " + frame["id"].map(lambda i: types.get(i) or "undetermined")
    return hover.tolist()


def hover_of(dataset: str, kind: str, points: dict, index, settings: Settings) -> list[str]:
    """Hover texts of the points at ``index`` of ``map_points(..., hover=False)`` output."""
    index = np.asarray(index, dtype=np.int64)
    if kind == "motifs":
        from explorer import motif_map

        return motif_map.hover_of(dataset, index, settings)
    columns = ["id", "reduced_formula", "spacegroup_symbol", "spacegroup_number", "source"]
    return _hover(dataset, kind, table(dataset, settings)[columns].iloc[np.asarray(points["rows"])[index]], settings)


def filter_mask(frame: pd.DataFrame, *, elements: str | None = None, sites: tuple | None = None,
                prop: str | None = None, prop_range: tuple | None = None) -> np.ndarray:
    """Rows that pass every given filter (bool per row).

    Args:
        elements: symbols the material must contain (others allowed), e.g. 'Li O', 'Li,Fe,O' or 'Li-O'.
        sites: (min, max) number of sites of the canonical cell, either end None for open.
        prop, prop_range: a numeric column and its (min, max), either end None; rows without a value fail.

    Raises:
        ValueError: naming an unknown element or property, or a range whose min exceeds its max.
    """
    keep = np.ones(len(frame), dtype=bool)
    wanted = _symbols(elements)
    if wanted:
        unknown = [p for p in wanted if p not in _ELEMENT_SYMBOLS]
        if unknown:
            raise ValueError(f"unknown element symbol {unknown[0]!r} in the element filter {elements!r}")
        need = set(wanted)
        keep &= frame["elements"].map(lambda e: need <= set(e)).to_numpy(dtype=bool)
    for column, bounds in (("nsites", sites), (prop, prop_range)):
        if not column or not bounds or all(b is None for b in bounds):
            continue
        if column not in frame or not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"no numeric property {column!r} to filter on")
        low, high = (None if b is None else float(b) for b in bounds)
        if low is not None and high is not None and low > high:
            raise ValueError(f"{column.replace('_', ' ')}: the minimum {low:g} is above the maximum {high:g}")
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        inside = np.isfinite(values)
        if low is not None:
            inside &= values >= low
        if high is not None:
            inside &= values <= high
        keep &= inside
    return keep


def filtered_points(points: dict, keep: np.ndarray) -> dict:
    """``map_points`` output restricted to the rows where ``keep`` is True (colours stay as for the whole map)."""
    index = np.flatnonzero(keep)
    colour = dict(points["colour"])
    key = "codes" if colour["kind"] == "categorical" else "values"
    colour[key] = [colour[key][k] for k in index]
    return {**points, "x": [points["x"][k] for k in index], "y": [points["y"][k] for k in index],
            "ids": [points["ids"][k] for k in index], "hover": [points["hover"][k] for k in index],
            "colour": colour}


def search_points(dataset: str, query: str, settings: Settings, kind: str = "crystals") -> dict:
    """Matches of ``query`` on the map: {"x", "y", "ids", "count", "note"}. A motif query ('Ti octahedral',
    'contains a tetrahedral Si': ``motifs.table.motif_query``) matches the materials with such a site, once the
    dataset's environments are computed (the note says so until then)."""
    from explorer.motifs import table as motif_table
    from explorer.services import maps

    if maps.check_kind(kind) == "motifs":
        from explorer import motif_map

        the_map = maps.get_map(dataset, kind, settings)
        rows, note = motif_map.search(dataset, query, settings)
        shown = rows[:_SEARCH_LIMIT]
        return {"x": the_map.xy[shown, 0].tolist(), "y": the_map.xy[shown, 1].tolist(),
                "ids": [the_map.ids[r] for r in shown], "count": int(len(rows)), "note": note}
    frame = table(dataset, settings)
    wanted, note = motif_table.motif_query(query), ""
    if wanted is None:
        positions = search(frame, query)
    else:
        environments = motif_table.load(dataset, settings)
        if environments is None:
            positions, note = np.zeros(0, dtype=int), (
                f"the motifs of {dataset} are not computed yet (the server computes them in the background; "
                "`python -m explorer build` does it at once)")
        else:
            ids = motif_table.matching_ids(environments, *wanted)
            positions = np.flatnonzero(frame["id"].isin(ids).to_numpy())[:_SEARCH_LIMIT]
            note = f"materials with a {wanted[1]} {wanted[0] or 'site'}"
    the_map = maps.get_map(dataset, kind, settings)
    rows = [r for r in (the_map.index_of(i) for i in frame["id"].to_numpy()[positions]) if r is not None]
    return {"x": the_map.xy[rows, 0].tolist(), "y": the_map.xy[rows, 1].tolist(),
            "ids": [the_map.ids[r] for r in rows], "count": int(len(positions)), "note": note}
