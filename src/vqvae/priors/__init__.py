"""Autoregressive priors over the discrete latents: a class-conditional Gated PixelCNN (the paper's) or a
transformer over image code grids, both :class:`ImagePrior` (``prior.kind``), and a WaveNet over audio code
sequences; sampling controls (temperature, top-k, top-p, classifier-free guidance) shared by all."""

from vqvae.config import AudioPriorConfig, ImagePriorConfig
from vqvae.nets.controls import SamplingControls
from vqvae.priors.base import ImagePrior, build_prior
from vqvae.priors.pixelcnn import GatedPixelCNN
from vqvae.priors.transformer import TransformerPrior
from vqvae.priors.wavenet import WaveNetPrior

__all__ = ["AudioPriorConfig", "GatedPixelCNN", "ImagePrior", "ImagePriorConfig", "SamplingControls",
           "TransformerPrior", "WaveNetPrior", "build_prior"]
