"""The training loop -- step, log, checkpoint, resume, evaluate -- of the image VQ-VAE and of its prior.

``train_and_evaluate(recipe, out_dir)`` is what ``vqvae train`` calls. A run directory holds
``config.json`` + ``model.safetensors`` (the model), ``trainer_state.*`` (for ``--resume``),
``metrics.csv`` and TensorBoard events under ``tb/``, and at the end ``eval.json`` and
``reconstructions.png``.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqvae import checkpoint
from vqvae.audio_model import AudioVQVAE
from vqvae.config import _KINDS, AudioPriorRecipe, AudioRecipe, PriorRecipe, Recipe, TrainConfig, _Sections, recipe_with_overrides
from vqvae.data import save_image_grid, to_float
from vqvae.data.audio import load_speech, random_crops
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes, atomic_write_json
from vqvae.evaluate import (cached_codes, cached_speech_codes, code_crops, evaluate_audio, evaluate_audio_prior,
                            evaluate_model, evaluate_prior, load_images_for, sample_images, write_reconstruction_grid)
from vqvae.metrics import CodebookUsage
from vqvae.model import VQVAE
from vqvae.priors import GatedPixelCNN
from vqvae.priors.wavenet import WaveNetPrior



def _progress(t: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the budget used: whichever of steps / seconds runs out first."""
    return min(1.0, max(step / t.steps if t.steps else 0.0, elapsed / t.max_seconds if t.max_seconds else 0.0))


def _lr_at(t: TrainConfig, step: int, elapsed: float) -> float:
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.lr
    progress = _progress(t, step, elapsed)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class _Batches:
    """Epochs of random permutations from a seeded generator; its state is saved for exact resume."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0
        self.new_epoch = False  # True right after next() began a new permutation

    def next(self) -> torch.Tensor:
        self.new_epoch = self.pos + self.batch_size > self.n
        if self.new_epoch:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict[str, torch.Tensor]:
        return {"data_gen": self.gen.get_state(), "data_perm": self.perm, "data_pos": torch.tensor(self.pos)}

    def restore(self, s: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(s["data_gen"])
        self.perm = s["data_perm"]
        self.pos = int(s["data_pos"])


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """A new run's directory: refuse a non-empty one unless ``overwrite``; then clear the old run's files."""
    if out.exists() and not out.is_dir():
        raise VQVAEError(f"output path {out} exists and is not a directory")
    taken = [p.name for p in out.iterdir()] if out.is_dir() else []
    if taken and not overwrite:
        raise VQVAEError(f"output directory {out} is not empty: pass --resume to continue it or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.csv", checkpoint.STATE_JSON, checkpoint.STATE_TENSORS, "eval.json", "reconstructions.png"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "tb", ignore_errors=True)


def resume_recipe(out_dir: str | Path, overrides: list[str] = (), kind: str = "vqvae") -> _Sections:
    """The recipe saved in a run directory, with ``overrides`` (e.g. a new ``train.steps`` total) applied."""
    saved = checkpoint.read_config(out_dir, kind=kind)
    section = _KINDS[kind][1][0]  # the architecture section: model, prior, audio, ...
    if not isinstance(saved.get("train"), dict) or not isinstance(saved.get(section), dict):
        raise VQVAEError(f"{out_dir} was not written by a training command (no saved recipe): it cannot be resumed")
    return recipe_with_overrides({section: saved[section], "train": saved["train"]}, overrides, kind)


def _truncate_csv(path: Path, last_step: int) -> None:
    """Drop the rows logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.exists():
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = rows[:1] + [r for r in rows[1:] if r.split(",", 1)[0].isdigit() and int(r.split(",", 1)[0]) <= last_step]
    atomic_write_bytes(path, "".join(kept).encode())


@torch.no_grad()
def kmeans_init(model: VQVAE, images: torch.Tensor, batches: _Batches, num_batches: int) -> None:
    """Initialise the codebook with k-means on the encoder outputs of ``num_batches`` training batches."""
    z = [model.encode_continuous(to_float(images[batches.next()])) for _ in range(num_batches)]
    flat = torch.cat([t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) for t in z])  # (N, D)
    model.quantizer.initialize_from(flat)


class _Run:
    """What the loop of one run shares between model kinds: a run directory, a model with its optimiser,
    the data order, a budget, logs (CSV, TensorBoard, progress bar), checkpoints and resume."""

    def __init__(self, out: Path, kind: str, model: torch.nn.Module, train: TrainConfig, n: int,
                 extra: dict[str, Any], fields: list[str], resume: bool, progress: bool):
        self.out, self.kind, self.model, self.t, self.extra = out, kind, model, train, extra
        self.opt = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.batches = _Batches(n, min(train.batch_size, n), train.seed)
        self.step, self.elapsed = 0, 0.0
        if resume:
            self._restore()
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

        self.writer = SummaryWriter(str(out / "tb"), purge_step=self.step if resume else None)
        self.fields = ["step", "seconds", "lr", *fields]
        csv_path = out / "metrics.csv"
        new_csv = not csv_path.exists()
        self.csv_file = csv_path.open("a", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=self.fields)
        if new_csv:
            self.csv.writeheader()
        self.progress = progress

    def _restore(self) -> None:
        out = self.out
        saved_step = checkpoint.read_config(out, kind=self.kind).get("step")
        try:
            self.model.load_state_dict(checkpoint.load_model_state(out)[0])
            rng, meta = checkpoint.load_trainer_state(out, self.opt)
            torch.set_rng_state(rng["torch"])
            self.batches.restore(rng)
            self.step, self.elapsed = int(meta["step"]), float(meta["seconds"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            if isinstance(exc, VQVAEError):
                raise
            raise VQVAEError(f"cannot resume from {out}: its checkpoint does not match its recipe ({exc})") from None
        if saved_step is not None and saved_step != self.step:
            raise VQVAEError(f"cannot resume from {out}: model.safetensors is from step {saved_step} but the "
                             f"trainer state from step {self.step} (a save was interrupted)")
        _truncate_csv(out / "metrics.csv", self.step)

    def save(self) -> None:
        self.model.save_pretrained(self.out, {**self.extra, "step": self.step})
        state = {"torch": torch.get_rng_state(), **self.batches.state()}
        checkpoint.save_trainer_state(self.out, self.opt, state, {"step": self.step, "seconds": self.elapsed})

    def done(self) -> bool:
        t = self.t
        return bool((t.steps and self.step >= t.steps) or (t.max_seconds and self.elapsed >= t.max_seconds))

    def fit(self, step_fn, window_extra=lambda: {}) -> None:
        """Optimise until the budget ends. ``step_fn(batch_indices)`` returns (loss, {field: float}); the CSV
        gets the means of those fields over each log window plus ``window_extra()`` (called once a row)."""
        t, model, opt = self.t, self.model, self.opt
        model.train()
        start = time.perf_counter() - self.elapsed
        sums: dict[str, float] = {}
        since_log, last_save = 0, time.perf_counter()
        bar = tqdm(total=t.steps or None, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=f"train {self.kind}")
        try:
            while not self.done():
                lr = _lr_at(t, self.step, self.elapsed)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss, metrics = step_fn(self.batches.next())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.step += 1
                self.elapsed = time.perf_counter() - start
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                since_log += 1
                if self.step % t.log_every == 0 or self.done():
                    row = {k: v / since_log for k, v in sums.items()}
                    row.update(step=self.step, seconds=round(self.elapsed, 3), lr=lr, **window_extra())
                    self.csv.writerow(row)
                    self.csv_file.flush()
                    for k, v in row.items():
                        if k != "step":
                            self.writer.add_scalar(f"train/{k}", v, self.step)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in self.fields[3:]}, refresh=False)
                    sums, since_log = {}, 0
                bar.update(1)
                if time.perf_counter() - last_save >= t.checkpoint_every:
                    self.save()
                    last_save = time.perf_counter()
        except KeyboardInterrupt:
            self.save()  # Ctrl-C keeps the work done so far; `--resume` continues from here
            raise
        finally:
            bar.close()
            self.csv_file.close()
        self.save()

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record the final evaluation: eval.json and TensorBoard."""
        metrics.update(step=self.step, train_seconds=round(self.elapsed, 1))
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"test/{k}", v, self.step)
        self.writer.close()
        atomic_write_json(self.out / "eval.json", metrics)
        return metrics


def _start(out: Path, train: TrainConfig, resume: bool, kind: str) -> None:
    if resume:
        checkpoint.read_config(out, kind=kind)
    torch.manual_seed(train.seed)
    if train.threads:
        torch.set_num_threads(train.threads)


def train_and_evaluate(
    recipe: Recipe, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train the image VQ-VAE of ``recipe`` into ``out_dir`` and return the test-split metrics."""
    out, t = Path(out_dir), recipe.train
    _start(out, t, resume, "vqvae")
    train_set = load_images_for(recipe.model, t.data, "train")
    test_set = load_images_for(recipe.model, t.data, "test")
    if len(train_set) == 0:
        raise VQVAEError(f"{train_set.name} has no images to train on")
    if not resume:
        _prepare_out_dir(out, overwrite)  # only once the data is known to be good
    model = VQVAE(recipe.model).to(memory_format=torch.channels_last)
    extra = {"train": recipe.to_dict()["train"], "classes": train_set.classes, "data_name": train_set.name}
    fields = ["loss", "recon_loss", "vq_loss", "commitment_loss", "perplexity"]
    run = _Run(out, "vqvae", model, t, len(train_set), extra, [*fields, "codes_used"], resume, progress)

    images = train_set.images.contiguous(memory_format=torch.channels_last)
    if recipe.model.kmeans_init and run.step == 0:
        kmeans_init(model, images, run.batches, t.kmeans_batches)
    k = recipe.model.num_embeddings
    window = torch.zeros(k, dtype=torch.long)  # codes used in the current log window
    epoch_usage = CodebookUsage(k)

    def step_fn(batch: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.bf16):
            res = model(to_float(images[batch]))
        window.add_(torch.bincount(res.indices.reshape(-1), minlength=k))
        if run.batches.new_epoch and epoch_usage.total:  # usage over the whole epoch that just ended
            u = epoch_usage.as_dict()
            for name in ("codes_used", "dead_codes", "perplexity"):
                run.writer.add_scalar(f"train_epoch/{name}", u[name], run.step)
            run.writer.add_histogram("train_epoch/code_frequency", epoch_usage.histogram(), run.step)
            epoch_usage.reset()
        epoch_usage.update(res.indices)
        return res.loss, {f: float(getattr(res, f).detach()) for f in fields}

    def codes_used() -> dict[str, int]:
        used = int((window > 0).sum())
        window.zero_()
        return {"codes_used": used}

    run.fit(step_fn, codes_used)
    model.eval()
    metrics = evaluate_model(model, test_set, limit=t.eval_batches * 256 if t.eval_batches else None)
    write_reconstruction_grid(model, test_set, out / "reconstructions.png")
    return run.finish(metrics)


def _prior_source(out: Path, vqvae_dir, resume: bool, overwrite: bool, kind: str, model_cls):
    """(VQ-VAE directory, its config, the model) a prior of ``kind`` in ``out`` is (to be) trained on, with the
    checks every prior shares: its own output directory, not replaced by accident, and on resume the very
    weights it started from."""
    saved = {}
    if resume:
        saved = checkpoint.read_config(out, kind=kind)
        vqvae_dir = saved.get("vqvae_dir")
        if not isinstance(vqvae_dir, str):
            raise VQVAEError(f"cannot resume {out}: its config.json records no vqvae_dir")
    elif out.resolve() == Path(vqvae_dir).resolve():
        raise VQVAEError(f"--out {out} is the VQ-VAE's own run directory: give the prior a directory of its own")
    vq_kind = "vqvae" if kind == "prior" else "audio"
    vq_config = checkpoint.read_config(vqvae_dir, kind=vq_kind)
    if not resume and out.is_dir() and any(out.iterdir()) and not overwrite:  # before the encoding, not after
        raise VQVAEError(f"output directory {out} is not empty: pass --resume to continue it or --overwrite to replace it")
    vq = model_cls.from_pretrained(vqvae_dir).eval()
    if resume and vq.weights_sha256 != saved.get("vqvae_weights_sha256"):
        raise VQVAEError(f"cannot resume {out}: {vqvae_dir} holds different weights from the VQ-VAE it was trained on")
    return vqvae_dir, vq_config, vq


def train_prior_and_evaluate(
    recipe: PriorRecipe, vqvae_dir: str | Path | None, out_dir: str | Path, *, resume: bool = False,
    overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Train a Gated PixelCNN prior on the codes of the VQ-VAE in ``vqvae_dir`` (encoded once, cached in
    ``vqvae_dir/prior_codes.cache.npz``) into ``out_dir``; return its test-split likelihoods
    (:func:`vqvae.evaluate.evaluate_prior`). On resume, ``vqvae_dir`` is None: the one recorded in the
    prior's config is used."""
    out, t = Path(out_dir), recipe.train
    _start(out, t, resume, "prior")
    vqvae_dir, vq_config, vq = _prior_source(out, vqvae_dir, resume, overwrite, "prior", VQVAE)
    data = vq_config.get("train", {}).get("data", "fashion-mnist")
    codes = cached_codes(vqvae_dir, vq, data)
    train_codes = torch.from_numpy(codes["train_indices"].astype(np.int64))  # (N, h, w)
    train_labels = torch.from_numpy(codes["train_labels"])
    if len(train_codes) == 0 or len(codes["test_indices"]) == 0:
        raise VQVAEError(f"{vqvae_dir}: its data has an empty train or test split, nothing to fit or evaluate a prior on")
    classes = vq_config.get("classes") or [str(i) for i in range(int(train_labels.max()) + 1)]
    recipe.prior.num_embeddings = vq.config.num_embeddings
    recipe.prior.num_classes = len(classes)  # 0 in the model when prior.conditional is false
    if not resume:
        _prepare_out_dir(out, overwrite)
    prior = GatedPixelCNN(recipe.prior)
    extra = {"train": recipe.to_dict()["train"], "classes": classes, "vqvae_dir": str(Path(vqvae_dir).resolve()),
             "vqvae_weights_sha256": vq.weights_sha256, "latent_size": vq.config.latent_size}
    run = _Run(out, "prior", prior, t, len(train_codes), extra, ["loss", "bits_per_latent"], resume, progress)

    def step_fn(batch: torch.Tensor):
        idx = train_codes[batch]
        labels = train_labels[batch] if recipe.prior.conditional else None
        loss = F.cross_entropy(prior(idx, labels), idx)  # nats per latent
        return loss, {"loss": float(loss.detach()), "bits_per_latent": float(loss.detach()) / math.log(2)}

    run.fit(step_fn)
    prior.eval()
    test_set = load_images_for(vq.config, data, "test")
    metrics = evaluate_prior(prior, vq, test_set, limit=t.eval_batches * 256 if t.eval_batches else None)
    per_class = 10
    labels = torch.arange(len(classes)).repeat_interleave(per_class) if recipe.prior.conditional else \
        torch.zeros(10 * per_class, dtype=torch.long)
    images, _ = sample_images(prior, vq, labels, seed=t.seed)
    save_image_grid(images, out / "samples.png", nrow=per_class)
    return run.finish(metrics)


# -- audio ---------------------------------------------------------------------------------------------
def train_audio_and_evaluate(recipe: AudioRecipe, out_dir: str | Path, *, resume: bool = False,
                             overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train the audio VQ-VAE of ``recipe`` (``train.data``: a speaker-folder corpus) into ``out_dir`` on random
    crops of ``train.crop_length`` samples; return :func:`vqvae.evaluate.evaluate_audio` on the test split."""
    out, t, a = Path(out_dir), recipe.train, recipe.audio
    _start(out, t, resume, "audio")
    if t.crop_length % a.hop:
        raise VQVAEError(f"train.crop_length {t.crop_length} must be a multiple of the code hop ({a.hop} samples)")
    train_set = load_speech(t.data, "train", a.sample_rate)
    test_set = load_speech(t.data, "test", a.sample_rate)
    if len(train_set) == 0 or len(test_set) == 0:
        raise VQVAEError(f"{t.data}: the corpus needs utterances in both splits (two or more per speaker)")
    if resume:
        saved = checkpoint.read_config(out, kind="audio").get("speakers")
        if saved != train_set.speakers:
            raise VQVAEError(f"cannot resume {out}: its speakers {saved} are not the corpus's {train_set.speakers}")
    a.num_speakers = len(train_set.speakers)
    if not resume:
        _prepare_out_dir(out, overwrite)
    model = AudioVQVAE(a)
    extra = {"train": recipe.to_dict()["train"], "speakers": train_set.speakers, "data_name": train_set.name}
    fields = ["loss", "bits_per_sample", "vq_loss", "perplexity"]
    run = _Run(out, "audio", model, t, len(train_set), extra, fields, resume, progress)

    def step_fn(batch: torch.Tensor):
        x, speakers = random_crops(train_set, t.crop_length, batch.tolist())
        res = model(x, speakers)
        return res.loss, {"loss": float(res.loss.detach()), "bits_per_sample": float(res.recon_loss.detach()) / math.log(2),
                          "vq_loss": float(res.vq_loss.detach()), "perplexity": float(res.perplexity)}

    run.fit(step_fn)
    model.eval()
    metrics = evaluate_audio(model, test_set, limit=t.eval_batches or None)
    return run.finish(metrics)


def train_audio_prior_and_evaluate(recipe: AudioPriorRecipe, vqvae_dir: str | Path | None, out_dir: str | Path, *,
                                   resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a WaveNet prior on the code sequences of the audio VQ-VAE in ``vqvae_dir`` (its corpus encoded once,
    cached beside it) on random crops of ``train.crop_length`` codes; return its test NLL per code."""
    out, t = Path(out_dir), recipe.train
    _start(out, t, resume, "audio_prior")
    vqvae_dir, vq_config, vq = _prior_source(out, vqvae_dir, resume, overwrite, "audio_prior", AudioVQVAE)
    if vq.quantizer is None:
        raise VQVAEError(f"{vqvae_dir} is a WaveNet without codes (audio.use_codes: false): there is nothing to model")
    data = vq_config.get("train", {}).get("data", "")
    codes = cached_speech_codes(vqvae_dir, vq, data)
    train = codes["train"]
    speakers = vq_config.get("speakers", [])
    recipe.wavenet_prior.num_embeddings = vq.config.num_embeddings
    recipe.wavenet_prior.num_speakers = len(speakers)
    if not resume:
        _prepare_out_dir(out, overwrite)
    prior = WaveNetPrior(recipe.wavenet_prior)
    extra = {"train": recipe.to_dict()["train"], "speakers": speakers, "vqvae_dir": str(Path(vqvae_dir).resolve()),
             "vqvae_weights_sha256": vq.weights_sha256, "codes_per_second": vq.config.sample_rate / vq.config.hop}
    run = _Run(out, "audio_prior", prior, t, len(train), extra, ["loss", "bits_per_code"], resume, progress)

    def step_fn(batch: torch.Tensor):
        x, lengths, labels = code_crops(train, t.crop_length, batch.tolist())
        nll = prior.nll(x, labels, lengths)
        loss = nll.sum() / lengths.sum()  # nats per code
        return loss, {"loss": float(loss.detach()), "bits_per_code": float(loss.detach()) / math.log(2)}

    run.fit(step_fn)
    prior.eval()
    metrics = evaluate_audio_prior(prior, codes["test"], vq.config.sample_rate / vq.config.hop,
                                   limit=t.eval_batches or None)
    return run.finish(metrics)
