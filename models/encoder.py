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
same local environments in the same proportions, so it gets the same latent.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from torch import nn

from models.data import MAX_Z, CrystalBatch
from models.equivariant import GatedConvolution, hidden_irreps
from models.graph import edge_vectors


class CrystalEncoder(nn.Module):
    """Periodic crystal -> (mu, logvar) of an O(3)-invariant latent."""

    def __init__(self, *, latent_dim: int, cutoff: float, n_basis: int, radial_hidden: int, lmax: int,
                 mul_scalar: int, mul_vector: int, mul_tensor: int, both_parities: bool, mul_message: int,
                 n_interactions: int, avg_num_neighbors: float, readout_hidden: int,
                 composition_skip: bool = True) -> None:
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
        # The fractional composition goes straight to the head: it is invariant (rotation, origin, atom
        # order, supercell) and otherwise has to squeeze through the message passing to reach the latent.
        self.composition = nn.Linear(MAX_Z + 1, readout_hidden) if composition_skip else None

    def edge_features(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge_sh (n_edges, irreps_sh.dim), edge_radial (n_edges, n_basis)) of a batch's edges."""
        lattice = batch.lattice[batch.batch]
        pos = torch.einsum("ni,nij->nj", batch.frac, lattice)
        vec = edge_vectors(pos=pos, lattice=lattice[batch.src], src=batch.src, dst=batch.dst, image=batch.image)
        dist = vec.norm(dim=-1)
        radial = soft_one_hot_linspace(dist, 0.0, self.cutoff, self.n_basis, basis="bessel", cutoff=True)
        return self.sh(vec), radial * math.sqrt(self.n_basis)

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
            pooled = pooled + self.composition(counts / batch.n_atoms.to(atoms.dtype).unsqueeze(-1))
        mu, logvar = self.head(pooled).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)
