"""The crystal autoencoder: periodic graphs, encoder, decoder, losses, training and checkpoints."""
