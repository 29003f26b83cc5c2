"""The motif autoencoder: local environments (a centre and its neighbours) to invariant latents and back."""
