"""The autoencoders: the image VQ-VAE and the audio VQ-VAE (WaveNet decoder), both saved and loaded by
:class:`~vqvae.models.pretrained.Pretrained`."""

from vqvae.models.audio import AudioVQVAE, AudioVQVAEOutput
from vqvae.models.image import VQVAE, VQVAEOutput
from vqvae.models.pretrained import Pretrained

__all__ = ["AudioVQVAE", "AudioVQVAEOutput", "Pretrained", "VQVAE", "VQVAEOutput"]
