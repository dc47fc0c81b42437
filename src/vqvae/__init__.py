"""vqvae: VQ-VAE ("Neural Discrete Representation Learning", arXiv:1711.00937) in PyTorch."""

from vqvae.models import VQVAE, AudioVQVAE, AudioVQVAEOutput, VQVAEOutput
from vqvae.priors import GatedPixelCNN, WaveNetPrior
from vqvae.quantize import (
    FSQ,
    LFQ,
    QuantizerOutput,
    ResidualVQ,
    VectorQuantizer,
    VectorQuantizerEMA,
    build_quantizer,
)

__all__ = ["FSQ", "LFQ", "VQVAE", "AudioVQVAE", "AudioVQVAEOutput", "GatedPixelCNN", "QuantizerOutput",
           "ResidualVQ", "VQVAEOutput", "VectorQuantizer", "VectorQuantizerEMA", "WaveNetPrior",
           "build_quantizer"]
__version__ = "0.1.0"
