"""What a crystal looks like with its elements forgotten: a structure-type label, and a geometric descriptor built
from the environments of its sites, so that crystals of one structure type sit together whatever their elements.

- ``structure_type(structure)`` is pymatgen's protostructure label without its element list (anonymous
  stoichiometry, Pearson symbol, space group, Wyckoff letters: ``AB_cF8_225_a_b`` for rock salt). It is what the
  structure map is measured against (``bench/structure_types.py``), and what its hover shows.
- ``descriptors(environments, table)`` gives one vector per crystal from the stored environments of its
  symmetry-distinct sites (``explorer.motifs.table``), weighted by Wyckoff multiplicity. Its groups, each scaled to
  about unit length and then weighted by ``GROUP_WEIGHTS``:

  ``symmetry``   space group (one-hot of 230) and the Wyckoff letters of the sites (their share of the atoms)
  ``stoichiometry``  the element fractions sorted from largest (ABO3 → 0.6, 0.2, 0.2): no element names
  ``coordination``   coordination numbers and motif labels (the closest ideal polyhedron), weighted by site share
  ``shape``      how ideal the polyhedra are, how spread their bond lengths, how many neighbours are of the
                 centre's own element, and how many different elements surround it

No element enters it, so NaCl, KBr and MgO (rock salt, octahedral sites) get the same vector up to distortions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.motifs.shapes import IDEAL_SHAPES

DESCRIPTOR_VERSION = 2
"""Part of the structure map's cache key: bump when the descriptor changes."""

GROUP_WEIGHTS = {"symmetry": 2.0, "stoichiometry": 1.0, "coordination": 1.0, "shape": 0.5}
MAX_CN = 16
MAX_ELEMENTS = 6
WYCKOFF_LETTERS = "abcdefghijklmnopqrstuvwxyzA"  # spglib names the 27th position of Pmmm 'A' (alpha)
MOTIFS = sorted({name for shapes in IDEAL_SHAPES.values() for name in shapes}) + ["other"]
_MOTIF_INDEX = {name: k for k, name in enumerate(MOTIFS)}
_WYCKOFF = re.compile(r"^(\d+)([a-zA-Z]*)$")


def structure_type(structure) -> str:
    """The protostructure label of ``structure`` without its elements ('AB_cF8_225_a_b'), or '' when spglib finds
    no symmetry at either tolerance. pymatgen orders the label's elements alphabetically, so the same type gets two
    labels when the elements swap places in the alphabet (ZnS and CdSe); here the (count, Wyckoff letters) of each
    element are sorted instead, which makes the label independent of the element names."""
    import warnings

    from pymatgen.analysis.prototypes import get_protostructure_label_from_spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            label = get_protostructure_label_from_spglib(structure, raise_errors=True)
        except Exception:  # noqa: BLE001 - spglib gives up on some hypothetical cells
            return ""
    return anonymous_label(label.split(":", 1)[0])


def anonymous_label(label: str) -> str:
    """'A2B_tP6_136_f_a' with its elements ordered by (count, Wyckoff letters) instead of by name."""
    parts = label.split("_")
    counts = [int(c or 1) for c in re.findall(r"[A-Z][a-z]?(\d*)", parts[0])]
    if len(parts) < 4 or len(counts) != len(parts) - 3:
        return label
    pairs = sorted(zip(counts, parts[3:], strict=True))
    formula = "".join(chr(65 + k) + (str(c) if c > 1 else "") for k, (c, _) in enumerate(pairs))
    return "_".join([formula, parts[1], parts[2], *(w for _, w in pairs)])


def multiplicity(wyckoff: str) -> int:
    """4 for '4a' (1 when the symbol carries no number)."""
    found = _WYCKOFF.match(str(wyckoff).strip())
    return max(1, int(found.group(1))) if found and found.group(1) else 1


def _site_block(sites: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(weights (s,), cn one-hot (s, MAX_CN), motif one-hot (s, len(MOTIFS)), shape features (s, 4)) of one
    crystal's distinct sites. A site's weight is its orbit's share of the atoms of the cell (the multiplicity of
    '4a' counts the sites of the cell it was found in, so only its share is the same in every cell choice)."""
    weights = np.array([multiplicity(w) for w in sites["wyckoff"]], dtype=float)
    weights /= weights.sum()
    cn = np.zeros((len(sites), MAX_CN))
    motif = np.zeros((len(sites), len(MOTIFS)))
    shape = np.zeros((len(sites), 4))
    for k, (element, n, name, csm, neighbours) in enumerate(zip(sites["element"], sites["cn"], sites["motif"],
                                                                sites["csm"], sites["neighbours"], strict=True)):
        cn[k, min(max(int(n), 1), MAX_CN) - 1] = 1.0
        motif[k, _MOTIF_INDEX.get(name, _MOTIF_INDEX["other"])] = 1.0
        shells = json.loads(neighbours) if isinstance(neighbours, str) else []
        distances = np.array([d for _, d in shells], dtype=float)
        species = [e for e, _ in shells]
        ideal = np.exp(-float(csm) / 5.0) if np.isfinite(csm) else 0.0
        spread = float(distances.max() / distances.min() - 1.0) if len(distances) and distances.min() > 0 else 0.0
        own = species.count(element) / len(species) if species else 0.0
        kinds = len(set(species)) / MAX_ELEMENTS
        shape[k] = [ideal, min(spread, 1.0), own, kinds]
    return weights, cn, motif, shape


def descriptor(sites: pd.DataFrame, spacegroup_number: int, numbers) -> dict[str, np.ndarray]:
    """The groups of one crystal's descriptor (unscaled): ``sites`` are its rows of the environments table,
    ``numbers`` the atomic numbers of its cell."""
    weights, cn, motif, shape = _site_block(sites)
    symmetry = np.zeros(230 + len(WYCKOFF_LETTERS))
    if 1 <= int(spacegroup_number) <= 230:
        symmetry[int(spacegroup_number) - 1] = 1.0
    for weight, w in zip(weights, sites["wyckoff"], strict=True):
        letter = _WYCKOFF.match(str(w).strip())
        if letter and letter.group(2) and letter.group(2)[0] in WYCKOFF_LETTERS:
            symmetry[230 + WYCKOFF_LETTERS.index(letter.group(2)[0])] += weight
    _, counts = np.unique(np.asarray(numbers), return_counts=True)
    fractions = np.sort(counts / counts.sum())[::-1][:MAX_ELEMENTS]
    stoichiometry = np.zeros(MAX_ELEMENTS)
    stoichiometry[: len(fractions)] = fractions
    coordination = np.concatenate([weights @ cn, weights @ motif])
    return {"symmetry": symmetry, "stoichiometry": stoichiometry, "coordination": coordination,
            "shape": np.concatenate([weights @ shape, [len(sites) / 16.0]])}


def descriptors(environments: pd.DataFrame, table: pd.DataFrame, *, weights: dict[str, float] | None = None,
                scales: dict[str, float] | None = None) -> tuple[list[str], np.ndarray, dict[str, float]]:
    """(ids, (n, d) float32, scales) for every material of ``table`` with stored environments, in table order.

    Each group is divided by its scale (unless given: its mean norm over these materials, so no group dominates by
    its size), then multiplied by its weight (``GROUP_WEIGHTS`` unless given; a weight of 0 leaves a group out).
    Pass the scales of a fitted map to describe new crystals the same way."""
    weights = GROUP_WEIGHTS if weights is None else weights
    by_id = dict(tuple(environments.groupby("id", sort=False)))
    ids, groups = [], {name: [] for name in GROUP_WEIGHTS}
    for record_id, group_number, numbers in zip(table["id"], table["spacegroup_number"], table["numbers"],
                                                strict=True):
        sites = by_id.get(record_id)
        if sites is None or sites.empty:
            continue
        ids.append(record_id)
        for name, values in descriptor(sites, int(group_number), numbers).items():
            groups[name].append(values)
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32), dict(scales or {})
    blocks = {name: np.asarray(rows, dtype=float) for name, rows in groups.items()}
    if scales is None:
        scales = {name: float(np.linalg.norm(block, axis=1).mean()) or 1.0 for name, block in blocks.items()}
    parts = [blocks[name] / scales[name] * weights[name] for name in GROUP_WEIGHTS if weights.get(name, 0.0) > 0]
    return ids, np.concatenate(parts, axis=1).astype(np.float32), scales


def types_path(dataset: str, settings) -> Path:
    """Where the structure types of ``dataset``'s current table are kept (beside its environments)."""
    from explorer.motifs.table import table_stem

    return settings.data_dir / "motifs" / f"{table_stem(dataset, settings)}-types.parquet"


def structure_types(dataset: str, settings, *, progress: bool = False) -> pd.Series:
    """{id: structure type} of every material of ``dataset`` (stored, or computed now: about 7 ms a crystal)."""
    from tqdm import tqdm

    from explorer.datasets.records import canonical_structure
    from explorer.services import materials
    from explorer.storage import atomic_file

    path = types_path(dataset, settings)
    if path.is_file():
        stored = pd.read_parquet(path)
        return pd.Series(stored["type"].to_numpy(), index=stored["id"].to_numpy(), name="type")
    frame = materials.table(dataset, settings)
    labels = [structure_type(canonical_structure(row))
              for _, row in tqdm(frame.iterrows(), total=len(frame), desc=f"structure types of {dataset}",
                                 unit="crystal", disable=not progress)]
    stored = pd.DataFrame({"id": frame["id"].to_numpy(), "type": labels})
    atomic_file(path, lambda tmp: stored.to_parquet(tmp, index=False))
    return pd.Series(stored["type"].to_numpy(), index=stored["id"].to_numpy(), name="type")
