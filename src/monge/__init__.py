"""monge: optimal-transport-aware flow matching and diffusion."""

__version__ = "0.1.0"
