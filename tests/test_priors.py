"""The image prior family and the sampling controls every sampler shares: the transformer prior (exact
causality, KV-cached sampling equal to naive sampling, save and load), the choice of network by
``prior.kind``, class dropout, the controls against distributions whose answer is known (temperature, top-k,
top-p, classifier-free guidance, the inverse-CDF draw), guidance in the WaveNet prior, and precision/recall
against sets whose answer is known."""

import math

import pytest
import torch

from vqvae.config import ImagePriorConfig
from vqvae.errors import VQVAEError
from vqvae.judges.image import precision_recall
from vqvae.nets.controls import SamplingControls
from vqvae.priors import GatedPixelCNN, ImagePrior, TransformerPrior, WaveNetPrior, build_prior

CONTROLS = [SamplingControls(), SamplingControls(temperature=0.6), SamplingControls(top_k=3),
            SamplingControls(top_p=0.6, temperature=1.3), SamplingControls(guidance=2.5, top_k=5)]


def transformer(**kw) -> TransformerPrior:
    torch.manual_seed(0)
    args = dict(num_embeddings=9, num_classes=3, channels=16, heads=2, num_layers=2, grid_size=6)
    return TransformerPrior(**{**args, **kw}).eval()


# -- the transformer -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("conditional", [True, False])
def test_transformer_is_exactly_causal_in_raster_order(conditional):
    model = transformer(conditional=conditional).double()
    x = torch.randint(0, 9, (2, 5, 6))
    labels = torch.tensor([0, 2]) if conditional else None
    base = model(x, labels)
    for t in range(30):
        changed = x.clone()
        changed.view(2, -1)[:, t] = (changed.view(2, -1)[:, t] + 1) % 9
        moved = (model(changed, labels) - base).abs().flatten(2).amax((0, 1)) > 0  # (30,) positions
        assert not moved[: t + 1].any(), t  # nothing at or before the changed code
        if t < 29:
            assert moved[t + 1 :].all(), t  # attention reaches every later position
    if conditional:
        assert not torch.allclose(model(x, torch.tensor([1, 1])), base)


@pytest.mark.parametrize("controls", CONTROLS, ids=str)
@pytest.mark.parametrize("conditional", [True, False])
def test_transformer_cached_sampling_draws_the_naive_samples(controls, conditional, device):
    if controls.guided and not conditional:
        pytest.skip("guidance is for class-conditional priors")
    model = transformer(conditional=conditional, class_dropout=0.2).to(device)
    labels = torch.tensor([0, 1, 2, 2, 1, 0], device=device)
    for shape in ((5, 6), (6, 6), (1, 3)):
        naive = model.sample_naive(shape, labels, controls, torch.Generator().manual_seed(3))
        cached = model.sample(shape, labels, controls, torch.Generator().manual_seed(3))
        assert naive.shape == (6, *shape) and torch.equal(cached, naive)
    again = model.sample((5, 6), labels, controls, torch.Generator().manual_seed(3))
    assert torch.equal(again, cached if shape == (5, 6) else model.sample((5, 6), labels, controls,
                                                                          torch.Generator().manual_seed(3)))


def test_transformer_nll_is_the_sum_of_its_cross_entropies_and_grids_are_bounded():
    model = transformer()
    x, labels = torch.randint(0, 9, (3, 4, 6)), torch.tensor([0, 1, 2])
    logits = model(x, labels)
    assert logits.shape == (3, 9, 4, 6)
    expected = -torch.log_softmax(logits, 1).gather(1, x[:, None]).flatten(1).sum(1)
    torch.testing.assert_close(model.nll(x, labels), expected)
    empty = torch.zeros(0, dtype=torch.long)
    assert model.nll(torch.zeros(0, 4, 6, dtype=torch.long), empty).shape == (0,)
    for sampler in (model.sample, model.sample_naive):
        assert sampler((4, 6), empty).shape == (0, 4, 6)
    with pytest.raises(VQVAEError, match="grids up to 6x6"):
        model(torch.zeros(1, 7, 2, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(VQVAEError, match="class labels must lie in"):
        model(x, torch.tensor([0, 1, 3]))


def test_transformer_save_and_load_by_kind(tmp_path):
    model = transformer(class_dropout=0.1)
    model.save_pretrained(tmp_path)
    loaded = ImagePrior.from_pretrained(tmp_path)
    assert type(loaded) is TransformerPrior and loaded.config == model.config
    x = torch.randint(0, 9, (2, 6, 6))
    torch.testing.assert_close(loaded(x, torch.tensor([0, 3])), model(x, torch.tensor([0, 3])))
    assert type(TransformerPrior.from_pretrained(tmp_path)) is TransformerPrior
    with pytest.raises(VQVAEError, match="transformer prior"):
        GatedPixelCNN.from_pretrained(tmp_path)


# -- the family, its config, class dropout -------------------------------------------------------------------
def test_prior_kind_builds_its_network_and_refuses_options_it_would_not_use():
    assert type(build_prior(ImagePriorConfig(num_layers=1))) is GatedPixelCNN
    config = ImagePriorConfig(kind="transformer", grid_size=7, num_layers=1)
    assert type(build_prior(config)) is TransformerPrior
    for config, message in (
            (ImagePriorConfig(kind="transformer", grid_size=7, kernel_size=3), "prior.kernel_size must be 5"),
            (ImagePriorConfig(kind="transformer", grid_size=7, head_channels=64), "prior.head_channels"),
            (ImagePriorConfig(heads=8), "prior.heads must be 4 \\(unused\\) with prior.kind pixelcnn"),
            (ImagePriorConfig(kind="transformer", grid_size=7, channels=30), "a divisor of prior.channels"),
            (ImagePriorConfig(kind="gpt"), "prior.kind must be pixelcnn or transformer"),
            (ImagePriorConfig(class_dropout=1.0), "prior.class_dropout must be in \\[0, 1\\)")):
        with pytest.raises(VQVAEError, match=message):
            config.validate()
    with pytest.raises(VQVAEError, match="prior.grid_size must be >= 1"):
        TransformerPrior()
    with pytest.raises(VQVAEError, match="build it with vqvae.priors.build_prior"):
        GatedPixelCNN(ImagePriorConfig(kind="transformer", grid_size=7))


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
def test_class_dropout_drops_the_labels_training_feeds_and_never_in_the_network(kind):
    config = ImagePriorConfig(kind=kind, num_embeddings=5, num_classes=4, channels=8, num_layers=1,
                              grid_size=3, class_dropout=0.3)
    model = build_prior(config)  # in training mode
    labels = torch.arange(4).repeat(5000)
    torch.manual_seed(0)
    dropped = model.drop_labels(labels)
    assert ((dropped == 4) == (dropped != labels)).all()  # a label is kept or becomes "no class" (4)
    assert float((dropped == 4).double().mean()) == pytest.approx(0.3, abs=0.01)
    x = torch.zeros(2, 3, 3, dtype=torch.long)
    # the network sees the labels it is given, in training mode too: the samplers need not be in eval mode
    torch.testing.assert_close(model(x, torch.tensor([1, 2])), model(x, torch.tensor([1, 2])))
    model(x, torch.tensor([4, 0]))  # "no class" is a label the model takes
    with pytest.raises(VQVAEError, match=r"\[0, 5\)"):
        model(x, torch.tensor([5, 0]))
    no_dropout = build_prior(ImagePriorConfig(kind=kind, num_embeddings=5, num_classes=4, channels=8,
                                              num_layers=1, grid_size=3))
    with pytest.raises(VQVAEError, match=r"\[0, 4\)"):
        no_dropout(x, torch.tensor([4, 0]))
    with pytest.raises(VQVAEError, match="trained with prior.class_dropout > 0"):
        no_dropout.sample((3, 3), torch.tensor([0]), SamplingControls(guidance=2.0))


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
def test_guidance_zero_samples_the_unconditional_model_and_one_the_conditional(kind):
    config = ImagePriorConfig(kind=kind, num_embeddings=7, num_classes=3, channels=8, num_layers=2,
                              head_channels=16 if kind == "pixelcnn" else 256, grid_size=4, class_dropout=0.5)
    torch.manual_seed(2)
    model = build_prior(config).eval()
    labels = torch.tensor([0, 1, 2, 1])
    no_class = torch.full_like(labels, 3)
    gen = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    as_unconditional = model.sample((4, 4), no_class, SamplingControls(), gen())
    assert torch.equal(model.sample((4, 4), labels, SamplingControls(guidance=0.0), gen()), as_unconditional)
    assert torch.equal(model.sample((4, 4), labels, SamplingControls(guidance=1.0), gen()),
                       model.sample((4, 4), labels, None, gen()))
    strong = model.sample((4, 4), labels, SamplingControls(guidance=4.0), gen())
    assert torch.equal(strong, model.sample_naive((4, 4), labels, SamplingControls(guidance=4.0), gen()))


# -- the controls, on distributions whose answer is known ------------------------------------------------
def test_temperature_top_k_top_p_give_the_distributions_they_promise():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = SamplingControls().probabilities(logits)[0]
    torch.testing.assert_close(p, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64))
    hot = SamplingControls(temperature=2.0).probabilities(logits)[0]
    root = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).sqrt()
    torch.testing.assert_close(hot, root / root.sum())
    top2 = SamplingControls(top_k=2).probabilities(logits)[0]
    torch.testing.assert_close(top2, torch.tensor([0.625, 0.375, 0, 0], dtype=torch.float64))
    # top-p keeps the most likely codes until they reach p: 0.5 < 0.7 <= 0.8
    nucleus = SamplingControls(top_p=0.7).probabilities(logits)[0]
    torch.testing.assert_close(nucleus, torch.tensor([0.625, 0.375, 0, 0], dtype=torch.float64))
    assert SamplingControls(top_p=0.5).probabilities(logits)[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert SamplingControls(top_p=0.01).probabilities(logits)[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(SamplingControls(top_p=0.96).probabilities(logits)[0], p)
    # codes in any order: the same codes are kept
    shuffled = logits[:, [2, 0, 3, 1]]
    torch.testing.assert_close(SamplingControls(top_p=0.7).probabilities(shuffled)[0],
                               torch.tensor([0, 0.625, 0, 0.375], dtype=torch.float64))
    # ties with the k-th code are kept
    tied = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert (SamplingControls(top_k=2).probabilities(tied)[0] > 0).tolist() == [True, True, True, False]


def test_guidance_mixes_the_conditional_and_unconditional_logits():
    cond, uncond = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    both = torch.cat([cond, uncond])
    for s in (0.0, 0.5, 3.0):
        expected = torch.softmax((uncond + s * (cond - uncond)).double(), 1)
        torch.testing.assert_close(SamplingControls(guidance=s).probabilities(SamplingControls(guidance=s)
                                                                               .guide(both)), expected)
    assert SamplingControls(guidance=1.0).guide(cond) is cond  # unguided: no second half


def test_inverse_cdf_draws_follow_the_distribution_and_never_a_dropped_code():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).expand(4000, 4)
    u = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000  # an even grid of uniforms
    counts = torch.bincount(SamplingControls().draw(logits, u), minlength=4)
    assert counts.tolist() == [2000, 1200, 600, 200]
    counts = torch.bincount(SamplingControls(top_k=2).draw(logits, u), minlength=4)
    assert counts.tolist() == [2500, 1500, 0, 0]
    edge = torch.tensor([0.0, 0.6249, 0.6251, 1 - 1e-16], dtype=torch.float64)  # around the cumulative steps
    assert SamplingControls(top_k=2).draw(logits[:4], edge).tolist() == [0, 0, 1, 1]
    masked_first = torch.tensor([[-math.inf, 0.0, 0.0]])
    assert SamplingControls().draw(masked_first, torch.zeros(1, dtype=torch.float64)).tolist() == [1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0), "temperature must be > 0"), (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(top_k=1.5), "top_k must be an integer"), (dict(top_p=0), "top_p must be in \\(0, 1\\]"),
    (dict(top_p=1.5), "top_p"), (dict(guidance=-1), "guidance must be a finite scale >= 0"),
    (dict(guidance=math.inf), "guidance"), (dict(temperature=math.nan), "temperature"),
    (dict(temperature=math.inf), "temperature must be > 0 and finite")])
def test_bad_controls_are_refused_in_one_line(kwargs, message):
    with pytest.raises(VQVAEError, match=message):
        SamplingControls(**kwargs)


def test_a_bare_temperature_or_a_distribution_that_is_not_finite_is_refused():
    model = transformer()
    with pytest.raises(VQVAEError, match="controls must be a SamplingControls"):
        model.sample((2, 2), torch.tensor([0]), 0.8)
    with pytest.raises(VQVAEError, match="not finite"):
        SamplingControls(temperature=1e-310).draw(torch.tensor([[1.0, 2.0]]), torch.tensor([0.5]))


@pytest.mark.parametrize("kind", ["pixelcnn", "transformer"])
def test_no_label_means_no_class_for_a_prior_trained_with_class_dropout(kind):
    model = build_prior(ImagePriorConfig(kind=kind, num_embeddings=5, num_classes=3, channels=8, num_layers=2,
                                         grid_size=3, class_dropout=0.2)).eval()
    x = torch.randint(0, 5, (2, 3, 3))
    torch.testing.assert_close(model(x), model(x, torch.tensor([3, 3])))


# -- guidance in the WaveNet prior -----------------------------------------------------------------------
def test_wavenet_prior_guidance_is_cached_equal_naive_and_needs_class_dropout(device):
    torch.manual_seed(0)
    model = WaveNetPrior(num_embeddings=6, num_speakers=2, num_classes=3, class_dropout=0.3, channels=8,
                         skip_channels=8, max_dilation=4, dilation_cycles=1).to(device).eval()
    assert model.net.num_globals == 2 + 3 + 1  # speakers, classes, "no class"
    spk, cls = torch.tensor([0, 1, 1], device=device), torch.tensor([2, 0, 1], device=device)
    for controls in (SamplingControls(guidance=3.0), SamplingControls(guidance=0.0, top_p=0.8)):
        cached = model.sample(3, 12, spk, controls, torch.Generator().manual_seed(1), classes=cls)
        ids = model._globals(spk.repeat(2), torch.cat([cls, torch.full_like(cls, 3)]))
        naive = model.net.generate_naive(3, 12, None, ids, controls, torch.Generator().manual_seed(1))
        assert torch.equal(cached, naive)
    # scale 0: the prior without the class
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    unconditional = model.sample(3, 12, spk, None, gen(), classes=torch.full_like(cls, 3))
    zero = SamplingControls(guidance=0.0)
    assert torch.equal(model.sample(3, 12, spk, zero, gen(), classes=cls), unconditional)
    plain = WaveNetPrior(num_embeddings=6, num_speakers=2, num_classes=3, channels=8, skip_channels=8,
                         max_dilation=4, dilation_cycles=1).eval()
    with pytest.raises(VQVAEError, match="class_dropout > 0"):
        plain.sample(3, 12, spk.cpu(), SamplingControls(guidance=2.0), classes=cls.cpu())


def test_wavenet_prior_class_dropout_drops_the_classes_training_feeds():
    model = WaveNetPrior(num_embeddings=6, num_speakers=2, num_classes=3, class_dropout=0.25, channels=8,
                         skip_channels=8, max_dilation=2, dilation_cycles=1)
    cls = torch.ones(8000, dtype=torch.long)
    torch.manual_seed(0)
    dropped = model.drop_classes(cls)
    assert ((dropped == 3) == (dropped != cls)).all()
    assert float((dropped == 3).double().mean()) == pytest.approx(0.25, abs=0.015)
    ids = model._globals(torch.zeros(2, dtype=torch.long), torch.tensor([1, 3]))  # "no class" is id 2 + 3
    assert ids[:, 1].tolist() == [2 + 1, 2 + 3]
    with pytest.raises(VQVAEError, match=r"classes must lie in \[0, 4\)"):
        model._globals(torch.zeros(1, dtype=torch.long), torch.tensor([4]))


# -- precision and recall ---------------------------------------------------------------------------------
def test_precision_and_recall_on_sets_whose_answer_is_known():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=gen)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # two far-apart modes; the fakes cover one of them: every fake is real-looking, half the reals are missed
    two_modes = torch.cat([torch.randn(300, 2, generator=gen), torch.randn(300, 2, generator=gen) + 50.0])
    one_mode = torch.randn(600, 2, generator=gen)
    precision, recall = precision_recall(two_modes, one_mode)
    assert precision > 0.95 and 0.45 < recall <= 0.5
    # the fakes collapsed to a few points: faithful but not diverse
    collapsed = two_modes[:4].repeat(150, 1) + 1e-3 * torch.randn(600, 2, generator=gen)
    precision, recall = precision_recall(two_modes, collapsed)
    assert precision == 1.0 and recall < 0.05
    with pytest.raises(VQVAEError, match="more than 3 images"):
        precision_recall(real[:3], real)


def test_precision_and_recall_in_blocks_equal_the_whole_distance_matrices():
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(1500, 3, generator=gen), torch.randn(1300, 3, generator=gen) * 1.3 + 0.2
    d_rr, d_ff, d_fr = torch.cdist(real, real), torch.cdist(fake, fake), torch.cdist(fake, real)
    r_real, r_fake = d_rr.kthvalue(4, 1).values, d_ff.kthvalue(4, 1).values
    expected = (float((d_fr <= r_real[None]).any(1).double().mean()),
                float((d_fr.t() <= r_fake[None]).any(1).double().mean()))
    assert precision_recall(real, fake) == pytest.approx(expected, abs=1e-12)
    assert 0.3 < expected[0] < 1 and 0.3 < expected[1] < 1
