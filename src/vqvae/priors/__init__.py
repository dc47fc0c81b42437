"""Autoregressive priors over the discrete latents: a class-conditional Gated PixelCNN over image code
grids, a WaveNet over audio code sequences."""

from vqvae.config import AudioPriorConfig, PixelCNNConfig
from vqvae.priors.pixelcnn import GatedPixelCNN
from vqvae.priors.wavenet import WaveNetPrior

__all__ = ["AudioPriorConfig", "GatedPixelCNN", "PixelCNNConfig", "WaveNetPrior"]
