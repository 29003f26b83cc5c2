"""Local environments (motifs) of crystals: coordination, shape, polyhedra sharing; ideal shapes in ``shapes``."""
