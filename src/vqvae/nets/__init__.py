"""Encoders and decoders: 2-D convolutional nets for images."""

from vqvae.nets.image import ImageDecoder, ImageEncoder, ResidualStack

__all__ = ["ImageDecoder", "ImageEncoder", "ResidualStack"]
