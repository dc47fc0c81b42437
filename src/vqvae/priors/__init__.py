"""Autoregressive priors over the discrete latents: a class-conditional Gated PixelCNN for images."""

from vqvae.priors.pixelcnn import GatedPixelCNN, PixelCNNConfig

__all__ = ["GatedPixelCNN", "PixelCNNConfig"]
