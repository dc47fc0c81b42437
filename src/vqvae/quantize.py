"""Vector quantisation layers of VQ-VAE ("Neural Discrete Representation Learning",
van den Oord, Vinyals, Kavukcuoglu 2017, https://arxiv.org/abs/1711.00937).

Two explicit classes, as in the reference implementation (DeepMind Sonnet 2,
``sonnet/src/nets/vqvae.py``):

* :class:`VectorQuantizer` learns the codebook by gradient descent on the codebook loss;
* :class:`VectorQuantizerEMA` updates the codebook from exponential moving averages.

With default arguments both reproduce the reference semantics exactly (see the tests, which
hold them against a NumPy transcription of the formulas). The improvements -- data-dependent
(k-means) initialisation and dead-code restarts -- are opt-in constructor options.

Numerics: the nearest-neighbour search and the EMA statistics always run in float32, also
under ``torch.autocast``; the search is chunked, so an N x K distance matrix is never held
in memory at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["QuantizerOutput", "VectorQuantizer", "VectorQuantizerEMA", "kmeans", "nearest_codes"]

# Rows of the distance matrix computed at once: chunk x K floats stay around 4 MiB,
# small enough to live in cache between the GEMM that writes them and the argmin that reads them.
_CHUNK_ELEMENTS = 1 << 20


@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    Shapes, for an input of shape ``(*S, D)`` (channels-last) quantised into ``K`` codes:

    * ``quantized`` -- ``(*S, D)``: the code vectors in the forward pass; in the backward pass
      the gradient goes straight through to the input (``x + sg[e - x]``).
    * ``loss`` -- scalar: the VQ objective this layer adds to the reconstruction loss.
    * ``codebook_loss`` -- scalar, ``mean((sg[x] - e)^2)``.
    * ``commitment_loss`` -- scalar, ``mean((x - sg[e])^2)`` (not yet multiplied by beta).
    * ``perplexity`` -- scalar, ``exp(-sum p log(p + 1e-10))`` of this batch's code frequencies.
    * ``indices`` -- ``S``, int64.
    * ``encodings`` -- ``(prod(S), K)`` one-hot float32, computed on access.
    """

    quantized: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    indices: Tensor
    num_embeddings: int

    @property
    def encodings(self) -> Tensor:
        return F.one_hot(self.indices.reshape(-1), self.num_embeddings).float()


def nearest_codes(flat: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """Index of the nearest code for every row of ``flat``.

    ``flat``: (N, D) float32, ``codebook``: (K, D) float32 -> (N,) int64.
    Distances are ``||x||^2 - 2 x.e + ||e||^2``; ties go to the lowest index (``argmin``).
    Rows are processed in chunks so that the (N, K) distance matrix never exists whole.
    """
    n, k = flat.shape[0], codebook.shape[0]
    out = torch.empty(n, dtype=torch.long, device=flat.device)
    if n == 0:
        return out
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // k)
    codebook_t = codebook.t().contiguous()  # (D, K): a contiguous right operand keeps the GEMM fast
    code_sq = codebook.pow(2).sum(1)  # (K,)
    buf = torch.empty(min(chunk, n), k, dtype=flat.dtype, device=flat.device)
    for start in range(0, n, chunk):
        rows = flat[start : start + chunk]
        d = torch.addmm(code_sq, rows, codebook_t, alpha=-2.0, out=buf[: rows.shape[0]])  # (c, K)
        d.add_(rows.pow(2).sum(1, keepdim=True))
        torch.argmin(d, dim=1, out=out[start : start + rows.shape[0]])
    return out


def kmeans(
    vectors: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``vectors`` (N, D) -> (centroids (k, D), counts (k,)).

    Seeding is k-means++ (on at most 8192 of the vectors, to bound its cost); a cluster that
    ends up empty is re-seeded with a random vector, so every centroid is a data point or a
    mean of data points.
    """
    vectors = vectors.detach().float()
    n = vectors.shape[0]
    if n == 0:
        raise ValueError("kmeans needs at least one vector, got an empty tensor")
    dev = vectors.device
    pool = vectors[torch.randperm(n, generator=generator)[:8192].to(dev)]
    centroids = torch.empty(k, vectors.shape[1], device=dev)
    centroids[0] = pool[torch.randint(pool.shape[0], (1,), generator=generator).item()]
    closest = (pool - centroids[0]).pow(2).sum(1)  # squared distance to the nearest chosen seed
    for i in range(1, k):
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)
        j = torch.multinomial(weights.cpu(), 1, generator=generator).item()
        centroids[i] = pool[j]
        closest = torch.minimum(closest, (pool - pool[j]).pow(2).sum(1))
    counts = torch.zeros(k, device=dev)
    for _ in range(max(1, iters)):
        idx = nearest_codes(vectors, centroids)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, idx, vectors)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            refill = torch.randint(n, (int(empty.sum()),), generator=generator).to(dev)
            centroids[empty] = vectors[refill]
    idx = nearest_codes(vectors, centroids)
    counts = torch.bincount(idx, minlength=k).float()
    return centroids, counts


class _StraightThrough(torch.autograd.Function):
    """Forward: the code vectors, exactly. Backward: the gradient goes to the encoder output.

    Same value and gradient as the reference ``x + sg[e - x]`` but without its rounding error,
    so ``lookup(indices)`` equals ``quantized`` bit for bit, and two elementwise passes cheaper.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, codes: Tensor) -> Tensor:  # noqa: ARG004
        return codes.view_as(codes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ARG004
        return grad, None


class _DebiasedEMA(nn.Module):
    """Zero-initialised exponential moving average with bias correction, as in Sonnet's
    ``ExponentialMovingAverage``: ``hidden -= (hidden - value) * (1 - decay)``;
    ``average = hidden / (1 - decay ** t)`` after the t-th update."""

    def __init__(self, shape: tuple[int, ...], decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("hidden", torch.zeros(shape))
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))

    @property
    def average(self) -> Tensor:
        t = int(self.counter)
        if t == 0:
            return torch.zeros_like(self.hidden)
        return self.hidden / (1.0 - self.decay**t)

    def update(self, value: Tensor) -> Tensor:
        self.counter += 1
        self.hidden.sub_((self.hidden - value) * (1.0 - self.decay))
        return self.average

    def set_average(self, rows: Tensor, values: Tensor) -> None:
        """Make the debiased average of ``rows`` equal ``values`` from now on."""
        t = max(int(self.counter), 1)
        self.counter.fill_(t)
        self.hidden[rows] = values * (1.0 - self.decay**t)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _Quantizer(nn.Module):
    """Shared machinery: shape handling, the nearest-neighbour search, losses, perplexity,
    the opt-in k-means initialisation and dead-code restarts."""

    def __init__(
        self,
        embedding_dim: int,
        num_embeddings: int,
        commitment_cost: float,
        *,
        dim: int,
        kmeans_init: bool,
        kmeans_iters: int,
        restart_threshold: float,
        sync_distributed: bool,
    ):
        super().__init__()
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings must be a positive integer, got {num_embeddings!r}")
        if not commitment_cost >= 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost!r}")
        if kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {kmeans_iters!r}")
        if not restart_threshold >= 0:
            raise ValueError(f"restart_threshold must be >= 0, got {restart_threshold!r}")
        self.embedding_dim = embedding_dim
        self.num_embeddings = num_embeddings
        self.commitment_cost = float(commitment_cost)
        self.dim = dim
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.restart_threshold = float(restart_threshold)
        self.sync_distributed = sync_distributed
        # 1 once the codebook holds data-dependent values (k-means); saved with the weights.
        self.register_buffer("initialized", torch.tensor(0 if kmeans_init else 1, dtype=torch.uint8))
        # Total number of codes re-seeded by dead-code restarts (a diagnostic).
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _uniform_init(num_embeddings: int, embedding_dim: int) -> Tensor:
        # Sonnet's VarianceScaling(distribution='uniform') on a (D, K) variable: fan_in = D.
        limit = math.sqrt(3.0 / embedding_dim)
        return torch.empty(num_embeddings, embedding_dim).uniform_(-limit, limit)

    @property
    def codebook(self) -> Tensor:  # (K, D)
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"embedding_dim={self.embedding_dim}, num_embeddings={self.num_embeddings}, "
            f"commitment_cost={self.commitment_cost}, dim={self.dim}, kmeans_init={self.kmeans_init}, "
            f"restart_threshold={self.restart_threshold}"
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for ``indices`` of any shape S -> (*S, D), channels-last whatever ``dim`` is."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(
                f"indices must lie in [0, {self.num_embeddings}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        return F.embedding(indices.long(), self.codebook)

    # -- shapes ---------------------------------------------------------------------------------
    def _to_channels_last(self, inputs: Tensor) -> Tensor:
        x = inputs
        if not torch.is_floating_point(x):
            raise ValueError(f"quantizer input must be a floating-point tensor, got dtype {x.dtype}")
        if x.dim() == 0:
            raise ValueError("quantizer input must have at least one dimension, got a scalar")
        if self.dim not in (-1, x.dim() - 1):
            x = x.movedim(self.dim, -1)
        if x.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"expected size {self.embedding_dim} (embedding_dim) in dimension {self.dim} of the "
                f"quantizer input, got input of shape {tuple(inputs.shape)}"
            )
        return x

    def _from_channels_last(self, x: Tensor, ndim: int) -> Tensor:
        if self.dim not in (-1, ndim - 1):
            x = x.movedim(-1, self.dim)
        return x

    # -- the forward pass ----------------------------------------------------------------------
    def forward(self, inputs: Tensor) -> QuantizerOutput:
        """Quantise ``inputs``: (*S, D) channels-last (or D along ``dim``) -> :class:`QuantizerOutput`.

        All dimensions but the embedding one are flattened and each vector is quantised
        independently: a (16, 32, 32, 64) input with D=64 is reshaped into (16384, 64).
        """
        x = self._to_channels_last(inputs)
        out_dtype = x.dtype
        lead = x.shape[:-1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            flat = x.reshape(-1, self.embedding_dim)  # (N, D)
            if self.training and not bool(self.initialized) and flat.shape[0] > 0:
                self.initialize_from(flat.detach())
            with torch.no_grad():
                idx = nearest_codes(flat.detach(), self.codebook.detach())  # (N,)
                counts = torch.bincount(idx, minlength=self.num_embeddings).float()  # (K,)
            codes, codebook_loss, commitment_loss = self._codes_and_losses(x, idx.view(lead))
            loss = self._objective(codebook_loss, commitment_loss)
            probs = counts / max(flat.shape[0], 1)  # this replica's batch (before any all-reduce)
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
            if self.training and flat.shape[0] > 0:
                with torch.no_grad():
                    self._train_step(flat.detach(), idx, counts.clone())
            quantized = _StraightThrough.apply(x, codes)
        quantized = self._from_channels_last(quantized.to(out_dtype), inputs.dim())
        return QuantizerOutput(
            quantized=quantized,
            loss=loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            indices=idx.view(lead),
            num_embeddings=self.num_embeddings,
        )

    def _codes_and_losses(self, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def _objective(self, codebook_loss: Tensor, commitment_loss: Tensor) -> Tensor:
        raise NotImplementedError

    def _train_step(self, flat: Tensor, idx: Tensor, counts: Tensor) -> None:
        raise NotImplementedError

    # -- improvements (opt-in) -----------------------------------------------------------------
    @torch.no_grad()
    def initialize_from(self, vectors: Tensor) -> None:
        """Set the codebook to the k-means centroids of ``vectors`` (N, D) -- e.g. encoder outputs.

        Under ``torch.distributed`` rank 0's result is broadcast so every replica agrees.
        """
        vectors = vectors.detach().float().reshape(-1, self.embedding_dim)
        centroids, counts = kmeans(vectors, self.num_embeddings, self.kmeans_iters)
        if self.sync_distributed and _distributed():
            dist.broadcast(centroids, 0)
            dist.broadcast(counts, 0)
        # A floor of one vector: a zero count would make the EMA variant zero that code on its next step.
        self._set_codes(torch.arange(self.num_embeddings, device=centroids.device), centroids, counts.clamp(min=1.0))
        self.initialized.fill_(1)

    def _set_codes(self, rows: Tensor, vectors: Tensor, usage: Tensor) -> None:
        raise NotImplementedError

    def _usage(self) -> Tensor:
        """Moving average of how many input vectors each code received per training step (K,)."""
        raise NotImplementedError

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Re-seed codes whose moving-average usage fell below ``restart_threshold`` with
        randomly chosen vectors of the current batch (rank 0's choice under torch.distributed)."""
        usage = self._usage()
        dead = usage < self.restart_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        rows = dead.nonzero().squeeze(1)
        pick = torch.randint(flat.shape[0], (num_dead,), device=flat.device)
        vectors = flat[pick].clone()
        if self.sync_distributed and _distributed():
            dist.broadcast(vectors, 0)
        # A restarted code starts at the average usage, so it has a grace period to attract vectors.
        fresh = torch.full((num_dead,), float(usage.sum()) / self.num_embeddings, device=flat.device)
        self._set_codes(rows, vectors, fresh)
        self.restarts += num_dead


class VectorQuantizer(_Quantizer):
    """VQ layer whose codebook is learned by gradient descent (Sonnet ``VectorQuantizer``).

    ``loss = codebook_loss + commitment_cost * commitment_loss`` with
    ``codebook_loss = mean((sg[x] - e)^2)`` (gradient reaches only the codebook) and
    ``commitment_loss = mean((x - sg[e])^2)`` (gradient reaches only the encoder).

    Args:
        embedding_dim: D, size of each code vector.
        num_embeddings: K, number of codes.
        commitment_cost: beta, weight of the commitment loss (0.25 in the paper).
        dim: which input dimension holds the D features (-1, channels-last, as in the reference;
            1 quantises an NCHW feature map without a manual permute).
        kmeans_init: initialise the codebook by k-means on the first training batch (off in the reference).
        kmeans_iters: Lloyd iterations for ``kmeans_init`` and :meth:`initialize_from`.
        restart_threshold: in training, re-seed codes whose moving-average usage (vectors per step)
            drops below this from the current batch; 0 (default) never restarts.
        usage_decay: decay of the usage moving average that ``restart_threshold`` reads.
        sync_distributed: under torch.distributed, broadcast k-means and restart choices from rank 0.

    ``codebook`` is an ``nn.Parameter`` of shape (K, D); overwrite it in place under ``torch.no_grad()``.
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
        self.usage = _DebiasedEMA((num_embeddings,), usage_decay)

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

    def _train_step(self, flat, idx, counts):
        if self.restart_threshold > 0:
            if self.sync_distributed and _distributed():
                dist.all_reduce(counts)
            self.usage.update(counts)
            self._restart_dead_codes(flat)

    def _usage(self):
        return self.usage.average

    def _set_codes(self, rows, vectors, usage):
        self.weight.data[rows] = vectors
        self.usage.set_average(rows, usage)


class VectorQuantizerEMA(_Quantizer):
    """VQ layer whose codebook follows exponential moving averages (Sonnet ``VectorQuantizerEMA``).

    ``loss = commitment_cost * commitment_loss``. In training mode every forward pass updates
    bias-corrected EMAs (zero-initialised) of the per-code counts ``N_i`` and per-code input sums
    ``m_i``, Laplace-smooths the counts, ``N_i <- (N_i + eps) / (n + K eps) * n``, and sets
    ``codebook_i = m_i / N_i``. The returned ``quantized`` uses the codebook from before the update.
    In eval mode nothing changes. ``codebook_loss`` is reported for monitoring (it equals the
    commitment loss in value) and carries no gradient: the codebook is not a parameter.

    Args: as :class:`VectorQuantizer`, plus ``decay`` (of the EMAs) and ``epsilon`` (Laplace smoothing).
    Under torch.distributed (``sync_distributed``) the per-step counts and sums are all-reduced, so
    every replica holds the same codebook -- the statistics of the global batch.
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
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.register_buffer("embeddings", self._uniform_init(num_embeddings, embedding_dim))
        self.ema_cluster_size = _DebiasedEMA((num_embeddings,), decay)
        self.ema_dw = _DebiasedEMA((num_embeddings, embedding_dim), decay)

    @property
    def codebook(self) -> Tensor:  # (K, D) buffer
        return self.embeddings

    def _codes_and_losses(self, x, idx):
        codes = F.embedding(idx, self.embeddings)  # (*S, D)
        commitment_loss = F.mse_loss(x, codes) if x.numel() else x.sum() * 0.0
        return codes, commitment_loss.detach(), commitment_loss

    def _objective(self, codebook_loss, commitment_loss):
        return self.commitment_cost * commitment_loss

    def _train_step(self, flat, idx, counts):
        dw = torch.zeros_like(self.embeddings).index_add_(0, idx, flat)  # (K, D) per-code sums
        if self.sync_distributed and _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(dw)
        cluster_size = self.ema_cluster_size.update(counts)
        ema_dw = self.ema_dw.update(dw)
        n = cluster_size.sum()
        smoothed = (cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        self.embeddings.copy_(ema_dw / smoothed[:, None])
        if self.restart_threshold > 0:
            self._restart_dead_codes(flat)

    def _usage(self):
        return self.ema_cluster_size.average

    def _set_codes(self, rows, vectors, usage):
        self.embeddings[rows] = vectors
        self.ema_cluster_size.set_average(rows, usage)
        self.ema_dw.set_average(rows, vectors * usage[:, None])
