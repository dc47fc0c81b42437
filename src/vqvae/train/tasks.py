"""The four training tasks that plug into :func:`vqvae.train.loop.train_task`: the image VQ-VAE, its Gated
PixelCNN prior, the audio VQ-VAE and its WaveNet prior. A task loads and checks its data, builds its model
from a copy of the recipe completed from the data (the recipe it is given is never changed), computes the loss
of one batch, and evaluates the trained model on the test split."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqvae import checkpoint
from vqvae.codes import cached_codes, code_crops, speech_codes
from vqvae.data import image_grid, load_images_for, save_image_grid, to_float
from vqvae.data.audio import crops, load_speech
from vqvae.data.loader import rows
from vqvae.errors import VQVAEError
from vqvae.evaluate import evaluate_audio, evaluate_audio_prior, evaluate_image_model, evaluate_image_prior
from vqvae.fileio import check_out_dir
from vqvae.metrics import CodebookUsage
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.priors import ImagePrior, WaveNetPrior, build_prior
from vqvae.recipes import RecipeSections
from vqvae.reconstruct import reconstruction_grid
from vqvae.runs import load_run, paired_vqvae, run_split
from vqvae.train.media import log_codebook, log_prior_sounds, log_reconstructions, log_takes, prior_samples
from vqvae.train.task import StepResult, Task

__all__ = ["AudioPriorTask", "AudioTask", "ImagePriorTask", "ImageTask"]


def _scalars(**values: torch.Tensor) -> dict[str, torch.Tensor]:
    """A step's metrics as detached float64 scalars on their device: the loop sums them there and reads them
    only when it writes a log row, so a step never waits for the device."""
    return {k: v.detach().double() for k, v in values.items()}


def _bits(nats: torch.Tensor) -> torch.Tensor:
    """Nats in bits, divided in double precision."""
    return nats.detach().double() / math.log(2)


# What a data worker runs (module-level functions over the data, so that they pickle for spawned workers).
def _speech_crops(data, length: int, plan: tuple[list[int], list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return crops(data, length, *plan)


def _code_crops(codes, length: int, plan: tuple[list[int], list[int]]) -> tuple[torch.Tensor, ...]:
    return code_crops(codes, length, *plan)


class ImageTask(Task):
    """The image VQ-VAE on ``train.data``; at the end ``eval.json`` and ``reconstructions.png``.
    Args:
        recipe: the run's :class:`~vqvae.recipes.ImageRecipe`.
    """

    kind = "vqvae"
    fields = ["loss", "recon_loss", "vq_loss", "commitment_loss", "perplexity", "codes_used"]

    def load(self, out: Path, resume: bool, overwrite: bool) -> None:
        model, data = self.recipe.model, self.recipe.train.data
        self.train_set, self.test_set = (load_images_for(model, data, s) for s in ("train", "test"))
        if len(self.train_set) == 0 or len(self.test_set) == 0:
            empty = self.train_set if len(self.train_set) == 0 else self.test_set
            raise VQVAEError(f"{empty.name} has no images (training needs a train and a test split)")
        k, top = len(self.train_set.classes), int(self.test_set.labels.max())
        if top >= k:  # checked now, not after the budget is spent
            raise VQVAEError(f"{self.test_set.name} has labels up to {top} but the train split has "
                             f"{k} classes")
        self.num_examples = len(self.train_set)
        self.fetch = partial(rows, (self.train_set.images,))

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "classes": self.train_set.classes, "data_name": self.train_set.name}

    def build(self) -> VQVAE:
        self.model = VQVAE(self.recipe.model).to(memory_format=torch.channels_last)
        k = self.recipe.model.num_codes
        self.fields = [*type(self).fields, *self.model.quantizer.part_names]
        self.window = torch.zeros(k, dtype=torch.long, device=self.device)  # codes used in the log window
        self.epoch_usage = CodebookUsage(k)
        return self.model

    def encoder_outputs(self, batch: tuple[torch.Tensor]) -> torch.Tensor:
        z = self.model.encode_continuous(self._images(batch))  # (B, G*D, h, w), D innermost
        return z.permute(0, 2, 3, 1).reshape(-1, self.recipe.model.embedding_dim)

    def _images(self, batch: tuple[torch.Tensor]) -> torch.Tensor:
        x = to_float(batch[0].to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last)

    def step(self, batch: tuple[torch.Tensor]) -> StepResult:
        res = self.net(self._images(batch))
        # codes -1 (residual levels left out by quantizer dropout) are not counted
        self.window.add_(torch.bincount(res.indices.reshape(-1) + 1, minlength=len(self.window) + 1)[1:])
        if self.ranks.main:  # rank 0 logs the usage of its shard
            self._log_epoch_usage(res.indices)
        scalars = {f: getattr(res, f) for f in type(self).fields[:-1]}
        return res.loss, _scalars(**scalars, **res.quantizer_parts)

    def _log_epoch_usage(self, indices: torch.Tensor) -> None:
        """Code usage over each whole epoch, written to TensorBoard when the next epoch begins."""
        if self.log.new_epoch and self.epoch_usage.total:
            u = self.epoch_usage.as_dict()
            for name in ("codes_used", "dead_codes", "perplexity"):
                self.log.scalar(f"train_epoch/{name}", u[name])
            self.log.histogram("train_epoch/code_frequency", self.epoch_usage.histogram())
            self.epoch_usage.reset()
        self.epoch_usage.update(indices if self.recipe.model.quantizer != "rvq" else indices[indices >= 0])

    def window_extra(self) -> dict[str, Any]:
        used = int((self.window > 0).sum())
        self.window.zero_()
        return {"codes_used": used}

    def media(self) -> None:
        log_reconstructions(self.log, self.model, self.test_set)

    def evaluate(self, out: Path, limit: int | None) -> dict[str, Any]:
        metrics = evaluate_image_model(self.model, self.test_set, limit=limit, ranks=self.ranks,
                                       num_workers=self.recipe.train.num_workers,
                                       codebook_file=out / checkpoint.CODEBOOK)
        if self.ranks.main:
            reconstruction_grid(self.model, self.test_set, out / "reconstructions.png")
            if self.recipe.train.log_media:  # the codebook in TensorBoard's projector
                log_codebook(self.log, out / checkpoint.CODEBOOK)
        return metrics


class _PriorTask(Task):
    """What both priors share: the VQ-VAE they model (checked once), and their own output directory."""

    vqvae_kind: str

    def __init__(self, recipe: RecipeSections, vqvae_dir: str | Path | None):
        super().__init__(recipe)
        self.vqvae_dir = vqvae_dir

    def load_vqvae(self, out: Path, resume: bool, overwrite: bool) -> None:
        """The VQ-VAE (``vq``, ``vq_config``) in ``vqvae_dir`` or, on resume, the one the prior recorded (with
        the very weights it started from).

        Args:
            out: the prior's run directory.
            resume: the prior resumes from ``out``.
            overwrite: ``out`` may be a non-empty directory.
        """
        self.overwrite = overwrite  # a corrupt codes cache is encoded again only with --overwrite
        if resume:
            saved = checkpoint.read_config(out, kind=self.kind)
            if not isinstance(saved.get("vqvae_dir"), str):
                raise VQVAEError(f"cannot resume {out}: its config.json records no vqvae_dir")
            try:
                self.vq, self.vq_config = paired_vqvae(saved, self.kind, self.device)
            except VQVAEError as exc:
                raise VQVAEError(f"cannot resume {out}: {exc}") from None
            self.vqvae_dir = saved["vqvae_dir"]
            return
        if out.resolve() == Path(self.vqvae_dir).resolve():
            raise VQVAEError(f"--out {out} is the VQ-VAE's own run directory: give the prior a directory "
                             f"of its own")
        checkpoint.read_config(self.vqvae_dir, kind=self.vqvae_kind)
        check_out_dir(out, overwrite)  # before the encoding, not after
        self.vq, self.vq_config = load_run(self.vqvae_dir, self.vqvae_kind, self.device)

    def cached_codes(self) -> dict[str, np.ndarray]:
        """The VQ-VAE's codes (:func:`vqvae.codes.cached_codes`), encoded by all ranks together."""
        return cached_codes(self.vqvae_dir, self.vq, self.vq_config, ranks=self.ranks,
                            num_workers=self.recipe.train.num_workers, overwrite=self.overwrite)

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "vqvae_dir": str(Path(self.vqvae_dir).resolve()),
                "vqvae_weights_sha256": self.vq.weights_sha256}


class ImagePriorTask(_PriorTask):
    """The image prior (a Gated PixelCNN or a transformer, ``prior.kind``) on the codes of an image VQ-VAE
    (encoded once, cached beside it); at the end ``eval.json`` and ``samples.png`` (10 samples of each of the
    first 10 classes).
    Args:
        recipe: the run's :class:`~vqvae.recipes.ImagePriorRecipe`.
        vqvae_dir: the image VQ-VAE's run directory (None on resume: the one the prior recorded).
    """

    kind, vqvae_kind = "prior", "vqvae"
    fields = ["loss", "bits_per_latent"]

    def load(self, out: Path, resume: bool, overwrite: bool) -> None:
        self.load_vqvae(out, resume, overwrite)
        if self.vq.config.latents_per_position > 1:
            raise VQVAEError(f"{self.vqvae_dir} has {self.vq.config.latents_per_position} codes at each "
                             f"latent position (model.latents_per_position): the image prior models one")
        codes = self.cached_codes()
        self.codes = torch.from_numpy(codes["train_indices"].astype(np.int64))  # (N, h, w)
        self.labels = torch.from_numpy(codes["train_labels"])
        if len(self.codes) == 0 or len(codes["test_indices"]) == 0:
            raise VQVAEError(f"{self.vqvae_dir}: its data has an empty train or test split, nothing to fit "
                             f"or evaluate a prior on")
        self.classes = self.vq_config.get("classes") or [str(i) for i in range(int(self.labels.max()) + 1)]
        # num_classes becomes 0 in the model when prior.conditional is false
        self.recipe = self.recipe.with_architecture(num_embeddings=self.vq.config.num_codes,
                                                    num_classes=len(self.classes),
                                                    grid_size=self.vq.config.latent_size)
        self.num_examples = len(self.codes)
        self.fetch = partial(rows, (self.codes, self.labels))

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "classes": self.classes, "latent_size": self.vq.config.latent_size}

    def build(self) -> ImagePrior:
        self.model = build_prior(self.recipe.prior)
        return self.model

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> StepResult:
        idx, labels = (b.to(self.device, non_blocking=True) for b in batch)
        labels = self.model.drop_labels(labels) if self.recipe.prior.conditional else None
        loss = F.cross_entropy(self.net(idx, labels), idx)  # nats per latent
        return loss, _scalars(loss=loss, bits_per_latent=_bits(loss))

    def media(self) -> None:
        images, names = prior_samples(self.model, self.vq, self.classes, self.recipe.prior.conditional, 8,
                                      self.recipe.train.seed)
        self.log.image("media/samples", image_grid(images, 8, row_names=names))

    def evaluate(self, out: Path, limit: int | None) -> dict[str, Any]:
        test_set = run_split(self.vq, self.vq_config, None, "test")
        metrics = evaluate_image_prior(self.model, self.vq, test_set, limit=limit, ranks=self.ranks,
                                 num_workers=self.recipe.train.num_workers)
        if self.ranks.main:  # 10 of each of the first 10 classes (not 10,000 for an ImageNet prior)
            images, names = prior_samples(self.model, self.vq, self.classes, self.recipe.prior.conditional,
                                          10, self.recipe.train.seed)
            save_image_grid(images, out / "samples.png", 10, row_names=names)
        return metrics


class AudioTask(Task):
    """The audio VQ-VAE on random crops of ``train.crop_length`` samples of a speaker-folder corpus.
    Args:
        recipe: the run's :class:`~vqvae.recipes.AudioRecipe`.
    """

    kind = "audio"
    fields = ["loss", "bits_per_sample", "vq_loss", "perplexity"]

    def load(self, out: Path, resume: bool, overwrite: bool) -> None:
        audio, train = self.recipe.audio, self.recipe.train
        if train.crop_length % audio.hop:
            raise VQVAEError(f"train.crop_length {train.crop_length} must be a multiple of the code hop "
                             f"({audio.hop} samples)")
        self.train_set, self.test_set = (load_speech(train.data, s, audio.sample_rate)
                                         for s in ("train", "test"))
        if len(self.train_set) == 0 or len(self.test_set) == 0:
            raise VQVAEError(f"{train.data}: the corpus needs utterances in both splits "
                             f"(two or more per speaker)")
        if resume:
            saved = checkpoint.read_config(out, kind="audio").get("speakers")
            if saved != self.train_set.speakers:
                raise VQVAEError(f"cannot resume {out}: its speakers {saved} are not the corpus's "
                                 f"{self.train_set.speakers}")
        self.recipe = self.recipe.with_architecture(num_speakers=len(self.train_set.speakers))
        if audio.decoder == "spectral":
            self.fields = ["loss", "spectral_l1", "mel_loss", "vq_loss", "perplexity"]
        if not audio.use_codes:  # a WaveNet without codes: no code figures, which would be 0 all along
            self.fields = [f for f in self.fields if f not in ("vq_loss", "perplexity")]
        self.num_examples = len(self.train_set)
        self.fetch = partial(_speech_crops, self.train_set, train.crop_length)

    def plan(self, indices: torch.Tensor, number: int) -> tuple[list[int], list[int]]:
        return self.crop_plan(self.train_set.lengths, indices, number)

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "speakers": self.train_set.speakers, "classes": self.train_set.class_names,
                "data_name": self.train_set.name}

    def build(self) -> AudioVQVAE:
        self.model = AudioVQVAE(self.recipe.audio)
        if self.model.quantizer is not None:  # build runs twice (a probe first): the parts go in once
            parts = self.model.quantizer.part_names
            self.fields = [*(f for f in self.fields if f not in parts), *parts]
        return self.model

    def encoder_outputs(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.model.quantizer is None:
            raise VQVAEError("audio.kmeans_init needs codes (audio.use_codes: true)")
        z = self.model.encode_continuous(batch[0].to(self.device))  # (B, D, L)
        return z.transpose(1, 2).reshape(-1, z.shape[1])

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> StepResult:
        x, speakers = (b.to(self.device, non_blocking=True) for b in batch)
        res = self.net(x, speakers)
        if self.recipe.audio.decoder == "spectral":
            return res.loss, _scalars(loss=res.loss, spectral_l1=res.spectral_l1, mel_loss=res.mel_loss,
                                      vq_loss=res.vq_loss, perplexity=res.perplexity, **res.quantizer_parts)
        codes = dict(vq_loss=res.vq_loss, perplexity=res.perplexity) if self.recipe.audio.use_codes else {}
        return res.loss, _scalars(loss=res.loss, bits_per_sample=_bits(res.recon_loss), **codes,
                                  **res.quantizer_parts)

    def media(self) -> None:
        log_takes(self.log, self.model, self.test_set, seed=self.recipe.train.seed)

    def evaluate(self, out: Path, limit: int | None) -> dict[str, Any]:
        codebook = out / checkpoint.CODEBOOK if self.model.quantizer is not None else None
        return evaluate_audio(self.model, self.test_set, limit=limit, ranks=self.ranks, train=self.train_set,
                              codebook_file=codebook)


class AudioPriorTask(_PriorTask):
    """The WaveNet prior on random crops of ``train.crop_length`` codes of an audio VQ-VAE's corpus
    (encoded once, cached beside the VQ-VAE).
    Args:
        recipe: the run's :class:`~vqvae.recipes.AudioPriorRecipe`.
        vqvae_dir: the audio VQ-VAE's run directory (None on resume: the one the prior recorded).
    """

    kind, vqvae_kind = "audio_prior", "audio"
    fields = ["loss", "bits_per_code"]

    def load(self, out: Path, resume: bool, overwrite: bool) -> None:
        self.load_vqvae(out, resume, overwrite)
        if self.vq.quantizer is None:
            raise VQVAEError(f"{self.vqvae_dir} is a WaveNet without codes (audio.use_codes: false): "
                             f"there is nothing to model")
        arrays = self.cached_codes()
        data = self.vq_config.get("train", {}).get("data", "")
        self.codes = {s: speech_codes(arrays, s, data) for s in ("train", "test")}
        self.speakers, self.classes = self.vq_config.get("speakers", []), self.vq_config.get("classes", [])
        if self.classes and self.recipe.wavenet_prior.class_conditioning:
            for split, q in self.codes.items():
                if (q.classes < 0).any():
                    raise VQVAEError(f"{data}: {int((q.classes < 0).sum())} {split} utterances have no "
                                     f"class in utterances.tsv (or train with "
                                     f"wavenet_prior.class_conditioning=false)")
        self.recipe = self.recipe.with_architecture(num_embeddings=self.vq.config.num_codes,
                                                    num_speakers=len(self.speakers),
                                                    num_classes=len(self.classes))
        self.num_examples = len(self.codes["train"])
        self.fetch = partial(_code_crops, self.codes["train"], self.recipe.train.crop_length)
        self.code_lengths = [len(q) for q in self.codes["train"].codes]

    def plan(self, indices: torch.Tensor, number: int) -> tuple[list[int], list[int]]:
        return self.crop_plan(self.code_lengths, indices, number)

    def extra(self) -> dict[str, Any]:
        c = self.vq.config
        return {**super().extra(), "speakers": self.speakers, "classes": self.classes,
                "codes_per_second": c.sample_rate / c.hop}

    def build(self) -> WaveNetPrior:
        self.model = WaveNetPrior(self.recipe.wavenet_prior)
        return self.model

    def step(self, batch: tuple[torch.Tensor, ...]) -> StepResult:
        x, lengths, labels, classes = (b.to(self.device, non_blocking=True) for b in batch)
        classes = self.model.drop_classes(classes)
        nll = F.cross_entropy(self.net(x, labels, classes), x, reduction="none")  # (B, L), via DDP's forward
        nll = nll * (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None])  # padding counts 0
        loss = nll.sum() / lengths.sum()  # nats per code
        return loss, _scalars(loss=loss, bits_per_code=_bits(loss))

    def media(self) -> None:
        lengths = sorted(len(q) for q in self.codes["test"].codes)
        c = self.vq.config
        length = min(lengths[len(lengths) // 2], round(c.sample_rate / c.hop))  # a typical take, <= 1 s
        log_prior_sounds(self.log, self.model, self.vq, self.speakers, self.classes, max(1, length),
                         seed=self.recipe.train.seed)

    def evaluate(self, out: Path, limit: int | None) -> dict[str, Any]:
        c = self.vq.config
        return evaluate_audio_prior(self.model, self.codes["test"], c.sample_rate / c.hop, limit=limit,
                                    ranks=self.ranks)
