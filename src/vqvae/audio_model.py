"""Deprecated: the audio VQ-VAE moved to :mod:`vqvae.models.audio` (``from vqvae import AudioVQVAE``). This
module re-exports its names for one release."""

import warnings

from vqvae.models.audio import AudioVQVAE, AudioVQVAEOutput

warnings.warn("vqvae.audio_model is deprecated: import AudioVQVAE from vqvae or vqvae.models", DeprecationWarning,
              stacklevel=2)

__all__ = ["AudioVQVAE", "AudioVQVAEOutput"]
