"""The two quantizers of the paper, as two explicit classes (DeepMind Sonnet 2, ``sonnet/src/nets/vqvae.py``):
:class:`VectorQuantizer` learns its codebook by gradient, :class:`VectorQuantizerEMA` by moving averages;
:func:`build_quantizer` makes either from the quantizer fields of an autoencoder's config."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.config import QuantizerConfig
from vqvae.quantize.base import DebiasedEMA, Quantizer, distributed

__all__ = ["VectorQuantizer", "VectorQuantizerEMA", "build_quantizer"]


class VectorQuantizer(Quantizer):
    """VQ layer whose codebook is learned by gradient descent (Sonnet ``VectorQuantizer``).

    ``loss = codebook_loss + commitment_cost * commitment_loss`` with
    ``codebook_loss = mean((sg[x] - e)^2)`` (gradient reaches only the codebook) and
    ``commitment_loss = mean((x - sg[e])^2)`` (gradient reaches only the encoder).

    ``codebook`` is an ``nn.Parameter`` of shape (K, D); overwrite it in place under ``torch.no_grad()``.
    In training, non-finite input vectors are left out of the usage statistics and of restarts; their loss
    (and so the codebook's gradient) is not finite, which the training loop's guard catches before any
    update.

    Args:
        embedding_dim: D, size of each code vector.
        num_embeddings: K, number of codes.
        commitment_cost: beta, weight of the commitment loss (0.25 in the paper).
        dim: which input dimension holds the D features (-1, channels-last, as in the reference;
            1 quantises an NCHW feature map without a manual permute).
        kmeans_init: initialise the codebook by k-means on the first training batch (off in the
            reference).
        kmeans_iters: Lloyd iterations for ``kmeans_init`` and :meth:`initialize_from`.
        restart_threshold: in training, re-seed codes whose moving-average usage (vectors per step)
            drops below this from the current batch; 0 (default) never restarts.
        usage_decay: decay of the usage moving average that ``restart_threshold`` reads.
        sync_distributed: under torch.distributed, broadcast k-means and restart choices from rank 0.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_embeddings: int,
        commitment_cost: float = 0.25,
        *,
        dim: int = -1,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        restart_threshold: float = 0.0,
        usage_decay: float = 0.99,
        sync_distributed: bool = True,
    ):
        super().__init__(
            embedding_dim,
            num_embeddings,
            commitment_cost,
            dim=dim,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            restart_threshold=restart_threshold,
            sync_distributed=sync_distributed,
        )
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay!r}")
        self.weight = nn.Parameter(self._uniform_init(num_embeddings, embedding_dim))
        self.usage = DebiasedEMA((num_embeddings,), usage_decay)

    @property
    def codebook(self) -> Tensor:  # (K, D) nn.Parameter
        return self.weight

    def _codes_and_losses(self, x, idx):
        codes = F.embedding(idx, self.weight)  # (*S, D), differentiable w.r.t. the codebook
        codebook_loss = F.mse_loss(codes, x.detach()) if x.numel() else codes.sum() * 0.0
        commitment_loss = F.mse_loss(x, codes.detach()) if x.numel() else x.sum() * 0.0
        return codes.detach(), codebook_loss, commitment_loss

    def _objective(self, codebook_loss, commitment_loss):
        return codebook_loss + self.commitment_cost * commitment_loss

    def _train_step(self, flat, idx, counts, finite):
        if self.restart_threshold > 0:
            if self.sync_distributed and distributed():
                dist.all_reduce(counts)
            self.usage.update(counts)
            self._restart_dead_codes(flat, finite)

    def _usage(self):
        return self.usage.average

    def _set_codes(self, rows, vectors, usage):
        self.weight.data[rows] = vectors
        self.usage.set_average(rows, usage)


class VectorQuantizerEMA(Quantizer):
    """VQ layer whose codebook follows exponential moving averages (Sonnet ``VectorQuantizerEMA``).

    ``loss = commitment_cost * commitment_loss``. In training mode every forward pass updates
    bias-corrected EMAs (zero-initialised) of the per-code counts ``N_i`` and per-code input sums
    ``m_i``, Laplace-smooths the counts, ``N_i <- (N_i + eps) / (n + K eps) * n``, and sets
    ``codebook_i = m_i / N_i``. The returned ``quantized`` uses the codebook from before the update.
    In eval mode nothing changes. ``codebook_loss`` is reported for monitoring (it equals the
    commitment loss in value) and carries no gradient: the codebook is not a parameter.
    A non-finite input vector (NaN or inf) is left out of the counts and sums (and of restarts), so it
    cannot poison a codebook row; the loss of such a batch is not finite, which the training loop's guard
    catches. Under torch.distributed (``sync_distributed``) the per-step counts and sums are all-reduced,
    so every replica holds the same codebook -- the statistics of the global batch.

    Args:
        embedding_dim: D, size of each code vector.
        num_embeddings: K, number of codes.
        commitment_cost: beta, weight of the commitment loss (0.25 in the paper).
        decay: decay of the EMAs of the counts and sums, in [0, 1).
        epsilon: Laplace smoothing of the counts (finite, > 0).
        dim: which input dimension holds the D features (-1, channels-last, as in the reference).
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for ``kmeans_init`` and :meth:`initialize_from`.
        restart_threshold: in training, re-seed codes whose moving-average usage (vectors per step)
            drops below this from the current batch; 0 (default) never restarts.
        sync_distributed: under torch.distributed, all-reduce the statistics and broadcast k-means and
            restart choices from rank 0.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_embeddings: int,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        *,
        dim: int = -1,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        restart_threshold: float = 0.0,
        sync_distributed: bool = True,
    ):
        super().__init__(
            embedding_dim,
            num_embeddings,
            commitment_cost,
            dim=dim,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            restart_threshold=restart_threshold,
            sync_distributed=sync_distributed,
        )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.register_buffer("embeddings", self._uniform_init(num_embeddings, embedding_dim))
        self.ema_cluster_size = DebiasedEMA((num_embeddings,), decay)
        self.ema_dw = DebiasedEMA((num_embeddings, embedding_dim), decay)

    @property
    def codebook(self) -> Tensor:  # (K, D) buffer
        return self.embeddings

    def _codes_and_losses(self, x, idx):
        codes = F.embedding(idx, self.embeddings)  # (*S, D)
        commitment_loss = F.mse_loss(x, codes) if x.numel() else x.sum() * 0.0
        return codes, commitment_loss.detach(), commitment_loss

    def _objective(self, codebook_loss, commitment_loss):
        return self.commitment_cost * commitment_loss

    def _train_step(self, flat, idx, counts, finite):
        # (K, D) per-code sums; a non-finite row goes to a spare row K that is dropped (no copy of ``flat``)
        spare = torch.where(finite, idx, self.num_embeddings)
        dw = flat.new_zeros(self.num_embeddings + 1, self.embedding_dim).index_add_(0, spare, flat)[:-1]
        if self.sync_distributed and distributed():
            dist.all_reduce(counts)
            dist.all_reduce(dw)
        cluster_size = self.ema_cluster_size.update(counts)
        ema_dw = self.ema_dw.update(dw)
        n = cluster_size.sum()
        smoothed = (cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        # n == 0 only when no vector has counted yet (a first batch wholly non-finite): keep the codebook
        self.embeddings.copy_(torch.where(n > 0, ema_dw / smoothed[:, None], self.embeddings))
        if self.restart_threshold > 0:
            self._restart_dead_codes(flat, finite)

    def _usage(self):
        return self.ema_cluster_size.average

    def _set_codes(self, rows, vectors, usage):
        self.embeddings[rows] = vectors
        self.ema_cluster_size.set_average(rows, usage)
        self.ema_dw.set_average(rows, vectors * usage[:, None])


def build_quantizer(config: QuantizerConfig, dim: int = 1) -> VectorQuantizer | VectorQuantizerEMA:
    """The quantizer an autoencoder's config asks for (``quantizer: ema`` or ``vq``).

    The layer's own one-batch k-means stays off: training seeds the codebook from
    ``train.kmeans_batches`` batches instead (``config.kmeans_init``).

    Args:
        config: the quantizer fields of an autoencoder's config.
        dim: which input dimension the layer quantises (1: channels of an NCHW or NCL tensor).
    Returns:
        a :class:`VectorQuantizerEMA` for ``quantizer: ema``, else a :class:`VectorQuantizer`.
    """
    common = dict(dim=dim, kmeans_init=False, restart_threshold=config.restart_threshold)
    if config.quantizer == "ema":
        return VectorQuantizerEMA(config.embedding_dim, config.num_embeddings, config.commitment_cost,
                                  config.decay, config.epsilon, **common)
    return VectorQuantizer(config.embedding_dim, config.num_embeddings, config.commitment_cost, **common)
