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
from vqvae.quantize.base import QuantizerLayer, perplexity

__all__ = ["count_examples", "reduce_over_ranks", "sums_of", "usage_metrics", "write_codebook_usage"]

_DRAWN_CODES = 1 << 16  # codebook.npz holds the code vectors up to this many codes


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


def write_codebook_usage(path: str | Path, usage: CodebookUsage, quantizer: QuantizerLayer) -> None:
    """Write ``codebook.npz``, what the report draws: each code's ``counts`` (K,) and, for at most 65536
    codes, every code's vector as the decoder sees it, ``codebook`` (K, D).

    Args:
        path: the file to write.
        usage: the code counts over the evaluated split.
        quantizer: the layer whose flat codes were counted.
    """
    arrays = {"counts": usage.counts.numpy()}
    if quantizer.num_codes <= _DRAWN_CODES:
        arrays["codebook"] = quantizer.code_vectors().float().cpu().numpy()
    atomic_write_npz(path, arrays)


def usage_metrics(usage: CodebookUsage, quantizer: QuantizerLayer) -> dict[str, Any]:
    """The usage of the flat codes, and for a layer with several indices per vector (residual levels, heads)
    the codes used and perplexity of each index.

    Args:
        usage: the flat codes' counts.
        quantizer: the layer that made them.
    Returns:
        perplexity, codes_used, num_embeddings (the number of flat codes), dead_codes, usage_fraction; and
        ``codes_used_per_index``, ``perplexity_per_index`` (lists) with several indices.
    """
    u = usage.as_dict()
    out = {k: u[k] for k in ("perplexity", "codes_used", "num_embeddings", "dead_codes", "usage_fraction")}
    if quantizer.indices_per_vector > 1:
        counts = usage.counts
        used = counts.nonzero().squeeze(1)
        digits = quantizer.unflat_indices(used)  # (U, H)
        weights = counts[used].double()
        per_index = [torch.bincount(digits[:, h], weights=weights) for h in range(digits.shape[1])]
        out["codes_used_per_index"] = [int((c > 0).sum()) for c in per_index]
        out["perplexity_per_index"] = [float(perplexity(c)) for c in per_index]
    return out
