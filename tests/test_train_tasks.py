"""The training tasks that plug into the one loop: k-means init of the codebook for both autoencoders (through
the task's encoder outputs), and runs written by a task (what config.json records)."""

import json

import numpy as np
import pytest
import torch

from vqvae.data.audio import write_wav
from vqvae.recipes import load_recipe
from vqvae.train.tasks import AudioTask

AUDIO_TINY = ["audio.sample_rate=8000", "audio.num_downsamples=2", "audio.hidden=8", "audio.embedding_dim=4",
              "audio.num_embeddings=8", "audio.local_channels=8", "audio.channels=8", "audio.skip_channels=8",
              "audio.max_dilation=4", "audio.dilation_cycles=1", "train.crop_length=256",
              "train.batch_size=2", "train.warmup_steps=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """Two "speakers" of harmonic tones (100 and 220 Hz), three utterances each, 8 kHz."""
    root = tmp_path_factory.mktemp("tones")
    t = np.arange(2400) / 8000
    for name, f0 in (("low", 100.0), ("high", 220.0)):
        for i in range(3):
            wave = sum(np.sin(2 * np.pi * f0 * k * (1 + 0.01 * i) * t) / k for k in (1, 2, 3)) * 0.3
            write_wav(root / name / f"{i}.wav", wave, 8000)
    return root


def test_audio_encoder_outputs_are_the_encoder_on_the_batch_crops(tones, tmp_path):
    recipe = load_recipe("speech", [*AUDIO_TINY, f"train.data={tones}", "train.steps=1"], kind="audio")
    task = AudioTask(recipe)
    task.load(tmp_path / "run", resume=False, overwrite=False)
    model = task.build()
    batch = torch.tensor([0, 3])
    vectors = task.encoder_outputs(task.fetch(task.plan(batch, 7)))
    from vqvae.data.audio import random_crops
    from vqvae.data.loader import batch_generator

    # the same crops
    x, _ = random_crops(task.train_set, 256, batch.tolist(), batch_generator(recipe.train.seed, 7))
    z = model.encode_continuous(x)  # (B, D, L)
    assert vectors.shape == (2 * 256 // 4, 4)
    torch.testing.assert_close(vectors, z.transpose(1, 2).reshape(-1, 4))
    assert recipe.audio.num_speakers == 0 and task.recipe.audio.num_speakers == 2  # a copy was completed


@pytest.mark.slow
def test_audio_kmeans_init_seeds_the_codebook_from_encoder_outputs(tones, tmp_path, monkeypatch):
    from vqvae.models import AudioVQVAE
    from vqvae.quantize.codebook import Quantizer
    from vqvae.train import train_audio_and_evaluate

    seen = []
    original = Quantizer.initialize_from
    monkeypatch.setattr(Quantizer, "initialize_from",
                        lambda self, v: (seen.append(v.clone()), original(self, v))[1])
    out = tmp_path / "run"
    recipe = load_recipe("speech", [*AUDIO_TINY, f"train.data={tones}", "train.steps=1",
                                    "train.kmeans_batches=3", "audio.kmeans_init=true", "audio.quantizer=vq",
                                    "train.lr=1e-12"], kind="audio")
    assert train_audio_and_evaluate(recipe, out, progress=False)["step"] == 1
    # kmeans_batches x batch x codes per crop
    assert len(seen) == 1 and seen[0].shape == (3 * 2 * 256 // 4, 4)
    model = AudioVQVAE.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["audio"]["kmeans_init"] is True
    assert int(model.quantizer.initialized) == 1
    # every code is a mean of encoder outputs (or one of them): inside their bounding box, coordinate by
    # coordinate (one Adam step at lr 1e-12 moves it by at most 1e-12)
    codebook, lo, hi = model.quantizer.codebook.detach(), seen[0].min(0).values, seen[0].max(0).values
    assert bool(((codebook >= lo - 1e-6) & (codebook <= hi + 1e-6)).all())
    torch.manual_seed(0)
    uniform = AudioVQVAE(model.config).quantizer.codebook  # what the codebook would be without the init
    assert not bool(((uniform >= lo) & (uniform <= hi)).all())
