"""The k-means that can seed a codebook."""

from __future__ import annotations

import torch
from torch import Tensor

from vqvae.quantize.search import nearest_codes

__all__ = ["kmeans"]


def kmeans(
    vectors: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``vectors`` (N, D) -> (centroids (k, D), counts (k,)).

    Seeding is k-means++ (on at most 8192 of the vectors, to bound its cost); a cluster that
    ends up empty is re-seeded with a random vector, so every centroid is a data point or a
    mean of data points.

    Args:
        vectors: (N, D) data points, N >= 1; used as float32.
        k: number of centroids.
        iters: Lloyd iterations (at least one is run).
        generator: random generator for the seeding and the re-seeding; None uses the global one.
    Returns:
        ``(centroids, counts)``: (k, D) float32 centroids and (k,) float32 number of vectors nearest each.
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
