"""The Gated PixelCNN prior: exact causality without a blind spot, conditioning, shapes."""

import math

import pytest
import torch

from vqvae.errors import VQVAEError
from vqvae.nets.controls import SamplingControls
from vqvae.priors import GatedPixelCNN

from .conftest import float64_on


def _grad_map(model, h, w, i, j, labels=None):
    """|d logits(i, j) / d input| summed over channels: (H, W)."""
    x = torch.randn(1, model.config.channels, h, w, dtype=torch.float64, requires_grad=True)
    x = x.to(next(model.parameters()).device).detach().requires_grad_()
    model.forward_embedded(x, labels)[0, :, i, j].sum().backward()
    return x.grad.abs().sum(1)[0]


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_causal_and_no_blind_spot(kernel_size, device):
    float64_on(device)
    torch.manual_seed(0)
    h = w = 6
    model = GatedPixelCNN(num_embeddings=7, num_classes=3, channels=8, num_layers=6, kernel_size=kernel_size,
                          head_channels=8).double().to(device)
    labels = torch.tensor([1], device=device)
    for i in range(h):
        for j in range(w):
            g = _grad_map(model, h, w, i, j, labels)
            for a in range(h):
                for b in range(w):
                    if (a, b) >= (i, j):  # at or after (i, j) in raster order: exactly zero
                        assert g[a, b] == 0, (i, j, a, b)
                    else:  # every earlier position is seen (6 layers cover the 6x6 grid)
                        assert g[a, b] > 0, (i, j, a, b)


def test_label_changes_the_output_and_shapes(device):
    torch.manual_seed(0)
    model = GatedPixelCNN(num_embeddings=11, num_classes=4, channels=8, num_layers=3,
                          head_channels=16).to(device)
    idx = torch.randint(11, (2, 5, 7)).to(device)
    a = model(idx, torch.tensor([0, 0], device=device))
    b = model(idx, torch.tensor([3, 3], device=device))
    assert a.shape == (2, 11, 5, 7) and a.device.type == device.type
    assert not torch.allclose(a, b)
    assert model.nll(idx, torch.tensor([0, 1], device=device)).shape == (2,)


def test_naive_sampling_is_seeded_and_respects_temperature_and_labels(device):
    torch.manual_seed(0)
    model = GatedPixelCNN(num_embeddings=5, num_classes=2, channels=8, num_layers=2,
                          head_channels=8).to(device)
    labels = torch.tensor([0, 1, 1], device=device)
    s1 = model.sample_naive((3, 4), labels, generator=torch.Generator().manual_seed(1))
    s2 = model.sample_naive((3, 4), labels, generator=torch.Generator().manual_seed(1))
    assert s1.shape == (3, 3, 4) and torch.equal(s1, s2) and int(s1.max()) < 5
    with pytest.raises(VQVAEError, match="temperature must be > 0"):
        model.sample_naive((3, 4), labels, SamplingControls(temperature=0))


def test_bad_inputs():
    model = GatedPixelCNN(num_embeddings=5, num_classes=2, channels=8, num_layers=2, head_channels=8)
    with pytest.raises(VQVAEError, match=r"code indices must lie in \[0, 5\)"):
        model(torch.full((1, 3, 3), 5))
    with pytest.raises(VQVAEError, match=r"class labels must lie in \[0, 2\)"):
        model(torch.zeros(1, 3, 3, dtype=torch.long), torch.tensor([2]))
    with pytest.raises(VQVAEError, match="kernel_size must be odd"):
        GatedPixelCNN(kernel_size=4)


@pytest.mark.parametrize("kernel_size, conditional", [(3, True), (5, False), (5, True)])
def test_cached_sampler_equals_naive_sampler(kernel_size, conditional, device):
    float64_on(device)
    torch.manual_seed(0)
    model = GatedPixelCNN(num_embeddings=6, num_classes=3 if conditional else 0, channels=8, num_layers=4,
                          kernel_size=kernel_size, head_channels=8, class_dropout=0.1).double().to(device)
    labels = torch.tensor([0, 2, 1], device=device)
    every = [SamplingControls(1.0), SamplingControls(0.7), SamplingControls(top_k=2),
             SamplingControls(top_p=0.5, temperature=1.5)]
    if conditional:  # guidance mixes in the prior without the class
        every += [SamplingControls(guidance=3.0), SamplingControls(guidance=0.5, top_k=4)]
    for controls in every:
        naive = model.sample_naive((5, 6), labels, controls, torch.Generator().manual_seed(3))
        fast = model.sample((5, 6), labels, controls, torch.Generator().manual_seed(3))
        assert torch.equal(naive, fast)
        assert naive.unique().numel() > 1  # a real sample, not a constant grid


def test_evaluate_prior_closed_form_with_a_uniform_prior(small_fmnist):
    """A prior whose logits are all zero assigns every code 1/K: its NLL is exactly log2 K bits per latent and
    the learned-prior ELBO is the uniform-prior one plus the label's log2 C bits; the decoder term matches a
    direct sum."""
    from vqvae.data import load_images, to_float
    from vqvae.evaluate import evaluate_image_prior
    from vqvae.models import VQVAE

    torch.manual_seed(0)
    vq = VQVAE(num_embeddings=16, embedding_dim=4, hidden=8, res_hidden=4, recon_loss="logistic").eval()
    prior = GatedPixelCNN(num_embeddings=16, num_classes=10, channels=4, num_layers=2, head_channels=8)
    torch.nn.init.zeros_(prior.head[-1].weight)
    torch.nn.init.zeros_(prior.head[-1].bias)
    data = load_images(str(small_fmnist), "test")
    m = evaluate_image_prior(prior, vq, data, limit=100, batch_size=32)
    assert m["num_images"] == 100
    assert m["prior_nll_bits_per_latent"] == pytest.approx(4.0, rel=1e-6)  # log2 16, up to fp32 rounding
    assert m["bits_below_uniform"] == pytest.approx(0.0, abs=1e-5)
    # the same bound, plus the label's cost under a uniform p(y): log2 10 bits per image of 784 pixels
    assert m["elbo_bits_per_dim_learned_prior"] == pytest.approx(
        m["elbo_bits_per_dim_uniform_prior"] + math.log2(10) / 784, rel=1e-6)
    x = to_float(data.images[:100])
    with torch.no_grad():
        z_q = vq.quantizer.lookup(vq.encode(x)).permute(0, 3, 1, 2)
        decoder_bits = -float(vq.pixel_log_prob(x, z_q).double().sum()) / math.log(2)
    assert m["decoder_nll_bits_per_dim"] == pytest.approx(decoder_bits / x.numel(), rel=1e-6)
    assert m["elbo_bits_per_dim_uniform_prior"] == pytest.approx((decoder_bits + 100 * 49 * 4) / x.numel(),
                                                                 rel=1e-6)
    with pytest.raises(VQVAEError, match="classes"):
        evaluate_image_prior(GatedPixelCNN(num_embeddings=16, num_classes=3, channels=4, num_layers=1), vq,
                             data)
