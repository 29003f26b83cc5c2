"""Latent-consistent decoding: the decoder proposes a few crystals, the encoder picks the one that fits z.

The one-shot decoder (``models.crystal.decoder``) makes two kinds of discrete mistakes that no coordinate
refinement can undo:

* **the composition**: counts are rounded from fractions, so a crystal can come out as Sr O4 instead of
  Sr Ir O3, or Mo2 N O instead of Mo N O2 (since version 4 an encoded crystal's latent carries its exact
  fractions, so this remains for latents between crystals: map points and interpolation frames);
* **which element sits on which site**: in a perovskite A B X3 the decoder may put A on the
  octahedral site and B on the cube corner; the atoms are in the right places with the wrong labels.

The encoder, though, tells these apart sharply. So for each latent z the search

1. with ``max_compositions`` > 1 (not by default since session 26, ``MAX_COMPOSITIONS``), decodes the best few
   compositions the decoder itself rates highest (other roundings of its fractions, the second most likely atom
   count, one element more or less), each with its own coordinates and lattice (the decoder runs with that
   composition given);
2. when it is given known crystals (``KnownCells``: the app's known map, or a run's training crystals), offers
   the ``KNOWN_STARTS`` nearest to z of the winner's reduced stoichiometry (AB2, ABC3, ...), their elements renamed
   to the winner's, each at the volume its own cell would have with those elements (``models.crystal.volumes``:
   its own volume when the elements stay the same): a decode whose geometry is off starts again from a real crystal
   of its kind, and the encoder keeps whichever is closest to z. A material's own entry is never offered for its
   own latent, so the decode of a known material stays the model's;
3. takes the winner and swaps the species of whole sublattices: every pair of elements with the same
   number of atoms exchanges its sites (A <-> B in A B X3), which keeps the composition (when there are more than
   ``SWAP_PREFILTER``, they are ranked at scale 1 first; the winner's own distance, measured in step 2, is reused);
4. at each step, encodes the candidates with the crystal they would replace and measures |mu(candidate) - z|
   (the decoder's crystals and their relabellings at a few isotropic lattice scales, ``SCALES``, so that a lattice a
   few per cent off does not hide a right labelling; known crystals at their own volume, ``KNOWN_SCALES``);
5. returns each chosen crystal at the scale where it came closest to z, after one finer step around the best of
   ``SCALES`` (``REFINE_SCALES``). The encoder tells volumes apart better than the decoder predicts them: on the
   held-out crystals the median error of the volume per atom went from 5.6 / 5.2 / 10.1 / 7.1 / 6.8 % at the
   decoder's volume to 2.7 / 2.2 / 5.2 / 3.8 / 3.2 % at the best of ``SCALES`` (no cost: those distances are measured
   anyway) and 1.5 / 1.4 / 4.4 / 2.9 / 1.9 % after the finer step (perov_5 / carbon_24 / mp_20_subset /
   matbench_dielectric / AMCSD; ``bench/heldout.py``, whose match rates stayed the same but for one AMCSD crystal of
   286, a match at RMS 0.46 before). Under CHGNet the median |pressure| of decodes of 80 empty map points went from
   12.1 to 6.0 GPa (known materials: 0.6 GPa).

A candidate replaces the crystal of the step before only when it is at least ``ACCEPT_RATIO`` times closer to z:
the plain decode is the decoder's own best guess and small differences in distance are noise of its
coordinates. On the held-out perovskites of the default checkpoint the match rate goes from 76.9 to 88.2 %
(composition 94.4 -> 99.5 %); a ratio of 0.7 gave 88.7 %, 0.3 gave 84.1 %, and the closest candidate whatever
the margin (1.0) 85.1 %. Known crystals (step 2) are taken whenever they are closer (``KNOWN_ACCEPT_RATIO``): they are
real crystals, not the decoder's noisy guesses. With the 16,453 training crystals on offer, the held-out match
rates go from 88.2 / 59.8 / 30.0 % to 95.9 / 89.7 / 52.5 % (perov_5 / carbon_24 / mp_20_subset, session 26; the model
card also gives the nearest known crystal alone, without the decoder).

Everything runs as batched forward passes (one transformer pass of the decoder for every composition of every latent,
one encoder pass per step):
no gradient steps, no sampling chain.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.crystal.data import CrystalGraph, collate, make_crystal
from models.crystal.decoder import NUM_SPECIES, Composition, DecoderOutput, element_counts, finite_latents, slot_species
from models.crystal.lattice import matrix_from_parameters
from models.crystal.volumes import AtomicVolumes
from models.graph import GraphStore, NeighborGraph, periodic_neighbor_graph
from models.patterns import PatternIndex, count_pattern, renamed

if TYPE_CHECKING:  # models.crystal.autoencoder imports this module
    from models.crystal.autoencoder import CrystalAutoencoder

SEARCH_VERSION = 5
"""Bumped by every change of this module that can change which crystal a latent decodes to (stored results of the
search, such as the reconstruction check of a map, ``explorer.reconstruction``, are keyed by it). 1: up to session 15;
2: the sublattice swaps ranked at scale 1 first (session 16); 3: the encoder's messages summed channel-major and in
chunks of edges, and known crystals' neighbour graphs kept (session 21: latents move by float32 rounding, which can
flip a near-tie between two candidates); 4: each crystal returned at the lattice scale where it came closest to z
(session 22: the same crystals, other volumes); 5: known crystals offered at their own volume, renamed by fitted atomic
volumes, at one scale (session 26)."""

SCALES = (0.97, 1.0, 1.03)
"""Isotropic lattice scales at which each relabelling is encoded (the smallest distance counts): the atoms
stay where the decoder put them, so a lattice a few per cent off would otherwise blur the comparison."""

REFINE_SCALES = (0.985, 1.015)
"""Lattice scales, relative to the best of ``SCALES``, at which the chosen crystal is encoded once more (the closest to
z wins): on the held-out crystals the median error of the volume per atom went from 2.7 / 2.2 / 5.2 / 3.2 % (the best
of ``SCALES``) to 1.5 / 1.4 / 4.4 / 1.9 % (perov_5 / carbon_24 / mp_20_subset / AMCSD; scales 0.98, 0.99, 1.01, 1.02
gave 1.1 / 1.2 / 4.8 / 1.3 % for twice the graphs). Two graphs per latent, against about 28 in the search before."""

COMPOSITION_SCALES = (1.0,)
"""Scales for the composition candidates: each has its own decoded lattice, and compositions differ in the
latent far more than a few per cent of lattice (a grid of three scales changed no held-out result)."""

ACCEPT_RATIO = 0.5
"""A candidate replaces the crystal of the step before when its distance to z is below this fraction of that one's."""

MAX_COMPOSITIONS = 1
"""Compositions decoded per latent (the plain one included). 4 up to session 25: since version 4 the latent carries the
composition as fractions, and the encoder preferred another composition for 0 of 128 known materials' latents, 1 of 256
path frames between them and 6 of 384 empty points of the known map (session 26), and for none of the held-out crystals
(the same match rates on all five families), while the alternatives cost a fifth of a lone decode: 27.2 -> 21.5 ms
p50 without them (three quarters of the crystals the transformer places, and an encoder pass)."""

MAX_SCORE_GAP = 15.0
"""Compositions the decoder rates more than this many nats below its plain one (``composition_score``) are not
tried: the encoder could otherwise prefer a poorly decoded crystal with an element the decoder all but ruled
out (a held-out carbon allotrope came back as C7Pr, 29.6 nats below). The held-out compositions that the search
picked were within 0.6 nats of the plain one for perovskites and 12.1 for mp_20 (10 gave away one mp_20 match)."""

KNOWN_STARTS = 8
"""Known crystals offered per latent when the search has a ``KnownCells`` library (4 gave 95.9 / 86.6 / 49.4 % on
the held-out perov_5 / carbon_24 / mp_20_subset crystals, 8 gave 96.4 / 86.6 / 50.0 %)."""

KNOWN_ACCEPT_RATIO = 1.0
"""A known crystal replaces the decode when it is closer to z (the closest wins: with 0.5, as for the decoder's own
candidates, 94.4 / 84.5 / 45.0 % with 4 known crystals, against 95.9 / 86.6 / 49.4 % with 1.0)."""

KNOWN_SCALES = (1.0,)
"""Scales at which known crystals are encoded, relative to the volume of their own cell with the decode's elements
(``KnownCells.starts``). Up to session 25 known crystals were scaled to the decode's volume per atom and encoded at
``SCALES``: 96.4 / 86.6 / 50.0 / 66.0 / 82.9 % on the held-out perov_5 / carbon_24 / mp_20_subset / matbench_dielectric
/ AMCSD crystals; at their own renamed volume alone 95.9 / 89.7 / 52.5 / 64.7 / 83.9 %, for a third of the graphs (a
carbon allotrope is offered at its own density, not at the decoder's guess of it)."""

SWAP_PREFILTER = 2
"""Sublattice swaps per latent encoded at all ``SCALES`` when a crystal has more (a quaternary A B C D has six): all are
encoded at scale 1 first and only the closest two at the other scales. On the held-out sets this changed no result
(96.4 / 86.6 / 50.0 / 66.0 / 83.2 %, perov_5 / carbon_24 / mp_20_subset / matbench_dielectric / AMCSD) and saved
about a sixth of a batched decode. The same pre-filter on the known crystals as well (2 of 8 at every scale) lost
1.5 / 4.1 / 0.6 / 1.7 / 1.0 points, when their lattices were scaled to the decode's volume per atom (the best scale
differed between them)."""

SWAP_BOUND = 1.0
"""A sublattice swap of a crystal already measured at its best scale (it won against known crystals, or was offered
them) is encoded at the other ``SCALES`` only when at scale 1 it is already closer to z than that crystal: to replace
it, a swap must come ``ACCEPT_RATIO`` (0.5) times as close. Over the first 1,500 decodes of ``bench/load.py``'s
requests (scratch ``/tmp/prof/swapstat.py``, session 27), none of 1,165 such swaps came that close at any scale; the
828 that this leaves at scale 1 came no closer than 0.83 times the crystal's distance at any of ``SCALES``."""

KNOWN_GRAPHS = 1024
"""Known crystals whose neighbour graphs a ``KnownCells`` keeps, the most recently offered (27 KB each at the median,
37 MB for 1,024 after 160 decodes of the known map): the crystals near one map point are offered again for the points
around it and for every frame of a path through it."""

KNOWN_ENCODINGS = 16384
"""Encodings of known crystals (under given elements, at a given scale) a ``KnownCells`` keeps, the most recently used
(888 bytes of float32 latent each with the default checkpoint, about 20 MB a process when full, keys included): a
known crystal is offered at its own volume, so the crystals near one map point, offered again to the points and path
frames around it, need no new encoder pass. Over the first 1,100 decodes of ``bench/load.py``'s requests, one after
another in one process: 12,080 -> 11,292 encoded graphs and 17.1 -> 15.6 s of CPU, the same crystals (most repeats
are within one path, which ``latent_distances`` already encodes once); under
``bench/load.py``'s load, 27.7 -> 29.6 requests/s (one run each, session 27)."""

GRAPH_MARGIN = 1.15
"""A known crystal's graph is searched this much wider than asked, so that the same crystal offered at a slightly
smaller scale (renamed to larger elements, or at a finer step of the search) needs no new search."""

MIN_VOLUME_PER_ATOM = 1.5
"""Å^3. Denser decodes are not checked by the encoder (their neighbour graphs would hold hundreds of edges per
atom); the densest crystal of the known-materials table has 3.2 Å^3 per atom, diamond 5.7."""


@dataclass(frozen=True, eq=False)
class Cell:
    """One candidate crystal (numpy, no pymatgen).

    Attributes:
        numbers: (n,) int64 atomic numbers.
        frac: (n, 3) float64 fractional coordinates in [0, 1).
        lattice: (3, 3) float64 Å, rows are lattice vectors.
    """

    numbers: np.ndarray
    frac: np.ndarray
    lattice: np.ndarray
    origin: str = ""
    """The id of the known crystal this cell was made from (``KnownCells.starts``); empty for the decoder's own."""
    known: tuple[KnownCells, int, float] | None = None
    """For a cell made from a known crystal: (library, row, factor), its lattice is ``factor`` times that crystal's
    (the library keeps the crystal's neighbour graphs, ``KnownCells.graph``)."""
    shape: tuple[Geometry, float] | None = None
    """For a decoded cell: (geometry, factor), its lattice is ``factor`` times the geometry's, whose neighbour graph
    is searched once for every step of the search (relabellings and rescalings share it)."""


@dataclass(eq=False)
class Geometry:
    """One decoded arrangement of atoms (lattice and fractional coordinates) and its neighbour graph, searched once at
    the widest radius asked (with ``GRAPH_MARGIN``): the search encodes the same geometry in up to four steps, under
    other labels and at other scales. Used by one search, in one thread."""

    lattice: np.ndarray
    frac: np.ndarray
    _radius: float = field(default=0.0, init=False, repr=False)
    _graph: NeighborGraph | None = field(default=None, init=False, repr=False)

    def graph(self, radius: float) -> NeighborGraph:
        """Neighbour graph out to at least ``radius`` Å. Raises ``ValueError`` as ``periodic_neighbor_graph``."""
        if self._graph is None or self._radius < radius:
            self._graph, self._radius = _wide_graph(self.lattice, self.frac, radius)
        return self._graph


def _wide_graph(lattice: np.ndarray, frac: np.ndarray, radius: float) -> tuple[NeighborGraph, float]:
    """(graph out to ``radius`` x ``GRAPH_MARGIN``, or to ``radius`` when the wider search is refused, that radius)."""
    try:
        wide = radius * GRAPH_MARGIN
        return periodic_neighbor_graph(lattice=lattice, frac_coords=frac, cutoff=wide), wide
    except ValueError:  # e.g. too many candidate pairs at the wider radius
        return periodic_neighbor_graph(lattice=lattice, frac_coords=frac, cutoff=radius), radius


class Recent:
    """The ``size`` most recently used items by key, shared by threads (a copy or a pickle starts empty)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __reduce__(self):
        return Recent, (self.size,)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key):
        """The item kept for ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key, item) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass(frozen=True, eq=False)
class KnownCells:
    """Known crystals the search offers to the encoder as further candidates: ``latents`` (n, latent_dim) their
    posterior means under the model that decodes, ``cells`` their structures, ``k`` how many per latent; ``store``,
    when given, holds the neighbour graphs of all ``cells`` (``known_graph_store``), else they are searched when first
    offered and the last ``KNOWN_GRAPHS`` kept."""

    latents: np.ndarray
    cells: list[Cell]
    k: int = KNOWN_STARTS
    ids: list[str] | None = None
    store: GraphStore | None = None
    _index: PatternIndex = field(init=False, repr=False)
    _graphs: Recent = field(init=False, repr=False)
    _encodings: Recent = field(init=False, repr=False)
    _volumes: AtomicVolumes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.latents) != len(self.cells) or (self.ids is not None and len(self.ids) != len(self.cells)):
            raise ValueError(f"{len(self.latents)} latents for {len(self.cells)} crystals"
                             + ("" if self.ids is None else f" and {len(self.ids)} ids"))
        if self.store is not None and not self.store.holds([len(cell.numbers) for cell in self.cells]):
            raise ValueError(f"a graph store of {len(self.store)} crystals does not hold these {len(self.cells)}")
        patterns = [count_pattern(cell.numbers, reduced=True)[1] for cell in self.cells]
        object.__setattr__(self, "_index", PatternIndex(latents=self.latents, patterns=patterns))
        object.__setattr__(self, "_graphs", Recent(KNOWN_GRAPHS))
        object.__setattr__(self, "_encodings", Recent(KNOWN_ENCODINGS))
        volumes = [abs(np.linalg.det(cell.lattice)) for cell in self.cells]
        object.__setattr__(self, "_volumes", AtomicVolumes.fit([cell.numbers for cell in self.cells], volumes))

    def __len__(self) -> int:
        return len(self.cells)

    def graph(self, row: int, radius: float) -> NeighborGraph:
        """The neighbour graph of known crystal ``row`` (its lattice as stored) out to at least ``radius`` Å, perhaps
        further (``GRAPH_MARGIN``): from the ``store`` when it reaches that far, else searched, and the graphs of the
        ``KNOWN_GRAPHS`` crystals searched last are kept. Raises ``ValueError`` as
        ``models.graph.periodic_neighbor_graph``."""
        if self.store is not None and self.store.radius >= radius:
            stored = self.store.graph(row, self.cells[row].lattice, self.cells[row].frac)
            if stored is not None:
                return stored
        found = self._graphs.get(row)
        if found is not None and found[0] >= radius:
            return found[1]
        graph, wide = _wide_graph(self.cells[row].lattice, self.cells[row].frac, radius)
        self._graphs.put(row, (wide, graph))
        return graph

    def encoding(self, model: CrystalAutoencoder, key: tuple) -> np.ndarray | None:
        """The encoder's mean of a known crystal as ``latent_distances`` encoded it under ``model``: ``key``
        is (row, atomic numbers as bytes, factor, scale), the crystal's lattice being ``factor`` x ``scale`` times its
        own; None when it is not among the ``KNOWN_ENCODINGS`` kept. Kept per model object: like the library's
        ``latents``, they belong to one state of its weights (a model trained further needs a new library)."""
        found = self._encodings.get((id(model), *key))
        return found[1] if found is not None and found[0]() is model else None

    def keep_encoding(self, model: CrystalAutoencoder, key: tuple, mu: np.ndarray) -> None:
        self._encodings.put((id(model), *key), (weakref.ref(model), mu))

    def forget_encodings(self) -> None:
        """Drop the kept encodings (``encoding``): the next decodes encode their known crystals anew, as a benchmark
        that compares two ways of decoding the same latents needs."""
        object.__setattr__(self, "_encodings", Recent(KNOWN_ENCODINGS))

    def starts(self, z: np.ndarray, cell: Cell, k: int | None = None) -> list[Cell]:
        """Up to ``k`` (default ``self.k``) known crystals of ``cell``'s reduced stoichiometry (AB2, ABC3, ...),
        nearest to latent ``z`` first, their elements renamed to ``cell``'s (most numerous to most numerous,
        ``models.patterns``), each at the volume its own cell would have with those elements (the library's fitted
        ``models.crystal.volumes.AtomicVolumes``; its own volume when they are the same). A known crystal is never
        offered for its own latent (a distance of zero): the decode of a known material's latent is the model's, not a
        copy."""
        k = self.k if k is None else k
        if not len(cell.numbers):
            return []
        elements, pattern = count_pattern(cell.numbers, reduced=True)
        found = []
        for row in self._index.nearest(z, pattern, k):
            known = self.cells[row]
            numbers = renamed(known.numbers, elements)
            scale = self._volumes.scale(known.numbers, numbers)
            found.append(Cell(numbers=numbers, frac=known.frac, lattice=known.lattice * scale,
                              origin=self.ids[row] if self.ids is not None else f"known crystal {row}",
                              known=(self, int(row), scale)))
        return found


def known_graph_store(cells: list[Cell], cutoff: float) -> GraphStore:
    """The neighbour graphs of known ``cells`` as ``KnownCells.graph`` asks for them, for its ``store``: out to
    ``cutoff`` x ``GRAPH_MARGIN`` (a known crystal is offered at its own volume, renamed, and encoded at
    ``KNOWN_SCALES`` and the finer ``REFINE_SCALES``: renamings that shrink it by more than the margin search their
    own)."""
    return GraphStore.build([(cell.lattice, cell.frac) for cell in cells], cutoff * GRAPH_MARGIN)


def known_graph_store_fits(store: GraphStore, cells: list[Cell], cutoff: float) -> bool:
    """Whether ``store`` holds what ``known_graph_store(cells, cutoff)`` would build (a kept store made for other
    crystals, or with a smaller margin, is not)."""
    return store.radius >= cutoff * GRAPH_MARGIN and store.holds([len(cell.numbers) for cell in cells])


def composition_score(counts: np.ndarray, *, log_fractions: np.ndarray, presence_logits: np.ndarray,
                      log_count_probs: np.ndarray) -> float:
    """How much the decoder believes in a composition: log P(n) + sum_e c_e log p_e + presence log-odds.

    Args:
        counts: (NUM_SPECIES,) whole atoms per element.
        log_fractions: (NUM_SPECIES,) log of the predicted element fractions.
        presence_logits: (NUM_SPECIES,) logits of "element e is present".
        log_count_probs: (max_atoms,) log-probabilities of n = 1..max_atoms.
    """
    present = counts > 0
    n = int(counts.sum())
    presence = np.where(present, -np.logaddexp(0.0, -presence_logits), -np.logaddexp(0.0, presence_logits))
    return float(log_count_probs[n - 1] + (counts[present] * log_fractions[present]).sum() + presence[1:].sum())


def composition_candidates(output: DecoderOutput | Composition, index: int, *,
                           max_compositions: int = MAX_COMPOSITIONS) -> list[np.ndarray]:
    """The plain decode's composition first, then the decoder's next best ones (``max_compositions`` at most).
    ``output``: the decoder's output, or its first stage (``CrystalDecoder.composition``).

    Alternatives: each way of moving one atom between two present elements, the second most likely
    atom count, the most likely absent element added and the least likely present one dropped. They
    are ranked by ``composition_score``; those more than ``MAX_SCORE_GAP`` below the plain one are dropped.

    Returns:
        (NUM_SPECIES,) int64 count vectors, distinct, the plain one first.
    """
    fractions = output.composition_logits[index : index + 1].softmax(dim=-1)
    presence = output.presence_logits[index].detach().double().cpu().numpy()
    log_counts = output.count_logits[index].log_softmax(dim=-1).detach().double().cpu().numpy()
    log_fractions = np.log(fractions[0].detach().double().cpu().numpy() + 1e-12)
    species = output.species[index]
    plain = np.bincount(species[species > 0].cpu().numpy(), minlength=NUM_SPECIES)
    present = np.flatnonzero(plain)
    n = int(plain.sum())
    options = []
    for i, j in itertools.permutations(present, 2):  # one atom moves from element i to element j
        if plain[i] > 1:
            moved = plain.copy()
            moved[i] -= 1
            moved[j] += 1
            options.append(moved)
    second_n = int(np.argsort(-log_counts)[1]) + 1
    presence_scores = presence.copy()
    presence_scores[0] = -np.inf
    absent = np.setdiff1d(np.arange(1, NUM_SPECIES), present)
    added = presence_scores.copy()
    if absent.size and present.size < n:
        added[absent[np.argmax(presence[absent])]] = np.inf
    dropped = presence_scores.copy()
    if present.size > 1:
        dropped[present[np.argmin(presence[present])]] = -np.inf
    for scores, atoms in ((presence_scores, second_n), (added, n), (dropped, n)):
        counts = element_counts(fractions, torch.as_tensor(scores[None]), torch.tensor([atoms]))
        options.append(counts[0].cpu().numpy())
    kwargs = {"log_fractions": log_fractions, "presence_logits": presence, "log_count_probs": log_counts}
    floor = composition_score(plain, **kwargs) - MAX_SCORE_GAP
    scored = sorted(((composition_score(c, **kwargs), c) for c in options), key=lambda item: -item[0])
    chosen = [plain]
    for score, counts in scored:
        if len(chosen) >= max_compositions or score < floor:
            break
        if counts.sum() >= 1 and not any(np.array_equal(counts, c) for c in chosen):
            chosen.append(counts.astype(np.int64))
    return chosen


def sublattice_swaps(numbers: np.ndarray) -> list[np.ndarray]:
    """(n,) atomic numbers -> the labellings where two elements with equal atom counts trade all their sites."""
    elements, counts = np.unique(numbers, return_counts=True)
    swapped = []
    for a, b in itertools.combinations(range(len(elements)), 2):
        if counts[a] == counts[b]:
            new = numbers.copy()
            new[numbers == elements[a]] = elements[b]
            new[numbers == elements[b]] = elements[a]
            swapped.append(new)
    return swapped


def _scaled_graphs(cell: Cell, *, cutoff: float, scales: tuple[float, ...]) -> list[CrystalGraph] | None:
    """Neighbour graphs of ``cell`` with its lattice scaled by each of ``scales`` (one neighbour search at the
    largest radius, then filtered per scale); None when the cell is far denser than any crystal
    (``MIN_VOLUME_PER_ATOM``) or admits no graph (e.g. far too thin)."""
    if not abs(np.linalg.det(cell.lattice)) * min(scales) ** 3 >= MIN_VOLUME_PER_ATOM * len(cell.numbers):
        return None
    radius = cutoff / min(scales)
    try:
        if cell.known is not None:  # the known crystal's graph, stretched: the same edges, lengths times the factor
            library, row, factor = cell.known
            graph = library.graph(row, radius / factor)
            dist = graph.dist * factor
        elif cell.shape is not None:  # the decoded geometry's graph, as above
            geometry, factor = cell.shape
            graph = geometry.graph(radius / factor)
            dist = graph.dist * factor
        else:
            graph = periodic_neighbor_graph(lattice=cell.lattice, frac_coords=cell.frac, cutoff=radius)
            dist = graph.dist
    except ValueError:
        return None
    graphs = []
    for s in scales:
        crystal = make_crystal(crystal_id="candidate", lattice=cell.lattice * s, numbers=cell.numbers,
                               frac_coords=cell.frac)
        keep = dist * s <= cutoff
        graphs.append(CrystalGraph(crystal=crystal, src=graph.src[keep], dst=graph.dst[keep],
                                   image=graph.image[keep]))
    return graphs


@torch.no_grad()
def latent_distances(model: CrystalAutoencoder, z: np.ndarray, cells: list[Cell], owners: np.ndarray, *,
                     scales: tuple[float, ...] | list[tuple[float, ...]] = SCALES, batch_size: int = 512,
                     with_scales: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(n_cells,) smallest |mu(cell at scale s) - z[owner]| over ``scales``; inf for a cell that has no
    neighbour graph (or no scales). ``with_scales``: also (n_cells,) the scale s of each smallest distance (NaN where
    inf).

    Cells that share their ``frac`` and ``lattice`` arrays (relabellings of one decode) share the neighbour search, and
    the same known crystal under the same elements and scales offered to several latents (neighbouring frames of a
    path) is encoded once. A known crystal's encodings are kept by its library (``KnownCells.encoding``): offered
    again, to a later decode, it is not encoded again. (A crystal's encoding moves by up to about 1e-5 in norm with the
    batch it is encoded in, so a kept one is as good as a new one.)

    Args:
        z: (n_latents, latent_dim) the latents that were decoded.
        cells: candidate crystals.
        owners: (n_cells,) index into ``z`` of the latent each cell was decoded from.
        scales: one tuple of lattice scales for every cell, or a list with one tuple per cell.
    """
    per_cell = [scales] * len(cells) if isinstance(scales, tuple) else list(scales)
    if len(per_cell) != len(cells):
        raise ValueError(f"{len(per_cell)} tuples of scales for {len(cells)} cells")
    graphs, uses, rows, graph_scales, geometry, encoded = [], [], [], [], {}, {}
    kept, fresh = [], []  # encodings found in a library (used after the encoded graphs), graphs to keep in one
    for k, cell in enumerate(cells):
        if not per_cell[k]:
            continue
        elements = None if cell.known is None else cell.numbers.tobytes()
        same = None if cell.known is None else (id(cell.known[0]), *cell.known[1:], elements, per_cell[k])
        used = encoded.get(same)
        if used is None and cell.known is not None:
            library, row, factor = cell.known
            keys = [(row, elements, factor, s) for s in per_cell[k]]
            found = [library.encoding(model, key) for key in keys]
            if all(mu is not None for mu in found):
                used = [-1 - j for j in range(len(kept), len(kept) + len(found))]
                kept += found
            else:
                fresh.append((len(graphs), library, keys))
        if used is None:
            key = (id(cell.frac), id(cell.lattice), per_cell[k])
            if key not in geometry:
                geometry[key] = _scaled_graphs(cell, cutoff=model.config.cutoff, scales=per_cell[k])
            if geometry[key] is None:
                if cell.known is not None:
                    fresh.pop()
                continue
            used = list(range(len(graphs), len(graphs) + len(per_cell[k])))
            graphs += [replace(g, crystal=replace(g.crystal, numbers=cell.numbers)) for g in geometry[key]]
        if same is not None:
            encoded[same] = used
        uses += used  # this cell's graphs, one per scale
        rows += [k] * len(per_cell[k])
        graph_scales += per_cell[k]
    distance, at = np.full(len(cells), np.inf), np.full(len(cells), np.nan)
    if uses:
        mu32 = [model.encode(collate(graphs[start : start + batch_size]))[0].cpu().numpy()
                for start in range(0, len(graphs), batch_size)]
        mu32 = np.concatenate(mu32 + [np.stack(kept)] if kept else mu32)
        for first_graph, library, keys in fresh:
            for j, key in enumerate(keys):
                library.keep_encoding(model, key, mu32[first_graph + j].copy())
        at_uses = np.asarray(uses, dtype=np.int64)
        mu = mu32.astype(np.float64)[np.where(at_uses >= 0, at_uses, len(graphs) - 1 - at_uses)]
        rows_np = np.asarray(rows, dtype=np.int64)
        target = np.asarray(z, dtype=np.float64)[np.asarray(owners)[rows_np]]
        each = np.linalg.norm(mu - target, axis=1)
        np.minimum.at(distance, rows_np, each)
        if with_scales:  # each cell's graphs in order of its scales: the first of its smallest distance
            order = np.lexsort((each, rows_np))
            first = order[np.r_[True, rows_np[order][1:] != rows_np[order][:-1]]]
            at[rows_np[first]] = np.asarray(graph_scales, dtype=np.float64)[first]
    return (distance, at) if with_scales else distance


def cells_from_output(output: DecoderOutput) -> list[Cell]:
    """The decoded crystals of a decoder output (the last pass's coordinates) as ``Cell`` s."""
    lattice = matrix_from_parameters(output.lattice_params).double().cpu().numpy()
    frac = torch.nan_to_num(output.frac[-1]).clamp(0.0, 1.0).double().cpu().numpy()
    numbers = output.species.cpu().numpy()
    n_atoms = output.n_atoms.cpu().numpy()
    cells = []
    for k in range(len(n_atoms)):
        cell_frac = frac[k, : n_atoms[k]]
        cells.append(Cell(numbers=numbers[k, : n_atoms[k]], frac=cell_frac, lattice=lattice[k],
                          shape=(Geometry(lattice=lattice[k], frac=cell_frac), 1.0)))
    return cells


def _pick(model: CrystalAutoencoder, z: np.ndarray, plain: list[Cell], candidates: list[list[Cell]], *,
          accept_ratio: float, scales: tuple[float, ...], candidate_scales: tuple[float, ...] | None = None,
          plain_distance: np.ndarray | None = None,
          plain_scales: tuple[float, ...] | None = None, plain_scale: np.ndarray | None = None,
          prefilter: int | None = None, bound: float | None = None, refine: tuple[float, ...] = (),
          refine_rows: np.ndarray | None = None) -> tuple[list[Cell], np.ndarray, np.ndarray]:
    """Per latent, the plain cell or its candidate closest to z when that one is at least ``accept_ratio``
    times closer than the plain cell (latents without candidates are not encoded).

    Args:
        scales: the lattice scales at which the plain cells are measured.
        candidate_scales: the lattice scales at which the candidates are measured (default: ``scales``).
        plain_distance: (n,) the plain cells' distances already measured at ``plain_scales`` (NaN where not): those
            cells are encoded only at the other ``scales``.
        plain_scales: some of ``scales`` (default: all of them).
        plain_scale: (n,) the lattice scale at which each ``plain_distance`` was measured (default 1).
        bound: with ``prefilter``, the candidates of a latent whose plain cell has a finite ``plain_distance`` are all
            first encoded at scale 1, and only those closer to z there than ``bound`` times that distance (at most
            ``prefilter`` of them) at the other ``candidate_scales`` (``SWAP_BOUND``).
        prefilter: when set, a latent's candidates are first encoded at scale 1 alone and only the ``prefilter``
            closest are encoded at the other ``candidate_scales`` (``SWAP_PREFILTER``).
        refine: scales, relative to ``plain_scale``, at which the plain cells of ``refine_rows`` are also encoded in
            the same pass (``REFINE_SCALES``); where such a cell is kept and comes closer to z there, its distance and
            scale are those. The choice is made without them.
        refine_rows: (n,) bool, the latents whose plain cell takes that finer step; each must have a finite
            ``plain_distance`` measured at all ``scales`` (``plain_scales`` None). Required with ``refine``.

    Returns:
        The chosen cells, their distances to z at ``scales`` (NaN for latents that had no candidates and no
        ``plain_distance`` at all ``scales``) and the lattice scale of each distance (``plain_scale``, or 1, where the
        plain cell was kept and not measured).
    """
    todo = [k for k in range(len(plain)) if candidates[k]]
    measured = np.full(len(plain), np.nan) if plain_distance is None else np.asarray(plain_distance, dtype=float).copy()
    at = np.ones(len(plain)) if plain_scale is None else np.asarray(plain_scale, dtype=float).copy()
    if plain_scales is not None and not set(plain_scales) <= set(scales):
        raise ValueError(f"plain_scales {plain_scales} are not among the scales {scales}")
    unmeasured = () if plain_scales is None else tuple(s for s in scales if s not in plain_scales)
    kept = {k: list(candidates[k]) for k in todo}
    first = {k: np.full(len(candidates[k]), np.inf) for k in todo}  # distances already measured at scale 1
    ranked: list[int] = []
    candidate_scales = scales if candidate_scales is None else candidate_scales
    if prefilter is not None and 1.0 in candidate_scales:
        bounded = {k for k in todo if bound is not None and np.isfinite(measured[k])}
        ranked = [k for k in todo if len(candidates[k]) > prefilter or k in bounded]
        cells = [c for k in ranked for c in candidates[k]]
        owners = np.array([k for k in ranked for _ in candidates[k]], dtype=np.int64)
        distance = latent_distances(model, z, cells, owners, scales=(1.0,)) if cells else np.zeros(0)
        start = 0
        for k in ranked:
            d = distance[start : start + len(candidates[k])]
            start += len(d)
            best = np.argsort(d, kind="stable")[:prefilter]
            if k in bounded:
                best = best[d[best] < bound * measured[k]]
            kept[k], first[k] = [candidates[k][i] for i in best], d[best]
    prefiltered = set(ranked)
    rest = tuple(s for s in candidate_scales if s != 1.0)
    cells, owners, per_cell = [], [], []
    for k in todo:
        if np.isnan(measured[k]) or unmeasured:
            cells.append(plain[k])
            owners.append(k)
            per_cell.append(scales if np.isnan(measured[k]) else unmeasured)
        cells += kept[k]
        owners += [k] * len(kept[k])
        per_cell += [rest if k in prefiltered else candidate_scales] * len(kept[k])
    refined = [] if not refine else [int(k) for k in np.flatnonzero(np.asarray(refine_rows, dtype=bool))]
    if refine and (refine_rows is None or len(refine_rows) != len(plain) or unmeasured
                   or not np.isfinite(measured[refined]).all()):
        raise ValueError("refine needs refine_rows, one per latent, whose plain cells have a finite plain_distance at "
                         "all scales")
    for k in refined:
        cells.append(plain[k])
        owners.append(k)
        per_cell.append(tuple(at[k] * r for r in refine))
    distance, scale = (latent_distances(model, z, cells, np.array(owners, dtype=np.int64), scales=per_cell,
                                        with_scales=True) if cells else (np.zeros(0), np.zeros(0)))
    chosen, start = list(plain), 0
    for k in todo:
        if np.isnan(measured[k]) or unmeasured:
            if np.isnan(measured[k]) or distance[start] < measured[k]:
                measured[k], at[k] = distance[start], scale[start]
            start += 1
        new = distance[start : start + len(kept[k])]
        d = np.minimum(new, first[k])
        s = np.where(first[k] < new, 1.0, scale[start : start + len(kept[k])])  # first[k]: measured at scale 1
        start += len(kept[k])
        if not len(d):  # every candidate was left out at scale 1 (``bound``)
            continue
        best = int(np.argmin(d))
        if d[best] < accept_ratio * measured[k]:
            chosen[k], measured[k], at[k] = kept[k][best], d[best], s[best]
    for k in refined:
        if chosen[k] is plain[k] and distance[start] < measured[k]:
            measured[k], at[k] = distance[start], scale[start]
        start += 1
    if unmeasured:  # latents without candidates were measured at plain_scales only
        measured[[k for k in range(len(plain)) if not candidates[k]]] = np.nan
    return chosen, measured, at


@torch.no_grad()
def search_decode(model: CrystalAutoencoder, z: torch.Tensor, *, max_compositions: int = MAX_COMPOSITIONS,
                  accept_ratio: float = ACCEPT_RATIO, known: KnownCells | None = None,
                  known_accept_ratio: float = KNOWN_ACCEPT_RATIO,
                  swap_prefilter: int | None = SWAP_PREFILTER) -> list[Cell]:
    """Decode latents (n, latent_dim) with the composition and sublattice search of the module docstring;
    one ``Cell`` per latent (non-finite latents are made finite as the decoder does, see ``finite_latents``).
    ``known``: after the compositions, the nearest known crystals of the chosen stoichiometry are candidates too
    (``KnownCells.starts``). ``swap_prefilter``: ``SWAP_PREFILTER`` (None: every swap at every scale)."""
    z = finite_latents(z)
    decoder = model.decoder
    z_np = z.double().cpu().numpy()
    # 1. compositions: the decoder's first stage picks the alternatives, then one pass of its transformer places the
    # atoms of the plain composition and of every alternative of every latent
    decided = decoder.composition(z)
    alternatives = [composition_candidates(decided, k, max_compositions=max_compositions)[1:] if max_compositions > 1
                    else [] for k in range(len(z))]
    owners = [k for k, options in enumerate(alternatives) for _ in options]
    if owners:
        counts = torch.as_tensor(np.stack([c for options in alternatives for c in options]), device=z.device)
        species = slot_species(counts, int(counts.sum(dim=1).max()))
        decided = Composition.concat([decided, decoder.composition(z[owners], species=species)])
    cells = cells_from_output(decoder.place(decided))
    plain = cells[: len(z)]
    by_latent: list[list[Cell]] = [[] for _ in plain]
    for k, cell in zip(owners, cells[len(z) :], strict=True):
        by_latent[k].append(cell)
    chosen, composed, at = _pick(model, z_np, plain, by_latent, accept_ratio=accept_ratio, scales=COMPOSITION_SCALES)
    distance = None
    if known is not None and known.k > 0:
        # 2. known crystals (at KNOWN_SCALES), and the chosen crystals at SCALES in the same pass; their distances at
        # COMPOSITION_SCALES, measured in step 1, are not measured again
        offered = [known.starts(z_np[k], cell) for k, cell in enumerate(chosen)]
        reuse = set(COMPOSITION_SCALES) <= set(SCALES)
        chosen, distance, at = _pick(model, z_np, chosen, offered, accept_ratio=known_accept_ratio, scales=SCALES,
                                     candidate_scales=KNOWN_SCALES, plain_distance=composed if reuse else None,
                                     plain_scales=COMPOSITION_SCALES if reuse else None, plain_scale=at)
    # 3. sublattice swaps of the chosen crystals (same geometry: their graphs are shared); the chosen crystals'
    # distances, measured in step 2 (at SCALES, a known crystal's at KNOWN_SCALES), are not measured again, and those
    # crystals are also encoded at a finer step around their best scale (REFINE_SCALES)
    swaps = [[replace(cell, numbers=numbers) for numbers in sublattice_swaps(cell.numbers)] for cell in chosen]
    refine_rows = np.zeros(len(chosen), dtype=bool) if distance is None else np.isfinite(distance)
    before = chosen
    chosen, distance, at = _pick(model, z_np, chosen, swaps, accept_ratio=accept_ratio, scales=SCALES,
                                 plain_distance=distance, plain_scale=None if distance is None else at,
                                 prefilter=swap_prefilter, bound=None if swap_prefilter is None else SWAP_BOUND,
                                 refine=REFINE_SCALES, refine_rows=refine_rows)
    refined = refine_rows & np.array([new is old for new, old in zip(chosen, before, strict=True)], dtype=bool)
    # 4. each crystal at the lattice scale where it came closest to z; crystals whose best scale was first known in
    # step 3 (no known crystals were offered, or a swap won), or never (no other candidate), take the finer step in a
    # pass of their own
    chosen = [cell if s == 1.0 or not np.isfinite(s) else rescaled(cell, float(s)) for cell, s in zip(chosen, at,
                                                                                                       strict=True)]
    return _refine_scale(model, z_np, chosen, distance, done=refined, scales=REFINE_SCALES)


def _refine_scale(model: CrystalAutoencoder, z: np.ndarray, cells: list[Cell], distance: np.ndarray, *,
                  done: np.ndarray, scales: tuple[float, ...]) -> list[Cell]:
    """Each cell that is not ``done`` at the scale, relative to its lattice, where it comes closest to z: its own
    lattice (at ``distance``) or one of ``scales``; a cell never measured (``distance`` NaN: a decode that had no
    other candidate) is encoded at its lattice, ``SCALES`` and ``scales``. ``scales=()`` keeps every cell."""
    todo = np.flatnonzero(~np.asarray(done, dtype=bool)) if scales else np.zeros(0, dtype=np.int64)
    if not len(todo):
        return cells
    grid = tuple(sorted({1.0, *SCALES, *scales}))
    per_cell = [scales if np.isfinite(distance[k]) else grid for k in todo]
    closer, at = latent_distances(model, z, [cells[k] for k in todo], todo, scales=per_cell, with_scales=True)
    refined = list(cells)
    for j, k in enumerate(todo):
        if np.isfinite(closer[j]) and at[j] != 1.0 and (np.isnan(distance[k]) or closer[j] < distance[k]):
            refined[k] = rescaled(cells[k], float(at[j]))
    return refined


def rescaled(cell: Cell, scale: float) -> Cell:
    """``cell`` with its lattice times ``scale`` (isotropic; the atoms keep their fractional coordinates)."""
    known = None if cell.known is None else (*cell.known[:2], cell.known[2] * scale)
    shape = None if cell.shape is None else (cell.shape[0], cell.shape[1] * scale)
    return replace(cell, lattice=cell.lattice * scale, known=known, shape=shape)
