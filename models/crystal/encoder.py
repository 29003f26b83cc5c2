"""E(3)-invariant crystal encoder: gated e3nn tensor-product convolutions over the periodic neighbour graph.

NequIP-style message passing: species embedding -> ``n_interactions`` gated convolutions (spherical
harmonics up to ``lmax`` on the edge directions, Bessel radial basis with a learned radial MLP that
weighs each tensor-product path) -> per-atom even scalars -> mean over the atoms of a crystal -> MLP
-> (mu, logvar) of the VAE posterior.

Mirror images: the latent is built from even scalars (0e) only, so it is invariant under the full
group O(3) of rotations and reflections: a crystal and its mirror image (enantiomorph) share one
latent and decode to the same crystal (up to inversion). pymatgen's StructureMatcher also matches
mirror images, and the training loss is minimised over inversion. By default the hidden features have
natural parity only (0e, 1o, 2e); ``both_parities`` adds 0o, 1e, 2o, which changes nothing about the
invariance but enriches the features (at about twice the cost).

Mean pooling over atoms makes the latent independent of the choice of cell: a supercell has the
same local environments in the same proportions, so it gets the same latent. With ``primitive_count``
the number of atoms of the cell is added too; the cell is then always the primitive one (the tables
hold primitive cells, and ``CrystalAutoencoder.encode_structures`` reduces any input to its primitive
cell first), so the latent stays the same for every cell setting of a crystal.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from torch import nn

from models.crystal.data import MAX_Z, CrystalBatch
from models.equivariant import GatedConvolution, hidden_irreps
from models.graph import edge_vectors
from models.kernels import through_kernel

LOGVAR_INIT = -6.0
"""Initial log-variance of the posterior."""


def _edge_features(encoder: CrystalEncoder, lattice: torch.Tensor, frac: torch.Tensor, src: torch.Tensor,
                   dst: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``CrystalEncoder.edge_features`` of a batch's arrays (``lattice``: (n_atoms, 3, 3), each atom's crystal's: no
    size of a kernel's inputs is the number of crystals, which is 1 for a lone crystal, a size a kernel is built for
    on its own)."""
    pos = torch.einsum("ni,nij->nj", frac, lattice)
    vec = edge_vectors(pos=pos, lattice=lattice[src], src=src, dst=dst, image=image)
    dist = vec.norm(dim=-1)
    radial = soft_one_hot_linspace(dist, 0.0, encoder.cutoff, encoder.n_basis, basis="bessel", cutoff=True)
    return encoder.sh(vec), radial * math.sqrt(encoder.n_basis)


class CrystalEncoder(nn.Module):
    """Periodic crystal -> (mu, logvar) of an O(3)-invariant latent."""

    def __init__(self, *, latent_dim: int, cutoff: float, n_basis: int, radial_hidden: int, lmax: int,
                 mul_scalar: int, mul_vector: int, mul_tensor: int, both_parities: bool, mul_message: int,
                 n_interactions: int, avg_num_neighbors: float, readout_hidden: int,
                 composition_skip: bool = True, primitive_count: bool = False, max_atoms: int = 40) -> None:
        super().__init__()
        if lmax < 1 or n_interactions < 1 or cutoff <= 0:
            raise ValueError(f"need lmax >= 1, n_interactions >= 1, cutoff > 0; got lmax={lmax!r}, "
                             f"n_interactions={n_interactions!r}, cutoff={cutoff!r}")
        self.cutoff = float(cutoff)
        self.n_basis = int(n_basis)
        self.embedding = nn.Embedding(MAX_Z + 1, mul_scalar)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        hidden = hidden_irreps(mul_scalar=mul_scalar, mul_vector=mul_vector, mul_tensor=mul_tensor, lmax=lmax,
                               both_parities=both_parities)
        irreps = o3.Irreps(f"{mul_scalar}x0e")
        layers = []
        for k in range(n_interactions):
            target = hidden if k < n_interactions - 1 else o3.Irreps(f"{mul_scalar}x0e")
            layers.append(GatedConvolution(irreps_in=irreps, irreps_out=target, irreps_sh=self.irreps_sh,
                                           n_basis=n_basis, radial_hidden=radial_hidden,
                                           avg_num_neighbors=avg_num_neighbors, mul_message=mul_message))
            irreps = layers[-1].irreps_out
        self.layers = nn.ModuleList(layers)
        self.readout = nn.Sequential(nn.Linear(mul_scalar, readout_hidden), nn.SiLU(),
                                     nn.Linear(readout_hidden, readout_hidden))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(readout_hidden, readout_hidden), nn.SiLU(),
                                  nn.Linear(readout_hidden, 2 * latent_dim))
        # Start with a nearly deterministic posterior (sigma = e^-3): with unit noise from the start the
        # decoder learns from blurred latents and the composition (which element of ~90) comes through late.
        nn.init.constant_(self.head[-1].bias[latent_dim:], LOGVAR_INIT)
        # The fractional composition goes straight to the head: it is invariant (rotation, origin, atom
        # order, supercell) and otherwise has to squeeze through the message passing to reach the latent.
        # It also goes straight into the latent mean, as a fraction-weighted sum of one unit-scale vector
        # per element: through the head MLP alone (default init) the latents of different crystals
        # differed by ~0.05 at the start and the composition took thousands of steps to come through.
        self.composition = nn.Linear(MAX_Z + 1, readout_hidden) if composition_skip else None
        self.composition_latent = nn.Linear(MAX_Z + 1, latent_dim, bias=False) if composition_skip else None
        if self.composition_latent is not None:
            nn.init.normal_(self.composition_latent.weight)
        # The number of atoms of the (primitive) cell, which mean pooling hides: the decoder needs it for
        # the atom count. Invariant because encode_structures reduces every input to its primitive cell.
        self.max_count = int(max_atoms) + 1
        self.atom_count = nn.Embedding(self.max_count + 1, readout_hidden) if primitive_count else None

    def edge_features(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge_sh (n_edges, irreps_sh.dim), edge_radial (n_edges, n_basis)) of a batch's edges (in a compiled kernel
        in a server process, ``models.kernels.use_kernels``)."""
        return through_kernel(_edge_features, self, batch.lattice[batch.batch], batch.frac, batch.src, batch.dst,
                              batch.image, size=min(batch.src.shape[0], batch.frac.shape[0]))

    def atom_features(self, batch: CrystalBatch) -> torch.Tensor:
        """(n_atoms_total, readout_hidden) invariant per-atom features."""
        edge_sh, edge_radial = self.edge_features(batch)
        node = self.embedding(batch.numbers)
        for layer in self.layers:
            node = layer(node, edge_sh, edge_radial, batch.src, batch.dst)
        return self.readout(node)

    def forward(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (n_crystals, latent_dim): the posterior of each crystal's latent."""
        atoms = self.atom_features(batch)
        n_crystals = batch.n_atoms.shape[0]
        pooled = atoms.new_zeros(n_crystals, atoms.shape[1]).index_add_(0, batch.batch, atoms)
        pooled = pooled / batch.n_atoms.to(atoms.dtype).unsqueeze(-1)
        if self.composition is not None:
            counts = atoms.new_zeros(n_crystals, MAX_Z + 1).index_put_(
                (batch.batch, batch.numbers), atoms.new_ones(batch.numbers.shape[0]), accumulate=True)
            fractions = counts / batch.n_atoms.to(atoms.dtype).unsqueeze(-1)
            pooled = pooled + self.composition(fractions)
        if self.atom_count is not None:
            pooled = pooled + self.atom_count(batch.n_atoms.clamp(max=self.max_count))
        mu, logvar = self.head(pooled).chunk(2, dim=-1)
        if self.composition_latent is not None:
            mu = mu + self.composition_latent(fractions)
        return mu, logvar.clamp(-12.0, 6.0)
