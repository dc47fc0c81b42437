"""Deprecated: the image VQ-VAE moved to :mod:`vqvae.models.image` (``from vqvae import VQVAE``). This module
re-exports its names for one release."""

import warnings

from vqvae.models.image import VQVAE, VQVAEOutput, reconstruction_loss

warnings.warn("vqvae.model is deprecated: import VQVAE from vqvae or vqvae.models", DeprecationWarning, stacklevel=2)

__all__ = ["VQVAE", "VQVAEOutput", "reconstruction_loss"]
