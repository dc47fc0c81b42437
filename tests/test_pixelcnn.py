"""The Gated PixelCNN prior: exact causality without a blind spot, conditioning, shapes."""

import pytest
import torch

from vqvae.errors import VQVAEError
from vqvae.priors import GatedPixelCNN


def _grad_map(model, h, w, i, j, labels=None):
    """|d logits(i, j) / d input| summed over channels: (H, W)."""
    x = torch.randn(1, model.config.channels, h, w, dtype=torch.float64, requires_grad=True)
    model.forward_embedded(x, labels)[0, :, i, j].sum().backward()
    return x.grad.abs().sum(1)[0]


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_causal_and_no_blind_spot(kernel_size):
    torch.manual_seed(0)
    h = w = 6
    model = GatedPixelCNN(num_embeddings=7, num_classes=3, channels=8, num_layers=6, kernel_size=kernel_size,
                          head_channels=8).double()
    labels = torch.tensor([1])
    for i in range(h):
        for j in range(w):
            g = _grad_map(model, h, w, i, j, labels)
            for a in range(h):
                for b in range(w):
                    if (a, b) >= (i, j):  # at or after (i, j) in raster order: exactly zero
                        assert g[a, b] == 0, (i, j, a, b)
                    else:  # every earlier position is seen (6 layers cover the 6x6 grid)
                        assert g[a, b] > 0, (i, j, a, b)


def test_label_changes_the_output_and_shapes():
    torch.manual_seed(0)
    model = GatedPixelCNN(num_embeddings=11, num_classes=4, channels=8, num_layers=3, head_channels=16)
    idx = torch.randint(11, (2, 5, 7))
    a = model(idx, torch.tensor([0, 0]))
    b = model(idx, torch.tensor([3, 3]))
    assert a.shape == (2, 11, 5, 7)
    assert not torch.allclose(a, b)
    assert model.nll(idx, torch.tensor([0, 1])).shape == (2,)


def test_naive_sampling_is_seeded_and_respects_temperature_and_labels():
    torch.manual_seed(0)
    model = GatedPixelCNN(num_embeddings=5, num_classes=2, channels=8, num_layers=2, head_channels=8)
    labels = torch.tensor([0, 1, 1])
    s1 = model.sample_naive((3, 4), labels, generator=torch.Generator().manual_seed(1))
    s2 = model.sample_naive((3, 4), labels, generator=torch.Generator().manual_seed(1))
    assert s1.shape == (3, 3, 4) and torch.equal(s1, s2) and int(s1.max()) < 5
    with pytest.raises(VQVAEError, match="temperature must be > 0"):
        model.sample_naive((3, 4), labels, temperature=0)


def test_bad_inputs():
    model = GatedPixelCNN(num_embeddings=5, num_classes=2, channels=8, num_layers=2, head_channels=8)
    with pytest.raises(VQVAEError, match=r"code indices must lie in \[0, 5\)"):
        model(torch.full((1, 3, 3), 5))
    with pytest.raises(VQVAEError, match=r"class labels must lie in \[0, 2\)"):
        model(torch.zeros(1, 3, 3, dtype=torch.long), torch.tensor([2]))
    with pytest.raises(VQVAEError, match="kernel_size must be odd"):
        GatedPixelCNN(kernel_size=4)


@pytest.mark.parametrize("kernel_size, conditional", [(3, True), (5, False)])
def test_cached_sampler_equals_naive_sampler(kernel_size, conditional):
    torch.manual_seed(0)
    model = GatedPixelCNN(num_embeddings=6, num_classes=3 if conditional else 0, channels=8, num_layers=4,
                          kernel_size=kernel_size, head_channels=8).double()
    labels = torch.tensor([0, 2, 1])
    for temperature in (1.0, 0.7):
        naive = model.sample_naive((5, 6), labels, temperature, torch.Generator().manual_seed(3))
        fast = model.sample((5, 6), labels, temperature, torch.Generator().manual_seed(3))
        assert torch.equal(naive, fast)
        assert naive.unique().numel() > 1  # a real sample, not a constant grid
