"""Residual vector quantisation (SoundStream, Zeghidour et al. 2021; EnCodec): a stack of quantizers, each
quantising what the ones before it left over."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqvae.quantize.base import (
    QuantizerLayer,
    QuantizerOutput,
    code_counts,
    mixed_radix,
    mixed_radix_digits,
    perplexity,
)
from vqvae.quantize.gradients import StraightThrough
from vqvae.quantize.layers import VectorQuantizer, VectorQuantizerEMA

__all__ = ["ResidualVQ"]


class ResidualVQ(QuantizerLayer):
    """``num_quantizers`` codebook layers on successive residuals: level 0 quantises x, level l quantises
    ``x - (e_0 + ... + e_{l-1})``; the output is ``e_0 + ... + e_{n-1}`` with the gradient straight through to
    x (as EnCodec), the loss the sum of the levels' losses, each level's commitment pulling its residual.

    Quantizer dropout (SoundStream): in training each step uses the first n levels only, n drawn uniformly
    from ``[quantize_dropout_cutoff_index + 1, num_quantizers]`` by a generator seeded with the step count, so
    every rank of a distributed run draws the same n; the levels left out get index -1. Decoding at any
    depth: :meth:`lookup` of the first n indices of each vector, or ``forward(x, levels=n)``.

    ``indices`` are (*S, num_quantizers); the flat code of a position (:meth:`flat_indices`) is the
    mixed-radix number of its levels, level 0 most significant (``num_embeddings ** num_quantizers`` codes).

    Args:
        embedding_dim: D, size of each input vector.
        num_embeddings: K, codes per level.
        num_quantizers: the number of levels.
        commitment_cost: beta of every level.
        ema: levels are :class:`VectorQuantizerEMA` (True) or :class:`VectorQuantizer` (gradient-learned).
        decay: EMA decay of the levels (``ema``).
        epsilon: EMA Laplace smoothing of the levels (``ema``).
        quantize_dropout: train with a random depth.
        quantize_dropout_cutoff_index: the fewest levels a step keeps, minus one.
        dropout_seed: seed of the depth draws (the same seed draws the same depths in every run).
        dim: which input dimension holds the D features.
        **level_options: other keywords of the level class (``kmeans_init``, ``restart_threshold``,
            ``cosine``, ``sample_codebook_temp``, ...), given to every level; not ``heads``, ``codebook_dim``
            or ``rotation_trick``.
    """

    def __init__(self, embedding_dim: int, num_embeddings: int, num_quantizers: int,
                 commitment_cost: float = 0.25, *, ema: bool = True, decay: float = 0.99,
                 epsilon: float = 1e-5, quantize_dropout: bool = False,
                 quantize_dropout_cutoff_index: int = 0, dropout_seed: int = 0,
                 dim: int = -1, **level_options):
        super().__init__(embedding_dim, dim)
        if not isinstance(num_quantizers, int) or num_quantizers < 1:
            raise ValueError(f"num_quantizers must be a positive integer, got {num_quantizers!r}")
        for name, off in (("heads", 1), ("codebook_dim", None), ("rotation_trick", False)):
            # the stack's gradient goes straight through the sum of its levels: nothing inside a level (a
            # projection, a rotation) would see it
            if level_options.get(name, off) != off:
                raise ValueError(f"the levels of a ResidualVQ take no {name} (one index per vector, the "
                                 f"gradient straight through the sum of the codes)")
        if not 0 <= quantize_dropout_cutoff_index < num_quantizers:
            raise ValueError(f"quantize_dropout_cutoff_index must be in [0, {num_quantizers}), got "
                             f"{quantize_dropout_cutoff_index!r}")
        if ema:
            self.levels = nn.ModuleList(
                VectorQuantizerEMA(embedding_dim, num_embeddings, commitment_cost, decay, epsilon,
                                   **level_options) for _ in range(num_quantizers))
        else:
            self.levels = nn.ModuleList(VectorQuantizer(embedding_dim, num_embeddings, commitment_cost,
                                                        **level_options) for _ in range(num_quantizers))
        self.num_embeddings, self.num_quantizers, self.ema = num_embeddings, num_quantizers, ema
        self.quantize_dropout, self.dropout_seed = quantize_dropout, dropout_seed
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps taken (the draws)
        # learned levels left out of a step get no gradient: DDP must expect it (find_unused_parameters)
        self.skips_parameters = quantize_dropout and not ema

    @property
    def num_codes(self) -> int:
        return self.num_embeddings**self.num_quantizers

    @property
    def indices_per_vector(self) -> int:
        return self.num_quantizers

    @property
    def part_names(self) -> tuple[str, ...]:
        names = ("loss", "perplexity")
        return tuple(f"level{i}_{name}" for i in range(self.num_quantizers) for name in names)

    def flat_indices(self, indices: Tensor) -> Tensor:
        return mixed_radix(indices, [self.num_embeddings] * self.num_quantizers)

    def unflat_indices(self, codes: Tensor) -> Tensor:
        return mixed_radix_digits(codes, [self.num_embeddings] * self.num_quantizers)

    def extra_repr(self) -> str:
        return (f"num_quantizers={self.num_quantizers}, ema={self.ema}, "
                f"quantize_dropout={self.quantize_dropout}, "
                f"quantize_dropout_cutoff_index={self.quantize_dropout_cutoff_index}, dim={self.dim}")

    def lookup(self, indices: Tensor) -> Tensor:
        """Vectors for ``indices`` (*S, n), n <= num_quantizers: the sum of the first n levels' codes (a level
        with index -1 adds nothing) -> (*S, D), channels-last.

        Args:
            indices: integer tensor, values in [0, K) or -1.
        Returns:
            (*S, D) vectors, equal bit for bit to the forward pass's ``quantized`` at that depth.
        """
        if indices.dim() == 0 or not 1 <= indices.shape[-1] <= self.num_quantizers:
            raise ValueError(f"expected indices of shape (*S, n), n <= {self.num_quantizers} levels, got "
                             f"{tuple(indices.shape)}")
        total = None
        for level, idx in zip(self.levels, indices.unbind(-1)):
            used = idx >= 0
            codes = level.lookup(torch.where(used, idx, 0)) * used[..., None]
            total = codes if total is None else total + codes
        return total

    def truncated(self, levels: int) -> ResidualVQ:
        """A stack of this one's first ``levels`` levels (the same modules, shared): what a codec at a lower
        bit rate uses, ``levels * log2(K)`` bits per vector.

        Args:
            levels: in [1, num_quantizers].
        Returns:
            a :class:`ResidualVQ` in this one's mode.
        """
        if not 1 <= levels <= self.num_quantizers:
            raise ValueError(f"levels must be in [1, {self.num_quantizers}], got {levels!r}")
        out = ResidualVQ.__new__(ResidualVQ)
        nn.Module.__init__(out)
        out.embedding_dim, out.dim = self.embedding_dim, self.dim
        out.levels = nn.ModuleList(self.levels[:levels])
        out.num_embeddings, out.num_quantizers, out.ema = self.num_embeddings, levels, self.ema
        out.quantize_dropout, out.dropout_seed = self.quantize_dropout, self.dropout_seed
        out.quantize_dropout_cutoff_index = min(self.quantize_dropout_cutoff_index, levels - 1)
        out.register_buffer("steps", self.steps.clone())
        out.skips_parameters = self.skips_parameters
        return out.train(self.training)

    def _depth(self, levels: int | None) -> int:
        if levels is not None:
            if not 1 <= levels <= self.num_quantizers:
                raise ValueError(f"levels must be in [1, {self.num_quantizers}], got {levels!r}")
            return levels
        if not (self.training and self.quantize_dropout):
            return self.num_quantizers
        draw = torch.Generator().manual_seed(self.dropout_seed * 1_000_003 + int(self.steps))
        low = self.quantize_dropout_cutoff_index + 1
        return int(torch.randint(low, self.num_quantizers + 1, (), generator=draw))

    def forward(self, inputs: Tensor, levels: int | None = None) -> QuantizerOutput:
        """Quantise ``inputs`` (D along ``dim``) with the first ``levels`` levels (all; a random depth in
        training with quantizer dropout).

        Args:
            inputs: floating-point tensor with D features along ``dim``.
            levels: how many levels to use; None: all (or the dropout's draw in training).
        Returns:
            the :class:`QuantizerOutput`: ``indices`` (*S, num_quantizers) (-1 beyond the depth used),
            ``parts`` with ``level{i}_loss`` and ``level{i}_perplexity`` of every level (0 and 1 for a level
            left out).
        """
        x = self._to_channels_last(inputs)
        out_dtype, lead = x.dtype, x.shape[:-1]
        depth = self._depth(levels)
        if self.training:
            self.steps += 1
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            residual, total = x, None
            indices = torch.full((*lead, self.num_quantizers), -1, dtype=torch.long, device=x.device)
            parts = {name: x.new_tensor(float(name.endswith("perplexity"))) for name in self.part_names}
            losses = [[], [], []]
            for i, level in enumerate(self.levels[:depth]):
                out = level(residual)
                codes = out.quantized.detach()
                total = codes if total is None else total + codes
                residual = residual - codes
                indices[..., i] = out.indices
                parts[f"level{i}_loss"], parts[f"level{i}_perplexity"] = out.loss, out.perplexity
                for acc, term in zip(losses, (out.loss, out.codebook_loss, out.commitment_loss)):
                    acc.append(term)
            quantized = StraightThrough.apply(x, total)
        loss, codebook_loss, commitment_loss = (torch.stack(acc).sum() for acc in losses)
        counts = self._joint_counts(indices[..., :depth].reshape(-1, depth))
        return QuantizerOutput(
            quantized=self._from_channels_last(quantized.to(out_dtype), inputs.dim()), loss=loss,
            codebook_loss=codebook_loss, commitment_loss=commitment_loss,
            perplexity=perplexity(counts, indices.numel() // self.num_quantizers), indices=indices,
            num_embeddings=self.num_embeddings, parts=parts)

    def _joint_counts(self, used: Tensor) -> Tensor:
        """How often each combination of the levels used occurs: (N, n) -> (combinations seen,) float."""
        if used.numel() == 0:
            return used.new_zeros(1, dtype=torch.float32)
        combinations = self.num_embeddings ** used.shape[1]
        if combinations >= 1 << 62:  # no int64 number for each: compare rows (slow)
            return torch.unique(used, dim=0, return_counts=True)[1].float()
        return code_counts(mixed_radix(used, [self.num_embeddings] * used.shape[1]), combinations)

    @torch.no_grad()
    def initialize_from(self, vectors: Tensor) -> None:
        """k-means of every level in turn: level 0 on ``vectors``, level l on what levels 0..l-1 leave.

        Args:
            vectors: (N, D) vectors (any shape that reshapes to it); non-finite rows are left out.
        """
        residual = vectors.detach().float().reshape(-1, self.embedding_dim)
        residual = residual[torch.isfinite(residual).all(1)]
        for level in self.levels:
            level.initialize_from(residual)
            with level.frozen():
                residual = residual - level(residual).quantized
