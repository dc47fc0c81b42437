"""Metrics against independent references: a loop-based NumPy SSIM (explicit windows, explicit
means and variances), NumPy/Counter code counts, and closed-form values for PSNR, perplexity and
bits per dimension."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from vqvae.metrics import (
    CodebookUsage,
    MeanAccumulator,
    bits_per_dim,
    elbo_bits_per_dim,
    nats_to_bits,
    psnr_from_mse,
    ssim,
    uniform_prior_nll_nats,
)


# ---- the NumPy SSIM reference --------------------------------------------------------------------
def np_ssim(x, y, data_range=1.0, win_size=7, k1=0.01, k2=0.03, sample=True):
    """skimage's non-Gaussian SSIM written out window by window: (N, C, H, W) -> (N,)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, c, h, w = x.shape
    ddof = 1 if sample else 0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    out = np.zeros(n)
    for b in range(n):
        per_channel = []
        for ch in range(c):
            vals = []
            for i in range(h - win_size + 1):
                for j in range(w - win_size + 1):
                    wx = x[b, ch, i : i + win_size, j : j + win_size].ravel()
                    wy = y[b, ch, i : i + win_size, j : j + win_size].ravel()
                    mx, my = wx.mean(), wy.mean()
                    vx, vy = wx.var(ddof=ddof), wy.var(ddof=ddof)
                    cxy = ((wx - mx) * (wy - my)).sum() / (wx.size - ddof)
                    vals.append(
                        ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                    )
            per_channel.append(np.mean(vals))
        out[b] = np.mean(per_channel)
    return out


def structured_images(h=28, w=28):
    """A few deterministic (1, 1, H, W) images in [0, 1]: flat, ramp, checkerboard, disc, stripes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    imgs = [
        np.full((h, w), 0.3),
        xx / (w - 1),
        ((yy + xx) % 2).astype(np.float64),
        (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (h / 3) ** 2).astype(np.float64),
        0.5 + 0.5 * np.sin(xx / 2.0),
        np.zeros((h, w)),
    ]
    return np.stack(imgs)[:, None]


def test_reference_single_window_by_hand():
    # With a 3x3 image and win_size=3 there is one window; check the reference itself against
    # the SSIM formula evaluated by hand on two small images.
    x = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64)[None, None]
    y = np.zeros((1, 1, 3, 3))
    # mx = 1/9, my = 0, vx = (1 - 9 * (1/9)^2) / 8 = 1/9, vy = cov = 0.
    c1, c2 = 0.01**2, 0.03**2
    expected = (c1 * c2) / (((1 / 9) ** 2 + c1) * (1 / 9 + c2))
    assert np_ssim(x, y, win_size=3)[0] == pytest.approx(expected, rel=1e-12)
    got = ssim(torch.tensor(x), torch.tensor(y), win_size=3)
    assert float(got[0]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_reference_on_random_images(channels):
    rng = np.random.default_rng(0)
    x = rng.random((3, channels, 28, 28))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    y[0] = rng.random((channels, 28, 28))  # an unrelated image: SSIM near 0
    ref = np_ssim(x, y)
    got = ssim(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert got.shape == (3,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5, rtol=0)


def test_ssim_matches_reference_on_structured_images():
    a = structured_images()
    b = np.roll(structured_images(), 1, axis=0)  # every image against a different one
    x = np.concatenate([a, a, a + 0.0])
    y = np.concatenate([b, 1.0 - a, np.clip(a * 0.8 + 0.1, 0, 1)])
    ref = np_ssim(x, y)
    got = ssim(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs", [dict(win_size=3), dict(win_size=11), dict(sample=False), dict(data_range=255.0)]
)
def test_ssim_options_match_reference(kwargs):
    rng = np.random.default_rng(1)
    scale = kwargs.get("data_range", 1.0)
    x = rng.random((2, 2, 16, 20)) * scale
    y = np.clip(x + 0.1 * scale * rng.standard_normal(x.shape), 0, scale)
    ref = np_ssim(x, y, **kwargs)
    torch_kwargs = {("use_sample_covariance" if k == "sample" else k): v for k, v in kwargs.items()}
    got = ssim(torch.tensor(x), torch.tensor(y), **torch_kwargs)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10, rtol=0)


def test_ssim_identity_and_symmetry():
    rng = np.random.default_rng(2)
    x = torch.tensor(np.concatenate([rng.random((4, 1, 28, 28)), structured_images()]), dtype=torch.float32)
    torch.testing.assert_close(ssim(x, x), torch.ones(x.shape[0]), atol=1e-6, rtol=0)
    y = x.flip(0)
    torch.testing.assert_close(ssim(x, y), ssim(y, x), atol=1e-6, rtol=0)


def test_ssim_decreases_with_noise():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 28, 28, generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    scores = [ssim(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_ssim_data_range_scale_invariance():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(4, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    torch.testing.assert_close(ssim(255 * x, 255 * y, data_range=255.0), ssim(x, y), atol=1e-12, rtol=0)


def test_ssim_large_batch_is_chunk_consistent():
    # 2500 images cross several internal chunks; each result must equal the image computed alone.
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2500, 1, 28, 28, generator=gen)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    full = ssim(x, y)
    assert full.shape == (2500,)
    picks = [0, 1023, 1024, 2047, 2048, 2499]
    alone = torch.cat([ssim(x[i : i + 1], y[i : i + 1]) for i in picks])
    torch.testing.assert_close(full[picks], alone, atol=1e-7, rtol=0)
    np.testing.assert_allclose(full[[7]].numpy(), np_ssim(x[7:8].numpy(), y[7:8].numpy()), atol=1e-5)


def test_ssim_bad_input():
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:1])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, win_size=6)
    with pytest.raises(ValueError, match="larger than the images"):
        ssim(x, x, win_size=29)
    with pytest.raises(ValueError, match="floating-point"):
        ssim((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=0.0)
    assert ssim(x[:0], x[:0]).shape == (0,)


# ---- PSNR -----------------------------------------------------------------------------------------
def test_psnr_closed_forms():
    assert psnr_from_mse(0.0) == math.inf
    assert psnr_from_mse(0.01) == pytest.approx(20.0, abs=1e-12)
    assert psnr_from_mse(1.0, data_range=1.0) == pytest.approx(0.0, abs=1e-12)
    # 8-bit scale, every pixel off by exactly one level: 20 log10(255) dB.
    assert psnr_from_mse(1.0, data_range=255.0) == pytest.approx(48.130803608679106, abs=1e-9)
    # The same error expressed on the [0, 1] scale gives the same PSNR.
    assert psnr_from_mse((1 / 255) ** 2, data_range=1.0) == pytest.approx(48.130803608679106, abs=1e-9)
    with pytest.raises(ValueError, match="mse"):
        psnr_from_mse(-1e-3)
    with pytest.raises(ValueError, match="mse"):
        psnr_from_mse(float("nan"))


# ---- codebook usage -------------------------------------------------------------------------------
def test_codebook_usage_counts_match_counter():
    k = 32
    rng = np.random.default_rng(6)
    usage = CodebookUsage(k)
    seen = Counter()
    for shape in [(5, 7, 7), (3, 4), (11,), (0, 7), (2, 1, 1)]:
        idx = rng.integers(0, k - 4, size=shape)  # the last 4 codes are never used
        seen.update(idx.ravel().tolist())
        usage.update(torch.tensor(idx, dtype=torch.int32 if len(shape) == 2 else torch.int64))
    expected = np.array([seen[i] for i in range(k)], dtype=np.int64)
    assert usage.counts.dtype == torch.int64
    np.testing.assert_array_equal(usage.counts.numpy(), expected)
    assert usage.total == sum(seen.values()) == 245 + 12 + 11 + 0 + 2
    hist = usage.histogram()
    assert hist.dtype == torch.float64
    np.testing.assert_allclose(hist.numpy(), expected / expected.sum(), rtol=0, atol=1e-15)
    assert usage.codes_used == len(seen)
    dead = sorted(set(range(k)) - set(seen))
    assert usage.dead_codes.dtype == torch.int64 and usage.dead_codes.tolist() == dead
    # The entropy written out with Counter frequencies, independently of the histogram.
    probs = np.array([c / usage.total for c in seen.values()])
    h = -sum(p * math.log(p) for p in probs)
    assert usage.perplexity == pytest.approx(math.exp(h), rel=1e-12)
    assert usage.entropy_bits == pytest.approx(h / math.log(2), rel=1e-12)


def test_perplexity_closed_forms():
    k = 512
    uniform = CodebookUsage(k)
    uniform.update(torch.arange(k).repeat(3))
    assert uniform.perplexity == pytest.approx(512.0, rel=1e-12)
    assert uniform.entropy_bits == pytest.approx(9.0, rel=1e-12)
    assert uniform.as_dict() == {
        "codes_used": 512,
        "num_embeddings": 512,
        "dead_codes": 0,
        "perplexity": pytest.approx(512.0),
        "usage_fraction": 1.0,
    }

    half = CodebookUsage(8)
    half.update(torch.tensor([1, 3, 5, 7]))
    assert half.perplexity == pytest.approx(4.0, rel=1e-12)
    assert half.dead_codes.tolist() == [0, 2, 4, 6]

    single = CodebookUsage(8)
    single.update(torch.full((10,), 2))
    assert single.perplexity == 1.0 and single.entropy_bits == 0.0

    skewed = CodebookUsage(4)
    skewed.update(torch.tensor([0, 1, 1, 1]))  # p = (1/4, 3/4): H = 2 - (3/4) log2(3) bits
    assert skewed.entropy_bits == pytest.approx(2 - 0.75 * math.log2(3), rel=1e-12)
    d = skewed.as_dict()
    assert d == {
        "codes_used": 2,
        "num_embeddings": 4,
        "dead_codes": 2,
        "perplexity": pytest.approx(2 ** (2 - 0.75 * math.log2(3))),
        "usage_fraction": 0.5,
    }
    assert all(type(v) in (int, float) for v in d.values())


def test_split_perplexity_is_not_a_mean_of_batch_perplexities():
    # Two batches, each using one code: each batch has perplexity 1, the split has perplexity 2.
    usage = CodebookUsage(4)
    usage.update(torch.zeros(6, dtype=torch.long))
    usage.update(torch.ones(6, dtype=torch.long))
    assert usage.perplexity == pytest.approx(2.0, rel=1e-12)


def test_perplexity_agrees_with_batch_formula_up_to_epsilon():
    # The training diagnostic exp(-sum p log(p + 1e-10)) over the same counts differs by ~1e-10 only.
    gen = torch.Generator().manual_seed(7)
    idx = torch.randint(0, 50, (4000,), generator=gen)
    usage = CodebookUsage(64)
    usage.update(idx)
    probs = np.bincount(idx.numpy(), minlength=64) / idx.numel()
    batch_formula = math.exp(-(probs * np.log(probs + 1e-10)).sum())
    assert usage.perplexity == pytest.approx(batch_formula, rel=1e-8)


def test_codebook_usage_bad_input_and_reset():
    usage = CodebookUsage(16)
    with pytest.raises(ValueError, match="no indices"):
        _ = usage.perplexity
    with pytest.raises(ValueError, match="16"):
        usage.update(torch.tensor([0, 16]))
    with pytest.raises(ValueError, match="-3"):
        usage.update(torch.tensor([[2, -3]]))
    with pytest.raises(ValueError, match="integer"):
        usage.update(torch.tensor([1.0]))
    assert usage.total == 0  # a rejected batch leaves the counts untouched
    with pytest.raises(ValueError, match="num_embeddings"):
        CodebookUsage(0)
    usage.update(torch.tensor([4, 4]))
    counts = usage.counts
    counts[4] = 100  # the property returns a copy
    assert usage.total == 2
    usage.reset()
    assert usage.total == 0 and usage.codes_used == 0 and usage.dead_codes.numel() == 16


# ---- split-level means ----------------------------------------------------------------------------
def test_mean_accumulator_weights_by_count():
    acc = MeanAccumulator()
    acc.add("mse", 1.0, 1)  # batch mean 1.0 over 1 item
    acc.add("mse", 0.0, 3)  # batch mean 0.0 over 3 items
    acc.add("loss", torch.tensor(6.0), 4)
    acc.add("loss", 4.0, 1)
    assert acc.mean("mse") == pytest.approx(0.25)  # a mean of batch means would give 0.5
    assert acc.mean("loss") == pytest.approx(2.0)
    assert acc.count("mse") == 4
    assert acc.total("loss") == 10.0 and acc.total("mse") == 1.0  # the sums themselves, not mean * count
    assert acc.as_dict() == {"mse": pytest.approx(0.25), "loss": pytest.approx(2.0)}
    with pytest.raises(KeyError, match="nope"):
        acc.mean("nope")
    acc.add("empty", 0.0, 0)
    with pytest.raises(ValueError, match="empty"):
        acc.mean("empty")
    assert "empty" not in acc.as_dict()
    with pytest.raises(ValueError, match="-1"):
        acc.add("mse", 1.0, -1)


# ---- bits per dimension ---------------------------------------------------------------------------
def test_nats_to_bits():
    assert nats_to_bits(math.log(2)) == pytest.approx(1.0, rel=1e-15)
    assert nats_to_bits(math.log(256)) == pytest.approx(8.0, rel=1e-15)
    t = nats_to_bits(torch.tensor([0.0, math.log(8)], dtype=torch.float64))
    torch.testing.assert_close(t, torch.tensor([0.0, 3.0], dtype=torch.float64))


def test_uniform_categorical_over_8_bit_values_is_8_bits_per_dim():
    # The NLL of a 256-way uniform categorical, summed explicitly over a batch of 8-bit images.
    images = torch.randint(0, 256, (10, 3, 28, 28), generator=torch.Generator().manual_seed(8))
    log_probs = torch.full((256,), -math.log(256), dtype=torch.float64)
    total_nll = float(-log_probs[images.reshape(-1)].sum())
    assert bits_per_dim(total_nll, images.numel()) == pytest.approx(8.0, rel=1e-12)


def test_uniform_prior_closed_forms():
    assert uniform_prior_nll_nats(1, 512) / math.log(2) == pytest.approx(9.0, rel=1e-15)
    assert bits_per_dim(uniform_prior_nll_nats(49, 512), 49) == pytest.approx(9.0, rel=1e-15)
    assert uniform_prior_nll_nats(0, 512) == 0.0
    assert uniform_prior_nll_nats(10, 1) == 0.0


def test_elbo_bits_per_dim_closed_form():
    # 28x28 greyscale, 7x7 latents, K=512: a uniform 8-bit decoder and a uniform prior give
    # 8 + 49 * 9 / 784 = 8.5625 bits/dim.
    n_images, dims, latents = 5, 28 * 28, 7 * 7
    decoder = n_images * dims * math.log(256)
    prior = uniform_prior_nll_nats(n_images * latents, 512)
    assert elbo_bits_per_dim(decoder, prior, n_images * dims) == pytest.approx(8.5625, rel=1e-12)
    assert elbo_bits_per_dim(decoder, 0.0, n_images * dims) == pytest.approx(8.0, rel=1e-12)


def test_bits_per_dim_bad_input():
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(1.0, 2.5)
    with pytest.raises(ValueError, match="num_pixels_times_channels"):
        elbo_bits_per_dim(1.0, 1.0, -4)
    with pytest.raises(ValueError, match="num_embeddings"):
        uniform_prior_nll_nats(3, 0)
    assert bits_per_dim(math.log(2) * 6, np.int64(6)) == pytest.approx(1.0)
