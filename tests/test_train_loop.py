"""The shared training loop: the learning-rate schedule against its closed form, the seeded batch order
(epochs, dropped tails, resume), recipes that training never changes, and what ``train.eval_batches``
counts."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from vqvae.config import TrainConfig
from vqvae.recipes import load_recipe
from vqvae.train.loop import Batches
from vqvae.train.schedule import budget_used, lr_at

from .test_cli import PRIOR_TINY, TINY


# -- the learning-rate schedule ------------------------------------------------------------------------------
def cosine_reference(peak: float, floor_ratio: float, progress: float) -> float:
    """Half a cosine from ``peak`` down to ``peak * floor_ratio`` as ``progress`` goes from 0 to 1."""
    low = peak * floor_ratio
    return low + (peak - low) * (1 + math.cos(math.pi * progress)) / 2


def test_linear_warmup():
    t = TrainConfig(lr=1.0, warmup_steps=10, steps=100, min_lr_ratio=0.1)
    for step in range(10):
        assert lr_at(t, step, 0.0) == pytest.approx((step + 1) / 10)
        assert lr_at(t, step, 1e9) == pytest.approx((step + 1) / 10)  # warm-up counts steps, not seconds
    t = TrainConfig(lr=3e-3, warmup_steps=4, steps=100)
    assert [lr_at(t, s, 0.0) for s in range(4)] == pytest.approx([3e-3 * (s + 1) / 4 for s in range(4)])
    # the warm-up ends at the peak
    assert lr_at(t, 3, 0.0) == pytest.approx(3e-3)


def test_constant_schedule():
    t = TrainConfig(lr=0.5, warmup_steps=10, steps=100, min_lr_ratio=0.1, schedule="constant")
    assert lr_at(t, 0, 0.0) == pytest.approx(0.05)  # still warms up
    for step in (10, 11, 50, 99, 100, 1000):
        assert lr_at(t, step, 0.0) == 0.5
    assert lr_at(t, 50, 1e6) == 0.5


def test_cosine_follows_its_closed_form_and_ends_at_the_floor():
    t = TrainConfig(lr=1.0, warmup_steps=10, steps=100, min_lr_ratio=0.1)
    for step in range(10, 101):
        assert lr_at(t, step, 0.0) == pytest.approx(cosine_reference(1.0, 0.1, step / 100), abs=1e-12)
    assert lr_at(t, 100, 0.0) == pytest.approx(1.0 * 0.1)
    assert lr_at(t, 250, 0.0) == pytest.approx(0.1)  # past the end of the budget it stays at the floor
    # halfway through the budget: the mean of the peak and the floor
    assert lr_at(t, 50, 0.0) == pytest.approx((1.0 + 0.1) / 2)
    t0 = TrainConfig(lr=2.0, warmup_steps=0, steps=40, min_lr_ratio=0.25)
    assert lr_at(t0, 0, 0.0) == pytest.approx(2.0)  # no warm-up: starts at the peak
    assert lr_at(t0, 40, 0.0) == pytest.approx(0.5)
    assert lr_at(t0, 10, 0.0) == pytest.approx(cosine_reference(2.0, 0.25, 0.25))


def test_cosine_is_monotone_after_warmup():
    t = TrainConfig(lr=1.0, warmup_steps=10, steps=100, min_lr_ratio=0.1)
    values = [lr_at(t, step, 0.0) for step in range(10, 130)]
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert values[0] <= 1.0 and values[-1] == pytest.approx(0.1)
    # a time budget: non-increasing in elapsed seconds too
    ts = TrainConfig(lr=1.0, warmup_steps=0, steps=0, max_seconds=60.0, min_lr_ratio=0.05)
    by_time = [lr_at(ts, 5, s) for s in np.linspace(0, 90, 200)]
    assert all(b <= a for a, b in zip(by_time, by_time[1:]))
    assert by_time[-1] == pytest.approx(0.05)


def test_the_schedule_follows_whichever_budget_is_further_used():
    t = TrainConfig(lr=1.0, warmup_steps=0, steps=100, max_seconds=50.0, min_lr_ratio=0.1)
    assert budget_used(t, 10, 40.0) == pytest.approx(0.8)  # time is further used
    assert budget_used(t, 80, 5.0) == pytest.approx(0.8)  # steps are further used
    assert budget_used(t, 30, 15.0) == pytest.approx(0.3)
    assert budget_used(t, 200, 0.0) == 1.0 and budget_used(t, 0, 500.0) == 1.0  # capped
    assert lr_at(t, 10, 40.0) == pytest.approx(cosine_reference(1.0, 0.1, 0.8))
    assert lr_at(t, 80, 5.0) == pytest.approx(cosine_reference(1.0, 0.1, 0.8))
    assert lr_at(t, 10, 40.0) == pytest.approx(lr_at(t, 80, 5.0))
    assert lr_at(t, 0, 50.0) == pytest.approx(0.1)  # the time budget is spent
    only_steps = TrainConfig(lr=1.0, warmup_steps=0, steps=100, max_seconds=0.0)
    assert budget_used(only_steps, 25, 1e9) == pytest.approx(0.25)  # no time budget: seconds do not count
    only_time = TrainConfig(lr=1.0, warmup_steps=0, steps=0, max_seconds=200.0)
    assert budget_used(only_time, 10**6, 50.0) == pytest.approx(0.25)  # no step budget: steps do not count


# -- the batch order -----------------------------------------------------------------------------------------
def take(b: Batches, k: int) -> tuple[list[torch.Tensor], list[bool]]:
    out, flags = [], []
    for _ in range(k):
        out.append(b.next().clone())
        flags.append(b.new_epoch)
    return out, flags


def test_every_epoch_is_a_permutation_when_the_batch_size_divides_n():
    n, bs, per_epoch, epochs = 12, 4, 3, 4
    batches, flags = take(Batches(n, bs, seed=3), per_epoch * epochs)
    assert all(len(x) == bs for x in batches)
    for e in range(epochs):
        epoch = torch.cat(batches[e * per_epoch : (e + 1) * per_epoch])
        assert sorted(epoch.tolist()) == list(range(n))  # each index exactly once
    assert flags == [i > 0 and i % per_epoch == 0 for i in range(per_epoch * epochs)]
    orders = {tuple(torch.cat(batches[e * per_epoch : (e + 1) * per_epoch]).tolist()) for e in range(epochs)}
    assert len(orders) > 1  # a new permutation every epoch, not the same order again


def test_a_batch_that_would_run_past_the_end_starts_a_new_permutation():
    """The rule: a batch is taken from the current permutation when it fits in full (pos + batch_size <= n);
    else the leftover tail (n mod batch_size indices) is dropped and the batch is the start of the next
    permutation. The permutations are torch.randperm(n) drawn one after another from a generator seeded with
    ``seed``."""
    n, bs, seed = 10, 4, 7
    batches, flags = take(Batches(n, bs, seed), 9)
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n, generator=gen) for _ in range(5)]
    expected = [p[i * bs : (i + 1) * bs] for p in perms for i in range(n // bs)][:9]
    assert all(torch.equal(a, b) for a, b in zip(batches, expected))
    assert flags == [False, False, True, False, True, False, True, False, True]
    for e in range(4):  # each epoch: n // bs full batches of distinct indices, two indices left out
        epoch = torch.cat(batches[2 * e : 2 * e + 2]).tolist()
        assert len(set(epoch)) == 8 and set(epoch) <= set(range(n))


def test_batch_size_equal_to_n_gives_a_full_permutation_each_time():
    batches, flags = take(Batches(6, 6, seed=0), 5)
    assert all(sorted(x.tolist()) == list(range(6)) for x in batches)
    assert flags == [False, True, True, True, True]


def test_the_order_is_a_function_of_the_seed():
    a, _ = take(Batches(50, 8, seed=11), 20)
    b, _ = take(Batches(50, 8, seed=11), 20)
    c, _ = take(Batches(50, 8, seed=12), 20)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("k", [0, 3, 6, 7])  # 6: at an epoch boundary (n=20, bs=3: 6 batches an epoch)
def test_state_and_restore_resume_the_exact_order(k):
    n, bs, m = 20, 3, 15
    first = Batches(n, bs, seed=5)
    take(first, k)
    saved = first.state()
    rest, rest_flags = take(first, m)
    resumed = Batches(n, bs, seed=999)  # a different seed: everything must come from the state
    resumed.restore(saved)
    again, again_flags = take(resumed, m)
    assert all(torch.equal(x, y) for x, y in zip(rest, again))
    assert again_flags == rest_flags
    # and the state still describes the same point after the first one went on
    other = Batches(n, bs, seed=0)
    other.restore(saved)
    assert all(torch.equal(x, y) for x, y in zip(take(other, m)[0], rest))


# -- training never changes the recipe it is given -----------------------------------------------------------
@pytest.fixture(scope="module")
def image_run(small_fmnist, tmp_path_factory):
    from vqvae.train import train_image_and_evaluate

    recipe = load_recipe("fashion_mnist", [f"train.data={small_fmnist}", "train.steps=2", *TINY,
                                           "train.batch_size=8", "train.eval_batches=2"], kind="vqvae")
    before = copy.deepcopy(recipe)
    out = tmp_path_factory.mktemp("loop") / "vq"
    metrics = train_image_and_evaluate(recipe, out, progress=False)
    return recipe, before, out, metrics


@pytest.mark.slow
def test_image_training_leaves_its_recipe_alone(image_run):
    recipe, before, out, _ = image_run
    assert recipe == before
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == before.to_dict()["model"] and saved["train"] == before.to_dict()["train"]


@pytest.mark.slow
def test_eval_batches_counts_batches_of_train_batch_size(image_run):
    _, _, out, metrics = image_run
    assert metrics["num_images"] == 2 * 8
    assert json.loads((out / "eval.json").read_text())["num_images"] == 16


@pytest.mark.slow
def test_prior_training_fills_in_a_copy_of_its_recipe(image_run, tmp_path):
    from vqvae.train import train_image_prior_and_evaluate

    _, _, vq_dir, _ = image_run
    # num_embeddings / num_classes deliberately wrong: training takes them from the VQ-VAE (K=32) and its data
    recipe = load_recipe("fashion_mnist_prior", ["train.steps=2", *PRIOR_TINY, "prior.num_embeddings=7",
                                                 "prior.num_classes=3", "train.eval_batches=1"], kind="prior")
    before = copy.deepcopy(recipe)
    metrics = train_image_prior_and_evaluate(recipe, vq_dir, tmp_path / "prior", progress=False)
    assert recipe == before
    assert recipe.prior.num_embeddings == 7 and recipe.prior.num_classes == 3
    saved = json.loads((tmp_path / "prior" / "config.json").read_text())
    assert saved["prior"]["num_embeddings"] == 32
    assert saved["prior"]["num_classes"] == len(saved["classes"]) == 10
    assert saved["prior"]["channels"] == recipe.prior.channels  # the rest of the section is the recipe's
    assert metrics["num_images"] == 32  # one batch of train.batch_size=32 (PRIOR_TINY)


# -- the same for the audio VQ-VAE and its prior, on a corpus of tones ---------------------------------------
AUDIO_TINY = ["audio.sample_rate=8000", "audio.num_downsamples=2", "audio.hidden=8", "audio.embedding_dim=4",
              "audio.num_embeddings=8", "audio.local_channels=8", "audio.channels=8", "audio.skip_channels=8",
              "audio.max_dilation=4", "audio.dilation_cycles=1", "train.batch_size=2",
              "train.crop_length=256", "train.warmup_steps=1", "train.log_every=1"]
PRIOR_AUDIO_TINY = ["wavenet_prior.channels=8", "wavenet_prior.skip_channels=8",
                    "wavenet_prior.max_dilation=4", "wavenet_prior.dilation_cycles=1", "train.batch_size=2",
                    "train.crop_length=16", "train.warmup_steps=1", "train.eval_batches=1"]


@pytest.mark.slow
def test_audio_training_leaves_its_recipes_alone(tone_corpus, tmp_path):
    from vqvae.train import train_audio_and_evaluate, train_audio_prior_and_evaluate

    recipe = load_recipe("speech", [f"train.data={tone_corpus}", "train.steps=2", *AUDIO_TINY,
                                    "train.eval_batches=1"], kind="audio")
    before = copy.deepcopy(recipe)
    metrics = train_audio_and_evaluate(recipe, tmp_path / "audio", progress=False)
    assert recipe == before and recipe.audio.num_speakers == 0
    saved = json.loads((tmp_path / "audio" / "config.json").read_text())
    assert saved["audio"]["num_speakers"] == 3 and saved["speakers"] == ["spk0", "spk1", "spk2"]
    assert metrics["num_utterances"] == 2  # one batch of train.batch_size=2 of the 3 test utterances

    prior_recipe = load_recipe("speech_prior", ["train.steps=2", *PRIOR_AUDIO_TINY], kind="audio_prior")
    prior_before = copy.deepcopy(prior_recipe)
    pm = train_audio_prior_and_evaluate(prior_recipe, tmp_path / "audio", tmp_path / "prior", progress=False)
    assert prior_recipe == prior_before
    assert prior_recipe.wavenet_prior.num_embeddings == 512 and prior_recipe.wavenet_prior.num_speakers == 0
    saved = json.loads((tmp_path / "prior" / "config.json").read_text())
    assert saved["wavenet_prior"]["num_embeddings"] == 8 and saved["wavenet_prior"]["num_speakers"] == 3
    assert pm["num_utterances"] == 2
