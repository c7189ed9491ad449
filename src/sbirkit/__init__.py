"""sbirkit: a PyTorch toolkit for sketch-based image retrieval (SBIR)."""

__version__ = "0.1.0"
