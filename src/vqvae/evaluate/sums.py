"""What every whole-split evaluation shares: example counts, sums registered in the same order on every rank
and added up over the ranks, code usage as metrics, and the code counts written for the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqvae.distributed import Ranks
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_npz
from vqvae.metrics import CodebookUsage, MeanAccumulator

__all__ = ["count_examples", "reduce_over_ranks", "sums_of", "usage_metrics", "write_codebook_usage"]


def count_examples(n: int, limit: int | None, name: str, what: str) -> int:
    n = n if limit is None else min(limit, n)
    if n == 0:
        raise VQVAEError(f"{name} has no {what} to evaluate")
    return n


def sums_of(*names: str) -> MeanAccumulator:
    """An accumulator with ``names`` registered in this order on every rank (so the ranks' sums line up)."""
    sums = MeanAccumulator()
    for name in names:
        sums.add(name, 0.0, 0)
    return sums


def reduce_over_ranks(ranks: Ranks, sums: MeanAccumulator, usage: CodebookUsage | None = None) -> None:
    """Add up every rank's sums (and code counts): afterwards each rank holds the whole split's."""
    if ranks.world > 1:
        sums.merge(ranks.sum)
        if usage is not None:
            usage.merge(ranks.sum)


def write_codebook_usage(path: str | Path, usage: CodebookUsage, codebook: torch.Tensor) -> None:
    """Write ``codebook.npz``, what the report draws: each code's ``counts`` (K,) and the ``codebook`` (K, D).

    Args:
        path: the file to write.
        usage: the code counts over the evaluated split.
        codebook: (K, D) the code vectors.
    """
    atomic_write_npz(path, {"counts": usage.counts.numpy(),
                            "codebook": codebook.detach().float().cpu().numpy()})


def usage_metrics(usage: CodebookUsage) -> dict[str, Any]:
    u = usage.as_dict()
    return {k: u[k] for k in ("perplexity", "codes_used", "num_embeddings", "dead_codes", "usage_fraction")}
