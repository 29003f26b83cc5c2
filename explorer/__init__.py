"""Latent Materials Explorer: the map, its data and its services."""
