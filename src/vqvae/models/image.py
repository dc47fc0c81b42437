"""The image VQ-VAE: encoder -> quantizer -> decoder (arXiv:1711.00937, section 3)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import ImageModelConfig
from vqvae.errors import VQVAEError
from vqvae.likelihoods import discretized_logistic_log_prob
from vqvae.models.pretrained import Pretrained
from vqvae.nets import ImageDecoder, ImageEncoder
from vqvae.quantize import QuantizerLayer, build_quantizer


@dataclass
class VQVAEOutput:
    """Forward pass of :class:`VQVAE` on images (B, C, H, W) with a (B, h, w) latent grid.

    ``reconstruction`` (B, C, H, W), pixel scale [0, 1] (not clamped); ``loss`` = ``recon_loss`` +
    ``vq_loss``; ``recon_loss`` = mean squared error over pixels, or for ``recon_loss: logistic`` the
    negative log-likelihood of the 8-bit pixels in nats per dimension; ``vq_loss`` is the quantizer's
    objective (codebook + beta * commitment for "vq", beta * commitment for "ema");
    ``indices`` (B, h, w) int64 (the quantizer's flat codes); ``perplexity`` of this batch's codes;
    ``quantizer_parts`` the quantizer's named terms (:attr:`~vqvae.quantize.QuantizerLayer.part_names`).
    """

    reconstruction: Tensor
    loss: Tensor
    recon_loss: Tensor
    vq_loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    indices: Tensor
    quantizer_parts: dict[str, Tensor] = dataclasses.field(default_factory=dict)


def reconstruction_loss(recon: Tensor, x: Tensor, kind: str) -> Tensor:  # kind: "mse" or "mse_in_range"
    """Mean squared error per pixel. ``"mse_in_range"`` does not penalise a reconstruction for going
    below 0 where the image is 0, or above 1 where it is 1: pixels are clamped to [0, 1] when shown
    or evaluated, so that error is never seen, and the decoder need not spend capacity to hit the
    range's ends exactly. It equals the MSE of the clamped reconstruction at such pixels.

    Args:
        recon: reconstruction, any shape, pixel scale [0, 1].
        x: target images of the same shape, in [0, 1].
        kind: ``"mse"`` or ``"mse_in_range"``.
    Returns:
        the scalar mean squared error.
    """
    err = recon - x
    if kind == "mse_in_range":
        err = torch.where(((x <= 0) & (err < 0)) | ((x >= 1) & (err > 0)), torch.zeros_like(err), err)
    return err.pow(2).mean()


class VQVAE(Pretrained, nn.Module):
    """Image VQ-VAE. Images are float in [0, 1], (B, in_channels, image_size, image_size).

    Inputs whose side is not a multiple of ``downsample`` are zero-padded on the bottom/right
    (after centring), and reconstructions are cropped back: 28x28 with downsample 8 encodes
    to a 4x4 grid.

    Args:
        config: the architecture; None takes the defaults of :class:`~vqvae.config.ImageModelConfig`.
        **overrides: fields of the config to replace (the result is validated).
    """

    checkpoint_kind = "vqvae"
    config_section = "model"

    def __init__(self, config: ImageModelConfig | None = None, **overrides: Any):
        super().__init__()
        config = dataclasses.replace(config or ImageModelConfig(), **overrides)
        config.validate()
        self.config = config
        c = config
        self.encoder = ImageEncoder(c.in_channels, c.hidden, c.res_hidden, c.num_res_layers, c.downsample)
        g = c.latents_per_position  # G vectors of D at each position: (B, G*D, h, w) from the encoder
        self.pre_quantize = nn.Conv2d(c.hidden, g * c.embedding_dim, 1)
        self.quantizer: QuantizerLayer = build_quantizer(c, dim=1 if g == 1 else 2)
        # a logistic likelihood needs a location and a log-scale per pixel and channel
        out_channels = c.in_channels * (2 if c.recon_loss == "logistic" else 1)
        self.decoder = ImageDecoder(g * c.embedding_dim, out_channels, c.hidden, c.res_hidden,
                                    c.num_res_layers, c.downsample)

    @property
    def code_shape(self) -> tuple[int, ...]:
        """The codes of one image: (h, w), or (G, h, w) with ``latents_per_position`` G > 1."""
        h, g = self.config.latent_size, self.config.latents_per_position
        return (h, h) if g == 1 else (g, h, h)

    # -- shapes ----------------------------------------------------------------------------------
    def _check_images(self, x: Tensor) -> None:
        c = self.config
        if (x.dim() != 4 or x.shape[1] != c.in_channels or x.shape[2] != c.image_size
                or x.shape[3] != c.image_size):
            raise VQVAEError(
                f"expected images of shape (B, {c.in_channels}, {c.image_size}, {c.image_size}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise VQVAEError(f"expected floating-point images in [0, 1], got dtype {x.dtype} "
                             f"(uint8 pixels: divide by 255)")

    def _pad(self, x: Tensor) -> Tensor:
        extra = self.config.latent_size * self.config.downsample - self.config.image_size
        return F.pad(x, (0, extra, 0, extra)) if extra else x

    def _crop(self, x: Tensor) -> Tensor:
        s = self.config.image_size
        return x[..., :s, :s]

    # -- the pipeline ------------------------------------------------------------------------------
    def encode_continuous(self, x: Tensor) -> Tensor:
        """z_e: (B, C, H, W) images in [0, 1] -> (B, G*D, h, w) (G = ``latents_per_position``, D innermost).

        Args:
            x: (B, C, H, W) floating-point images in [0, 1].
        Returns:
            (B, G*D, h, w) continuous latents.
        Raises:
            VQVAEError: images of the wrong shape or not floating point.
        """
        self._check_images(x)
        return self.pre_quantize(self.encoder(self._pad(x - 0.5)))

    def _quantize(self, z_e: Tensor):
        """The quantizer's output on z_e (B, G*D, h, w), with ``quantized`` (B, G*D, h, w), indices
        (B, *code_shape)."""
        g = self.config.latents_per_position
        if g == 1:
            q = self.quantizer(z_e)
            return dataclasses.replace(q, indices=self.quantizer.flat_indices(q.indices))
        q = self.quantizer(z_e.unflatten(1, (g, self.config.embedding_dim)))  # (B, G, D, h, w)
        return dataclasses.replace(q, quantized=q.quantized.flatten(1, 2),
                                   indices=self.quantizer.flat_indices(q.indices))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> code indices (B, *code_shape), int64. Never updates the codebook.
        Images that are not finite or not in [0, 1] are refused (one line naming what was found).

        Args:
            x: (B, C, H, W) floating-point images in [0, 1].
        Returns:
            (B, *code_shape) int64 code indices.
        Raises:
            VQVAEError: images of the wrong shape or dtype, not finite, or outside [0, 1].
        """
        self._check_images(x)
        if x.numel():
            lo, hi = float(x.min()), float(x.max())
            if not (math.isfinite(lo) and math.isfinite(hi)):  # min and max carry a NaN through
                raise VQVAEError("expected finite images in [0, 1], got NaN or infinite values")
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise VQVAEError(f"expected images in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        with self.quantizer.frozen():
            return self._quantize(self.encode_continuous(x)).indices

    def embed(self, indices: Tensor) -> Tensor:
        """Code indices (B, *code_shape) -> quantised latents z_q (B, G*D, h, w), what the decoder takes.

        Args:
            indices: (B, *code_shape) integer code indices in [0, K).
        Returns:
            (B, G*D, h, w) code vectors, channels-last in memory.
        Raises:
            VQVAEError: indices of the wrong shape.
        """
        if indices.dim() != 1 + len(self.code_shape) or tuple(indices.shape[1:]) != self.code_shape:
            raise VQVAEError(f"expected indices of shape (B, {', '.join(map(str, self.code_shape))}), "
                             f"got {tuple(indices.shape)}")
        z_q = self.quantizer.lookup_codes(indices)  # (B, [G,] h, w, D)
        z_q = z_q.permute(0, 3, 1, 2) if z_q.dim() == 4 else z_q.permute(0, 1, 4, 2, 3).flatten(1, 2)
        return z_q.contiguous(memory_format=torch.channels_last)

    def decoder_output(self, z_q: Tensor) -> tuple[Tensor, Tensor | None]:
        """Quantised latents (B, D, h, w) -> (mean image (B, C, H, W) in [0, 1] scale, not clamped;
        log-scale (B, C, H, W) of the discretized logistic in [-1, 1] pixel units, or None for MSE models).

        Args:
            z_q: (B, G*D, h, w) quantised latents.
        Returns:
            ``(mean, log_scale)``: (B, C, H, W) each; ``log_scale`` is None unless ``recon_loss: logistic``.
        """
        out = self._crop(self.decoder(z_q))
        c = self.config.in_channels
        if self.config.recon_loss == "logistic":
            return out[:, :c] + 0.5, out[:, c:]
        return out + 0.5, None

    def decode(self, z_q: Tensor) -> Tensor:
        """Quantised latents (B, D, h, w) -> images (B, C, H, W), pixel scale [0, 1], not clamped.

        Args:
            z_q: (B, G*D, h, w) quantised latents.
        Returns:
            (B, C, H, W) images (the mean, for logistic models).
        """
        return self.decoder_output(z_q)[0]

    def pixel_log_prob(self, x: Tensor, z_q: Tensor) -> Tensor:
        """Log p(x | z) in nats of every 8-bit pixel value. Only for ``recon_loss: logistic`` models.

        Args:
            x: (B, C, H, W) images in [0, 1] (multiples of 1/255).
            z_q: (B, G*D, h, w) quantised latents.
        Returns:
            (B, C, H, W) float32 log-probabilities in nats.
        Raises:
            VQVAEError: the model was not trained with ``recon_loss: logistic``.
        """
        if self.config.recon_loss != "logistic":
            raise VQVAEError("this model has no pixel likelihood: train it with model.recon_loss=logistic")
        mean, log_scale = self.decoder_output(z_q)
        return discretized_logistic_log_prob(2 * x.float() - 1, 2 * mean.float() - 1, log_scale.float())

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices (B, *code_shape) -> images (B, C, H, W) in [0, 1] scale (not clamped).

        Args:
            indices: (B, *code_shape) integer code indices.
        Returns:
            (B, C, H, W) images.
        Raises:
            VQVAEError: indices of the wrong shape.
        """
        return self.decode(self.embed(indices))

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Encode, quantise and decode a batch; in training mode the quantizer learns from it.

        Args:
            x: (B, C, H, W) floating-point images in [0, 1].
        Returns:
            the :class:`VQVAEOutput` with reconstruction, losses, perplexity and indices.
        Raises:
            VQVAEError: images of the wrong shape or not floating point.
        """
        z_e = self.encode_continuous(x)  # (B, G*D, h, w)
        q = self._quantize(z_e)
        recon, log_scale = self.decoder_output(q.quantized)  # (B, C, H, W) each
        if log_scale is None:
            recon_loss = reconstruction_loss(recon.float(), x.float(), self.config.recon_loss)
        else:  # nats per dimension
            recon_loss = -discretized_logistic_log_prob(2 * x.float() - 1, 2 * recon.float() - 1,
                                                        log_scale.float()).mean()
        return VQVAEOutput(
            reconstruction=recon,
            loss=recon_loss + q.loss,
            recon_loss=recon_loss,
            vq_loss=q.loss,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
            perplexity=q.perplexity,
            indices=q.indices,
            quantizer_parts=q.parts,
        )
