"""Views of local environments, the points of the motif map: a known environment (with the crystals that hold
it), a decode of empty space, and the frames of an interpolation between two environments.

An environment view is a view (``services.views``) of kind "environment" whose structure is the environment on
its own (``motifs.environments.cluster``: the centre is site 0, in the middle of an empty box), whose latent is
the motif latent, and which adds::

    "environment": {"source": "known" | "hypothetical" | "frame", "element", "cn", "motif", "csm",
                    "measures": {shape: CShM}, "neighbours": [[element, distance Å], ...],
                    "crystals": [[id, formula], ...], "count": crystals holding it}

A frame also has "index", "t" and "n_atoms" as a crystal path's frames do.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from explorer import motif_map
from explorer.datasets.formats import structure_as_dict
from explorer.motifs.environments import cluster
from explorer.services import materials, motif_model
from explorer.settings import Settings

SOURCES = ("known", "hypothetical", "frame")


def _details(entry: dict) -> list[list[str]]:
    shell = ", ".join(f"{e} {d:.2f} Å" for e, d in entry["neighbours"][:16])
    rows = [["centre", entry["element"]], ["coordination", f"CN {entry['cn']}"],
            ["motif", entry["motif"] + ("" if entry["csm"] is None else f" (CShM {entry['csm']:.2f}, 0 = ideal)")]]
    return [*rows, ["neighbours", shell or "none"]]


def _view(*, record_id: str, title: str, dataset: str, element: str, neighbours: list[str], vectors: np.ndarray,
          latent: np.ndarray, xy, entry: dict, note: str, start: float, validity: dict | None = None) -> dict:
    vectors = np.asarray(vectors, dtype=float).reshape(-1, 3)
    entry = {**entry, "element": element, "cn": len(neighbours),
             "neighbours": [[e, round(float(np.linalg.norm(v)), 3)] for e, v in zip(neighbours, vectors, strict=True)]}
    return {"kind": "environment", "id": record_id, "title": title, "formula": f"{element} {entry['motif']}",
            "dataset": dataset, "structure": structure_as_dict(cluster(element, neighbours, vectors)),
            "latent": np.asarray(latent, dtype=float).tolist(), "xy": [float(v) for v in xy] if xy is not None
            else None, "map": "motifs", "validity": validity, "details": _details(entry), "nearest": [],
            "environment": entry, "note": note, "ms": round(1000 * (time.perf_counter() - start), 1)}


def environment_view(dataset: str, env_id: object, settings: Settings) -> dict:
    """The view of environment ``env_id`` of the motif map, with the crystals that hold it."""
    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    row, record = motif_map.environment(dataset, env_id, settings)
    the_map = motif_map.get_motif_map(dataset, settings)
    shell = json.loads(record["neighbours"])
    vectors = np.asarray(json.loads(record["vectors"]), dtype=float).reshape(-1, 3)
    _, _, measures = motif_model.shape_of(vectors)
    crystals = [[i, materials.row_of(dataset, i, settings)["reduced_formula"]] for i in json.loads(record["crystals"])]
    count = int(record["count"])
    csm = None if record["csm"] is None or not math.isfinite(record["csm"]) else float(record["csm"])
    entry = {"source": "known", "motif": str(record["motif"]), "csm": csm, "measures": measures,
             "crystals": crystals, "count": count}
    others = f" (and {count - 1} other crystal{'s' if count > 2 else ''})" if count > 1 else ""
    return _view(record_id=the_map.ids[row], title=f"{motif_map.label(record)} in {record['formula']}{others}",
                 dataset=dataset, element=str(record["element"]), neighbours=[e for e, _ in shell], vectors=vectors,
                 latent=the_map.latents[row], xy=the_map.xy[row], entry=entry, start=start,
                 note=f"site {int(record['site'])} of {record['formula']} ({record['id']}); neighbours by CrystalNN")


def _decoded_entry(decoded: motif_model.DecodedEnvironment, source: str) -> dict:
    return {"source": source, "motif": decoded.motif, "csm": None if decoded.csm is None else float(decoded.csm),
            "measures": decoded.measures, "crystals": [], "count": 0}


def hypothetical_environment_view(dataset: str, x: object, y: object, settings: Settings) -> dict:
    """Decode the motif latent at map point (x, y) of the motif map: a hypothetical environment."""
    from explorer.services.views import map_point

    start = time.perf_counter()
    dataset = materials.check_dataset(dataset, settings)
    x, y = map_point(x, y)
    inverse = motif_map.get_motif_map(dataset, settings).latent_at(x, y)
    decoded = motif_model.decode_many(inverse.latent[None], settings, library=motif_map.library(dataset, settings))[0]
    ratio = inverse.distance_2d / inverse.typical_spacing if inverse.typical_spacing > 0 else float("inf")
    note = (f"hypothetical environment: decoded at map point ({x:.2f}, {y:.2f}), {inverse.distance_2d:.2f} map "
            f"units from the nearest known environment ({ratio:.1f}× the typical spacing). Inverse used: "
            f"{inverse.method.replace('latents', 'motif latents')}.")
    return _view(record_id=f"motif@{x:.3f},{y:.3f}", title=f"{decoded.label} (hypothetical environment)",
                 dataset=dataset, element=decoded.element, neighbours=decoded.neighbours, vectors=decoded.vectors,
                 latent=decoded.latent, xy=(x, y), entry=_decoded_entry(decoded, "hypothetical"), note=note,
                 start=start, validity=decoded.validity())


def interpolation(a: dict, b: dict, dataset: str, settings: Settings, *, steps: int, method: str) -> dict:
    """Decode a path between two checked environment views, as ``views.interpolation`` does for crystals: each
    frame with its motif and shape measures; ``ends`` says whether the first and last frames are A and B
    (``motif_model.reproduces``)."""
    from explorer.services.model import path_latents

    start = time.perf_counter()
    the_map = motif_map.get_motif_map(dataset, settings)
    z = path_latents(np.asarray(a["latent"]), np.asarray(b["latent"]), steps=steps, method=method,
                     linear_tail=motif_model.shell_size(settings))
    decoded = motif_model.decode_many(z, settings, library=motif_map.library(dataset, settings))
    xy = the_map.place(z)
    t = np.linspace(0.0, 1.0, len(z))
    frames = []
    for k, (frame, point) in enumerate(zip(decoded, xy, strict=True)):
        view = _view(record_id=f"motif-frame-{k:02d}", title=f"{decoded[k].label} (path frame {k} of {len(z) - 1})",
                     dataset=dataset, element=frame.element, neighbours=frame.neighbours, vectors=frame.vectors,
                     latent=frame.latent, xy=point, entry=_decoded_entry(frame, "frame"), start=start,
                     validity=frame.validity(),
                     note=f"hypothetical: frame {k} of a {method} path from {a['title']} to {b['title']}")
        frames.append({**view, "index": k, "t": float(t[k]), "n_atoms": frame.cn + 1, "ms": 0.0})

    def is_end(frame: motif_model.DecodedEnvironment, view: dict) -> bool:
        symbols, positions = points_of(view)
        return motif_model.reproduces(frame, symbols[0], symbols[1:], positions[1:])

    return {"frames": frames, "xy": xy.tolist(), "map": "motifs", "method": method, "a": a["title"],
            "b": b["title"], "ends": {"a": is_end(decoded[0], a), "b": is_end(decoded[-1], b)},
            "environments": True, "ms": round(1000 * (time.perf_counter() - start), 1)}


def check_environment(view: dict, label: str, settings: Settings) -> None:
    """The environment-specific parts of a view from the browser (its latent's size, its map, its entry);
    ValueError saying what is wrong."""
    latent = view.get("latent")
    size = motif_model.latent_dim(settings)
    if not isinstance(latent, list) or len(latent) != size or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in latent):
        raise ValueError(f"{label} ({view['title'][:60]}): its motif latent must be {size} finite numbers")
    entry = view.get("environment")
    if view.get("map") != "motifs" or not isinstance(entry, dict) or entry.get("source") not in SOURCES:
        raise ValueError(f"{label} ({view['title'][:60]}): not an environment of the motif map")
    crystals = entry.get("crystals")
    if not isinstance(crystals, list) or not all(isinstance(c, list) and len(c) == 2 and all(
            isinstance(v, str) for v in c) for c in crystals):
        raise ValueError(f"{label} ({view['title'][:60]}): its list of crystals is malformed")
    measures = entry.get("measures")
    if not isinstance(measures, dict) or not all(isinstance(v, int | float) for v in measures.values()):
        raise ValueError(f"{label} ({view['title'][:60]}): its shape measures are malformed")


def points_of(view: dict) -> tuple[list[str], np.ndarray]:
    """(symbols, (n, 3) positions Å) of an environment view, the centre first at the origin."""
    from explorer.services.views import structure_of

    structure = structure_of(view)
    return [site.specie.symbol for site in structure], structure.cart_coords - structure[0].coords


def is_environment(view: object) -> bool:
    return isinstance(view, dict) and view.get("kind") == "environment"


def require_crystal(view: object, action: str) -> None:
    """ValueError when ``view`` is an environment: ``action`` (e.g. 'relaxation') applies to crystals only."""
    if is_environment(view):
        raise ValueError(f"{str(view.get('title'))[:80]} is a local environment (a centre and its neighbours), not "
                         f"a crystal: {action} applies to crystals; open one of the crystals that hold it")
