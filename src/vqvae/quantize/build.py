""":func:`build_quantizer`: the layer an autoencoder's config asks for."""

from __future__ import annotations

from vqvae.config import QuantizerConfig
from vqvae.quantize.base import QuantizerLayer
from vqvae.quantize.layers import VectorQuantizer, VectorQuantizerEMA
from vqvae.quantize.residual import ResidualVQ
from vqvae.quantize.scalar import FSQ, LFQ

__all__ = ["build_quantizer"]


def build_quantizer(config: QuantizerConfig, dim: int = 1) -> QuantizerLayer:
    """The quantizer an autoencoder's config asks for (``quantizer``: ema, vq, rvq, fsq or lfq).

    The layer's own one-batch k-means stays off: training seeds the codebook from
    ``train.kmeans_batches`` batches instead (``config.kmeans_init``).

    Args:
        config: the quantizer fields of an autoencoder's config.
        dim: which input dimension the layer quantises (1: channels of an NCHW or NCL tensor).
    Returns:
        the layer, a :class:`VectorQuantizerEMA`, :class:`VectorQuantizer`, :class:`ResidualVQ`,
        :class:`FSQ` or :class:`LFQ`.
    """
    c = config
    if c.quantizer == "fsq":
        return FSQ(c.fsq_levels, c.embedding_dim, dim=dim)
    if c.quantizer == "lfq":
        return LFQ(c.embedding_dim, c.num_embeddings, dim=dim, entropy_loss_weight=c.entropy_loss_weight,
                   commitment_loss_weight=c.commitment_cost, diversity_gamma=c.diversity_gamma)
    options = dict(kmeans_init=False, restart_threshold=c.restart_threshold, cosine=c.cosine,
                   rotation_trick=c.rotation_trick, codebook_dim=c.codebook_dim or None,
                   sample_codebook_temp=c.sample_codebook_temp)
    if c.quantizer == "rvq":
        return ResidualVQ(c.embedding_dim, c.num_embeddings, c.num_quantizers, c.commitment_cost,
                          ema=c.residual_ema, decay=c.decay, epsilon=c.epsilon,
                          quantize_dropout=c.quantize_dropout,
                          dim=dim, **options)
    options.update(heads=c.heads, separate_codebook_per_head=c.separate_codebook_per_head, dim=dim)
    if c.quantizer == "ema":
        return VectorQuantizerEMA(c.embedding_dim, c.num_embeddings, c.commitment_cost, c.decay, c.epsilon,
                                  **options)
    return VectorQuantizer(c.embedding_dim, c.num_embeddings, c.commitment_cost, **options)
