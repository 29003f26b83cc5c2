"""The crystal autoencoder: crystal graphs and batches (``data``), the E(3)-invariant encoder, the one-shot decoder
and its latent-consistent search, losses, training, evaluation, reconstruction and checkpoints.

Shared with the motif autoencoder (``models.motif``) and the potential (``models.potential``) in ``models``: the
periodic neighbour graph (``models.graph``), the equivariant blocks (``models.equivariant``), the stoichiometry
patterns (``models.patterns``) and the device (``models.device``).
"""
