"""What both quantizers share: the output type, the straight-through estimator, the debiased moving
average, and the :class:`Quantizer` base class (shapes, search, losses, perplexity, k-means init,
restarts)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.quantize.search import kmeans, nearest_codes

__all__ = ["DebiasedEMA", "Quantizer", "QuantizerOutput", "StraightThrough", "distributed"]


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


class StraightThrough(torch.autograd.Function):
    """Forward: the code vectors, exactly. Backward: the gradient goes to the encoder output.

    Same value and gradient as the reference ``x + sg[e - x]`` but without its rounding error,
    so ``lookup(indices)`` equals ``quantized`` bit for bit, and two elementwise passes cheaper.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, codes: Tensor) -> Tensor:  # noqa: ARG004
        """Pass the code vectors through unchanged.

        Args:
            ctx: autograd context (unused).
            inputs: (*S, D) encoder output, which receives the gradient.
            codes: (*S, D) code vectors.
        Returns:
            ``codes`` (a view).
        """
        return codes.view_as(codes)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ARG004
        """Route the gradient to the encoder output.

        Args:
            ctx: autograd context (unused).
            grad: (*S, D) gradient of the output.
        Returns:
            ``(grad, None)``: ``grad`` for ``inputs``, none for ``codes``.
        """
        return grad, None


class DebiasedEMA(nn.Module):
    """Zero-initialised exponential moving average with bias correction, as in Sonnet's
    ``ExponentialMovingAverage``: ``hidden -= (hidden - value) * (1 - decay)``;
    ``average = hidden / (1 - decay ** t)`` after the t-th update.

    Args:
        shape: shape of the averaged tensor.
        decay: weight of the past in each update, in [0, 1).
    """

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
        """Fold one more value into the average.

        Args:
            value: tensor of the average's shape.
        Returns:
            the debiased average after this update.
        """
        self.counter += 1
        self.hidden.sub_((self.hidden - value) * (1.0 - self.decay))
        return self.average

    def set_average(self, rows: Tensor, values: Tensor) -> None:
        """Make the debiased average of ``rows`` equal ``values`` from now on.

        Args:
            rows: indices into the first dimension of the average.
            values: the new averages of those rows, shape ``(len(rows), *shape[1:])``.
        """
        t = max(int(self.counter), 1)
        self.counter.fill_(t)
        self.hidden[rows] = values * (1.0 - self.decay**t)



def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Quantizer(nn.Module):
    """Shared machinery: shape handling, the nearest-neighbour search, losses, perplexity,
    the opt-in k-means initialisation and dead-code restarts.

    Args:
        embedding_dim: D, size of each code vector (a positive integer).
        num_embeddings: K, number of codes (a positive integer).
        commitment_cost: beta, weight of the commitment loss (finite, >= 0).
        dim: which input dimension holds the D features.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for the k-means (>= 1).
        restart_threshold: usage below which a code is re-seeded in training (finite, >= 0; 0 never).
        sync_distributed: under torch.distributed, broadcast k-means and restart choices from rank 0.
    """

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
        if not (commitment_cost >= 0 and math.isfinite(commitment_cost)):
            raise ValueError(f"commitment_cost must be finite and >= 0, got {commitment_cost!r}")
        if kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {kmeans_iters!r}")
        if not (restart_threshold >= 0 and math.isfinite(restart_threshold)):
            raise ValueError(f"restart_threshold must be finite and >= 0, got {restart_threshold!r}")
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

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Within it the layer runs as in eval mode, whatever its mode: no EMA step, no restart, no
        k-means; the codebook and its statistics are left as they are. Its mode is put back afterwards."""
        was = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)

    def extra_repr(self) -> str:
        return (
            f"embedding_dim={self.embedding_dim}, num_embeddings={self.num_embeddings}, "
            f"commitment_cost={self.commitment_cost}, dim={self.dim}, kmeans_init={self.kmeans_init}, "
            f"restart_threshold={self.restart_threshold}"
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for ``indices`` of any shape S -> (*S, D), channels-last whatever ``dim`` is.

        Args:
            indices: integer tensor of shape S, values in [0, K).
        Returns:
            (*S, D) code vectors.
        """
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

        Args:
            inputs: floating-point tensor with D features along ``dim``.
        Returns:
            the :class:`QuantizerOutput`; ``quantized`` has the shape and dtype of ``inputs``.
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
                # in training, a non-finite vector (NaN / inf) is left out of every statistic the codebook
                # learns from (its loss is NaN, which the training loop's guard sees): without a host sync,
                # so all ranks agree
                finite = torch.isfinite(flat).all(1) if self.training else None
                counts = torch.bincount(idx, weights=None if finite is None else finite.float(),
                                        minlength=self.num_embeddings).float()  # (K,)
            codes, codebook_loss, commitment_loss = self._codes_and_losses(x, idx.view(lead))
            loss = self._objective(codebook_loss, commitment_loss)
            probs = counts / max(flat.shape[0], 1)  # this replica's batch (before any all-reduce)
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
            if self.training and flat.shape[0] > 0:
                with torch.no_grad():
                    self._train_step(flat.detach(), idx, counts.clone(), finite)
            quantized = StraightThrough.apply(x, codes)
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

    def _train_step(self, flat: Tensor, idx: Tensor, counts: Tensor, finite: Tensor) -> None:
        """Learn from one training batch ``flat`` (N, D): ``finite`` (N,) marks the rows that count (the
        others are left out of every statistic); ``counts`` (K,) holds the finite rows per code."""
        raise NotImplementedError

    # -- improvements (opt-in) -----------------------------------------------------------------
    @torch.no_grad()
    def initialize_from(self, vectors: Tensor) -> None:
        """Set the codebook to the k-means centroids of ``vectors`` (N, D) -- e.g. encoder outputs.

        Under ``torch.distributed`` rank 0's result is broadcast so every replica agrees.

        Args:
            vectors: (N, D) vectors (any shape that reshapes to it); non-finite rows are left out.
        """
        vectors = vectors.detach().float().reshape(-1, self.embedding_dim)
        vectors = vectors[torch.isfinite(vectors).all(1)]  # k-means of the finite vectors only
        centroids, counts = kmeans(vectors, self.num_embeddings, self.kmeans_iters)
        if self.sync_distributed and distributed():
            dist.broadcast(centroids, 0)
            dist.broadcast(counts, 0)
        # A floor of one vector: a zero count would make the EMA variant zero that code on its next step.
        self._set_codes(torch.arange(self.num_embeddings, device=centroids.device), centroids,
                        counts.clamp(min=1.0))
        self.initialized.fill_(1)

    def _set_codes(self, rows: Tensor, vectors: Tensor, usage: Tensor) -> None:
        raise NotImplementedError

    def _usage(self) -> Tensor:
        """Moving average of how many input vectors each code received per training step (K,)."""
        raise NotImplementedError

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor, finite: Tensor) -> None:
        """Re-seed codes whose moving-average usage fell below ``restart_threshold`` with
        randomly chosen vectors of the current batch (rank 0's choice under torch.distributed)."""
        usage = self._usage()
        dead = usage < self.restart_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        rows = dead.nonzero().squeeze(1)
        candidates = flat if bool(finite.all()) else flat[finite]  # never seeded from a non-finite vector
        if candidates.shape[0] == 0:
            if not (self.sync_distributed and distributed()):
                return
            # still joins the broadcast below (the step is undone)
            candidates = flat.new_zeros(1, flat.shape[1])
        pick = torch.randint(candidates.shape[0], (num_dead,), device=flat.device)
        vectors = candidates[pick].clone()
        if self.sync_distributed and distributed():
            dist.broadcast(vectors, 0)
        # A restarted code starts at the average usage, so it has a grace period to attract vectors.
        fresh = torch.full((num_dead,), float(usage.sum()) / self.num_embeddings, device=flat.device)
        self._set_codes(rows, vectors, fresh)
        self.restarts += num_dead
