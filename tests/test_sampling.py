"""Sampling from the priors: image samples (prior codes decoded by the VQ-VAE), the labels the sample commands
ask for, the WaveNet prior over code sequences (exact causality, its NLL, speaker conditioning, sampling, save
and load), and the random crops of code sequences it is trained on."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqvae.codes import SpeechCodes, code_crops
from vqvae.config import AudioPriorConfig
from vqvae.errors import VQVAEError
from vqvae.models import VQVAE
from vqvae.nets.controls import SamplingControls
from vqvae.priors import GatedPixelCNN, WaveNetPrior
from vqvae.priors.sampling import sample_images, sample_labels

K = 16


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(0)
    return VQVAE(hidden=8, res_hidden=4, num_res_layers=1, embedding_dim=4, num_embeddings=K).eval()


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(1)
    return GatedPixelCNN(num_embeddings=K, num_classes=3, channels=8, num_layers=2, head_channels=16).eval()


def on(device, *models):
    """Copies of the models on ``device`` (the module's fixtures stay where they are)."""
    return [copy.deepcopy(m).to(device) for m in models]


# -- image samples -------------------------------------------------------------------------------------------
def test_sample_images_shapes_and_decoding(prior, vq, device):
    prior, vq = on(device, prior, vq)
    labels = torch.tensor([0, 1, 2, 2, 0])
    images, indices = sample_images(prior, vq, labels, seed=3)
    assert images.shape == (5, 1, 28, 28) and indices.shape == (5, 7, 7)
    assert indices.dtype == torch.int64 and int(indices.min()) >= 0 and int(indices.max()) < K
    assert torch.equal(images, vq.decode_indices(indices.to(device)).clamp(0, 1).cpu())
    assert float(images.min()) >= 0 and float(images.max()) <= 1


def test_sample_images_is_the_prior_sample_of_a_seeded_generator(prior, vq, device):
    cpu_prior = prior
    prior, vq = on(device, prior, vq)
    labels = torch.tensor([2, 0, 1, 1])
    _, indices = sample_images(prior, vq, labels, seed=5)
    expected = prior.sample((7, 7), labels.to(device), None, torch.Generator().manual_seed(5))
    assert torch.equal(indices, expected.cpu())
    assert torch.equal(indices, cpu_prior.sample((7, 7), labels, None, torch.Generator().manual_seed(5)))
    _, cold = sample_images(prior, vq, labels, seed=5, controls=SamplingControls(0.5))
    assert torch.equal(cold, prior.sample((7, 7), labels.to(device), SamplingControls(0.5),
                                          torch.Generator().manual_seed(5)).cpu())


def test_sample_images_same_seed_same_samples(prior, vq):
    labels = torch.arange(3).repeat_interleave(2)
    a_img, a_idx = sample_images(prior, vq, labels, seed=9)
    b_img, b_idx = sample_images(prior, vq, labels, seed=9)
    _, c_idx = sample_images(prior, vq, labels, seed=10)
    assert torch.equal(a_idx, b_idx) and torch.equal(a_img, b_img)
    assert not torch.equal(a_idx, c_idx)


def test_sample_images_in_batches(prior, vq):
    labels = torch.tensor([0, 1, 2, 0, 1])
    _, whole = sample_images(prior, vq, labels, seed=4, batch_size=5)
    assert torch.equal(whole, prior.sample((7, 7), labels, None, torch.Generator().manual_seed(4)))
    # smaller batches: one generator goes on from chunk to chunk
    images, split = sample_images(prior, vq, labels, seed=4, batch_size=2)
    gen = torch.Generator().manual_seed(4)
    expected = torch.cat([prior.sample((7, 7), chunk, None, gen) for chunk in labels.split(2)])
    assert torch.equal(split, expected)
    # each chunk is decoded on its own (a batch of 5 may round differently from batches of 2)
    assert torch.equal(images, torch.cat([vq.decode_indices(c).clamp(0, 1) for c in split.split(2)]))
    assert torch.allclose(images, vq.decode_indices(split).clamp(0, 1), atol=1e-5)


def test_sample_images_of_no_labels(prior, vq):
    images, indices = sample_images(prior, vq, torch.zeros(0, dtype=torch.long), seed=0)
    assert images.shape == (0, 1, 28, 28) and indices.shape == (0, 7, 7)
    assert indices.dtype == torch.int64


def test_unconditional_prior_takes_the_labels_sample_labels_gives(vq):
    torch.manual_seed(2)
    uncond = GatedPixelCNN(num_embeddings=K, num_classes=3, conditional=False, channels=8, num_layers=2,
                           head_channels=16)
    labels, _ = sample_labels([], False, n=3)
    assert labels.tolist() == [-1, -1, -1]
    _, indices = sample_images(uncond, vq, labels, seed=1)
    expected = uncond.sample((7, 7), torch.zeros(3, dtype=torch.long), None, torch.Generator().manual_seed(1))
    assert torch.equal(indices, expected)  # the labels are ignored


# -- sample_labels -------------------------------------------------------------------------------------------
def test_sample_labels_layouts():
    classes = ["a", "b", "c"]
    labels, nrow = sample_labels(classes, True)
    assert labels.tolist() == [c for c in range(3) for _ in range(8)] and nrow == 8
    labels, nrow = sample_labels(classes, True, per_class=2)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] and nrow == 2
    labels, nrow = sample_labels(classes, True, class_=1)
    assert labels.tolist() == [1] * 64 and nrow == 8
    labels, nrow = sample_labels(classes, True, class_=2, n=10)
    assert labels.tolist() == [2] * 10 and nrow == 4  # ceil(sqrt(10))
    labels, nrow = sample_labels([], False)
    assert labels.tolist() == [-1] * 64 and nrow == 8
    labels, nrow = sample_labels(classes, False, n=5)
    assert labels.tolist() == [-1] * 5 and nrow == 3
    assert labels.dtype == torch.int64


def test_sample_labels_errors():
    classes = ["a", "b", "c"]
    with pytest.raises(VQVAEError, match="unconditional"):
        sample_labels(classes, False, class_=0)
    with pytest.raises(VQVAEError, match="--n goes with --class"):
        sample_labels(classes, True, n=4)
    for bad in (-1, 3):
        with pytest.raises(VQVAEError, match=f"--class {bad} is not a class"):
            sample_labels(classes, True, class_=bad)
    with pytest.raises(VQVAEError, match="per-class"):
        sample_labels(classes, False, per_class=2)


# -- the WaveNet prior ---------------------------------------------------------------------------------------
TINY_PRIOR = dict(num_embeddings=8, num_speakers=2, channels=8, skip_channels=8, max_dilation=4,
                  dilation_cycles=1)


def wavenet_prior(**changes) -> WaveNetPrior:
    torch.manual_seed(0)
    model = WaveNetPrior(AudioPriorConfig(**{**TINY_PRIOR, **changes})).eval()
    with torch.no_grad():  # the speaker embeddings start at zero: give the speakers something to tell apart
        for layer in model.net.layers:
            if layer.glob is not None:
                layer.glob.weight.normal_()
    return model


def test_wavenet_prior_logits_shape(device):
    model = wavenet_prior().to(device)
    codes = torch.randint(0, 8, (3, 11)).to(device)
    logits = model(codes, torch.tensor([0, 1, 1], device=device))
    assert logits.shape == (3, 8, 11) and logits.device.type == device.type


def test_wavenet_prior_is_exactly_causal():
    model = wavenet_prior()
    g = torch.Generator().manual_seed(0)
    L, rf = 14, sum(model.config.dilations) + 1
    codes = torch.randint(0, 8, (2, L), generator=g)
    speakers = torch.tensor([0, 1])
    base = model(codes, speakers)
    for pos in range(L):
        later = codes.clone()
        shift = 1 + torch.randint(0, 7, later[:, pos:].shape, generator=g)
        later[:, pos:] = (later[:, pos:] + shift) % 8  # every code from pos on differs
        assert torch.equal(model(later, speakers)[:, :, : pos + 1], base[:, :, : pos + 1]), pos
        if pos + 1 < L:  # the code at pos reaches the logits after it (the next one at least)
            one = codes.clone()
            one[:, pos] = (one[:, pos] + 1) % 8
            changed = (model(one, speakers) != base).any(1)  # (B, L)
            assert not bool(changed[:, : pos + 1].any()) and bool(changed[:, pos + 1].all())
            assert not bool(changed[:, pos + 1 + rf :].any())  # and nothing beyond the receptive field


def test_wavenet_prior_gradient_is_causal():
    model = wavenet_prior()
    codes = torch.randint(0, 8, (1, 10), generator=torch.Generator().manual_seed(1))
    speakers = torch.tensor([1])
    e = model.net.embed(codes).transpose(1, 2).detach().requires_grad_()
    assert torch.equal(model.net.forward_embedded(e, None, speakers), model(codes, speakers))
    for pos in range(10):
        (grad,) = torch.autograd.grad(model.net.forward_embedded(e, None, speakers)[:, :, pos].sum(), e)
        assert float(grad[:, :, pos:].abs().max()) == 0.0, pos
        if pos:
            assert float(grad[:, :, pos - 1].abs().max()) > 0, pos


def test_wavenet_prior_nll(device):
    model = wavenet_prior().to(device)
    codes = torch.randint(0, 8, (3, 9), generator=torch.Generator().manual_seed(2)).to(device)
    speakers = torch.tensor([0, 1, 0], device=device)
    nll = model.nll(codes, speakers)
    reference = F.cross_entropy(model(codes, speakers), codes, reduction="none")
    assert torch.allclose(nll, reference, rtol=0, atol=1e-6)
    logp = torch.log_softmax(model(codes, speakers), 1).gather(1, codes[:, None])[:, 0]
    assert torch.allclose(nll, -logp, atol=1e-5)
    lengths = torch.tensor([9, 4, 0], device=device)
    masked = model.nll(codes, speakers, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(masked[b, :n], nll[b, :n])
        assert bool((masked[b, n:] == 0).all())
    # padding cannot change the NLL of the valid steps (the model is causal)
    padded = codes.clone()
    padded[1, 4:] = 0
    assert torch.equal(model.nll(padded, speakers, lengths)[1], masked[1])


def test_wavenet_prior_speaker_conditioning():
    model = wavenet_prior()
    codes = torch.randint(0, 8, (1, 12), generator=torch.Generator().manual_seed(3)).repeat(2, 1)
    logits = model(codes, torch.tensor([0, 1]))
    assert not torch.allclose(logits[0], logits[1])
    fresh = WaveNetPrior(AudioPriorConfig(**TINY_PRIOR))  # zero speaker embeddings: speakers start alike
    assert torch.equal(*fresh(codes, torch.tensor([0, 1])).unbind(0))
    off = wavenet_prior(speaker_conditioning=False)
    assert off.config.num_speakers == 0
    a = off(codes, torch.tensor([0, 1]))
    assert torch.equal(a, off(codes)) and torch.equal(a, off(codes, torch.tensor([1, 1])))
    assert torch.equal(a[0], a[1])
    g = torch.Generator().manual_seed(0)
    assert torch.equal(off.sample(2, 6, torch.tensor([0, 1]), generator=g),
                       off.sample(2, 6, None, generator=torch.Generator().manual_seed(0)))


def test_wavenet_prior_sample(device):
    model = wavenet_prior().to(device)
    speakers = torch.tensor([0, 1, 1], device=device)
    s = model.sample(3, 20, speakers, generator=torch.Generator().manual_seed(7))
    assert s.shape == (3, 20) and s.dtype == torch.int64 and s.device.type == device.type
    assert int(s.min()) >= 0 and int(s.max()) < 8
    assert torch.equal(s, model.sample(3, 20, speakers, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(s, model.sample(3, 20, speakers, generator=torch.Generator().manual_seed(8)))
    # the cached sampler draws what rerunning the whole network for every step draws
    naive = model.net.generate_naive(3, 20, None, speakers, None, torch.Generator().manual_seed(7))
    assert torch.equal(s, naive)


def test_wavenet_prior_save_and_load(tmp_path, device):
    model = wavenet_prior().train().to(device)
    model.save_pretrained(tmp_path)  # saved from any device, loaded on the CPU
    loaded = WaveNetPrior.from_pretrained(tmp_path)
    assert loaded.training is False and loaded.config == model.config
    codes = torch.randint(0, 8, (2, 10), generator=torch.Generator().manual_seed(4))
    speakers = torch.tensor([1, 0])
    assert torch.equal(loaded(codes, speakers), model.cpu()(codes, speakers))


# -- random crops of code sequences --------------------------------------------------------------------------
def speech_codes_data() -> SpeechCodes:
    # distinct values within each utterance, so a window identifies its start
    lengths = [12, 3, 5, 8]
    codes = [np.arange(n, dtype=np.int64) + 100 * (i + 1) for i, n in enumerate(lengths)]
    return SpeechCodes(codes, np.array([1, 0, 2, 1], dtype=np.int64), np.array([4, -1, 0, 4], dtype=np.int64))


def test_code_crops_are_windows_of_their_utterance():
    data = speech_codes_data()
    length = 5
    indices = [0, 1, 2, 3, 0, 1]
    torch.manual_seed(0)
    x, lengths, labels, classes = code_crops(data, length, indices)
    assert x.shape == (6, length) and x.dtype == torch.int64
    assert labels.tolist() == [int(data.labels[i]) for i in indices]
    assert classes.tolist() == [int(data.classes[i]) for i in indices]
    assert SpeechCodes(data.codes, data.labels).classes.tolist() == [-1] * 4  # a corpus without classes
    for row, i in enumerate(indices):
        q = data.codes[i]
        n = min(len(q), length)
        assert int(lengths[row]) == n
        window = x[row, :n].numpy()
        starts = [s for s in range(len(q) - n + 1) if np.array_equal(q[s : s + n], window)]
        assert len(starts) == 1, (row, window)
        assert bool((x[row, n:] == 0).all())  # zero-padded
    assert torch.equal(x[1, :3], torch.from_numpy(data.codes[1]))  # shorter than the crop: all of it


def test_code_crops_cover_every_start_and_follow_the_global_generator():
    data = speech_codes_data()
    torch.manual_seed(1)
    x = code_crops(data, 5, [0] * 300)[0]
    starts = {int(row[0]) - 100 for row in x}
    assert starts == set(range(12 - 5 + 1))  # every window of the utterance, the last one included
    torch.manual_seed(123)
    a = code_crops(data, 4, [0, 3, 2, 0])
    torch.manual_seed(123)
    b = code_crops(data, 4, [0, 3, 2, 0])
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    torch.manual_seed(5)
    first = code_crops(data, 4, [0] * 20)[0]
    second = code_crops(data, 4, [0] * 20)[0]  # the generator went on: other starts (9 in 9^20 to repeat)
    assert not torch.equal(first, second)


# -- the class-conditional WaveNet prior (speaker + what is said) --------------------------------------------
def test_class_conditional_prior_embeddings_add_up_and_are_checked(device):
    model = wavenet_prior(num_classes=3).to(device)
    assert model.net.num_globals == 2 + 3  # speakers first, classes after them, in one table
    codes = torch.randint(0, 8, (1, 12), generator=torch.Generator().manual_seed(3)).repeat(2, 1).to(device)
    spk, cls = torch.tensor([1, 1], device=device), torch.tensor([0, 2], device=device)
    fresh = wavenet_prior(num_classes=3).to(device)
    with torch.no_grad():  # class embeddings start at zero: every class starts alike
        for layer in fresh.net.layers:
            layer.glob.weight[2:] = 0
    assert torch.equal(*fresh(codes, spk, cls).unbind(0))
    logits = model(codes, spk, cls)
    assert not torch.allclose(logits[0], logits[1])  # the class changes the prediction
    with torch.no_grad():  # the embeddings of speaker s and class c add up: a net whose table is e_s + e_c
        one = model.net.layers[0].glob.weight
        expected = one[1] + one[2 + 2]
        table = model.net.layers[0].conditioning(None, torch.tensor([[1, 4]], device=device))
        assert torch.allclose(table[0, :, 0], expected)
    with pytest.raises(VQVAEError, match=r"conditioned on the utterance's class: pass classes in \[0, 3\)"):
        model(codes, spk)
    with pytest.raises(VQVAEError, match=r"classes must lie in \[0, 3\), got \[0, 3\]"):
        model(codes, spk, torch.tensor([0, 3], device=device))
    off = wavenet_prior(num_classes=3, class_conditioning=False)
    assert off.config.num_classes == 0 and off.net.num_globals == 2
    assert torch.equal(off(codes.cpu(), spk.cpu()), off(codes.cpu(), spk.cpu(), cls.cpu()))  # classes ignored
    only = wavenet_prior(num_classes=3, speaker_conditioning=False)
    assert only.net.num_globals == 3 and only(codes.cpu(), None, cls.cpu()).shape == (2, 8, 12)


def test_class_conditional_prior_sampling_is_exact_and_the_gradient_finds_the_class(device):
    model = wavenet_prior(num_classes=3).to(device)
    spk, cls = torch.tensor([0, 1, 1], device=device), torch.tensor([2, 0, 2], device=device)
    s = model.sample(3, 15, spk, generator=torch.Generator().manual_seed(5), classes=cls)
    ids = torch.stack([spk, cls + 2], 1)
    assert torch.equal(s, model.net.generate_naive(3, 15, None, ids, None, torch.Generator().manual_seed(5)))
    codes = torch.randint(0, 8, (2, 10), generator=torch.Generator().manual_seed(1)).to(device)
    model.zero_grad()
    model.nll(codes, spk[:2], classes=torch.tensor([1, 1], device=device)).mean().backward()
    grad = model.net.layers[0].glob.weight.grad.abs().sum(1)
    assert grad[2 + 1] > 0 and grad[2 + 0] == 0 and grad[2 + 2] == 0  # only the class seen learns
