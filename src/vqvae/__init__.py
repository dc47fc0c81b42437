"""vqvae: VQ-VAE ("Neural Discrete Representation Learning", arXiv:1711.00937) in PyTorch."""

from vqvae.model import VQVAE, VQVAEOutput
from vqvae.quantize import QuantizerOutput, VectorQuantizer, VectorQuantizerEMA

__all__ = ["VQVAE", "VQVAEOutput", "QuantizerOutput", "VectorQuantizer", "VectorQuantizerEMA"]
__version__ = "0.1.0"
