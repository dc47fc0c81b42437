"""The non-finite guard: a poisoned batch is undone (skip) or ends the run (stop) before it touches the
weights, the optimiser or the codebook; the quantizers leave non-finite vectors out of their statistics; no
checkpoint with a non-finite value is ever written."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from vqvae import checkpoint
from vqvae.errors import VQVAEError
from vqvae.quantize import VectorQuantizer, VectorQuantizerEMA
from vqvae.recipes import load_recipe
from vqvae.train import tasks as tasks_module
from vqvae.train import train_image_and_evaluate

TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "train.batch_size=8", "train.log_every=1", "train.warmup_steps=2", "train.eval_batches=1",
        "train.schedule=constant", "model.restart_threshold=0.5", "model.kmeans_init=false"]


@pytest.mark.parametrize("cls", [VectorQuantizerEMA, VectorQuantizer])
def test_a_nan_vector_is_left_out_of_the_codebook_statistics(cls):
    torch.manual_seed(0)
    clean = torch.randn(64, 4)
    poisoned = torch.cat([clean[:10], torch.full((1, 4), float("nan")), clean[10:],
                          torch.full((1, 4), float("inf"))])
    a, b = cls(4, 16, restart_threshold=0.5), cls(4, 16, restart_threshold=0.5)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        torch.manual_seed(1)
        a(clean)
        torch.manual_seed(1)
        out = b(poisoned)
    assert not torch.isfinite(out.loss)  # the batch is visibly bad ...
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name  # ... and the codebook learnt exactly what the clean vectors say
    assert torch.isfinite(b.codebook).all()


def _recipe(data, *extra):
    return load_recipe("fashion_mnist", [f"train.data={data}", *TINY, *extra], kind="vqvae")


def _poison(monkeypatch, at_calls):
    """Make the image task's batches at the given calls (1-based) hold a NaN pixel."""
    original = tasks_module.ImageTask._images
    calls = {"n": 0}

    def images(self, batch):
        x = original(self, batch)
        calls["n"] += 1
        if calls["n"] in at_calls:
            x = x.clone()
            x[0, 0, 3, 3] = float("nan")
        return x
    monkeypatch.setattr(tasks_module.ImageTask, "_images", images)


def _finite(directory):
    return all(torch.isfinite(v).all() for v in load_file(directory / "model.safetensors").values()
               if v.is_floating_point())


@pytest.mark.slow
def test_skip_undoes_a_poisoned_step_and_counts_it(small_fmnist, tmp_path, monkeypatch):
    _poison(monkeypatch, {3})
    out = tmp_path / "poisoned"
    metrics = train_image_and_evaluate(_recipe(small_fmnist, "train.steps=6"), out, progress=False)
    assert metrics["step"] == 6 and _finite(out)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[-1]["skipped"] == "1" and rows[0]["skipped"] == "0"
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    checkpoint.verify(out)


@pytest.mark.slow
def test_stop_ends_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(small_fmnist, tmp_path,
                                                                              monkeypatch):
    _poison(monkeypatch, {5})
    out = tmp_path / "stopped"
    with pytest.raises(VQVAEError, match=r"step 5: the loss or a gradient is not finite "
                                         r"\(train.on_nonfinite is stop"):
        train_image_and_evaluate(_recipe(small_fmnist, "train.steps=8", "train.on_nonfinite=stop"), out,
                           progress=False)
    manifest = checkpoint.verify(out)
    assert manifest["step"] == 4 and _finite(out)
    codebook = load_file(out / "model.safetensors")["quantizer.embeddings"]
    assert torch.isfinite(codebook).all()


@pytest.mark.slow
def test_a_run_that_diverges_stops_after_50_skipped_steps(small_fmnist, tmp_path, monkeypatch):
    _poison(monkeypatch, set(range(3, 1000)))
    out = tmp_path / "diverged"
    with pytest.raises(VQVAEError, match="50 such steps in a row"):
        train_image_and_evaluate(_recipe(small_fmnist, "train.steps=100"), out, progress=False)
    assert checkpoint.verify(out)["step"] == 2 and _finite(out)


def test_non_finite_settings_are_refused():
    for override in ("train.lr=.inf", "train.lr=.nan", "model.epsilon=.inf", "model.commitment_cost=.inf",
                     "train.max_seconds=.inf"):
        with pytest.raises(VQVAEError, match="must be a finite number"):
            load_recipe("fashion_mnist", [override])
    for kw in ({"commitment_cost": float("inf")}, {"epsilon": float("inf")},
               {"restart_threshold": float("nan")}):
        with pytest.raises(ValueError, match="finite"):
            VectorQuantizerEMA(4, 8, **kw)
