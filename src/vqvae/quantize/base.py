"""What every quantizer shares: the output type, the debiased moving average, and :class:`QuantizerLayer`
(channels along any dimension, eval mode on demand, one flat code per position, perplexity)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DebiasedEMA", "QuantizerLayer", "QuantizerOutput", "code_counts", "distributed", "finite_rows",
           "perplexity"]

# codes counted in a (K,) vector up to this many, beyond by sorting the batch's codes
_COUNTED_CODES = 1 << 20


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
    * ``indices`` -- ``S``, int64; ``(*S, H)`` for a layer with H indices per vector (heads, residual
      levels: -1 marks a level that quantizer dropout left out).
    * ``encodings`` -- ``(indices.numel(), K)`` one-hot float32 (zeros for -1), computed on access.
    * ``parts`` -- the named terms of ``loss`` and per-level statistics a layer reports beside them (a
      residual stack's ``level{i}_loss`` and ``level{i}_perplexity``, LFQ's entropies); empty for the
      paper's layers.
    """

    quantized: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    indices: Tensor
    num_embeddings: int
    parts: dict[str, Tensor] = field(default_factory=dict)

    @property
    def encodings(self) -> Tensor:
        flat = self.indices.reshape(-1)  # -1 (a residual level left out): a row of zeros
        return F.one_hot(flat.clamp(min=0), self.num_embeddings).float() * (flat >= 0)[:, None]


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



def finite_rows(flat: Tensor) -> Tensor:
    """Which rows of ``flat`` (N, D) hold only finite numbers -> (N,) bool.

    A row's norm is finite exactly when the row is, unless it overflows (components beyond ~1e19); only
    then are the rows looked at one by one: one pass over ``flat`` instead of four.

    Args:
        flat: (N, D) floating-point vectors.
    Returns:
        (N,) bool, True where every component of the row is finite.
    """
    finite = torch.isfinite(torch.linalg.vector_norm(flat, dim=1))
    return finite if bool(finite.all()) else torch.isfinite(flat).all(1)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def perplexity(counts: Tensor, total: int | None = None) -> Tensor:
    """``exp(-sum p log(p + 1e-10))`` of the frequencies ``p = counts / total`` (K,) -> scalar.

    Args:
        counts: (K,) non-negative counts (0 everywhere gives perplexity 1).
        total: what the counts are divided by; None: their sum.
    Returns:
        scalar float tensor.
    """
    probs = counts / (counts.sum().clamp_min(1) if total is None else max(total, 1))
    return torch.exp(-(probs * torch.log(probs + 1e-10)).sum())


def code_counts(codes: Tensor, num_codes: int) -> Tensor:
    """How often the codes occur, for :func:`perplexity`: (N,) integers in [0, num_codes) -> float counts,
    indexed by code up to the largest seen (a ``bincount``) for at most 2^20 codes, else of the codes seen
    only (a sort).

    Args:
        codes: (N,) non-negative integer codes.
        num_codes: how many values a code takes.
    Returns:
        float32 counts.
    """
    if num_codes <= _COUNTED_CODES:
        return torch.bincount(codes, minlength=1).float()
    return torch.unique(codes, return_counts=True)[1].float()


class QuantizerLayer(nn.Module):
    """What every quantizer has: the D features of its input along ``dim`` (channels-last by default), eval
    mode on demand (:meth:`frozen`), and one flat code per position (:attr:`num_codes` of them), so an
    autoencoder, its codes cache, its prior and its report treat every layer alike.

    Args:
        embedding_dim: D, the input's size along ``dim`` (a positive integer).
        dim: which input dimension holds the D features.
    """

    def __init__(self, embedding_dim: int, dim: int):
        super().__init__()
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        self.embedding_dim = embedding_dim
        self.dim = dim

    @property
    def num_codes(self) -> int:
        """How many values the flat code of one position takes."""
        raise NotImplementedError

    @property
    def indices_per_vector(self) -> int:
        """H: 1 for a layer with one index per vector (``indices`` of shape S), else (*S, H)."""
        return 1

    @property
    def part_names(self) -> tuple[str, ...]:
        """The keys of every forward pass's ``parts`` (what a training log adds as columns)."""
        return ()

    def flat_indices(self, indices: Tensor) -> Tensor:
        """A layer's ``indices`` -> one code per position in [0, :attr:`num_codes`) (-1: a level left out).

        Args:
            indices: what the layer's forward pass returned as ``indices``.
        Returns:
            int64 codes of shape S.
        """
        return indices

    def unflat_indices(self, codes: Tensor) -> Tensor:
        """Inverse of :meth:`flat_indices`.

        Args:
            codes: integer tensor of shape S, values in [0, :attr:`num_codes`).
        Returns:
            ``indices`` as the layer's forward pass gives them.
        """
        return codes

    def lookup(self, indices: Tensor) -> Tensor:
        """Quantised vectors (*S, D), channels-last whatever ``dim`` is, from ``indices`` as returned."""
        raise NotImplementedError

    def lookup_codes(self, codes: Tensor) -> Tensor:
        """Quantised vectors (*S, D) from flat codes of shape S (see :meth:`flat_indices`).

        Args:
            codes: integer tensor of shape S, values in [0, :attr:`num_codes`).
        Returns:
            (*S, D) vectors.
        """
        check_indices(codes, self.num_codes)
        return self.lookup(self.unflat_indices(codes.long()))

    @torch.no_grad()
    def code_vectors(self) -> Tensor:
        """Every flat code's vector, (:attr:`num_codes`, D), as the decoder sees it.

        Returns:
            (num_codes, D) float32.
        """
        return self.lookup_codes(torch.arange(self.num_codes, device=_device(self)))

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


def check_indices(indices: Tensor, count: int) -> None:
    """Refuse (ValueError) indices that are not integers in [0, count).

    Args:
        indices: the tensor to check.
        count: how many values an index may take.
    """
    if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= count):
        raise ValueError(f"indices must lie in [0, {count}), got values in [{int(indices.min())}, "
                         f"{int(indices.max())}]")


def mixed_radix(digits: Tensor, radices: list[int]) -> Tensor:
    """Digits (*S, H) of radices (H,) -> the number they spell, the first most significant; -1 where a digit
    is.

    Args:
        digits: (*S, H) integer digits, digit h in [0, radices[h]) or -1.
        radices: H radices.
    Returns:
        (*S,) int64.
    """
    out = torch.zeros(digits.shape[:-1], dtype=torch.long, device=digits.device)
    for h, radix in enumerate(radices):
        out = out * radix + digits[..., h].long()
    return torch.where((digits < 0).any(-1), -1, out)


def mixed_radix_digits(number: Tensor, radices: list[int]) -> Tensor:
    """Inverse of :func:`mixed_radix`: (*S,) -> (*S, H).

    Args:
        number: (*S,) non-negative integers below ``prod(radices)``.
        radices: H radices.
    Returns:
        (*S, H) int64 digits.
    """
    digits, rest = [], number.long()
    for radix in reversed(radices):
        digits.append(rest % radix)
        rest = rest // radix
    return torch.stack(digits[::-1], -1)


def _device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")
