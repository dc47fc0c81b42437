"""The two quantizers of the paper, as two explicit classes (DeepMind Sonnet 2, ``sonnet/src/nets/vqvae.py``):
:class:`VectorQuantizer` learns its codebook by gradient, :class:`VectorQuantizerEMA` by moving averages;
:func:`build_quantizer` makes either from the quantizer fields of an autoencoder's config."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.quantize.base import DebiasedEMA, distributed
from vqvae.quantize.codebook import Quantizer
from vqvae.quantize.gradients import SquaredError

__all__ = ["VectorQuantizer", "VectorQuantizerEMA"]

_OPTIONS_DOC = """
        codebook_dim: size of a code vector; None (default) is ``embedding_dim / heads``; another value adds
            learned projections in and out (ViT-VQGAN's low-dimensional codes).
        cosine: l2-normalise inputs and codes (ViT-VQGAN's cosine-similarity codebook).
        rotation_trick: gradients by the rotation trick (Fifty et al. 2024) instead of straight-through.
        heads: cut each vector into this many pieces, each quantised with its own index.
        separate_codebook_per_head: a codebook per head (else one shared by all).
        sample_codebook_temp: > 0: in training draw each code with probability
            ``softmax(-||x - e||^2 / T)`` (Gumbel-max); 0 (default) takes the nearest."""


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
        codebook_dim: int | None = None,
        cosine: bool = False,
        rotation_trick: bool = False,
        heads: int = 1,
        separate_codebook_per_head: bool = False,
        sample_codebook_temp: float = 0.0,
    ):
        super().__init__(
            embedding_dim, num_embeddings, commitment_cost, dim=dim, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, restart_threshold=restart_threshold, sync_distributed=sync_distributed,
            codebook_dim=codebook_dim, cosine=cosine, rotation_trick=rotation_trick, heads=heads,
            separate_codebook_per_head=separate_codebook_per_head, sample_codebook_temp=sample_codebook_temp,
        )
        if not 0.0 <= usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {usage_decay!r}")
        self.weight = nn.Parameter(self._initial_table())
        self.usage = DebiasedEMA((self.table_rows,), usage_decay)

    @property
    def codebook(self) -> Tensor:  # (K, d) nn.Parameter
        return self.weight

    def table(self) -> Tensor:
        return F.normalize(self.weight, dim=1) if self.cosine else self.weight

    def _codes_and_losses(self, x, idx):
        codes = F.embedding(idx, self.table())  # (N, d), differentiable w.r.t. the codebook
        codebook_loss = SquaredError.apply(codes, x.detach())
        commitment_loss = SquaredError.apply(x, codes.detach())
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


VectorQuantizer.__doc__ += _OPTIONS_DOC


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
        codebook_dim: int | None = None,
        cosine: bool = False,
        rotation_trick: bool = False,
        heads: int = 1,
        separate_codebook_per_head: bool = False,
        sample_codebook_temp: float = 0.0,
    ):
        super().__init__(
            embedding_dim, num_embeddings, commitment_cost, dim=dim, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, restart_threshold=restart_threshold, sync_distributed=sync_distributed,
            codebook_dim=codebook_dim, cosine=cosine, rotation_trick=rotation_trick, heads=heads,
            separate_codebook_per_head=separate_codebook_per_head, sample_codebook_temp=sample_codebook_temp,
        )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.register_buffer("embeddings", self._initial_table())
        self.ema_cluster_size = DebiasedEMA((self.table_rows,), decay)
        self.ema_dw = DebiasedEMA((self.table_rows, self.codebook_dim), decay)

    @property
    def codebook(self) -> Tensor:  # (K, d) buffer, l2-normalised rows with ``cosine``
        return self.embeddings

    def _codes_and_losses(self, x, idx):
        codes = F.embedding(idx, self.embeddings)  # (N, d)
        commitment_loss = SquaredError.apply(x, codes)
        return codes, commitment_loss.detach(), commitment_loss

    def _objective(self, codebook_loss, commitment_loss):
        return self.commitment_cost * commitment_loss

    def _train_step(self, flat, idx, counts, finite):
        # (K, D) per-code sums; a non-finite row goes to a spare row K that is dropped (no copy of ``flat``)
        spare = torch.where(finite, idx, self.table_rows)
        dw = flat.new_zeros(self.table_rows + 1, self.codebook_dim).index_add_(0, spare, flat)[:-1]
        if self.sync_distributed and distributed():
            dist.all_reduce(counts)
            dist.all_reduce(dw)
        cluster_size = self.ema_cluster_size.update(counts)
        ema_dw = self.ema_dw.update(dw)
        n = cluster_size.sum()
        smoothed = (cluster_size + self.epsilon) / (n + self.table_rows * self.epsilon) * n
        means = ema_dw / smoothed[:, None]
        if self.cosine:
            means = F.normalize(means, dim=1)
        # n == 0 only when no vector has counted yet (a first batch wholly non-finite): keep the codebook
        self.embeddings.copy_(torch.where(n > 0, means, self.embeddings))
        if self.restart_threshold > 0:
            self._restart_dead_codes(flat, finite)

    def _usage(self):
        return self.ema_cluster_size.average

    def _set_codes(self, rows, vectors, usage):
        self.embeddings[rows] = vectors
        self.ema_cluster_size.set_average(rows, usage)
        self.ema_dw.set_average(rows, vectors * usage[:, None])


VectorQuantizerEMA.__doc__ += _OPTIONS_DOC
