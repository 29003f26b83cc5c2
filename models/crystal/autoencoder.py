"""The crystal VAE: configuration, encode (crystals -> latent) and decode (latent -> crystals with validity).

    model = CrystalAutoencoder(config=ModelConfig())
    mu, logvar = model.encode_structures([structure])          # (n, model.latent_size) each
    decoded = model.decode(mu)                                 # list[DecodedCrystal]
    decoded[0].structure, decoded[0].validity

Mirror images share one latent (see ``models.crystal.encoder``); a chiral crystal decodes to one of its two
enantiomers. The latent norm bound (a buffer, saved with the weights) is set by training from the
training latents and marks decodes of far-away latents as out of range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from pymatgen.core import Lattice, Structure
from torch import nn

from models.crystal.data import (
    MAX_Z,
    Crystal,
    CrystalBatch,
    build_graph,
    collate,
    crystal_from_structure,
    primitive_structure,
)
from models.crystal.decoder import CrystalDecoder, DecoderOutput, element_fractions
from models.crystal.encoder import CrystalEncoder
from models.crystal.lattice import lattice_parameters
from models.crystal.losses import LossWeights, autoencoder_loss
from models.crystal.search import Cell, KnownCells, cells_from_output, search_decode
from models.crystal.validity import ValidityReport, check_validity

MODEL_VERSION = 4
"""Version of the model architecture and checkpoint layout (2: the decoder predicts the composition first;
3: it puts its anchor atom at the origin; 4: the latent carries the composition, ``composition_in_latent``)."""

COMPOSITION_LOGVAR = -30.0
"""Posterior log-variance of the composition part of the latent: it is exact, not sampled."""


@dataclass(frozen=True)
class ModelConfig:
    """Every architecture choice of the autoencoder; saved in checkpoints as a plain dict.

    Attributes:
        max_atoms: largest cell (atoms) the decoder produces; 40 covers 94 % of known.parquet and all
            of perov_5 / carbon_24 / mp_20.
        latent_dim: size of the learned part of the latent z.
        cutoff: neighbour radius of the encoder graph in Å (at 4.5 Å, 41 of 17.4k training crystals have
            an atom without neighbours, e.g. elemental K, Rb, Cs; such atoms still count by species).
        n_basis: Bessel radial basis functions.
        radial_hidden: width of the radial MLPs.
        lmax: highest spherical-harmonic degree on edges and in hidden features.
        mul_scalar, mul_vector, mul_tensor: channels of the 0e, 1o and l >= 2 hidden features.
        both_parities: add odd-parity scalars and pseudo-vectors/tensors to the hidden features.
        composition_skip: feed the fractional composition straight into the latent head.
        primitive_count: feed the number of atoms of the primitive cell into the latent head (inputs of
            ``encode_structures`` are then reduced to their primitive cell first).
        mul_message: channels per irrep entering the per-edge tensor product (its cost grows with them).
        n_interactions: gated convolutions (the last one outputs even scalars only).
        avg_num_neighbors: normalisation of the neighbour sum (typical edges per atom at ``cutoff``).
        readout_hidden: width of the per-atom readout and the pooled MLP.
        d_model, n_heads, decoder_layers: size of the decoder's slot transformers.
        n_refine: refinement passes after the first decoder pass.
        mlp_hidden: width of the count and lattice MLPs.
        composition_in_latent: the latent is ``latent_dim`` learned numbers followed by the crystal's element
            fractions (``MAX_Z`` numbers, Z = 1..MAX_Z), which the decoder reads as its composition instead of
            predicting one (see ``CrystalAutoencoder.latent_size``).
    """

    max_atoms: int = 40
    latent_dim: int = 128
    cutoff: float = 4.5
    n_basis: int = 8
    radial_hidden: int = 32
    lmax: int = 2
    mul_scalar: int = 32
    mul_vector: int = 8
    mul_tensor: int = 4
    both_parities: bool = False
    composition_skip: bool = True
    primitive_count: bool = False
    mul_message: int = 8
    n_interactions: int = 3
    avg_num_neighbors: float = 26.0
    readout_hidden: int = 128
    d_model: int = 128
    n_heads: int = 4
    decoder_layers: int = 3
    n_refine: int = 1
    mlp_hidden: int = 256
    composition_in_latent: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = bool if f.type in ("bool", bool) else float if f.type in ("float", float) else int
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if type(value) is not expected:
                raise ValueError(f"ModelConfig.{f.name} must be {expected.__name__}, got {value!r}")
            if expected is not bool and not (value > 0 or (f.name == "n_refine" and value == 0)):
                raise ValueError(f"ModelConfig.{f.name} must be > 0, got {value!r}")

    def to_dict(self) -> dict:
        """Plain dict of ints, floats and bools."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of ``to_dict``; ValueError names unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True, eq=False)
class DecodedCrystal:
    """One decoded crystal.

    Attributes:
        structure: the crystal (never empty, finite lattice and coordinates).
        validity: its ``ValidityReport``, or None when decoded with ``validate=False``.
        latent: (latent_size,) float64, the latent it was decoded from.
    """

    structure: Structure
    validity: ValidityReport | None
    latent: np.ndarray


@dataclass(frozen=True, eq=False)
class DecodedArrays:
    """A batch of decoded crystals as numpy arrays (the fast path, no pymatgen).

    Attributes:
        n_atoms: (n_crystals,) int64.
        numbers: (n_crystals, n_max) int64 atomic numbers, 0 beyond each crystal's n_atoms.
        frac_coords: (n_crystals, n_max, 3) float64 in [0, 1).
        lattice: (n_crystals, 3, 3) float64 Å, rows are lattice vectors.
    """

    n_atoms: np.ndarray
    numbers: np.ndarray
    frac_coords: np.ndarray
    lattice: np.ndarray
    origins: tuple[str, ...] = ()
    """Per crystal, the id of the known crystal the search took it from (``models.crystal.search.KnownCells``), or
    ''."""

    @classmethod
    def from_cells(cls, cells: Sequence[Cell]) -> DecodedArrays:
        """Padded arrays of decoded ``models.crystal.search.Cell`` s."""
        n_atoms = np.array([len(c.numbers) for c in cells], dtype=np.int64)
        n_max = int(n_atoms.max())
        numbers = np.zeros((len(cells), n_max), dtype=np.int64)
        frac = np.zeros((len(cells), n_max, 3), dtype=np.float64)
        for k, cell in enumerate(cells):
            numbers[k, : n_atoms[k]] = cell.numbers
            frac[k, : n_atoms[k]] = cell.frac
        return cls(n_atoms=n_atoms, numbers=numbers, frac_coords=frac,
                   lattice=np.stack([c.lattice for c in cells]).astype(np.float64),
                   origins=tuple(c.origin for c in cells))

    def structure(self, index: int) -> Structure:
        """Crystal ``index`` as a pymatgen Structure (``properties["decoded_from"]``: the known crystal it was
        made from, when the search took one)."""
        n = int(self.n_atoms[index])
        structure = Structure(Lattice(self.lattice[index]), self.numbers[index, :n].tolist(),
                              self.frac_coords[index, :n], validate_proximity=False)
        if index < len(self.origins) and self.origins[index]:
            structure.properties["decoded_from"] = self.origins[index]
        return structure


class CrystalAutoencoder(nn.Module):
    """E(3)-invariant encoder + one-shot decoder, trained as a VAE (see the module docstring)."""

    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = CrystalEncoder(
            latent_dim=config.latent_dim, cutoff=config.cutoff, n_basis=config.n_basis,
            radial_hidden=config.radial_hidden, lmax=config.lmax, mul_scalar=config.mul_scalar,
            mul_vector=config.mul_vector, mul_tensor=config.mul_tensor, both_parities=config.both_parities,
            mul_message=config.mul_message,
            n_interactions=config.n_interactions, avg_num_neighbors=config.avg_num_neighbors,
            readout_hidden=config.readout_hidden, composition_skip=config.composition_skip,
            primitive_count=config.primitive_count, max_atoms=config.max_atoms)
        self.decoder = CrystalDecoder(
            latent_dim=config.latent_dim, max_atoms=config.max_atoms, d_model=config.d_model,
            n_heads=config.n_heads, n_layers=config.decoder_layers, n_refine=config.n_refine,
            mlp_hidden=config.mlp_hidden, composition_in_latent=config.composition_in_latent)
        self.register_buffer("latent_norm_bound", torch.tensor(math.inf))

    @property
    def latent_size(self) -> int:
        """Length of a latent vector: ``config.latent_dim`` learned numbers, then with ``composition_in_latent``
        the ``MAX_Z`` element fractions."""
        return self.config.latent_dim + (MAX_Z if self.config.composition_in_latent else 0)

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.latent_norm_bound.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return self.latent_norm_bound.dtype

    def prepare(self, batch: CrystalBatch) -> CrystalBatch:
        """The batch on the model's device and dtype."""
        return batch.to(self.device, self.dtype)

    def encode(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (n_crystals, latent_size), of a batch (moved to the model's device/dtype); the
        composition part (``composition_in_latent``) is exact: its log-variance is ``COMPOSITION_LOGVAR``."""
        batch = self.prepare(batch)
        mu, logvar = self.encoder(batch)
        if not self.config.composition_in_latent:
            return mu, logvar
        fractions = element_fractions(batch.species, mu.dtype)[:, 1:]
        return (torch.cat([mu, fractions], dim=1),
                torch.cat([logvar, torch.full_like(fractions, COMPOSITION_LOGVAR)], dim=1))

    @torch.no_grad()
    def encode_structures(self, structures: Sequence[Structure], *, batch_size: int = 256,
                          primitive: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (n_structures, latent_size), of ordered pymatgen structures in any cell setting.

        ``primitive=True`` says the structures already are primitive cells as spglib finds them at 0.1 Å
        (the canonical cells of the data tables): the reduction is skipped, which halves the time.
        """
        if not structures:
            raise ValueError("encode_structures needs at least one structure")
        if self.config.primitive_count and not primitive:
            structures = [primitive_structure(s) if s.is_ordered else s for s in structures]
        return self.encode_crystals([crystal_from_structure(s, crystal_id=f"structure {k} ({s.formula})")
                                     for k, s in enumerate(structures)], batch_size=batch_size)

    def encode_crystals(self, crystals: Sequence[Crystal], *,
                        batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (n_crystals, latent_size), of ``models.crystal.data.Crystal`` s as they are (no cell
        reduction), their neighbour graphs built one batch at a time."""
        if not crystals:
            raise ValueError("encode_crystals needs at least one crystal")
        parts = [self.encode(collate([build_graph(c, cutoff=self.config.cutoff)
                                      for c in crystals[start : start + batch_size]]))
                 for start in range(0, len(crystals), batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def forward(self, batch: CrystalBatch, *, sample: bool = True) -> tuple[DecoderOutput, torch.Tensor, torch.Tensor]:
        """Encode, draw z ~ N(mu, exp(logvar)) (or take mu), decode with teacher forcing; (output, mu, logvar)."""
        batch = self.prepare(batch)
        mu, logvar = self.encode(batch)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        output = self.decoder(z, species=batch.species, lattice_params=lattice_parameters(batch.lattice))
        return output, mu, logvar

    def loss(self, batch: CrystalBatch, *, weights: LossWeights, sample: bool = True,
             lattice_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """(total loss, its terms as floats, mu (n_crystals, latent_size)) of one batch; ``lattice_weight``
        (n_crystals,) weighs each crystal's lattice error (see ``models.crystal.losses.autoencoder_loss``)."""
        batch = self.prepare(batch)
        output, mu, logvar = self(batch, sample=sample)
        target_norm = self.decoder.normalize_lattice(lattice_parameters(batch.lattice))
        total, report = autoencoder_loss(output=output, target_species=batch.species, target_frac=batch.frac_padded,
                                         target_lattice=batch.lattice, lattice_norm_target=target_norm,
                                         mu=mu[:, : self.config.latent_dim], logvar=logvar[:, : self.config.latent_dim],
                                         weights=weights, lattice_weight=lattice_weight)
        return total, report, mu

    @torch.no_grad()
    def decode_arrays(self, z: torch.Tensor | np.ndarray, *, search: bool = True,
                      known: KnownCells | None = None) -> DecodedArrays:
        """Decode latents (n_crystals, latent_size) in batched passes to numpy arrays.

        With ``search`` (the default) the decoder's few best compositions and sublattice labellings, and the
        nearest ``known`` crystals of the chosen stoichiometry when given, are checked against z by the encoder
        (``models.crystal.search``); ``search=False`` is the plain one-pass decode.
        """
        z = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z, dtype=self.dtype, device=self.device)
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must have shape (n, {self.latent_size}), got {tuple(z.shape)}")
        cells = search_decode(self, z, known=known) if search else cells_from_output(self.decoder(z))
        return DecodedArrays.from_cells(cells)

    @torch.no_grad()
    def decode(self, z: torch.Tensor | np.ndarray, *, validate: bool = True, search: bool = True,
               known: KnownCells | None = None) -> list[DecodedCrystal]:
        """Decode latents (n_crystals, latent_size), or one latent (latent_size,), to crystals with validity
        reports (``search`` and ``known``: see ``decode_arrays``)."""
        z = torch.as_tensor(np.asarray(z) if not torch.is_tensor(z) else z, dtype=self.dtype, device=self.device)
        z = z.unsqueeze(0) if z.ndim == 1 else z
        arrays = self.decode_arrays(z, search=search, known=known)
        latents = z.to(torch.float64).cpu().numpy()
        bound = float(self.latent_norm_bound)
        decoded = []
        for k in range(len(latents)):
            structure = arrays.structure(k)
            report = None
            if validate:
                report = check_validity(structure, max_atoms=self.config.max_atoms,
                                        latent_norm=float(np.linalg.norm(latents[k])),
                                        latent_norm_bound=bound if math.isfinite(bound) else None)
            decoded.append(DecodedCrystal(structure=structure, validity=report, latent=latents[k]))
        return decoded

    @torch.no_grad()
    def set_latent_norm_bound(self, norms: torch.Tensor, *, quantile: float = 0.995) -> float:
        """Set the in-range bound to a quantile of training latent norms (n,); returns the bound."""
        bound = torch.quantile(norms.detach().to(torch.float64).cpu(), quantile).item()
        self.latent_norm_bound.fill_(bound)
        return bound
