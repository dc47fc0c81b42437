import math

import numpy as np
import torch

from vqvae.likelihoods import discretized_logistic_log_prob
from vqvae.metrics import bits_per_dim

BINS = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1


def np_logistic_cdf(t, mean, scale):
    return 0.5 * (1 + np.tanh((t - mean) / (2 * scale)))  # the logistic CDF, finite at +-inf


def test_the_256_probabilities_sum_to_one_and_match_the_cdf_masses():
    for mean, log_scale in [(0.0, -2.0), (0.7, -4.0), (-1.3, 0.5), (0.99, -6.5), (0.3, -7.0)]:
        m = torch.full((256,), mean, dtype=torch.float64)
        s = torch.full((256,), log_scale, dtype=torch.float64)
        p = discretized_logistic_log_prob(BINS, m, s).exp()
        assert abs(float(p.sum()) - 1.0) < 1e-9
        # independent reference: CDF differences over the bin edges, tails into the end bins
        edges = np.concatenate([[-np.inf], (BINS.numpy()[:-1] + 1 / 255), [np.inf]])
        cdf = np_logistic_cdf(edges, mean, math.exp(log_scale))
        ref = np.diff(cdf)
        big = ref > 1e-4
        np.testing.assert_allclose(p.numpy()[big], ref[big], rtol=1e-6)


def test_closed_form_mass_of_a_centred_bin_and_bits_per_dim():
    # mean on a bin centre: p = sigmoid(d) - sigmoid(-d) = tanh(d / 2) with d = 1 / (255 s)
    for log_scale in (-6.0, -4.0, -2.0):
        s = math.exp(log_scale)
        x = BINS[1:-1]
        lp = discretized_logistic_log_prob(x, x, torch.full_like(x, log_scale))
        np.testing.assert_allclose(lp.exp().numpy(), math.tanh(1 / (2 * 255 * s)), rtol=1e-9)
        expected_bits = -math.log2(math.tanh(1 / (2 * 255 * s)))
        assert abs(bits_per_dim(-float(lp.sum()), x.numel()) - expected_bits) < 1e-9


def test_extreme_tails_stay_finite():
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float32)
    lp = discretized_logistic_log_prob(x, torch.tensor([50.0, -50.0, -50.0]), torch.full((3,), -7.0))
    assert torch.isfinite(lp).all() and (lp < -1000).all()
