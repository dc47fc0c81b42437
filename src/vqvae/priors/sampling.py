"""Sampling: prior -> codes -> decoded data. Code grids from an image prior decoded into images, code
sequences from a WaveNet prior decoded into waveforms by the audio VQ-VAE's WaveNet; and the
``vqvae sample`` / ``vqvae audio sample`` commands, which write them to files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from vqvae.data import save_image_grid, to_uint8
from vqvae.data.audio import write_wav
from vqvae.devices import model_device
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_npz, check_out_file
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.nets.controls import SamplingControls, sampling_controls
from vqvae.priors.base import ImagePrior
from vqvae.priors.wavenet import WaveNetPrior
from vqvae.runs import check_generation_options, class_id, load_prior, speaker_id

__all__ = ["sample_audio", "sample_audio_file", "sample_image_file", "sample_images", "sample_labels",
           "sample_utterances"]


@torch.no_grad()
def sample_images(prior: ImagePrior, vq: VQVAE, labels: torch.Tensor, *,
                  controls: SamplingControls | None = None, seed: int = 0,
                  batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample code grids from ``prior`` with the cached sampler and decode them. The same ``seed`` and
    ``batch_size`` give the same samples.

    Args:
        prior: the Gated PixelCNN or transformer over ``vq``'s code grids (put in eval mode).
        vq: the image VQ-VAE that decodes the codes.
        labels: (N,) class of every sample (ignored by an unconditional prior).
        controls: temperature, top-k, top-p, guidance; None: the prior's own distribution.
        seed: seed of the CPU generator that draws every sample.
        batch_size: samples drawn at once.
    Returns:
        ``(images, indices)``: (N, C, H, W) images in [0, 1] and (N, h, w) codes, on the CPU.
    """
    prior.eval()
    h, dev = vq.config.latent_size, model_device(prior)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same samples on every device
    images, indices = [], []
    for chunk in labels.split(batch_size):
        idx = prior.sample((h, h), chunk.to(dev), controls, gen)
        indices.append(idx.cpu())
        images.append(vq.decode_indices(idx.to(model_device(vq))).clamp(0, 1).cpu())
    if not indices:
        c, s = vq.config.in_channels, vq.config.image_size
        return torch.zeros(0, c, s, s), torch.zeros(0, h, h, dtype=torch.long)
    return torch.cat(images), torch.cat(indices)


def sample_labels(classes: list[str], conditional: bool, *, class_: int | None = None,
                  per_class: int | None = None, n: int | None = None) -> tuple[torch.Tensor, int]:
    """The label of every sample requested (-1: unconditional) and the grid's row length: ``per_class``
    samples of every class (default 8), ``n`` of class ``class_`` (default 64), or ``n`` from an
    unconditional prior.

    Args:
        classes: the prior's class names.
        conditional: whether the prior is class-conditional.
        class_: ``--class``, the one class to sample; None: every class (or none, if unconditional).
        per_class: ``--per-class``, samples of every class of a conditional prior; None: 8.
        n: ``--n``, samples of ``class_`` or of an unconditional prior; None: 64.
    Returns:
        ``(labels, nrow)``: (N,) int64 labels and the number of images per row of the grid.
    Raises:
        VQVAEError: options that do not fit the prior (a class for an unconditional prior, an unknown
            class, ``n`` without ``class_`` for a conditional one, ``per_class`` for an unconditional one).
    """
    if class_ is not None:
        if not conditional:
            raise VQVAEError("this prior is unconditional: it takes no --class (use --n)")
        if not 0 <= class_ < len(classes):
            raise VQVAEError(f"--class {class_} is not a class of this prior "
                             f"(0..{len(classes) - 1}: {', '.join(classes)})")
        n = n or 64
        return torch.full((n,), class_, dtype=torch.long), int(np.ceil(np.sqrt(n)))
    if conditional:
        if n is not None:
            raise VQVAEError("--n goes with --class C; for samples of every class use --per-class P")
        per_class = per_class or 8
        return torch.arange(len(classes)).repeat_interleave(per_class), per_class
    if per_class is not None:
        raise VQVAEError("this prior is unconditional: it has no classes for --per-class (use --n)")
    n = n or 64
    return torch.full((n,), -1, dtype=torch.long), int(np.ceil(np.sqrt(n)))


def sample_image_file(prior_dir: str | Path, out: str | Path, *, class_: int | None = None,
                      per_class: int | None = None, n: int | None = None,
                      controls: SamplingControls | None = None, seed: int = 0, overwrite: bool = False,
                      device: str | None = "auto") -> int:
    """``vqvae sample``: samples of the prior in ``prior_dir`` decoded by its VQ-VAE, written to ``out``: a
    PNG grid (one row per class, named on its left) or an .npz with ``images`` (uint8), ``labels`` (-1:
    unconditional), ``indices``, the directories of the prior and its VQ-VAE, the class names and the
    sampling controls.

    Args:
        prior_dir: the prior's run directory.
        out: the ``.png`` or ``.npz`` file to write.
        class_: the one class to sample (as :func:`sample_labels`).
        per_class: samples of every class (as :func:`sample_labels`).
        n: number of samples (as :func:`sample_labels`).
        controls: temperature, top-k, top-p, guidance (``--temperature`` ...); None: the prior's own
            distribution.
        seed: seed of the generator that draws every sample.
        overwrite: replace ``out`` if it exists.
        device: where the models run (``--device``; ``auto`` picks one).
    Returns:
        the number of samples written.
    Raises:
        VQVAEError: a bad output file, prior directory or sample options, or guidance for a prior trained
            without class dropout.
    """
    path = check_out_file(out, overwrite, (".png", ".npz"))
    controls = sampling_controls(controls)
    prior, vq, config, _ = load_prior(prior_dir, "prior", device)
    labels, nrow = sample_labels(config.get("classes", []), prior.config.num_classes > 0, class_=class_,
                                 per_class=per_class, n=n)
    images, idx = sample_images(prior, vq, labels, controls=controls, seed=seed)
    if path.suffix.lower() == ".png":  # a row per class, named on its left
        names = config.get("classes") if prior.config.num_classes and class_ is None else None
        save_image_grid(images, path, nrow=nrow, row_names=names)
    else:
        u8 = to_uint8(images).numpy()
        atomic_write_npz(path, {
            "images": u8[:, 0] if u8.shape[1] == 1 else u8, "labels": labels.numpy(),
            "indices": idx.numpy().astype(np.int16 if prior.config.num_embeddings <= 32768 else np.int32),
            "prior_dir": str(Path(prior_dir).resolve()), "vqvae_dir": config["vqvae_dir"],
            "classes": np.asarray(config.get("classes", []), dtype=str),
            **{name: np.asarray(value) for name, value in dataclasses.asdict(controls).items()}})
    return len(labels)


@torch.no_grad()
def sample_audio(prior: WaveNetPrior, vq: AudioVQVAE, speaker: int, seconds: float, *,
                 controls: SamplingControls | None = None, seed: int = 0,
                 class_: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``seconds`` of audio for ``speaker`` saying class ``class_``: codes drawn from the prior (conditioned
    on the speaker and the class where it is), decoded by the VQ-VAE's WaveNet (the prior under ``controls``,
    the decoder at their temperature, from one generator seeded with ``seed``).

    Args:
        prior: the WaveNet prior over ``vq``'s codes.
        vq: the audio VQ-VAE that decodes the codes.
        speaker: the speaker's index.
        seconds: length of the audio (at least one code).
        controls: the prior's temperature (also the decoder's), top-k, top-p, guidance; None: none.
        seed: seed of the CPU generator.
        class_: the class's index, for a class-conditional prior; None otherwise.
    Returns:
        ``(waveform, codes)``: (T,) in [-1, 1] and (L,), on the CPU.
    """
    length = max(1, int(seconds * vq.config.sample_rate) // vq.config.hop)
    waves, codes = sample_utterances(prior, vq, [speaker], None if class_ is None else [class_], [length],
                                     controls=controls, seed=seed)
    return waves[0], codes[0]


@torch.no_grad()
def sample_utterances(prior: WaveNetPrior, vq: AudioVQVAE, speakers: list[int],
                      classes: list[int] | None, lengths: list[int], *,
                      controls: SamplingControls | None = None, seed: int = 0, batch_size: int = 64
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Utterance i: ``lengths[i]`` codes drawn from the prior for speaker ``speakers[i]`` (saying
    ``classes[i]``), decoded by the VQ-VAE's WaveNet, ``batch_size`` at a time (each batch's codes are drawn
    to its longest length and cut: the prior is causal), the prior under ``controls`` and the decoder at
    their temperature, from one generator seeded with ``seed`` (on the CPU: the same samples on every device).

    Args:
        prior: the WaveNet prior over ``vq``'s codes.
        vq: the audio VQ-VAE that decodes the codes.
        speakers: the speaker index of every utterance.
        classes: the class index of every utterance, for a class-conditional prior; None otherwise.
        lengths: the number of codes of every utterance.
        controls: the prior's temperature (also the decoder's), top-k, top-p, guidance; None: none.
        seed: seed of the CPU generator.
        batch_size: utterances drawn at once.
    Returns:
        ``(waveforms, codes)``: lists of (lengths[i] * hop,) and (lengths[i],) tensors, on the CPU.
    """
    controls = sampling_controls(controls)
    dev, gen, waves, drawn = model_device(prior), torch.Generator().manual_seed(seed), [], []
    for lo in range(0, len(speakers), batch_size):
        spk = torch.tensor(speakers[lo : lo + batch_size], device=dev)
        cls = None if classes is None else torch.tensor(classes[lo : lo + batch_size], device=dev)
        n = lengths[lo : lo + batch_size]
        codes = prior.sample(len(n), max(n), spk, controls, gen, classes=cls).to(model_device(vq))
        codes = [q[:k] for q, k in zip(codes, n)]
        ids = spk.to(model_device(vq)) if vq.num_speakers else None
        waves.extend(w.cpu() for w in vq.decode_many(codes, ids, temperature=controls.temperature,
                                                          generator=gen))
        drawn.extend(q.cpu() for q in codes)
    return waves, drawn


def sample_audio_file(prior_dir: str | Path, out: str | Path, *, speaker: str, seconds: float = 2.0,
                      controls: SamplingControls | None = None, seed: int = 0, overwrite: bool = False,
                      device: str | None = "auto", class_: str | None = None) -> dict[str, float | int]:
    """``vqvae audio sample``: :func:`sample_audio` of the prior in ``prior_dir`` for the speaker named
    ``speaker`` (saying the class named ``class_``, for a class-conditional prior), written to the WAV file
    ``out``.

    Args:
        prior_dir: the audio prior's run directory.
        out: the ``.wav`` file to write.
        speaker: the speaker's name.
        seconds: length of the audio (> 0).
        controls: temperature, top-k, top-p, guidance (as :func:`sample_audio`).
        seed: seed of the generator.
        overwrite: replace ``out`` if it exists.
        device: where the models run (``--device``; ``auto`` picks one).
        class_: the class's name, for a class-conditional prior.
    Returns:
        ``{"seconds": ..., "codes": ...}``: the length written, in seconds and in codes.
    Raises:
        VQVAEError: a bad output file, length, prior directory, speaker or class, or guidance for a prior
            trained without class dropout.
    """
    path = check_out_file(out, overwrite, (".wav",))
    controls = sampling_controls(controls)
    check_generation_options(controls.temperature, seconds)
    prior, vq, config, _ = load_prior(prior_dir, "audio_prior", device)
    classes = config.get("classes", []) if prior.config.num_classes else []
    wave, codes = sample_audio(prior, vq, speaker_id(speaker, config.get("speakers", [])), seconds,
                               controls=controls, seed=seed, class_=class_id(class_, classes))
    write_wav(path, wave, vq.config.sample_rate)
    return {"seconds": len(wave) / vq.config.sample_rate, "codes": len(codes)}
