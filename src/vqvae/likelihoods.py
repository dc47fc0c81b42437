"""Likelihoods of the data given the decoder's output, so that log p(x|z) is a real probability.

Images: 8-bit pixels under a discretized logistic. Audio: waveforms companded to 256 mu-law classes
(WaveNet, arXiv:1609.03499), each predicted by a 256-way softmax.

``discretized_logistic_log_prob`` is the single-component discretized logistic of PixelCNN++
(Salimans et al. 2017, arXiv:1701.05517): pixel values 0..255 are mapped to the 256 bin centres
-1, -1 + 2/255, ..., 1; the probability of a bin is the logistic CDF mass over it, with the two end bins
taking the tails down to -inf and up to +inf, so the 256 probabilities sum to exactly one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_SCALE_MIN = -7.0  # scales below e^-7 (narrower than a bin / 500) only cause numerical trouble


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Log-probability (nats) of pixels ``x`` under a discretized logistic; all tensors the same shape.

    ``x`` holds bin centres in [-1, 1] (8-bit value v -> 2 v / 255 - 1); ``mean`` and ``log_scale`` are the
    logistic's location and log-scale in the same units (``log_scale`` is clamped below at -7).

    Args:
        x: pixels as bin centres in [-1, 1].
        mean: the logistic's location, in the units of ``x``.
        log_scale: natural log of the logistic's scale, in the units of ``x`` (clamped below at -7).
    Returns:
        The log-probability of each pixel in nats, the shape of ``x``; the end bins take the tails.
    """
    log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
    inv_s = torch.exp(-log_scale)
    centred = x - mean
    plus_in = inv_s * (centred + 1.0 / 255.0)  # upper bin edge, standardised
    min_in = inv_s * (centred - 1.0 / 255.0)  # lower bin edge
    log_cdf_plus = -F.softplus(-plus_in)  # log sigmoid(plus_in): all mass below the upper edge
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): all mass above the lower edge
    # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^-(a-b)), exact and stable in both tails
    width = plus_in - min_in  # 2 / (255 s) > 0
    interior = log_cdf_plus + log_one_minus_cdf_min + torch.log(-torch.expm1(-width))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, interior))


MU = 255  # mu-law with 256 levels, as in WaveNet


def mu_law_encode(x: Tensor, mu: int = MU) -> Tensor:
    """Waveform in [-1, 1] -> int64 classes 0..mu: sign(x) ln(1 + mu|x|) / ln(1 + mu), quantised uniformly.

    Args:
        x: samples, any shape; values outside [-1, 1] are clamped.
        mu: the highest class (255: 256 levels, as in WaveNet).
    Returns:
        int64 classes in 0..mu, the shape of ``x``.
    """
    x = x.clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mu_law_decode(q: Tensor, mu: int = MU) -> Tensor:
    """Classes 0..mu -> waveform in [-1, 1] (the inverse of the companding at each level's centre).

    Args:
        q: integer classes in 0..mu, any shape.
        mu: the highest class, as given to :func:`mu_law_encode`.
    Returns:
        float32 samples in [-1, 1], the shape of ``q``.
    """
    y = 2 * q.float() / mu - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu
