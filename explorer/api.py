"""The explorer from Python: the autoencoder, the maps and the physics of the app in a notebook or a script.

    from explorer.api import Explorer
    ex = Explorer(dataset="known")              # settings as in the app (EXPLORER_* variables); loads lazily
    z = ex.encode(structure)                    # Structure, ASE Atoms, a file path or an id of the table -> (d,)
    s = ex.decode(z)                            # -> Structure, its .properties: validity, latent, checkpoint
    s = ex.decode_at(x, y)                      # a map point -> hypothetical structure
    frames = ex.interpolate("amcsd:0000008", other, steps=10, method="slerp")
    ex.nearest(structure, k=5)                  # DataFrame: id, formula, distance (in latent space)
    ex.place(structure)                         # (x, y) on the map
    ex.map(color_by="density")                  # plotly Figure of the map
    ex.show(structure, supercell=(2, 2, 2))     # py3Dmol view (the project's 3Dmol.js embedded: no network)
    ex.motifs(structure)                        # DataFrame: one row per symmetry-distinct site
    ex.map(kind="motifs", color_by="motif")     # the motif map: every distinct local environment
    ex.environment("env:12")                    # an environment of the motif map -> Molecule (centre first)
    ex.decode_at(x, y, kind="motifs")           # a hypothetical environment -> Molecule
    ex.interpolate_motifs("env:12", "env:40", steps=8)   # environments along a path -> [Molecule]
    ex.assess(structure, relax=True)            # energy, energy above the known hull, novelty (CHGNet)
    ex.generate(1000, out="run1", workers=2)    # hypotheticals sampled, decoded, checked, on Dask -> (summary, rows)
    ex.link("amcsd:0000008")                    # the app's address that shows it (a=, b=, frame=: a path's frame)
    ex.table                                    # the dataset as a pandas DataFrame

Every method takes the same inputs and raises ``ValueError`` with the app's messages (an unknown id, a file that
cannot be read, a latent of the wrong size). ``kind="structure"`` picks the structure map (crystals placed by
geometry alone) where a map is meant, ``kind="motifs"`` the motif map (local environments: pymatgen Molecules with
the centre first at the origin, their motif, shape measures and motif latent in ``.properties``). Decoded
structures carry in ``.properties`` what made them: the checkpoint's sha256, the latent and, for a map point, the
map and its coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from explorer.settings import Settings


def _is_id(item: Any) -> bool:
    """A string that names no existing file is read as an id of the table."""
    return isinstance(item, str) and not Path(item).exists()


def _require_potential(settings: Settings) -> None:
    from explorer.services import physics

    problem = physics.potential_problem(settings)
    if problem:
        raise ValueError(problem)


class Explorer:
    """One dataset's map and the model behind it (``settings``: the app's; default from EXPLORER_* variables)."""

    def __init__(self, dataset: str = "known", *, settings: Settings | None = None) -> None:
        from explorer.services import materials

        self.settings = settings or Settings()
        self.dataset = materials.check_dataset(dataset, self.settings)

    def __repr__(self) -> str:
        return f"Explorer(dataset={self.dataset!r}, checkpoint={str(self.settings.checkpoint)!r})"

    # ------------------------------------------------------------------------------------------ inputs
    @property
    def table(self) -> pd.DataFrame:
        """The dataset's materials (a copy: change it freely)."""
        from explorer.services import materials

        return materials.table(self.dataset, self.settings).copy()

    def structure(self, item: Any) -> Structure:
        """``item`` as a pymatgen Structure: a Structure, ASE Atoms, a structure file (CIF, POSCAR, extended XYZ,
        pymatgen JSON: its first structure, read with the app's checks) or the id of a material of the table."""
        if isinstance(item, Structure):
            return item
        from ase import Atoms

        if isinstance(item, Atoms):
            from pymatgen.io.ase import AseAtomsAdaptor

            return AseAtomsAdaptor.get_structure(item)
        if _is_id(item):
            from explorer.datasets.records import canonical_structure
            from explorer.services import materials

            return canonical_structure(materials.row_of(self.dataset, item, self.settings))
        if isinstance(item, str | Path):
            return self._read(Path(item))
        raise ValueError(f"expected a pymatgen Structure, ASE Atoms, a file path or an id of {self.dataset!r}, "
                         f"got {type(item).__name__}")

    def _read(self, path: Path) -> Structure:
        from explorer.datasets.catalog import read_structures
        from explorer.datasets.rejections import Rejected

        if not path.is_file():
            raise ValueError(f"{path}: not a file")
        found = read_structures(path, settings=self.settings)
        if not found:
            raise ValueError(f"{path}: no structure in it")
        key, structure = found[0]
        if isinstance(structure, Rejected):
            raise ValueError(structure.sentence)
        return structure

    def _latent_of(self, item: Any) -> np.ndarray:
        """The stored latent of a table id (as the map has it), else the encoding of the structure."""
        from explorer import atlas

        if _is_id(item):
            the_map = atlas.get_atlas(self.dataset, self.settings)
            k = the_map.index_of(item)
            if k is not None:
                return the_map.latents[k].copy()
        return self.encode(item)

    # ------------------------------------------------------------------------------------------ the model
    def encode(self, item: Any) -> np.ndarray:
        """(d,) float32 latent of a structure (any input of ``structure``)."""
        from explorer.services import model

        return model.encode([self.structure(item)], self.settings)[0]

    def decode(self, latent: Any) -> Structure:
        """The structure the autoencoder decodes from ``latent`` (d numbers); ``.properties`` holds "validity",
        "latent" and "checkpoint_sha256"."""
        from explorer.services import model

        decoded = model.decode(np.asarray(latent, dtype=np.float32), self.settings)
        return self._stamped(decoded.structure, decoded.latent, validity=decoded.validity)

    def _stamped(self, structure: Structure, latent: np.ndarray, **extra: Any) -> Structure:
        from explorer.services import model

        structure.properties = {**structure.properties, **extra, "latent": np.asarray(latent).tolist(),
                                "checkpoint_sha256": model.checkpoint_sha256(self.settings)}
        return structure

    def decode_at(self, x: float, y: float, *, kind: str = "crystals"):
        """The hypothetical structure at point (x, y) of the map (as a click on empty space decodes it); on the
        motif map, a hypothetical environment (a Molecule)."""
        from explorer.services import maps, model
        from explorer.services.views import map_point

        if maps.check_kind(kind) == "motifs":
            from explorer.services.motif_views import hypothetical_environment_view

            return self._molecule(hypothetical_environment_view(self.dataset, x, y, self.settings))
        x, y = map_point(x, y)
        inverse = maps.get_map(self.dataset, maps.check_kind(kind), self.settings).latent_at(x, y)
        decoded = model.decode(inverse.latent, self.settings)
        return self._stamped(decoded.structure, decoded.latent, validity=decoded.validity, map=kind, map_x=x,
                             map_y=y, distance_to_known=inverse.distance_2d)

    def interpolate(self, a: Any, b: Any, *, steps: int = 10, method: str = "linear") -> list[Structure]:
        """``steps`` (2-30) decoded structures from A to B (ids use their map latents), linear or "slerp";
        each frame's ``.properties`` says "frame k of n" and holds its validity and latent."""
        from explorer.services import model

        frames = model.interpolate(self._latent_of(a), self._latent_of(b), self.settings, steps=steps,
                                   method=method)
        return [self._stamped(f.structure, f.latent, validity=f.validity, frame=f.index, frames=len(frames),
                              t=f.t, method=method) for f in frames]

    # ------------------------------------------------------------------------------------------ motifs
    def _molecule(self, view: dict):
        """A Molecule of an environment view: the centre first at the origin; ``.properties`` holds its title,
        motif, CN, shape measures, validity, the crystals that hold it, its motif latent and map position."""
        from pymatgen.core import Molecule

        from explorer.services import motif_model
        from explorer.services.motif_views import points_of

        entry = view["environment"]
        molecule = Molecule(*points_of(view))
        molecule.properties = {"title": view["title"], **{k: entry[k] for k in ("element", "cn", "motif", "csm",
                                                                                  "measures", "crystals", "count")},
                               "validity": view.get("validity"), "latent": view["latent"], "map": "motifs",
                               "map_x": view["xy"][0], "map_y": view["xy"][1],
                               "motif_checkpoint_sha256": motif_model.checkpoint_sha256(self.settings)}
        return molecule

    def environment(self, env_id: str):
        """The environment ``env_id`` ('env:12', an id of the motif map: ``ex.map(kind="motifs")`` hovers them)."""
        from explorer.services.motif_views import environment_view

        return self._molecule(environment_view(self.dataset, env_id, self.settings))

    def interpolate_motifs(self, a: str, b: str, *, steps: int = 10, method: str = "linear") -> list:
        """``steps`` (2-30) environments decoded between environments ``a`` and ``b`` of the motif map, each a
        Molecule whose ``.properties`` add "frame", "t" and whether the path's ends reproduce A and B."""
        from explorer.services import views
        from explorer.services.motif_views import environment_view

        start, end = (environment_view(self.dataset, e, self.settings) for e in (a, b))
        path = views.interpolation(start, end, self.dataset, self.settings, steps=steps, method=method, kind="motifs")
        frames = []
        for frame in path["frames"]:
            molecule = self._molecule(frame)
            molecule.properties.update(frame=frame["index"], t=frame["t"], ends=path["ends"], method=method)
            frames.append(molecule)
        return frames

    def nearest(self, item: Any, k: int = 5) -> pd.DataFrame:
        """The ``k`` known materials nearest in latent space: DataFrame of id, formula, distance."""
        from explorer import atlas
        from explorer.services import materials

        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
            raise ValueError(f"k must be a whole number from 1 to 1000, got {k!r}")
        exclude = item if _is_id(item) else None
        found = atlas.get_atlas(self.dataset, self.settings).nearest(self._latent_of(item), k=k, exclude=exclude)
        frame = materials.table(self.dataset, self.settings).set_index("id")
        return pd.DataFrame({"id": [i for i, _ in found], "formula": [frame.at[i, "reduced_formula"] for i, _ in found],
                             "distance": [d for _, d in found]})

    def place(self, item: Any, *, kind: str = "crystals") -> tuple[float, float]:
        """(x, y) of a structure on the map of ``kind`` (a table id: where it is drawn)."""
        from explorer.services import maps

        kind = maps.check_kind(kind)
        if _is_id(item):
            the_map = maps.get_map(self.dataset, kind, self.settings)
            k = the_map.index_of(item)
            if k is not None:
                return float(the_map.xy[k, 0]), float(the_map.xy[k, 1])
        structure = self.structure(item)
        xy = maps.place(self.dataset, kind, [structure], self.encode(structure)[None], self.settings)[0]
        return float(xy[0]), float(xy[1])

    # ------------------------------------------------------------------------------------------ pictures
    def map(self, *, color_by: str = "source", kind: str = "crystals"):
        """The map as a plotly Figure (every material, coloured as in the app; hover for formula and id). A map of
        more than ``settings.map_markers_max`` points is its density image, as the app draws it."""
        import plotly.graph_objects as go

        from explorer.services import lod, maps, materials
        from explorer.ui import components

        kind = maps.check_kind(kind)
        if lod.is_big(maps.size(self.dataset, kind, self.settings), self.settings):
            layer = lod.layer(self.dataset, kind, color_by, self.settings)
            shown = lod.window_view(self.dataset, kind, layer, None, layer.extent, self.settings)
            points = {**layer.points, "ids": layer.ids}
            figure = go.Figure(components.map_figure(shown["points"], revision=self.dataset, kind=kind,
                                                     window=layer.extent, image=shown["image"]))
        else:
            points = materials.map_points(self.dataset, color_by, self.settings, kind)
            figure = go.Figure(components.map_figure(points, revision=self.dataset, kind=kind))
        what = "distinct environments" if kind == "motifs" else "materials"
        figure.update_layout(height=600, title=f"{self.dataset}: {len(points['ids']):,} {what} "
                                               f"({maps.KIND_LABELS[kind]} map), colour: {points['colour']['label']}")
        return figure

    def show(self, item: Any, *, supercell: tuple[int, int, int] = (1, 1, 1), style: str = "ball-and-stick",
             polyhedra: bool = False, width: int = 640, height: int = 480):
        """A py3Dmol view of the structure with its cell (``polyhedra``: the cation-centred coordination
        polyhedra, translucent in the centre's colour). The project's 3Dmol.js is embedded: it needs no network."""
        from pymatgen.vis.structure_vtk import EL_COLORS

        from explorer.motifs.environments import environments
        from explorer.motifs.environments import polyhedra as find_polyhedra
        from explorer.services.downloads import viewer_script
        from explorer.services.export import viewer

        script = viewer_script()
        structure = self.structure(item)
        shapes = []
        if polyhedra:
            shapes = find_polyhedra(structure, environments(structure, symprec=self.settings.symprec))
            for shape in shapes:
                shape["color"] = "#{:02x}{:02x}{:02x}".format(*EL_COLORS["Jmol"].get(shape["element"], (128,) * 3))
        return viewer(structure, supercell=tuple(supercell), style=style, polyhedra=shapes, width=width,
                      height=height, inline_js=script)

    # ------------------------------------------------------------------------------------------ sharing
    def _spec(self, item: Any, kind: str) -> str:
        """The link spec of a table id, an environment id ("env:12") or a map point (x, y) of the ``kind`` map; a
        ValueError names what it cannot be (an id must exist)."""
        from explorer.services import links
        from explorer.services.views import map_point

        if isinstance(item, tuple | list) and len(item) == 2:
            x, y = map_point(*item)
            return f"envpt:{x:.6g}:{y:.6g}" if kind == "motifs" else f"pt:{kind}:{x:.6g}:{y:.6g}"
        if not isinstance(item, str) or not item:
            raise ValueError(f"a link shows a table id, an environment id ('env:12') or a map point (x, y), "
                             f"got {type(item).__name__}")
        spec = item if item.startswith("env:") else f"id:{item}"
        links.view_of(spec, self.dataset, self.settings)  # raises the page's message for an unknown id
        return spec

    def link(self, show: Any = None, *, a: Any = None, b: Any = None, steps: int = 10, method: str = "linear",
             frame: int | None = None, kind: str = "crystals", base_url: str | None = None) -> str:
        """The address of the app's page that shows ``show`` (a table id, an environment id of the motif map, or a
        map point (x, y) of the ``kind`` map, which the page decodes again) with interpolation ends ``a`` and ``b``;
        with ``frame``, the page decodes the path between them (``steps``, ``method``) and opens that frame. Send it
        to a colleague whose browser reaches the app at ``base_url`` (default: this machine's ``EXPLORER_HOST`` and
        ``EXPLORER_PORT``, as ``make run`` serves it)."""
        from explorer.services import links, maps, model

        kind = maps.check_kind(kind)
        state: dict = {"dataset": self.dataset, "map": kind, "steps": steps, "method": method}
        if show is not None:
            state["show"] = self._spec(show, kind)
            if state["show"].startswith("pt:"):
                state["ck"] = model.checkpoint_sha256(self.settings)[:12]
        for end, item in (("a", a), ("b", b)):
            if item is not None:
                state[end] = self._spec(item, kind)
        if frame is not None:
            if a is None or b is None or show is not None:
                raise ValueError("a link opens a path frame between A and B: give a and b, and no show")
            state["path"], state["frame"] = "1", frame
        search = links.write(state)
        ignored = links.read(search)[1]
        if ignored:
            raise ValueError("cannot link: " + "; ".join(ignored))
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        base = base_url or f"http://{host}:{self.settings.port}/"
        return base.rstrip("/") + "/" + search

    # ------------------------------------------------------------------------------------------ analysis
    def motifs(self, item: Any) -> pd.DataFrame:
        """One row per symmetry-distinct site: site, element, wyckoff, cn, motif, score (the shape measure; 0 is
        the ideal polyhedron) and neighbours [[element, distance Å]]."""
        from explorer.motifs.environments import environments

        rows = [env.as_dict() for env in environments(self.structure(item), symprec=self.settings.symprec)]
        return pd.DataFrame(rows, columns=["site", "element", "wyckoff", "cn", "motif", "score", "neighbours"])

    def assess(self, item: Any, *, relax: bool = False) -> dict:
        """Energy per atom, energy above the hull of the dataset's known materials and novelty, by the potential
        (CHGNet); with ``relax`` the relaxed structure is assessed too (its row adds "relaxed_structure")."""
        from explorer.services import physics

        _require_potential(self.settings)
        row, relaxed = physics.assess_candidate(self.structure(item), self.dataset, self.settings, relax_it=relax)
        return {**row, **({"relaxed_structure": relaxed} if relaxed is not None else {})}

    def generate(self, n: int, *, out: str | Path, seed: int = 0, relax: bool = False, physics: bool = True,
                 search: bool = True, keep: int = 10_000, workers: int | None = None,
                 scheduler: str | None = None) -> tuple[dict, pd.DataFrame]:
        """``python -m explorer generate`` from Python: ``n`` hypotheticals of this map sampled (``seed``), decoded,
        checked, their duplicates removed and (``physics``) judged by CHGNet, in this process, on a Dask cluster of
        ``workers`` processes here, or on the cluster at ``scheduler``; written to ``out`` (run it again to go on
        with a stopped run). Returns (the summary, one row per crystal: ``out/generated.parquet``)."""
        from explorer.generate import generate
        from explorer.jobs import Where

        if physics:
            _require_potential(self.settings)
        summary = generate(self.dataset, self.settings, n=n, seed=seed, relax_it=relax, physics=physics,
                           search=search, out=Path(out), keep=keep, where=Where(workers=workers, scheduler=scheduler))
        return summary, pd.read_parquet(Path(out) / "generated.parquet")

    def relax(self, item: Any) -> Structure:
        """The structure relaxed by the potential (FIRE, cell and positions); ``.properties["relaxation"]`` holds
        the steps, energies and how far the atoms moved."""
        from explorer.services import physics

        _require_potential(self.settings)
        result = physics.relax(self.structure(item), self.settings)
        structure = result.structure
        structure.properties = {**structure.properties, "relaxation": result.summary()}
        return structure
