"""The nearest-neighbour search of vector quantisation and the k-means that can seed a codebook."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kmeans", "nearest_codes"]

# Rows of the distance matrix computed at once: chunk x K floats stay around 4 MiB,
# small enough to live in cache between the GEMM that writes them and the argmin that reads them.
_CHUNK_ELEMENTS = 1 << 20


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
