"""Encoders and decoders: 2-D convolutional nets for images; a 1-D encoder and a WaveNet for audio."""

from vqvae.nets.image import ImageDecoder, ImageEncoder, ResidualStack
from vqvae.nets.wavenet import WaveNet

__all__ = ["ImageDecoder", "ImageEncoder", "ResidualStack", "WaveNet"]
