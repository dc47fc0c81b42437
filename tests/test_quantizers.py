"""The quantizers that came after the paper -- ResidualVQ, FSQ, LFQ and the codebook layers' options (cosine
codes, projected codes, the rotation trick, heads, code sampling, dead-code restarts) -- against independent
NumPy transcriptions of their papers' formulas (float64, brute force), or against an invariant.

References: SoundStream (Zeghidour et al. 2021) for residual VQ and quantizer dropout; Mentzer et al. 2023 for
FSQ; MAGVIT-v2 (Yu et al. 2023) for LFQ; ViT-VQGAN (Yu et al. 2021) for cosine and low-dimensional codes;
Fifty et al. 2024 for the rotation trick; Sonnet 2's VectorQuantizerEMA for the moving averages."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import vqvae.quantize.scalar as scalar
from vqvae import FSQ, LFQ, ResidualVQ, VectorQuantizer, VectorQuantizerEMA

D, K, Q = 6, 8, 3


# ---- the NumPy references -------------------------------------------------------------------------
def np_nearest(flat, codebook):  # brute force over every pair, float64, ties to the lowest index
    d = ((flat[:, None, :].astype(np.float64) - codebook[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


def np_normalize(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def np_perplexity(idx, k):
    probs = np.bincount(np.asarray(idx).reshape(-1), minlength=k) / max(np.asarray(idx).size, 1)
    return np.exp(-(probs * np.log(probs + 1e-10)).sum())


class NpEMA:
    """Sonnet's VectorQuantizerEMA on (N, d) vectors, codebook (K, d): debiased moving averages of the
    counts and sums (zero-initialised), Laplace-smoothed counts, codes = sums / counts (re-normalised with
    cosine)."""

    def __init__(self, codebook, decay, eps, cosine=False):
        self.w = np.array(codebook, dtype=np.float64)
        self.k = self.w.shape[0]
        self.decay, self.eps, self.cosine = decay, eps, cosine
        self.h_n, self.h_dw, self.t = np.zeros(self.k), np.zeros_like(self.w), 0

    def step(self, flat):
        """One training step on (N, d) vectors -> their indices and codes (from before the update)."""
        flat = np.asarray(flat, dtype=np.float64)
        idx = np_nearest(flat, self.w)
        q = self.w[idx].copy()
        onehot = np.eye(self.k)[idx]
        self.t += 1
        self.h_n -= (self.h_n - onehot.sum(0)) * (1 - self.decay)
        self.h_dw -= (self.h_dw - onehot.T @ flat) * (1 - self.decay)
        n_i = self.h_n / (1 - self.decay**self.t)
        m_i = self.h_dw / (1 - self.decay**self.t)
        n = n_i.sum()
        n_i = (n_i + self.eps) / (n + self.k * self.eps) * n
        self.w = m_i / n_i[:, None]
        if self.cosine:
            self.w = np_normalize(self.w)
        return idx, q


def np_rvq(flat, codebooks):
    """Level 0 quantises x, level l the residual x - (e_0 + ... + e_{l-1}) -> indices (N, Q), codes,
    residuals."""
    residual, idx, codes, res = np.asarray(flat, dtype=np.float64), [], [], []
    for cb in codebooks:
        i = np_nearest(residual, cb)
        idx.append(i)
        codes.append(cb[i])
        res.append(residual)
        residual = residual - cb[i]
    return np.stack(idx, -1), codes, res


def np_fsq(z, levels):
    """Mentzer et al. 2023 -> codes, indices (channel 0 least significant), d code / d z (straight-through
    rounding)."""
    lv = np.array(levels, dtype=np.float64)
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half)
    t = np.tanh(z + shift)
    bounded = t * half - offset
    rounded = np.round(bounded)
    width = np.floor(lv / 2)
    radix = np.cumprod([1] + list(levels[:-1]))
    index = ((rounded + width) * radix).sum(-1).round().astype(np.int64)
    return rounded / width, index, half * (1 - t**2) / width


def np_lfq_codes(bits, scale):  # (2^B, B), channel 0 most significant
    b = (np.arange(2**bits)[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.where(b == 1, scale, -scale).astype(np.float64)


def np_entropy(p):
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def np_lfq(z, scale, inv_t, ew, cw, gamma):
    """Brute force: the (N, 2^B) softmax(2 inv_t z.c) over every code c in {-s, +s}^B."""
    z = np.asarray(z, dtype=np.float64)
    c = np_lfq_codes(z.shape[1], scale)
    logits = 2 * inv_t * z @ c.T
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    per_sample, codebook = np_entropy(p).mean(), np_entropy(p.mean(0))
    code = np.where(z > 0, scale, -scale)
    commit = ((z - code) ** 2).mean()
    index = (z > 0).astype(np.int64) @ (2 ** np.arange(z.shape[1] - 1, -1, -1))
    return dict(code=code, index=index, per_sample=per_sample, codebook=codebook, commit=commit,
                loss=ew * (per_sample - gamma * codebook) + cw * commit)


def torch_lfq_loss64(z, scale, inv_t, ew, cw, gamma):
    """The same brute force in float64 torch, for autograd."""
    c = torch.from_numpy(np_lfq_codes(z.shape[1], scale))
    logp = torch.log_softmax(2 * inv_t * z @ c.T, 1)
    p = logp.exp()
    per_sample = -(p * logp).sum(1).mean()
    avg = p.mean(0)
    codebook = -(avg * torch.log(avg)).sum()
    code = torch.where(z > 0, scale, -scale).double()
    return ew * (per_sample - gamma * codebook) + cw * ((z - code) ** 2).mean()


def numpy_of(t):
    return t.detach().double().cpu().numpy()


def states(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# ---- ResidualVQ -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_rvq_forward_losses_and_gradients_match_numpy(ema):
    torch.manual_seed(0)
    beta = 0.3
    rvq = ResidualVQ(D, K, Q, beta, ema=ema)
    x = (torch.randn(3, 5, D) * 2).requires_grad_()
    g = torch.randn(3, 5, D)
    cbs = [numpy_of(level.codebook) for level in rvq.levels]
    out = rvq(x)
    (out.quantized * g).sum().add(out.loss).backward()

    flat = numpy_of(x).reshape(-1, D)
    idx, codes, res = np_rvq(flat, cbs)
    assert out.indices.shape == (3, 5, Q) and out.indices.dtype == torch.int64
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1, Q), idx)
    assert len(set(idx[:, -1].tolist())) > 1  # the last level does quantise something
    np.testing.assert_allclose(numpy_of(out.quantized).reshape(-1, D), sum(codes), rtol=1e-5, atol=1e-5)
    mse = [((r - e) ** 2).mean() for r, e in zip(res, codes)]
    level_loss = [beta * s if ema else (1 + beta) * s for s in mse]
    for i in range(Q):
        np.testing.assert_allclose(out.parts[f"level{i}_loss"].item(), level_loss[i], rtol=1e-5)
        np.testing.assert_allclose(out.parts[f"level{i}_perplexity"].item(), np_perplexity(idx[:, i], K),
                                   rtol=1e-5)
    np.testing.assert_allclose(out.loss.item(), sum(level_loss), rtol=1e-5)
    np.testing.assert_allclose(out.commitment_loss.item(), sum(mse), rtol=1e-5)
    np.testing.assert_allclose(out.codebook_loss.item(), sum(mse), rtol=1e-5)
    _, counts = np.unique(idx, axis=0, return_counts=True)
    probs = counts / len(idx)
    joint = np.exp(-(probs * np.log(probs + 1e-10)).sum())  # of the levels' index tuples
    np.testing.assert_allclose(out.perplexity.item(), joint, rtol=1e-5)
    # d/dx: straight-through of the total (identity), plus every level's commitment pulling its residual
    m = flat.size
    grad = g.numpy().reshape(-1, D) + sum(beta * 2 * (r - e) / m for r, e in zip(res, codes))
    np.testing.assert_allclose(x.grad.numpy().reshape(-1, D), grad, rtol=1e-4, atol=1e-6)
    if not ema:  # each level's codebook gets 2 (e - r) / m from its codebook loss only
        for level, i, r, e in zip(rvq.levels, idx.T, res, codes):
            want = np.zeros((K, D))
            np.add.at(want, i, 2 * (e - r) / m)
            np.testing.assert_allclose(level.codebook.grad.numpy(), want, rtol=1e-4, atol=1e-6)


def test_rvq_ema_steps_of_every_level_match_numpy():
    torch.manual_seed(0)
    rvq = ResidualVQ(D, K, Q, 0.25, ema=True, decay=0.8, epsilon=1e-5)
    refs = [NpEMA(numpy_of(level.codebook), 0.8, 1e-5) for level in rvq.levels]
    for step in range(4):
        x = torch.randn(40, D) * (1 + step) + 0.5 * step
        out = rvq(x)
        residual, total = numpy_of(x), 0.0
        for i, ref in enumerate(refs):
            idx, q = ref.step(residual)
            np.testing.assert_array_equal(out.indices[:, i].numpy(), idx)
            total, residual = total + q, residual - q
        # quantized is made of the codebooks from before this step's update
        np.testing.assert_allclose(numpy_of(out.quantized), total, rtol=1e-5, atol=1e-5)
        for level, ref in zip(rvq.levels, refs):
            np.testing.assert_allclose(numpy_of(level.codebook), ref.w, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(numpy_of(level.ema_cluster_size.hidden), ref.h_n, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(numpy_of(level.ema_dw.hidden), ref.h_dw, rtol=1e-4, atol=1e-5)
            assert int(level.ema_cluster_size.counter) == int(level.ema_dw.counter) == ref.t


@pytest.mark.parametrize("options", [dict(ema=True), dict(ema=False), dict(ema=True, restart_threshold=1.0),
                                     dict(ema=False, cosine=True)],
                         ids=["ema", "learned", "restarts", "cosine"])
def test_rvq_lookup_is_bit_exact_at_every_depth(options):
    torch.manual_seed(0)
    rvq = ResidualVQ(D, K, Q, **options)
    rvq(torch.randn(64, D) * 2)  # a training step: the EMA codebooks move
    rvq.eval()
    x = torch.randn(2, 7, D) * 2
    out = rvq(x)
    assert torch.equal(rvq.lookup(out.indices), out.quantized)
    for n in range(1, Q + 1):
        part = rvq(x, levels=n)
        assert torch.equal(part.indices[..., :n], out.indices[..., :n])
        assert (part.indices[..., n:] == -1).all()
        assert torch.equal(rvq.lookup(out.indices[..., :n]), part.quantized)
        padded = out.indices.clone()
        padded[..., n:] = -1  # a left-out level adds nothing
        assert torch.equal(rvq.lookup(padded), part.quantized)
        _check_level_parts(part.parts, n, Q)
    if "codebook_dim" not in options:  # deeper is closer (random projections need not be)
        errors = [(rvq(x, levels=n).quantized - x).pow(2).mean().item() for n in range(1, Q + 1)]
        assert errors[-1] < errors[0]


def _check_level_parts(parts, depth, q):
    """Every level's loss and perplexity are reported; a level left out reports loss 0 and perplexity 1."""
    assert list(parts) == [f"level{i}_{k}" for i in range(q) for k in ("loss", "perplexity")]
    for i in range(depth, q):
        assert parts[f"level{i}_loss"].item() == 0.0 and parts[f"level{i}_perplexity"].item() == 1.0
    for i in range(depth):
        assert parts[f"level{i}_loss"].item() > 0 and parts[f"level{i}_perplexity"].item() >= 1.0


def _depth(indices):
    used = (indices >= 0).reshape(-1, indices.shape[-1])
    depth = int(used[0].sum())
    assert used[:, :depth].all() and not used[:, depth:].any()  # a prefix of the levels, the same everywhere
    return depth


def test_rvq_quantizer_dropout_depths_and_untouched_levels():
    torch.manual_seed(0)
    q = 4
    rvq = ResidualVQ(D, K, q, quantize_dropout=True, quantize_dropout_cutoff_index=1, dropout_seed=3)
    depths = []
    for _ in range(30):
        before = [states(level) for level in rvq.levels]
        out = rvq(torch.randn(16, D))
        depth = _depth(out.indices)
        depths.append(depth)
        for i, (level, state) in enumerate(zip(rvq.levels, before)):
            after = level.state_dict()
            if i < depth:
                assert int(after["ema_cluster_size.counter"]) == int(state["ema_cluster_size.counter"]) + 1
                assert not torch.equal(after["embeddings"], state["embeddings"])
            else:  # a dropped level learns nothing
                assert all(torch.equal(after[k], v) for k, v in state.items()), i
        _check_level_parts(out.parts, depth, q)
        torch.testing.assert_close(out.loss, sum(out.parts[f"level{i}_loss"] for i in range(depth)))
    assert set(depths) == {2, 3, 4}  # within [cutoff + 1, Q], and varying
    assert int(rvq.steps) == 30
    with rvq.frozen():
        assert _depth(rvq(torch.randn(16, D)).indices) == q  # eval: every level
    # the draws depend on the seed and the step count only: another instance with another init draws the same
    torch.manual_seed(1)
    twin = ResidualVQ(D, K, q, quantize_dropout=True, quantize_dropout_cutoff_index=1, dropout_seed=3)
    assert [_depth(twin(torch.randn(16, D) + 3).indices) for _ in range(30)] == depths
    other = ResidualVQ(D, K, q, quantize_dropout=True, quantize_dropout_cutoff_index=1, dropout_seed=4)
    assert [_depth(other(torch.randn(16, D)).indices) for _ in range(30)] != depths
    no_dropout = ResidualVQ(D, K, q)
    assert {_depth(no_dropout(torch.randn(16, D)).indices) for _ in range(5)} == {q}


def test_rvq_flat_codes_are_mixed_radix_level0_most_significant():
    torch.manual_seed(0)
    rvq = ResidualVQ(D, K, Q).eval()
    x = torch.randn(5, 4, D) * 2
    out = rvq(x)
    idx = out.indices.numpy()
    flat = rvq.flat_indices(out.indices)
    assert rvq.num_codes == K**Q and flat.shape == (5, 4)
    np.testing.assert_array_equal(flat.numpy(), sum(idx[..., i] * K ** (Q - 1 - i) for i in range(Q)))
    assert torch.equal(rvq.unflat_indices(flat), out.indices)
    assert torch.equal(rvq.lookup_codes(flat), out.quantized)
    codes = torch.arange(K**Q)
    digits = rvq.unflat_indices(codes)
    np.testing.assert_array_equal(digits.numpy(), np.stack([(codes.numpy() // K ** (Q - 1 - i)) % K
                                                            for i in range(Q)], -1))
    assert torch.equal(rvq.flat_indices(digits), codes)
    assert (rvq.flat_indices(rvq(x, levels=2).indices) == -1).all()  # a left-out level: no flat code


def test_rvq_initialize_from_seeds_each_level_on_its_residual():
    g = torch.Generator().manual_seed(0)
    coarse, fine = torch.randn(4, D, generator=g) * 10, torch.randn(4, D, generator=g)
    noise = 0.01 * torch.randn(4, 4, 25, D, generator=g)
    v = (coarse[:, None, None] + fine[None, :, None] + noise).reshape(-1, D)  # 16 clusters of 25
    torch.manual_seed(0)
    rvq = ResidualVQ(D, 4, 2, kmeans_init=True)
    assert all(int(level.initialized) == 0 for level in rvq.levels)
    with rvq.frozen():
        assert (rvq(v).quantized - v).abs().max() > 5
    rvq.initialize_from(v)
    assert all(int(level.initialized) == 1 for level in rvq.levels)
    # level 0: the 4 coarse clusters (each the mean over the fine ones); level 1: the fine offsets around it
    level0, level1 = (numpy_of(level.codebook) for level in rvq.levels)
    want0, want1 = numpy_of(coarse + fine.mean(0)), numpy_of(fine - fine.mean(0))
    for got, want in ((level0, want0), (level1, want1)):
        dist = np.linalg.norm(got[:, None] - want[None], axis=-1)
        assert dist.min(1).max() < 0.05 and sorted(dist.argmin(1)) == [0, 1, 2, 3]
    for level in rvq.levels:  # the EMA counts start at the clusters' sizes
        torch.testing.assert_close(level.ema_cluster_size.average, torch.full((4,), 100.0))
    with rvq.frozen():
        assert (rvq(v).quantized - v).abs().max() < 0.1


def test_rvq_dead_codes_of_each_level_restart_from_that_level_residuals():
    torch.manual_seed(0)
    rvq = ResidualVQ(D, K, 2, restart_threshold=0.5)
    before = [level.codebook.clone() for level in rvq.levels]
    x = torch.randn(50, D) + 20  # far from the initial codes: each level collapses onto few of them
    out = rvq(x)
    residuals = [x, x - before[0][out.indices[:, 0]]]  # what each level quantised, as the layer computes it
    for level, idx, residual in zip(rvq.levels, out.indices.T, residuals):
        dead = sorted(set(range(K)) - set(idx.tolist()))
        assert int(level.restarts) == len(dead) > 0
        for row in dead:
            assert (residual == level.codebook[row]).all(1).any(), row  # one of its own level's inputs
    assert not (residuals[1] == rvq.levels[0].codebook[dead[0]]).all(1).any()


# ---- FSQ ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [2, 3, 4, 7], [7]])
def test_fsq_forward_and_gradient_match_numpy(levels):
    torch.manual_seed(0)
    fsq = FSQ(levels)
    assert fsq.num_codes == math.prod(levels) and fsq.project_in is None
    x = (torch.randn(4, 7, len(levels)) * 1.5).requires_grad_()
    g = torch.randn(4, 7, len(levels))
    out = fsq(x)
    (out.quantized * g).sum().backward()
    code, index, slope = np_fsq(numpy_of(x), levels)
    np.testing.assert_array_equal(out.indices.numpy(), index)
    np.testing.assert_allclose(numpy_of(out.quantized), code, rtol=1e-6, atol=0)
    assert out.loss.item() == 0.0 and out.num_embeddings == math.prod(levels)
    np.testing.assert_allclose(out.perplexity.item(), np_perplexity(index, math.prod(levels)), rtol=1e-5)
    # straight-through rounding: d code / d z = d bounded / d z / (L // 2) (atol: float32's 1 - tanh^2 near 1)
    np.testing.assert_allclose(x.grad.numpy(), g.numpy() * slope, rtol=1e-5, atol=5e-6)
    assert torch.equal(fsq.lookup(out.indices), out.quantized)


def test_fsq_every_code_is_reachable_and_distinct():
    levels = [8, 5, 3, 2]
    fsq = FSQ(levels)
    axis = torch.linspace(-4, 4, 25)
    x = torch.cartesian_prod(*[axis] * len(levels))  # a grid sweeping each channel's whole range
    out = fsq(x)
    n = math.prod(levels)
    assert sorted(out.indices.unique().tolist()) == list(range(n))
    np.testing.assert_array_equal(out.indices.numpy(), np_fsq(x.double().numpy(), levels)[1])
    vectors = fsq.lookup(torch.arange(n))
    assert torch.unique(vectors, dim=0).shape[0] == n
    # index -> digits, channel 0 least significant -> (digit - L // 2) / (L // 2)
    digits = np.stack([(np.arange(n) // int(np.prod(levels[:i]))) % lv for i, lv in enumerate(levels)], -1)
    width = np.array(levels) // 2
    np.testing.assert_allclose(vectors.double().numpy(), (digits - width) / width, rtol=1e-7)
    assert torch.equal(fsq.lookup(out.indices), out.quantized)
    assert torch.equal(fsq.code_vectors(), vectors)


def test_fsq_with_projections():
    torch.manual_seed(0)
    levels = [8, 5, 3]
    fsq = FSQ(levels, embedding_dim=D)
    assert isinstance(fsq.project_in, nn.Linear) and isinstance(fsq.project_out, nn.Linear)
    assert (fsq.project_in.in_features, fsq.project_in.out_features) == (D, 3)
    assert (fsq.project_out.in_features, fsq.project_out.out_features) == (3, D)
    x = torch.randn(5, 9, D) * 2
    out = fsq(x)
    w_in, b_in = numpy_of(fsq.project_in.weight), numpy_of(fsq.project_in.bias)
    w_out, b_out = numpy_of(fsq.project_out.weight), numpy_of(fsq.project_out.bias)
    code, index, _ = np_fsq(numpy_of(x) @ w_in.T + b_in, levels)
    np.testing.assert_array_equal(out.indices.numpy(), index)
    np.testing.assert_allclose(numpy_of(out.quantized), code @ w_out.T + b_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fsq.lookup(out.indices), out.quantized, rtol=1e-6, atol=1e-6)
    assert out.quantized.shape == x.shape


# ---- LFQ ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [6, 9])
@pytest.mark.parametrize("inv_t, scale, gamma", [(1.0, 1.0, 1.0), (100.0, 1.0, 1.0), (0.7, 0.5, 0.6)])
def test_lfq_forward_and_loss_match_brute_force(bits, inv_t, scale, gamma):
    torch.manual_seed(bits)
    ew, cw = 0.1, 0.25
    lfq = LFQ(bits, entropy_loss_weight=ew, commitment_loss_weight=cw, diversity_gamma=gamma,
              inv_temperature=inv_t, codebook_scale=scale)
    assert lfq.num_codes == 2**bits and lfq.project_in is None
    x = torch.randn(64, bits) * 0.8
    out = lfq(x)
    ref = np_lfq(numpy_of(x), scale, inv_t, ew, cw, gamma)
    assert torch.equal(out.quantized, torch.from_numpy(ref["code"]).float())
    np.testing.assert_array_equal(out.indices.numpy(), ref["index"])
    assert torch.equal(lfq.lookup(out.indices), out.quantized)
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.parts["per_sample_entropy"].item(), ref["per_sample"], **tol)
    np.testing.assert_allclose(out.parts["codebook_entropy"].item(), ref["codebook"], **tol)
    np.testing.assert_allclose(out.parts["entropy_loss"].item(), ref["per_sample"] - gamma * ref["codebook"],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.commitment_loss.item(), ref["commit"], rtol=1e-5)
    np.testing.assert_allclose(out.loss.item(), ref["loss"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.perplexity.item(), np_perplexity(ref["index"], 2**bits), rtol=1e-5)


@pytest.mark.parametrize("bits", [6, 9])
@pytest.mark.parametrize("ew, cw, gamma", [(1.0, 0.0, 0.0), (1.0, 0.0, 1.0), (0.1, 0.25, 0.7)],
                         ids=["per-sample", "entropies", "all"])
def test_lfq_gradients_match_float64_brute_force(bits, ew, cw, gamma):
    torch.manual_seed(10 + bits)
    inv_t, scale = 0.5, 1.0
    lfq = LFQ(bits, entropy_loss_weight=ew, commitment_loss_weight=cw, diversity_gamma=gamma,
              inv_temperature=inv_t, codebook_scale=scale)
    x = torch.randn(32, bits, requires_grad=True)
    lfq(x).loss.backward()
    z = x.detach().double().requires_grad_()
    torch_lfq_loss64(z, scale, inv_t, ew, cw, gamma).backward()
    want = z.grad.numpy()
    assert np.abs(want).max() > 1e-4
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_lfq_quantized_gradient_is_straight_through_and_projected_lookup():
    torch.manual_seed(0)
    lfq = LFQ(4, entropy_loss_weight=0.0, commitment_loss_weight=0.0)
    x, g = torch.randn(10, 4, requires_grad=True), torch.randn(10, 4)
    (lfq(x).quantized * g).sum().backward()
    assert torch.equal(x.grad, g)
    proj = LFQ(D, 2**4)
    assert proj.bits == 4 and isinstance(proj.project_in, nn.Linear) and proj.project_in.out_features == 4
    x = torch.randn(3, 5, D)
    out = proj(x)
    z = numpy_of(x) @ numpy_of(proj.project_in.weight).T + numpy_of(proj.project_in.bias)
    ref = np_lfq(z.reshape(-1, 4), 1.0, 100.0, 0.1, 0.25, 1.0)
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), ref["index"])
    want = ref["code"] @ numpy_of(proj.project_out.weight).T + numpy_of(proj.project_out.bias)
    np.testing.assert_allclose(numpy_of(out.quantized).reshape(-1, D), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(proj.lookup(out.indices), out.quantized, rtol=1e-6, atol=1e-6)


def test_lfq_entropy_beyond_the_exact_bits_is_the_per_bit_upper_bound(monkeypatch):
    def per_bit(p):  # sum over the bits of the entropy of the batch-mean Bernoulli
        m = p.mean(0)
        return (np_entropy(np.stack([m, 1 - m], -1))).sum()

    g = torch.Generator().manual_seed(0)
    # correlated bits (bit 2 copies bit 0, bit 3 its complement): the joint entropy is well below the bound
    base = torch.rand(200, 6, generator=g).round().clamp(0.02, 0.98)
    base[:, 2], base[:, 3] = base[:, 0], 1 - base[:, 0]
    exact_ps, exact = scalar.lfq_entropies(base.double())
    monkeypatch.setattr(scalar, "_EXACT_ENTROPY_BITS", 3)
    bound_ps, bound = scalar.lfq_entropies(base.double())
    pn = base.double().numpy()
    assert exact_ps.item() == pytest.approx(bound_ps.item(), rel=1e-12)
    np.testing.assert_allclose(bound.item(), per_bit(pn), rtol=1e-10)
    # the exact value against the brute-force average of the (N, 2^6) product distributions
    bits = (np.arange(64)[:, None] >> np.arange(5, -1, -1)) & 1
    joint = np.prod(np.where(bits[None] == 1, pn[:, None], 1 - pn[:, None]), -1)  # (N, 64)
    np.testing.assert_allclose(exact.item(), np_entropy(joint.mean(0)), rtol=1e-10)
    assert bound.item() > exact.item() + 0.5
    monkeypatch.undo()
    wide = torch.rand(50, 21, generator=g, dtype=torch.float64)  # beyond 20 bits, without patching
    _, got = scalar.lfq_entropies(wide)
    np.testing.assert_allclose(got.item(), per_bit(wide.numpy()), rtol=1e-10)


# ---- the codebook layers' options -----------------------------------------------------------------
def test_cosine_vq_forward_and_gradients():
    torch.manual_seed(0)
    beta = 0.25
    vq = VectorQuantizer(D, K, beta, cosine=True)
    x = (torch.randn(20, D) * 3).requires_grad_()
    g = torch.randn(20, D)
    w = numpy_of(vq.codebook)
    out = vq(x)
    (out.quantized * g).sum().add(out.loss).backward()
    xn = numpy_of(x)
    norm = np.linalg.norm(xn, axis=1, keepdims=True)
    u, wn = xn / norm, np_normalize(w)
    idx = (u @ wn.T).argmax(1)  # the most similar in angle
    np.testing.assert_array_equal(out.indices.numpy(), idx)
    e = wn[idx]
    np.testing.assert_allclose(numpy_of(out.quantized), e, rtol=1e-5, atol=1e-6)
    mse = ((u - e) ** 2).mean()
    np.testing.assert_allclose(out.loss.item(), (1 + beta) * mse, rtol=1e-5)
    # straight-through to the normalised input, then the normalisation's Jacobian (I - u u^T) / |x|
    v = g.numpy() + beta * 2 * (u - e) / u.size
    np.testing.assert_allclose(x.grad.numpy(), (v - u * (u * v).sum(1, keepdims=True)) / norm,
                               rtol=1e-4, atol=1e-6)
    # the codebook: 2 (e - u) / m summed per code, through the codes' normalisation
    gn = np.zeros((K, D))
    np.add.at(gn, idx, 2 * (e - u) / u.size)
    wnorm = np.linalg.norm(w, axis=1, keepdims=True)
    np.testing.assert_allclose(vq.codebook.grad.numpy(), (gn - wn * (wn * gn).sum(1, keepdims=True)) / wnorm,
                               rtol=1e-4, atol=1e-6)


def test_cosine_ema_steps_match_numpy():
    torch.manual_seed(0)
    ema = VectorQuantizerEMA(D, K, decay=0.8, cosine=True)
    torch.testing.assert_close(ema.codebook.norm(dim=1), torch.ones(K))
    ref = NpEMA(numpy_of(ema.codebook), 0.8, 1e-5, cosine=True)
    for step in range(3):
        x = torch.randn(30, D) * 2 + step
        out = ema(x)
        idx, q = ref.step(np_normalize(numpy_of(x)))
        np.testing.assert_array_equal(out.indices.numpy(), idx)
        np.testing.assert_allclose(numpy_of(out.quantized), q, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(numpy_of(ema.codebook), ref.w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(numpy_of(ema.ema_dw.hidden), ref.h_dw, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ema.codebook.norm(dim=1), torch.ones(K))


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_codebook_dim_projects_in_and_out(cls):
    torch.manual_seed(0)
    beta, d = 0.25, 3
    vq = cls(D, K, beta, codebook_dim=d)
    assert isinstance(vq.project_in, nn.Linear) and isinstance(vq.project_out, nn.Linear)
    assert vq.project_in.weight.shape == (d, D) and vq.project_out.weight.shape == (D, d)
    assert vq.codebook.shape == (K, d)
    assert VectorQuantizer(D, K).project_in is None
    w_in, b_in = numpy_of(vq.project_in.weight), numpy_of(vq.project_in.bias)
    w_out, b_out = numpy_of(vq.project_out.weight), numpy_of(vq.project_out.bias)
    cb = numpy_of(vq.codebook)
    x = torch.randn(4, 5, D).requires_grad_()
    g = torch.randn(4, 5, D)
    out = vq(x)
    (out.quantized * g).sum().add(out.loss).backward()
    z = numpy_of(x).reshape(-1, D) @ w_in.T + b_in
    idx = np_nearest(z, cb)
    e = cb[idx]
    np.testing.assert_array_equal(out.indices.numpy().reshape(-1), idx)
    np.testing.assert_allclose(numpy_of(out.quantized).reshape(-1, D), e @ w_out.T + b_out,
                               rtol=1e-5, atol=1e-6)
    mse = ((z - e) ** 2).mean()
    np.testing.assert_allclose(out.loss.item(), (1 + beta) * mse if cls is VectorQuantizer else beta * mse,
                               rtol=1e-5)
    # straight-through in the code space: dL/dz = g W_out + beta 2 (z - e) / m, then dL/dx = dL/dz W_in
    grad_z = g.numpy().reshape(-1, D) @ w_out + beta * 2 * (z - e) / z.size
    np.testing.assert_allclose(x.grad.numpy().reshape(-1, D), grad_z @ w_in, rtol=1e-4, atol=1e-6)
    if cls is VectorQuantizerEMA:  # the moving averages live in the code space
        ref = NpEMA(cb, 0.99, 1e-5)
        ref.step(z)
        np.testing.assert_allclose(numpy_of(vq.codebook), ref.w, rtol=1e-4, atol=1e-5)
    with vq.frozen():
        out = vq(x.detach())
        assert torch.equal(vq.lookup(out.indices), out.quantized)


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_rotation_trick_value_and_gradient(cls):
    torch.manual_seed(0)
    vq = cls(D, K, rotation_trick=True).eval()
    with torch.no_grad():
        vq.codebook.mul_(3)  # codes of another length than the inputs: lambda != 1
    x = torch.randn(12, D).requires_grad_()
    g = torch.randn(12, D)
    out = vq(x)
    assert torch.equal(out.quantized, vq.codebook[out.indices])  # the forward value is the code, exactly
    (out.quantized * g).sum().backward()
    xn, e, gn = numpy_of(x), numpy_of(out.quantized), g.double().numpy()
    nx, ne = np.linalg.norm(xn, axis=1, keepdims=True), np.linalg.norm(e, axis=1, keepdims=True)
    u, q = xn / nx, e / ne
    w = np_normalize(u + q)
    lam = ne / nx
    want = lam * (gn - 2 * w * (w * gn).sum(1, keepdims=True) + 2 * u * (q * gn).sum(1, keepdims=True))
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(x.grad.numpy(), gn, atol=1e-2)  # not straight-through
    # the defining property: the Jacobian the backward pass applies, lambda R, maps x onto e
    x2 = x.detach().requires_grad_()
    q2 = vq(x2).quantized
    jac = torch.stack([torch.autograd.grad(q2[:, j].sum(), x2, retain_graph=True)[0] for j in range(D)], 1)
    np.testing.assert_allclose(torch.einsum("njd,nd->nj", jac, x2.detach()).numpy(), e, rtol=1e-4, atol=1e-5)
    # lambda R is lambda times a rotation: (lambda R)(lambda R)^T = lambda^2 I
    np.testing.assert_allclose((jac @ jac.transpose(1, 2)).numpy(), lam[:, :, None] ** 2 * np.eye(D),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate"])
def test_heads_quantise_each_piece_in_its_codebook(cls, separate):
    torch.manual_seed(0)
    h, d, n = 2, D // 2, 40
    vq = cls(D, K, heads=h, separate_codebook_per_head=separate).eval()
    assert vq.codebook.shape == ((h * K if separate else K), d) and vq.num_codes == K**h
    if separate:  # head 0's pieces lie by head 1's codes and back: a search over the whole table would cross
        with torch.no_grad():
            vq.codebook[:K] = torch.randn(K, d) * 0.3 - 3
            vq.codebook[K:] = torch.randn(K, d) * 0.3 + 3
        x = torch.cat([torch.randn(n, d) * 0.3 + 3, torch.randn(n, d) * 0.3 - 3], 1)
    else:
        x = torch.randn(n, D)
    out = vq(x)
    assert out.indices.shape == (n, h)
    cb, pieces = numpy_of(vq.codebook), numpy_of(x).reshape(n, h, d)
    for i in range(h):
        block = cb[i * K : (i + 1) * K] if separate else cb
        idx = np_nearest(pieces[:, i], block)
        np.testing.assert_array_equal(out.indices[:, i].numpy(), idx)
        np.testing.assert_allclose(numpy_of(out.quantized)[:, i * d : (i + 1) * d], block[idx], rtol=1e-6)
        if separate:
            assert (np_nearest(pieces[:, i], cb) // K != i).all()
    assert torch.equal(vq.lookup(out.indices), out.quantized)
    flat = vq.flat_indices(out.indices)
    np.testing.assert_array_equal(flat.numpy(), out.indices[:, 0].numpy() * K + out.indices[:, 1].numpy())
    assert torch.equal(vq.unflat_indices(flat), out.indices)
    assert torch.equal(vq.lookup_codes(flat), out.quantized)


@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate"])
def test_heads_ema_steps_match_numpy(separate):
    torch.manual_seed(0)
    h, d, n = 2, D // 2, 30
    ema = VectorQuantizerEMA(D, K, decay=0.8, heads=h, separate_codebook_per_head=separate)
    cb = numpy_of(ema.codebook)
    # a separate codebook per head: an independent EMA per head (its own counts, smoothing and total)
    blocks = [cb[i * K : (i + 1) * K] for i in range(h)] if separate else [cb]
    refs = [NpEMA(block, 0.8, 1e-5) for block in blocks]
    for step in range(3):
        x = torch.randn(n, D) * (1 + step) + step
        out = ema(x)
        pieces = numpy_of(x).reshape(n, h, d)
        if separate:
            for i, ref in enumerate(refs):
                idx, _ = ref.step(pieces[:, i])
                np.testing.assert_array_equal(out.indices[:, i].numpy(), idx)
            want = np.concatenate([ref.w for ref in refs])
        else:
            idx, _ = refs[0].step(pieces.reshape(-1, d))  # every head's pieces feed the one codebook
            np.testing.assert_array_equal(out.indices.numpy().reshape(-1), idx)
            want = refs[0].w
        np.testing.assert_allclose(numpy_of(ema.codebook), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_sampled_codes_follow_the_softmax_of_negative_distances(cls):
    torch.manual_seed(0)
    k, temp, m = 6, 1.0, 20000
    vq = cls(4, k, sample_codebook_temp=temp)
    x = torch.randn(1, 4)
    with torch.no_grad():
        vq.codebook.copy_(x + torch.randn(k, 4) * 0.5)
    cb = numpy_of(vq.codebook)
    dist = ((numpy_of(x) - cb) ** 2).sum(1)
    p = np.exp(-(dist - dist.min()) / temp)
    p /= p.sum()
    assert p.min() * m > 20 and p.max() < 0.9  # a spread distribution, enough draws in every cell
    with vq.frozen():  # eval: the nearest code, always
        assert (vq(x.expand(m, 4)).indices == int(dist.argmin())).all()
    torch.manual_seed(1)
    draws = vq(x.expand(m, 4)).indices
    counts = np.bincount(draws.numpy(), minlength=k)
    chi2 = ((counts - m * p) ** 2 / (m * p)).sum()
    assert chi2 < 25  # 5 degrees of freedom: P(chi2 > 25) ~ 1.4e-4
    if cls is VectorQuantizer:  # its codebook does not move: the same seed draws the same codes
        torch.manual_seed(1)
        assert torch.equal(vq(x.expand(m, 4)).indices, draws)
    # a tiny temperature picks the nearest code
    cold = cls(4, k, sample_codebook_temp=1e-4)
    rows = torch.randn(200, 4)
    d2 = ((numpy_of(rows)[:, None] - numpy_of(cold.codebook)[None]) ** 2).sum(-1)
    gap = np.sort(d2, 1)[:, 1] - d2.min(1)
    keep = torch.from_numpy(gap > 0.01)
    assert int(keep.sum()) > 150
    np.testing.assert_array_equal(cold(rows[keep]).indices.numpy(), d2.argmin(1)[keep.numpy()])


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_dead_code_restart_seeds_each_head_from_its_own_pieces(cls):
    torch.manual_seed(0)
    h, d, n = 2, D // 2, 64
    vq = cls(D, K, heads=h, separate_codebook_per_head=True, restart_threshold=0.5)
    before = vq.codebook.detach().clone()
    x = torch.cat([torch.randn(n, d) + 10, torch.randn(n, d) - 10], 1)  # head 0 positive, head 1 negative
    out = vq(x)
    used = torch.zeros(h * K, dtype=torch.bool)
    used[(out.indices + torch.arange(h) * K).reshape(-1)] = True
    dead = (~used).nonzero().squeeze(1)
    assert int(vq.restarts) == len(dead) > 0
    cb, pieces = vq.codebook.detach(), x.view(n, h, d)
    for row in dead.tolist():
        own = (pieces[:, row // K] == cb[row]).all(1)
        other = (pieces[:, 1 - row // K] == cb[row]).all(1)
        assert own.any() and not other.any(), row  # a piece of its own head, exactly
    if cls is VectorQuantizer:  # nothing else moves the learned codebook in a forward pass
        assert torch.equal(cb[used], before[used])


# ---- float32 under autocast -----------------------------------------------------------------------
LAYERS = {
    "rvq-ema-dropout": lambda: ResidualVQ(D, K, 3, quantize_dropout=True, restart_threshold=0.5),
    "rvq-learned-kmeans": lambda: ResidualVQ(D, K, 3, ema=False, kmeans_init=True),
    "fsq": lambda: FSQ([8, 5, 3, 3, 2, 2]),
    "fsq-projected": lambda: FSQ([8, 5, 3], D),
    "lfq": lambda: LFQ(D, inv_temperature=1.0),
    "lfq-projected": lambda: LFQ(D, 2**4),
    "vq-kmeans-restart": lambda: VectorQuantizer(D, K, kmeans_init=True, restart_threshold=0.5),
    "ema-kmeans-restart": lambda: VectorQuantizerEMA(D, K, kmeans_init=True, restart_threshold=0.5),
    "vq-cosine": lambda: VectorQuantizer(D, K, cosine=True),
    "ema-cosine": lambda: VectorQuantizerEMA(D, K, cosine=True),
    "vq-codebook-dim": lambda: VectorQuantizer(D, K, codebook_dim=3),
    "ema-codebook-dim": lambda: VectorQuantizerEMA(D, K, codebook_dim=3),
    "vq-rotation": lambda: VectorQuantizer(D, K, rotation_trick=True),
    "ema-rotation": lambda: VectorQuantizerEMA(D, K, rotation_trick=True),
    "vq-heads-shared": lambda: VectorQuantizer(D, K, heads=2),
    "ema-heads-separate": lambda: VectorQuantizerEMA(D, K, heads=2, separate_codebook_per_head=True,
                                                     restart_threshold=0.5),
    "vq-sample": lambda: VectorQuantizer(D, K, sample_codebook_temp=0.5),
    "ema-sample": lambda: VectorQuantizerEMA(D, K, sample_codebook_temp=0.5),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_compute_in_float32_under_autocast(name, dtype):
    torch.manual_seed(0)
    low, ref = LAYERS[name](), LAYERS[name]()
    ref.load_state_dict(low.state_dict())
    for step in range(3):
        if step == 2:
            low.eval(), ref.eval()
        x = (torch.randn(4, 5, D) * 2 + step).to(dtype)
        torch.manual_seed(100 + step)  # restarts, k-means and code sampling draw alike
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = low(x)
        torch.manual_seed(100 + step)
        b = ref(x.float())
        assert a.quantized.dtype == dtype and b.quantized.dtype == torch.float32
        assert a.loss.dtype == torch.float32
        assert torch.equal(a.quantized, b.quantized.to(dtype))
        assert torch.equal(a.indices, b.indices)
        for field in ("loss", "codebook_loss", "commitment_loss", "perplexity"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert a.parts.keys() == b.parts.keys()
        assert all(torch.equal(a.parts[k], b.parts[k]) for k in a.parts)
        if a.loss.requires_grad:
            a.loss.backward()
            b.loss.backward()
        for (key, u), v in zip(low.state_dict().items(), ref.state_dict().values()):
            assert u.dtype == v.dtype and torch.equal(u, v), key
        for (key, u), v in zip(low.named_parameters(), ref.parameters()):
            assert u.dtype == torch.float32
            assert (u.grad is None) == (v.grad is None), key
            assert u.grad is None or torch.equal(u.grad, v.grad), key
