"""The quantizers against an independent NumPy transcription of the reference formulas
(Sonnet 2 ``VectorQuantizer`` / ``VectorQuantizerEMA``), plus invariants and bad input."""

import numpy as np
import pytest
import torch

from vqvae import VectorQuantizer, VectorQuantizerEMA
from vqvae.quantize import kmeans, nearest_codes

D, K = 8, 16


# ---- the NumPy reference -------------------------------------------------------------------------
def np_nearest(flat, codebook):  # codebook (K, D); brute force over every pair, float64
    d = ((flat[:, None, :].astype(np.float64) - codebook[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


def np_vq(x, codebook, beta):
    """Forward values and gradients of VectorQuantizer for loss L = sum(quantized * g) + loss."""
    flat = x.reshape(-1, D)
    idx = np_nearest(flat, codebook)
    q = codebook[idx]
    m = flat.size
    codebook_loss = ((q - flat) ** 2).mean()
    commitment_loss = ((flat - q) ** 2).mean()
    onehot = np.eye(K)[idx]
    probs = onehot.mean(0)
    perplexity = np.exp(-(probs * np.log(probs + 1e-10)).sum())
    return idx.reshape(x.shape[:-1]), q.reshape(x.shape), codebook_loss, commitment_loss, perplexity, m


class NpEMA:
    """Sonnet's VectorQuantizerEMA, state in NumPy, codebook stored (K, D)."""

    def __init__(self, codebook, decay, eps):
        self.w = codebook.astype(np.float64).copy()
        self.decay, self.eps = decay, eps
        self.h_n = np.zeros(K)
        self.h_dw = np.zeros_like(self.w)
        self.t = 0

    def __call__(self, x, training=True):
        flat = x.reshape(-1, D).astype(np.float64)
        idx = np_nearest(flat, self.w)
        q = self.w[idx].copy()
        if training:
            onehot = np.eye(K)[idx]
            self.t += 1
            self.h_n -= (self.h_n - onehot.sum(0)) * (1 - self.decay)
            self.h_dw -= (self.h_dw - onehot.T @ flat) * (1 - self.decay)
            cluster = self.h_n / (1 - self.decay**self.t)
            dw = self.h_dw / (1 - self.decay**self.t)
            n = cluster.sum()
            cluster = (cluster + self.eps) / (n + K * self.eps) * n
            self.w = dw / cluster[:, None]
        return idx.reshape(x.shape[:-1]), q.reshape(x.shape)


# ---- VectorQuantizer ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, D), (2, 3, 4, D), (1, 1, D)])
def test_vq_matches_reference_values_and_gradients(shape, device):
    torch.manual_seed(0)
    vq = VectorQuantizer(D, K, commitment_cost=0.25).to(device)
    x = torch.randn(*shape).to(device).requires_grad_()
    g = torch.randn(*shape).to(device)
    out = vq(x)
    (out.quantized * g).sum().add(out.loss).backward()
    assert out.indices.device.type == out.quantized.device.type == device.type

    cb = vq.codebook.detach().double().cpu().numpy()
    xn = x.detach().double().cpu().numpy()
    idx, q, cl, ml, ppl, m = np_vq(xn, cb, 0.25)
    np.testing.assert_array_equal(out.indices.cpu().numpy(), idx)
    assert out.indices.dtype == torch.int64 and out.indices.shape == shape[:-1]
    np.testing.assert_allclose(out.quantized.detach().cpu().numpy(), q, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.codebook_loss.item(), cl, rtol=1e-5)
    np.testing.assert_allclose(out.commitment_loss.item(), ml, rtol=1e-5)
    np.testing.assert_allclose(out.loss.item(), cl + 0.25 * ml, rtol=1e-5)
    np.testing.assert_allclose(out.perplexity.item(), ppl, rtol=1e-5)
    # d/dx: straight-through g, plus beta * 2 (x - q) / m from the commitment term
    np.testing.assert_allclose(x.grad.cpu().numpy(), g.cpu().numpy() + 0.25 * 2 * (xn - q) / m,
                               rtol=1e-4, atol=1e-6)
    # d/dcodebook: only the codebook term, 2 (e - x) / m summed over the vectors assigned to each code
    gcb = np.zeros_like(cb)
    np.add.at(gcb, idx.reshape(-1), 2 * (q - xn).reshape(-1, D) / m)
    np.testing.assert_allclose(vq.codebook.grad.cpu().numpy(), gcb, rtol=1e-4, atol=1e-6)
    enc = out.encodings
    assert enc.shape == (int(np.prod(shape[:-1])), K)
    np.testing.assert_array_equal(enc.argmax(1).cpu().numpy(), idx.reshape(-1))


def test_beta_multiplies_the_commitment_term_only():
    torch.manual_seed(1)
    x = torch.randn(10, D)
    a, b = VectorQuantizer(D, K, commitment_cost=0.25), VectorQuantizer(D, K, commitment_cost=2.0)
    b.load_state_dict(a.state_dict())
    oa, ob = a(x), b(x)
    torch.testing.assert_close(oa.codebook_loss, ob.codebook_loss)
    torch.testing.assert_close(oa.loss, oa.codebook_loss + 0.25 * oa.commitment_loss)
    torch.testing.assert_close(ob.loss, ob.codebook_loss + 2.0 * ob.commitment_loss)
    ema = VectorQuantizerEMA(D, K, commitment_cost=0.7).eval()
    oe = ema(x)
    torch.testing.assert_close(oe.loss, 0.7 * oe.commitment_loss)


def test_default_init_is_uniform_with_the_reference_limit():
    torch.manual_seed(0)
    for cls in (VectorQuantizer, VectorQuantizerEMA):
        cb = cls(64, 4096).codebook.detach()
        limit = (3 / 64) ** 0.5
        assert cb.abs().max() <= limit and cb.abs().max() > 0.99 * limit
        assert abs(cb.var().item() - limit**2 / 3) < 0.02 * limit**2


def test_codebook_types_and_in_place_overwrite():
    vq, ema = VectorQuantizer(D, K), VectorQuantizerEMA(D, K)
    assert isinstance(vq.codebook, torch.nn.Parameter) and vq.codebook.shape == (K, D)
    assert not isinstance(ema.codebook, torch.nn.Parameter) and not ema.codebook.requires_grad
    assert "embeddings" in dict(ema.named_buffers()) and ema.codebook.shape == (K, D)
    new = torch.arange(K * D, dtype=torch.float32).view(K, D)
    for m in (vq, ema.eval()):
        with torch.no_grad():
            m.codebook.copy_(new)
        out = m(new[3:5] + 0.1)
        assert out.indices.tolist() == [3, 4]
        torch.testing.assert_close(m.lookup(torch.tensor([[3, 4]])), new[3:5][None])


def test_nearest_codes_chunking_and_ties():
    torch.manual_seed(0)
    flat, cb = torch.randn(1000, D), torch.randn(K, D)
    ref = np_nearest(flat.numpy(), cb.numpy())
    for chunk in (1, 7, 128, 5000):
        np.testing.assert_array_equal(nearest_codes(flat, cb, chunk_size=chunk).numpy(), ref)
    # duplicate codes: the first index wins
    cb2 = torch.cat([cb[:1], cb[:1], cb[1:]])
    assert nearest_codes(cb[:1].clone(), cb2).item() == 0


def test_quantized_equals_lookup_of_indices_and_dim_argument():
    torch.manual_seed(0)
    vq = VectorQuantizer(D, K, dim=1)
    x = torch.randn(2, D, 5, 3)  # NCHW
    out = vq(x)
    assert out.quantized.shape == x.shape and out.indices.shape == (2, 5, 3)
    assert torch.equal(vq.lookup(out.indices).permute(0, 3, 1, 2), out.quantized)
    ref = VectorQuantizer(D, K)
    ref.load_state_dict(vq.state_dict())
    out2 = ref(x.permute(0, 2, 3, 1))
    assert torch.equal(out2.indices, out.indices)


def test_wrong_last_dimension_names_the_shapes():
    with pytest.raises(ValueError, match=r"expected size 8 \(embedding_dim\).*\(4, 5\)"):
        VectorQuantizer(D, K)(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(2, 7\)"):
        VectorQuantizerEMA(D, K)(torch.randn(2, 7))
    with pytest.raises(ValueError, match="floating-point"):
        VectorQuantizer(D, K)(torch.ones(2, D, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        VectorQuantizer(D, K).lookup(torch.tensor([16]))


@pytest.mark.parametrize("kwargs", [dict(embedding_dim=0), dict(num_embeddings=-1),
                                    dict(commitment_cost=-1.0)])
def test_bad_constructor_arguments(kwargs):
    args = dict(embedding_dim=D, num_embeddings=K) | kwargs
    with pytest.raises(ValueError):
        VectorQuantizer(**args)
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizerEMA(D, K, decay=1.5)
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizerEMA(D, K, decay=1.0)  # the debiasing would divide by zero


def test_empty_batch_works():
    for m in (VectorQuantizer(D, K), VectorQuantizerEMA(D, K)):
        before = m.codebook.detach().clone()
        x = torch.zeros(0, 3, D, requires_grad=True)
        out = m(x)
        assert out.quantized.shape == (0, 3, D) and out.indices.shape == (0, 3)
        assert out.loss.item() == 0.0 and out.perplexity.item() == 1.0
        out.loss.backward()
        assert torch.equal(before, m.codebook.detach())


# ---- VectorQuantizerEMA ---------------------------------------------------------------------------
def test_ema_matches_reference_over_several_steps(device):
    torch.manual_seed(0)
    ema = VectorQuantizerEMA(D, K, commitment_cost=0.25, decay=0.9, epsilon=1e-5).to(device)
    ref = NpEMA(ema.codebook.cpu().numpy(), 0.9, 1e-5)
    for step in range(6):
        x = (torch.randn(4, 5, D) * (1 + step) + step).to(device)
        x.requires_grad_()
        before = ema.codebook.clone()
        out = ema(x)
        xn = x.detach().cpu().numpy()
        idx, q = ref(xn)
        np.testing.assert_array_equal(out.indices.cpu().numpy(), idx)
        # quantized uses the codebook from before this step's update
        torch.testing.assert_close(out.quantized.detach(), before[out.indices])
        np.testing.assert_allclose(out.quantized.detach().cpu().numpy(), q, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ema.codebook.cpu().numpy(), ref.w, rtol=1e-4, atol=1e-5)
        ml = ((xn - q) ** 2).mean()
        np.testing.assert_allclose(out.loss.item(), 0.25 * ml, rtol=1e-5)
        out.loss.backward()
        np.testing.assert_allclose(x.grad.cpu().numpy(), 0.25 * 2 * (xn - q) / x.numel(),
                                   rtol=1e-4, atol=1e-7)


def test_ema_eval_mode_changes_nothing():
    torch.manual_seed(0)
    ema = VectorQuantizerEMA(D, K)
    ema(torch.randn(20, D))  # one training step so the statistics are non-trivial
    state = {k: v.clone() for k, v in ema.state_dict().items()}
    ema.eval()
    out1 = ema(torch.randn(50, D))
    for k, v in ema.state_dict().items():
        assert torch.equal(v, state[k]), k
    ema.train()
    ema(torch.randn(50, D))
    assert not torch.equal(ema.codebook, state["embeddings"])
    assert out1.perplexity > 0


def test_fp32_under_autocast():
    torch.manual_seed(0)
    ema = VectorQuantizerEMA(D, K)
    ref = VectorQuantizerEMA(D, K)
    ref.load_state_dict(ema.state_dict())
    x = torch.randn(30, D).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ema(x)
    out_ref = ref(x.float())
    assert out.quantized.dtype == torch.bfloat16
    assert ema.codebook.dtype == torch.float32 and ema.ema_dw.hidden.dtype == torch.float32
    assert torch.equal(out.indices, out_ref.indices)
    torch.testing.assert_close(ema.codebook, ref.codebook)


# ---- the opt-in improvements ----------------------------------------------------------------------
def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, D, generator=g) * 10
    pts = (centers[:, None] + 0.01 * torch.randn(4, 50, D, generator=g)).reshape(-1, D)
    cent, counts = kmeans(pts, 4, iters=10, generator=g)
    assert sorted(counts.tolist()) == [50, 50, 50, 50]
    for c in centers:
        assert (cent - c).norm(dim=1).min() < 0.05


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_kmeans_init_uses_every_code_on_the_first_batch(cls):
    torch.manual_seed(0)
    x = torch.randn(2000, D) + 20  # far from the uniform init: the default collapses
    plain, init = cls(D, K), cls(D, K, kmeans_init=True)
    assert plain(x).indices.unique().numel() < K // 2
    out = init(x)
    assert int(init.initialized) == 1
    assert init(x).indices.unique().numel() == K
    assert out.perplexity > K / 2


@pytest.mark.parametrize("cls", [VectorQuantizer, VectorQuantizerEMA])
def test_dead_code_restart_reseeds_unused_codes(cls):
    torch.manual_seed(0)
    vq, plain = cls(D, K, restart_threshold=1.0), cls(D, K)
    x = torch.randn(400, D) + 20
    for _ in range(3):
        vq(x)
        plain(x)
    assert int(vq.restarts) > 0 and int(plain.restarts) == 0
    assert plain.eval()(x).indices.unique().numel() <= 2  # collapsed without restarts
    assert vq.eval()(x).indices.unique().numel() >= K // 2
    if cls is VectorQuantizerEMA:  # the EMA statistics agree with the restarted codebook
        torch.testing.assert_close(
            vq.ema_dw.average / vq.ema_cluster_size.average.clamp(min=1e-12)[:, None], vq.codebook,
            rtol=1e-3, atol=1e-3,
        )

