"""Quantizers without a codebook to learn: finite scalar quantisation (FSQ, Mentzer et al. 2023, arXiv
2309.15505) rounds each channel to a few levels; lookup-free quantisation (LFQ, MAGVIT-v2, Yu et al. 2023,
arXiv 2310.05737) keeps the sign of each channel. Their codes are the grids those make, so no code can die."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqvae.quantize.base import (
    QuantizerLayer,
    QuantizerOutput,
    check_indices,
    code_counts,
    mixed_radix,
    mixed_radix_digits,
    perplexity,
)
from vqvae.quantize.gradients import SquaredError, StraightThrough

__all__ = ["FSQ", "LFQ", "lfq_entropies"]

# LFQ: the batch's code distribution is computed exactly up to this many bits (2^20 probabilities), then by
# the sum of the bits' entropies (an upper bound)
_EXACT_ENTROPY_BITS = 20


class _Projected(QuantizerLayer):
    """A layer working on ``code_dim`` channels, with learned projections when the input has another size."""

    def __init__(self, embedding_dim: int, code_dim: int, dim: int):
        super().__init__(embedding_dim, dim)
        self.code_dim = code_dim
        projected = code_dim != embedding_dim
        self.project_in = nn.Linear(embedding_dim, code_dim) if projected else None
        self.project_out = nn.Linear(code_dim, embedding_dim) if projected else None

    def _in(self, x: Tensor) -> Tensor:
        return x if self.project_in is None else self.project_in(x)

    def _out(self, codes: Tensor) -> Tensor:
        if self.project_out is None:
            return codes
        with torch.autocast(device_type=codes.device.type, enabled=False):  # lookup too: float32
            return self.project_out(codes.float())

    def _output(self, inputs: Tensor, quantized: Tensor, indices: Tensor, loss: Tensor, commitment: Tensor,
                parts: dict[str, Tensor]) -> QuantizerOutput:
        counts = code_counts(indices.reshape(-1), self.num_codes)
        return QuantizerOutput(
            quantized=self._from_channels_last(quantized.to(inputs.dtype), inputs.dim()), loss=loss,
            codebook_loss=loss.new_zeros(()), commitment_loss=commitment,
            perplexity=perplexity(counts, indices.numel()), indices=indices, num_embeddings=self.num_codes,
            parts=parts)


class FSQ(_Projected):
    """Finite scalar quantisation: channel i is bounded to ``L_i`` values by ``tanh`` and rounded
    (straight-through), ``levels`` [8, 8, 8] giving 512 codes; no loss, no codebook.

    ``bounded = tanh(z + shift) * h - offset`` with ``h = (L - 1)(1 + 1e-3) / 2``, ``offset = 0.5`` for even
    L (else 0), ``shift = atanh(offset / h)``; the code is ``round(bounded) / (L // 2)``, in [-1, 1]. The
    index is ``sum_i (round(bounded_i) + L_i // 2) * prod_{j<i} L_j`` (channel 0 least significant, as
    lucidrains' ``FSQ``).

    Args:
        levels: L_i >= 2 for each code channel.
        embedding_dim: D, the input size; None: ``len(levels)`` (no projection); else learned projections.
        dim: which input dimension holds the D features.
    """

    def __init__(self, levels: list[int], embedding_dim: int | None = None, *, dim: int = -1):
        levels = list(levels)
        if not levels or any(not isinstance(v, int) or v < 2 for v in levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {levels!r}")
        super().__init__(len(levels) if embedding_dim is None else embedding_dim, len(levels), dim)
        self.levels = levels
        lv = torch.tensor(levels, dtype=torch.float32)
        half = (lv - 1) * (1 + 1e-3) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        self.register_buffer("_half", half, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("_width", torch.tensor([v // 2 for v in levels]), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), 0)  # channel 0 least significant
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def num_codes(self) -> int:
        return math.prod(self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, embedding_dim={self.embedding_dim}, dim={self.dim}"

    def lookup(self, indices: Tensor) -> Tensor:
        """Vectors (*S, D) of ``indices`` of shape S.

        Args:
            indices: integer tensor, values in [0, prod(levels)).
        Returns:
            (*S, D) vectors, channels-last.
        """
        check_indices(indices, self.num_codes)
        digits = mixed_radix_digits(indices.long(), self.levels[::-1]).flip(-1)  # channel 0 least significant
        return self._out((digits - self._width).float() / self._width)

    def forward(self, inputs: Tensor) -> QuantizerOutput:
        """Quantise ``inputs`` (D along ``dim``).

        Args:
            inputs: floating-point tensor with D features along ``dim``.
        Returns:
            the :class:`QuantizerOutput` (``loss`` 0; ``num_embeddings`` = prod(levels)).
        """
        x = self._to_channels_last(inputs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self._in(x.float())
            codes, digits = _Rounded.apply(z, self._shift, self._half, self._offset, self._width)
            quantized = self._out(codes)
            indices = (digits * self._basis).sum(-1)
        zero = x.new_zeros((), dtype=torch.float32)
        return self._output(inputs, quantized, indices, zero, zero, {})


class _Rounded(torch.autograd.Function):
    """FSQ's bound and rounding in one pass: forward ``round(tanh(z + shift) h - offset) / width`` and the
    digits ``round(...) + width`` (a NaN input: digit 0, its code stays NaN); backward straight through the
    rounding, ``g (1 - tanh^2) h / width``."""

    @staticmethod
    def forward(ctx, z: Tensor, shift: Tensor, half: Tensor, offset: Tensor, width: Tensor):
        """The codes (N, d) and digits (N, d) int64.

        Args:
            ctx: autograd context.
            z: (N, d) inputs.
            shift: (d,) ``atanh(offset / h)``.
            half: (d,) h.
            offset: (d,) 0.5 for even levels, else 0.
            width: (d,) ``L // 2``.
        Returns:
            ``(codes, digits)``.
        """
        t = torch.tanh(z + shift)
        rounded = torch.addcmul(-offset, t, half).round_()
        ctx.save_for_backward(t, half / width)
        digits = (rounded + width).nan_to_num_(0.0).long()
        ctx.mark_non_differentiable(digits)
        return rounded.div_(width), digits

    @staticmethod
    def backward(ctx, grad: Tensor, _digits: Tensor):
        """Straight through the rounding, through the bound.

        Args:
            ctx: autograd context.
            grad: (N, d) gradient of the codes.
            _digits: no gradient.
        Returns:
            the gradient of ``z``; none for the constants.
        """
        t, scale = ctx.saved_tensors
        return grad * (1 - t * t) * scale, None, None, None, None


class LFQ(_Projected):
    """Lookup-free quantisation: each of B channels becomes ``+scale`` or ``-scale`` by its sign (straight-
    through), the index is the bits (channel 0 most significant, as lucidrains' ``LFQ``); 2^B codes.

    ``loss = entropy_loss_weight * (per_sample_entropy - diversity_gamma * codebook_entropy)
    + commitment_loss_weight * mean((z - sg[code])^2)``, the entropies those of the code distributions
    ``p(c | z) = softmax_c(2 inv_temperature z.c)``: low for each vector, high over the batch. They factor
    over the bits, ``p(bit i = 1 | z) = sigmoid(4 inv_temperature scale z_i)``, so neither needs an (N, 2^B)
    matrix (see :func:`lfq_entropies`).

    Args:
        embedding_dim: D, the input size.
        codebook_size: 2^B codes; None: ``2 ** embedding_dim`` (no projection); else learned projections.
        dim: which input dimension holds the D features.
        entropy_loss_weight: weight of the entropy penalty.
        commitment_loss_weight: weight of the commitment loss.
        diversity_gamma: weight of the batch entropy within the penalty.
        inv_temperature: sharpness of the code distributions.
        codebook_scale: the value of a bit's code.
    """

    def __init__(self, embedding_dim: int, codebook_size: int | None = None, *, dim: int = -1,
                 entropy_loss_weight: float = 0.1, commitment_loss_weight: float = 0.25,
                 diversity_gamma: float = 1.0, inv_temperature: float = 100.0, codebook_scale: float = 1.0):
        size = 2**embedding_dim if codebook_size is None else codebook_size
        if not isinstance(size, int) or size < 2 or size & (size - 1) or size > 1 << 62:
            raise ValueError(f"codebook_size must be a power of two in [2, 2^62], got {codebook_size!r}")
        for name, value in (("entropy_loss_weight", entropy_loss_weight),
                            ("diversity_gamma", diversity_gamma),
                            ("commitment_loss_weight", commitment_loss_weight)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name, value in (("inv_temperature", inv_temperature), ("codebook_scale", codebook_scale)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        super().__init__(embedding_dim, size.bit_length() - 1, dim)
        self.codebook_size, self.bits = size, size.bit_length() - 1
        self.entropy_loss_weight, self.commitment_loss_weight = entropy_loss_weight, commitment_loss_weight
        self.diversity_gamma, self.inv_temperature = diversity_gamma, inv_temperature
        self.codebook_scale = codebook_scale

    @property
    def num_codes(self) -> int:
        return self.codebook_size

    @property
    def part_names(self) -> tuple[str, ...]:
        return ("per_sample_entropy", "codebook_entropy", "entropy_loss")

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, codebook_size={self.codebook_size}, dim={self.dim}, "
                f"entropy_loss_weight={self.entropy_loss_weight}, diversity_gamma={self.diversity_gamma}")

    def lookup(self, indices: Tensor) -> Tensor:
        """Vectors (*S, D) of ``indices`` of shape S.

        Args:
            indices: integer tensor, values in [0, 2^B).
        Returns:
            (*S, D) vectors, channels-last.
        """
        check_indices(indices, self.num_codes)
        shifts = torch.arange(self.bits - 1, -1, -1, device=indices.device)
        bits = (indices.long()[..., None] >> shifts) & 1
        return self._out(torch.where(bits == 1, self.codebook_scale, -self.codebook_scale))

    def forward(self, inputs: Tensor) -> QuantizerOutput:
        """Quantise ``inputs`` (D along ``dim``).

        Args:
            inputs: floating-point tensor with D features along ``dim``.
        Returns:
            the :class:`QuantizerOutput`; ``parts`` holds ``per_sample_entropy``, ``codebook_entropy``.
        """
        x = self._to_channels_last(inputs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self._in(x.float())
            positive = z.detach() > 0
            codes = torch.where(positive, self.codebook_scale, -self.codebook_scale)
            indices = mixed_radix(positive.long(), [2] * self.bits)
            commitment = SquaredError.apply(z, codes)
            flat = z.reshape(-1, self.bits)
            sharpness = 4 * self.inv_temperature * self.codebook_scale
            per_sample, batch = lfq_entropies(torch.sigmoid(sharpness * flat))
            entropy = per_sample - self.diversity_gamma * batch
            loss = self.entropy_loss_weight * entropy + self.commitment_loss_weight * commitment
            quantized = self._out(StraightThrough.apply(z, codes))
        parts = {"per_sample_entropy": per_sample, "codebook_entropy": batch, "entropy_loss": entropy}
        return self._output(inputs, quantized, indices, loss, commitment, parts)


def lfq_entropies(p: Tensor) -> tuple[Tensor, Tensor]:
    """Mean entropy of the per-vector code distributions and entropy of their batch average, in nats.

    A vector's code distribution is the product of its bits' Bernoulli(p_i): its entropy is the sum of the
    bits' entropies. The batch average ``avg(c) = mean_n prod_i p_n(c_i)`` is formed exactly, without the
    (N, 2^B) matrix, as ``P_high^T P_low / N``, the two factors (N, 2^(B/2)) the distributions of each half
    of the bits; beyond 20 bits the sum of the bits' batch entropies stands in (an upper bound).

    Args:
        p: (N, B) probabilities that each bit is 1.
    Returns:
        ``(per_sample_entropy, codebook_entropy)``, scalars.
    """
    def bernoulli(q: Tensor) -> Tensor:
        return -(q * torch.log(q.clamp_min(1e-30)) + (1 - q) * torch.log((1 - q).clamp_min(1e-30)))

    if p.shape[0] == 0:
        zero = p.sum() * 0
        return zero, zero
    per_sample = bernoulli(p).sum(1).mean()
    bits = p.shape[1]
    if bits > _EXACT_ENTROPY_BITS:
        return per_sample, bernoulli(p.mean(0)).sum()
    high, low = _joint(p[:, : bits // 2]), _joint(p[:, bits // 2 :])  # (N, 2^h), (N, 2^l)
    avg = (high.t() @ low).reshape(-1) / p.shape[0]  # (2^B,), index = high * 2^l + low
    return per_sample, -(avg * torch.log(avg.clamp_min(1e-30))).sum()


def _joint(p: Tensor) -> Tensor:
    """(N, b) bit probabilities -> (N, 2^b) distributions over the b bits, the first bit most significant."""
    out = p.new_ones(p.shape[0], 1)
    for i in range(p.shape[1]):
        q = p[:, i : i + 1]
        out = torch.stack([out * (1 - q), out * q], -1).reshape(p.shape[0], -1)
    return out
