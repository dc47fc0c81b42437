"""Evaluation metrics: PSNR, SSIM, codebook usage, split-level means and bits per dimension.

Every metric here is meant to be reported over a *whole split*: accumulate sums and counts batch by batch
and divide once at the end (:class:`MeanAccumulator`, :class:`CodebookUsage`), never average per-batch
averages -- the last, smaller batch would otherwise be over-weighted and per-batch perplexities would
understate codebook usage.

SSIM convention: :func:`ssim` reproduces ``skimage.metrics.structural_similarity`` with its default,
non-Gaussian settings (``gaussian_weights=False``, ``win_size=7``, ``K1=0.01``, ``K2=0.03``,
``use_sample_covariance=True``), which is the natural choice for 28x28 images where the 11x11 Gaussian
window of Wang et al. (2004) would cover most of the picture:

* local statistics are plain means over a uniform ``win_size x win_size`` window;
* variances and the covariance use the sample correction ``N / (N - 1)`` with ``N = win_size**2``;
* ``C1 = (K1 * data_range)**2``, ``C2 = (K2 * data_range)**2``;
* the SSIM map is averaged only over window positions that lie entirely inside the image
  (skimage filters with reflection padding and then crops ``(win_size - 1) // 2`` pixels from each
  border, which leaves exactly those positions); a 28x28 image with a 7x7 window gives a 22x22 map;
* for several channels, the per-channel means are averaged (skimage's ``channel_axis``).

Bits/dim: likelihoods are in nats internally; ``bits/dim = total NLL in nats / (number of dims * ln 2)``."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.errors import VQVAEError

__all__ = ["CodebookUsage", "MeanAccumulator", "bits_per_dim", "elbo_bits_per_dim", "frechet_distance",
           "nats_to_bits", "psnr_from_mse", "ssim", "uniform_prior_nll_nats"]

_LN2 = math.log(2.0)

# Images per ssim pooling call: 1024 x 5 maps x 28 x 28 float64 is ~32 MB, flat peak memory on any split.
_SSIM_CHUNK = 1024


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 * log10(data_range**2 / mse)``.

    For a split-level PSNR pass the split-level MSE (sum of squared errors over all pixels / number of
    pixels), not a mean of per-image PSNRs -- the two differ.
    Args:
        mse: a mean squared error (a Python number), >= 0 (below 0 or NaN: ValueError).
        data_range: distance between the smallest and largest possible value (1.0 for images in [0, 1]).
    Returns:
        The PSNR in dB; ``inf`` for a perfect reconstruction (``mse == 0``)."""
    mse = float(mse)
    if not mse >= 0.0:  # also rejects NaN
        raise ValueError(f"mse must be >= 0, got {mse!r}")
    if not data_range > 0.0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(float(data_range) ** 2 / mse)


def _ssim_compute_dtype(device: torch.device) -> torch.dtype:
    # float64 because var = E[x^2] - E[x]^2 cancels catastrophically in float32 on flat windows
    # (the constant backgrounds of MNIST-like digits); MPS has no float64, so fall back there.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_ssim_inputs(x: Tensor, y: Tensor, data_range: float, win_size: int,
                       use_sample_covariance: bool) -> None:
    if x.shape != y.shape:
        raise ValueError(f"ssim inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"ssim inputs must be on the same device, got {x.device} and {y.device}")
    if x.dim() != 4:
        raise ValueError(f"ssim inputs must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not (torch.is_floating_point(x) and torch.is_floating_point(y)):
        raise ValueError(f"ssim inputs must be floating-point, got dtypes {x.dtype} and {y.dtype}")
    if not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size!r}")
    h, w = x.shape[2:]
    if win_size > min(h, w):
        raise ValueError(f"win_size={win_size} is larger than the images ({h}x{w})")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    if use_sample_covariance and win_size == 1:
        raise ValueError("win_size=1 leaves no degrees of freedom for the sample covariance")


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int = 7, k1: float = 0.01, k2: float = 0.03,
         use_sample_covariance: bool = True) -> Tensor:
    """Per-image structural similarity (Wang et al. 2004) with skimage's uniform-window convention.

    Convention: the module docstring. Computed in float64 (float32 on MPS), one ``avg_pool2d`` per chunk.
    Args:
        x: (N, C, H, W) floating-point images.
        y: (N, C, H, W) images on the same scale and device as ``x``.
        data_range: distance between the smallest and largest possible value (1.0 for images in [0, 1]).
        win_size: side of the uniform window; odd and no larger than H or W.
        k1: SSIM's K1: ``C1 = (K1 * data_range)**2``.
        k2: SSIM's K2: ``C2 = (K2 * data_range)**2``.
        use_sample_covariance: the ``N / (N - 1)`` correction; False switches to population statistics.
    Returns:
        (N,) in the dtype of ``x``: per image, the SSIM map's mean over channels and valid positions."""
    _check_ssim_inputs(x, y, data_range, win_size, use_sample_covariance)
    n, npix = x.shape[0], win_size * win_size
    dtype = _ssim_compute_dtype(x.device)
    out = torch.empty(n, dtype=dtype, device=x.device)
    if n == 0:
        return out.to(x.dtype)
    cov_norm = npix / (npix - 1) if use_sample_covariance else 1.0
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    with torch.no_grad():
        for start in range(0, n, _SSIM_CHUNK):
            xs = x[start : start + _SSIM_CHUNK].to(dtype)
            ys = y[start : start + _SSIM_CHUNK].to(dtype)
            maps = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=1)  # (n, 5C, H, W)
            # A uniform window's local mean is exactly avg_pool2d with stride 1; it acts on each channel
            # separately (a depthwise conv with a constant kernel) and, without padding, yields only the valid
            # positions. It is used rather than a grouped conv2d because CPU conv2d has no fast float64 path.
            local = F.avg_pool2d(maps, win_size, stride=1)  # (n, 5C, H - win + 1, W - win + 1)
            mu_x, mu_y, m_xx, m_yy, m_xy = local.chunk(5, dim=1)
            var_x = cov_norm * (m_xx - mu_x * mu_x)
            var_y = cov_norm * (m_yy - mu_y * mu_y)
            cov_xy = cov_norm * (m_xy - mu_x * mu_y)
            num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
            den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
            # Mean over positions then channels equals the mean over both: every channel has the
            # same number of valid positions.
            out[start : start + xs.shape[0]] = (num / den).flatten(1).mean(1)
    return out.to(x.dtype)


class CodebookUsage:
    """Code counts accumulated over a whole split, and the usage statistics derived from them.

    ``update`` takes integer index tensors of any shape (e.g. (N, H', W') latent maps); counts
    are int64, so they are exact however large the split, and live on the device of the indices (no
    transfer per update); every summary reads them on the CPU.

    Perplexity convention: ``exp(H)`` with ``H = -sum_{p_k > 0} p_k ln p_k`` over the whole-split
    frequencies ``p_k = counts_k / total``, i.e. the exact entropy of the empirical distribution.
    The per-batch training diagnostic (``QuantizerOutput.perplexity``, Sonnet's formula) instead
    uses ``-sum p ln(p + 1e-10)`` over all codes; the epsilon changes the entropy by about
    ``codes_used * 1e-10`` nats, negligible, but a *mean of per-batch* perplexities is not: each
    batch sees fewer distinct codes, so by concavity of the entropy it understates split usage.
    Args:
        num_embeddings: K, the number of codes (a positive integer; ValueError otherwise)."""

    def __init__(self, num_embeddings: int):
        if not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings must be a positive integer, got {num_embeddings!r}")
        self.num_embeddings = num_embeddings
        self._counts = torch.zeros(num_embeddings, dtype=torch.int64)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._counts.zero_()

    def update(self, indices: Tensor) -> None:
        """Add the codes in ``indices`` to the counts.

        Args:
            indices: integer tensor, any shape, values in [0, K) (ValueError otherwise)."""
        if torch.is_floating_point(indices) or torch.is_complex(indices) or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}")
        flat = indices.detach().reshape(-1)
        if flat.numel() == 0:
            return
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0:
            raise ValueError(f"code index {lo} is out of range [0, {self.num_embeddings})")
        if hi >= self.num_embeddings:
            raise ValueError(f"code index {hi} is out of range [0, {self.num_embeddings})")
        if self._counts.device != flat.device:
            self._counts = self._counts.to(flat.device)
        self._counts += torch.bincount(flat.long(), minlength=self.num_embeddings)

    def merge(self, reduce) -> None:
        """Replace the counts by ``reduce`` of them.

        Args:
            reduce: takes and returns an int64 (K,) tensor of counts (e.g. an all-reduce over processes)."""
        self._counts = reduce(self._counts.clone())

    @property
    def counts(self) -> Tensor:
        """(K,) int64 on the CPU: how often each code was seen (a copy)."""
        return self._counts.cpu().clone()

    @property
    def total(self) -> int:
        """Number of indices seen."""
        return int(self._counts.sum())

    def _require_data(self) -> int:
        total = self.total
        if total == 0:
            raise ValueError("CodebookUsage has no indices yet: call update() first")
        return total

    def histogram(self) -> Tensor:
        """(K,) float64 code frequencies ``counts / total``; they sum to 1."""
        total = self._require_data()
        return self.counts.to(torch.float64) / total

    @property
    def codes_used(self) -> int:
        """Number of codes seen at least once."""
        return int((self._counts > 0).sum())

    @property
    def dead_codes(self) -> Tensor:
        """(K - codes_used,) int64: indices of the codes never seen, ascending."""
        return torch.nonzero(self.counts == 0, as_tuple=False).reshape(-1)

    @property
    def entropy_nats(self) -> float:
        """Exact entropy of the whole-split code frequencies, in nats (terms with p = 0 are 0)."""
        p = self.histogram()
        p = p[p > 0]
        return float(-(p * p.log()).sum())

    @property
    def entropy_bits(self) -> float:
        """Entropy of the whole-split code frequencies in bits; at most log2(K)."""
        return self.entropy_nats / _LN2

    @property
    def perplexity(self) -> float:
        """``exp(entropy_nats)``: the effective number of codes, between 1 and K."""
        return math.exp(self.entropy_nats)

    def as_dict(self) -> dict[str, float | int]:
        """Plain Python numbers for logging: codes_used, num_embeddings, dead_codes (a count),
        perplexity and usage_fraction (codes_used / K)."""
        used = self.codes_used
        return {"codes_used": used, "num_embeddings": self.num_embeddings,
                "dead_codes": self.num_embeddings - used, "perplexity": self.perplexity,
                "usage_fraction": used / self.num_embeddings}


class MeanAccumulator:
    """Named running sums with their denominators; ``mean = total sum / total count``.

    Add each batch's *sum* (e.g. the summed squared error over its pixels) and how many items it
    covers, so a short last batch weighs exactly as much as its size."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, sum_value: float, count: int) -> None:
        """Add ``sum_value`` covering ``count`` items to ``name``.

        Args:
            name: the quantity (e.g. ``"mse"``); a new name starts at 0.
            sum_value: the batch's sum, a number or a 0-d tensor.
            count: how many items the sum covers; >= 0 (ValueError otherwise)."""
        count = int(count)
        if count < 0:
            raise ValueError(f"count for {name!r} must be >= 0, got {count}")
        self._sums[name] = self._sums.get(name, 0.0) + float(sum_value)
        self._counts[name] = self._counts.get(name, 0) + count

    def count(self, name: str) -> int:
        """Total number of items added under ``name``.

        Args:
            name: the quantity; KeyError if never added.
        Returns:
            The summed counts."""
        return self._counts[name]

    def total(self, name: str) -> float:
        """The sum of every value added under ``name``.

        Args:
            name: the quantity; KeyError if never added.
        Returns:
            The summed values."""
        return self._sums[name]

    def mean(self, name: str) -> float:
        """Total sum / total count for ``name``; KeyError if never added, ValueError if count is 0.

        Args:
            name: the quantity.
        Returns:
            The split-level mean."""
        if name not in self._sums:
            raise KeyError(f"no values were added under {name!r}")
        if self._counts[name] == 0:
            raise ValueError(f"no items were counted under {name!r}, so its mean is undefined")
        return self._sums[name] / self._counts[name]

    def merge(self, reduce) -> None:
        """Replace the sums and counts by ``reduce`` of them (e.g. an all-reduce over processes).

        Args:
            reduce: takes and returns a float64 (2 * names,) tensor: sums, then counts, in insertion order."""
        names = list(self._sums)
        packed = reduce(torch.tensor([self._sums[k] for k in names] + [self._counts[k] for k in names],
                                     dtype=torch.float64))
        for i, name in enumerate(names):
            self._sums[name], self._counts[name] = float(packed[i]), int(packed[len(names) + i])

    def as_dict(self) -> dict[str, float]:
        """``{name: mean}`` for every name with a positive count, in insertion order."""
        return {name: self.mean(name) for name, n in self._counts.items() if n > 0}


def nats_to_bits(x: float | Tensor) -> float | Tensor:
    """Convert nats to bits (divide by ln 2); works on Python numbers and tensors alike.

    Args:
        x: a quantity in nats.
    Returns:
        ``x`` in bits, of the same type."""
    return x / _LN2


def _as_int(name: str, value: int, minimum: int) -> int:
    # operator.index accepts NumPy and 0-d integer tensors but, unlike int(), refuses 3.7.
    try:
        if isinstance(value, bool):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def bits_per_dim(total_nll_nats: float, num_dims: int) -> float:
    """``total_nll_nats / (num_dims * ln 2)``: a summed negative log-likelihood in nats over
    ``num_dims`` discrete dimensions (e.g. images * channels * height * width), in bits per dim.

    Args:
        total_nll_nats: the summed negative log-likelihood, in nats.
        num_dims: the number of dimensions it is summed over; an integer >= 1 (ValueError otherwise).
    Returns:
        Bits per dimension."""
    num_dims = _as_int("num_dims", num_dims, 1)
    return float(total_nll_nats) / (num_dims * _LN2)


def elbo_bits_per_dim(decoder_nll_nats: float, prior_nll_nats: float,
                      num_pixels_times_channels: int) -> float:
    """Negative ELBO of a VQ-VAE in bits per data dimension.

    A one-hot posterior has entropy 0, so ``-ELBO = -log p(x|z) - log p(z)`` (summed, nats), divided by the
    number of data dimensions (pixels * channels, summed over the same images) times ln 2.
    Args:
        decoder_nll_nats: summed ``-log p(x|z)``, in nats.
        prior_nll_nats: the codes' summed ``-log p(z)``, in nats.
        num_pixels_times_channels: the number of data dimensions; an integer >= 1 (ValueError otherwise).
    Returns:
        The negative ELBO in bits per dimension."""
    dims = _as_int("num_pixels_times_channels", num_pixels_times_channels, 1)
    return (float(decoder_nll_nats) + float(prior_nll_nats)) / (dims * _LN2)


def uniform_prior_nll_nats(num_latents: int, num_embeddings: int) -> float:
    """NLL in nats of any code map under the uniform prior over K codes: ``num_latents * ln K``.

    This is the prior term the VQ-VAE paper uses while training the autoencoder (a constant,
    ``log K`` per latent), before a learned prior replaces it.
    Args:
        num_latents: the number of codes in the map(s); an integer >= 0.
        num_embeddings: K, the codebook size; an integer >= 1.
    Returns:
        The NLL in nats."""
    num_latents = _as_int("num_latents", num_latents, 0)
    num_embeddings = _as_int("num_embeddings", num_embeddings, 1)
    return num_latents * math.log(num_embeddings)


def frechet_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, F) and b (M, F):
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).

    Args:
        a: (N, F) features (an array or a tensor), N >= 2 (a VQVAEError otherwise).
        b: (M, F) features, M >= 2.
    Returns:
        The distance, in float64 via symmetric eigendecompositions (so no general matrix square root)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise VQVAEError(f"frechet_distance needs two (N >= 2, F) feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh((cov_a + cov_a.T) / 2)  # the PSD square root of cov_a
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
