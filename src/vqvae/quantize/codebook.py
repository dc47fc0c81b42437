""":class:`Quantizer`, what the two codebook layers share: the nearest-neighbour search, losses, perplexity,
k-means initialisation, dead-code restarts, and the options of the layers that came after the paper --
cosine-similarity codes, a lower code dimension with learned projections, the rotation trick, several heads
and stochastic code sampling. Every option is off by default, which is the paper's layer exactly."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.quantize.base import (
    QuantizerLayer,
    QuantizerOutput,
    check_indices,
    distributed,
    finite_rows,
    mixed_radix,
    mixed_radix_digits,
    perplexity,
)
from vqvae.quantize.gradients import RotationTrick, StraightThrough
from vqvae.quantize.kmeans import kmeans
from vqvae.quantize.search import nearest_codes, sample_codes

__all__ = ["Quantizer"]


class Quantizer(QuantizerLayer):
    """Shared machinery of :class:`~vqvae.quantize.VectorQuantizer` and
    :class:`~vqvae.quantize.VectorQuantizerEMA`.

    A vector x (D) goes through ``project_in`` (when ``heads * codebook_dim != D``), is cut into ``heads``
    pieces of ``codebook_dim``, each l2-normalised (``cosine``) and replaced by its nearest code (or one drawn
    with probability ``softmax(-||x - e||^2 / sample_codebook_temp)`` in training); the codes are put back
    together and through ``project_out``. The losses are those of the paper on the pieces.

    Args:
        embedding_dim: D, size of each input vector (a positive integer).
        num_embeddings: K, number of codes (of each head's codebook).
        commitment_cost: beta, weight of the commitment loss (finite, >= 0).
        dim: which input dimension holds the D features.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations (>= 1).
        restart_threshold: usage below which a code is re-seeded in training (finite, >= 0; 0 never).
        sync_distributed: under torch.distributed, broadcast k-means and restart choices from rank 0.
        codebook_dim: size of a code vector; None: ``D / heads`` (no projection).
        cosine: l2-normalise the pieces and the codes (nearest = most similar in angle).
        rotation_trick: pass gradients by the rotation trick instead of straight-through.
        heads: H pieces per vector, each with its own index.
        separate_codebook_per_head: one codebook per head (else all heads share one).
        sample_codebook_temp: > 0 draws codes in training (Gumbel-max) at this temperature; 0: the nearest.
    """

    def __init__(self, embedding_dim: int, num_embeddings: int, commitment_cost: float, *, dim: int,
                 kmeans_init: bool, kmeans_iters: int, restart_threshold: float, sync_distributed: bool,
                 codebook_dim: int | None, cosine: bool, rotation_trick: bool, heads: int,
                 separate_codebook_per_head: bool, sample_codebook_temp: float):
        super().__init__(embedding_dim, dim)
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings must be a positive integer, got {num_embeddings!r}")
        if not (commitment_cost >= 0 and math.isfinite(commitment_cost)):
            raise ValueError(f"commitment_cost must be finite and >= 0, got {commitment_cost!r}")
        if kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {kmeans_iters!r}")
        if not (restart_threshold >= 0 and math.isfinite(restart_threshold)):
            raise ValueError(f"restart_threshold must be finite and >= 0, got {restart_threshold!r}")
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive integer, got {heads!r}")
        if codebook_dim is None and embedding_dim % heads:
            raise ValueError(f"embedding_dim {embedding_dim} does not split into {heads} heads "
                             f"(give codebook_dim to project)")
        code_dim = embedding_dim // heads if codebook_dim is None else codebook_dim
        if not isinstance(code_dim, int) or code_dim < 1:
            raise ValueError(f"codebook_dim must be a positive integer, got {codebook_dim!r}")
        if not (sample_codebook_temp >= 0 and math.isfinite(sample_codebook_temp)):
            raise ValueError(f"sample_codebook_temp must be finite and >= 0, got {sample_codebook_temp!r}")
        self.num_embeddings = num_embeddings
        self.commitment_cost = float(commitment_cost)
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart_threshold = float(restart_threshold)
        self.sync_distributed = sync_distributed
        self.codebook_dim, self.heads, self.cosine = code_dim, heads, cosine
        self.separate_codebook_per_head = separate_codebook_per_head and heads > 1
        self.rotation_trick, self.sample_codebook_temp = rotation_trick, float(sample_codebook_temp)
        self.table_rows = num_embeddings * (heads if self.separate_codebook_per_head else 1)
        projected = heads * code_dim != embedding_dim
        self.project_in = nn.Linear(embedding_dim, heads * code_dim) if projected else None
        self.project_out = nn.Linear(heads * code_dim, embedding_dim) if projected else None
        # 1 once the codebook holds data-dependent values (k-means); saved with the weights.
        self.register_buffer("initialized", torch.tensor(0 if kmeans_init else 1, dtype=torch.uint8))
        # Total number of codes re-seeded by dead-code restarts (a diagnostic).
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def _initial_table(self) -> Tensor:
        # Sonnet's VarianceScaling(distribution='uniform') on a (D, K) variable: fan_in = D.
        limit = math.sqrt(3.0 / self.codebook_dim)
        table = torch.empty(self.table_rows, self.codebook_dim).uniform_(-limit, limit)
        return F.normalize(table, dim=1) if self.cosine else table

    @property
    def codebook(self) -> Tensor:
        """The code vectors, (K, codebook_dim); (H K, codebook_dim) with a codebook per head."""
        raise NotImplementedError

    def table(self) -> Tensor:
        """The codes the search and the lookup use: the codebook, l2-normalised with ``cosine``."""
        return self.codebook

    @property
    def num_codes(self) -> int:
        return self.num_embeddings**self.heads

    @property
    def indices_per_vector(self) -> int:
        return self.heads

    def flat_indices(self, indices: Tensor) -> Tensor:
        return indices if self.heads == 1 else mixed_radix(indices, [self.num_embeddings] * self.heads)

    def unflat_indices(self, codes: Tensor) -> Tensor:
        return codes if self.heads == 1 else mixed_radix_digits(codes, [self.num_embeddings] * self.heads)

    def extra_repr(self) -> str:
        options = "".join(f", {name}={getattr(self, name)}" for name in (
            "codebook_dim", "cosine", "rotation_trick", "heads", "separate_codebook_per_head",
            "sample_codebook_temp") if name == "codebook_dim" or getattr(self, name) not in (False, 1, 0.0))
        return (f"embedding_dim={self.embedding_dim}, num_embeddings={self.num_embeddings}, "
                f"commitment_cost={self.commitment_cost}, dim={self.dim}, kmeans_init={self.kmeans_init}, "
                f"restart_threshold={self.restart_threshold}{options}")

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for ``indices`` of shape S ((*S, H) with heads) -> (*S, D), channels-last.

        Args:
            indices: integer tensor, values in [0, K).
        Returns:
            (*S, D) vectors: the codes, put together and projected out as the forward pass does.
        """
        check_indices(indices, self.num_embeddings)
        rows = indices.long()
        if self.heads > 1:
            if indices.dim() == 0 or indices.shape[-1] != self.heads:
                raise ValueError(f"expected indices of shape (*S, {self.heads}) (one per head), got "
                                 f"{tuple(indices.shape)}")
            rows = rows + self._offsets()
        codes = F.embedding(rows, self.table())
        lead = codes.shape[: codes.dim() - (1 if self.heads == 1 else 2)]
        return self._assemble(codes.reshape(*lead, self.heads * self.codebook_dim))

    def _offsets(self) -> Tensor:
        step = self.num_embeddings if self.separate_codebook_per_head else 0
        return torch.arange(self.heads, device=self.codebook.device) * step

    def _assemble(self, codes: Tensor) -> Tensor:
        if self.project_out is None:
            return codes
        with torch.autocast(device_type=codes.device.type, enabled=False):  # lookup too: float32
            return self.project_out(codes.float())

    def _pieces(self, x: Tensor) -> Tensor:
        """(N, D) float32 inputs -> (N H, codebook_dim): projected in, cut into heads, normalised."""
        z = x if self.project_in is None else self.project_in(x)
        z = z.reshape(-1, self.codebook_dim)
        return F.normalize(z, dim=1) if self.cosine else z

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
        out_dtype, lead = x.dtype, x.shape[:-1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float().reshape(-1, self.embedding_dim)
            if self.training and not bool(self.initialized) and x.shape[0] > 0:
                self.initialize_from(x.detach())
            z = self._pieces(x)  # (N H, d)
            with torch.no_grad():
                idx = self._assign(z.detach())  # (N H,) rows of the table
                # in training, a non-finite vector (NaN / inf) is left out of every statistic the codebook
                # learns from (its loss is NaN, which the training loop's guard sees)
                finite = finite_rows(z) if self.training else None
                counts = torch.bincount(idx, weights=None if finite is None else finite.float(),
                                        minlength=self.table_rows).float()
            codes, codebook_loss, commitment_loss = self._codes_and_losses(z, idx)
            loss = self._objective(codebook_loss, commitment_loss)
            ppl = perplexity(counts, z.shape[0])  # this replica's batch (before any all-reduce)
            if self.training and z.shape[0] > 0:
                with torch.no_grad():
                    self._train_step(z.detach(), idx, counts.clone(), finite)
            q = (RotationTrick if self.rotation_trick else StraightThrough).apply(z, codes)
            q = self._assemble(q.reshape(*lead, self.heads * self.codebook_dim))
        indices = idx.view(*lead, self.heads) - self._offsets() if self.heads > 1 else idx.view(lead)
        return QuantizerOutput(
            quantized=self._from_channels_last(q.to(out_dtype), inputs.dim()), loss=loss,
            codebook_loss=codebook_loss, commitment_loss=commitment_loss, perplexity=ppl, indices=indices,
            num_embeddings=self.num_embeddings)

    def _assign(self, z: Tensor) -> Tensor:
        """The table row of every piece (N H, d) -> (N H,): the nearest code, or one drawn in training."""
        table = self.table().detach()
        draw = self.training and self.sample_codebook_temp > 0
        if not self.separate_codebook_per_head:
            return sample_codes(z, table, self.sample_codebook_temp) if draw else nearest_codes(z, table)
        k, h = self.num_embeddings, self.heads
        per_head = z.view(-1, h, self.codebook_dim)
        out = torch.empty(per_head.shape[:2], dtype=torch.long, device=z.device)
        for i in range(h):
            part, codes = per_head[:, i], table[i * k : (i + 1) * k]
            out[:, i] = (sample_codes(part, codes, self.sample_codebook_temp) if draw
                         else nearest_codes(part, codes)) + i * k
        return out.view(-1)

    def _codes_and_losses(self, z: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def _objective(self, codebook_loss: Tensor, commitment_loss: Tensor) -> Tensor:
        raise NotImplementedError

    def _train_step(self, flat: Tensor, idx: Tensor, counts: Tensor, finite: Tensor) -> None:
        """Learn from one training batch ``flat`` (N, d) of pieces: ``finite`` (N,) marks the rows that count
        (the others are left out of every statistic); ``counts`` (rows,) holds the finite rows per code."""
        raise NotImplementedError

    # -- improvements (opt-in) -----------------------------------------------------------------
    @torch.no_grad()
    def initialize_from(self, vectors: Tensor) -> None:
        """Set the codebook to the k-means centroids of ``vectors`` (N, D) -- e.g. encoder outputs -- after
        the layer's projection and split into heads (a k-means per head with a codebook per head).

        Under ``torch.distributed`` rank 0's result is broadcast so every replica agrees.

        Args:
            vectors: (N, D) vectors (any shape that reshapes to it); non-finite rows are left out.
        """
        vectors = vectors.detach().float().reshape(-1, self.embedding_dim)
        vectors = vectors[torch.isfinite(vectors).all(1)]  # k-means of the finite vectors only
        z = self._pieces(vectors)
        separate = self.separate_codebook_per_head
        groups = z.view(-1, self.heads, self.codebook_dim).unbind(1) if separate else [z]
        found = [kmeans(group, self.num_embeddings, self.kmeans_iters) for group in groups]
        centroids, counts = torch.cat([c for c, _ in found]), torch.cat([n for _, n in found])
        if self.cosine:
            centroids = F.normalize(centroids, dim=1)
        if self.sync_distributed and distributed():
            dist.broadcast(centroids, 0)
            dist.broadcast(counts, 0)
        # A floor of one vector: a zero count would make the EMA variant zero that code on its next step.
        rows = torch.arange(self.table_rows, device=centroids.device)
        self._set_codes(rows, centroids, counts.clamp(min=1.0))
        self.initialized.fill_(1)

    def _set_codes(self, rows: Tensor, vectors: Tensor, usage: Tensor) -> None:
        raise NotImplementedError

    def _usage(self) -> Tensor:
        """Moving average of how many pieces each code received per training step (rows,)."""
        raise NotImplementedError

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor, finite: Tensor) -> None:
        """Re-seed codes whose moving-average usage fell below ``restart_threshold`` with randomly chosen
        pieces of the current batch, of the code's own head (rank 0's choice under torch.distributed)."""
        usage = self._usage()
        dead = usage < self.restart_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        rows = dead.nonzero().squeeze(1)
        h = self.heads if self.separate_codebook_per_head else 1
        by_head = flat.view(-1, h, flat.shape[1])  # (positions, h, d)
        candidates = finite.view(-1, h).all(1).nonzero().squeeze(1)  # never seeded from a non-finite vector
        if candidates.numel() == 0:
            if not (self.sync_distributed and distributed()):
                return
            # still joins the broadcast below (the step is undone)
            by_head, candidates = flat.new_zeros(1, h, flat.shape[1]), candidates.new_zeros(1)
        pick = candidates[torch.randint(candidates.numel(), (num_dead,), device=flat.device)]
        vectors = by_head[pick, rows // self.num_embeddings].clone()
        if self.sync_distributed and distributed():
            dist.broadcast(vectors, 0)
        # A restarted code starts at the average usage, so it has a grace period to attract vectors.
        fresh = torch.full((num_dead,), float(usage.sum()) / self.table_rows, device=flat.device)
        self._set_codes(rows, vectors, fresh)
        self.restarts += num_dead
