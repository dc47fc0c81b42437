"""Sampling: prior -> codes -> decoded data. Code grids from a Gated PixelCNN decoded into images, code sequences
from a WaveNet prior decoded into waveforms by the audio VQ-VAE's WaveNet; and the ``vqvae sample`` /
``vqvae audio sample`` commands, which write them to files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqvae.data import save_image_grid, to_uint8
from vqvae.data.audio import write_wav
from vqvae.devices import model_device
from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_npz, check_out_dir
from vqvae.judges.audio import SpeechJudges, remove_previous, write_verdicts
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.priors.pixelcnn import GatedPixelCNN
from vqvae.priors.wavenet import WaveNetPrior
from vqvae.runs import check_out_file, load_prior, run_split

__all__ = ["check_generation_options", "class_id", "sample_audio", "sample_audio_file", "sample_image_file",
           "sample_images", "sample_labels", "sample_utterances", "score_audio_prior", "speaker_id"]


@torch.no_grad()
def sample_images(prior: GatedPixelCNN, vq: VQVAE, labels: torch.Tensor, *, temperature: float = 1.0,
                  seed: int = 0, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample code grids from ``prior`` (class ``labels[i]`` for sample i; ignored by an unconditional prior)
    with the cached sampler and decode them: (images (N, C, H, W) in [0, 1], indices (N, h, w)). The same
    ``seed`` and ``batch_size`` give the same samples."""
    prior.eval()
    h, dev = vq.config.latent_size, model_device(prior)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same samples on every device
    images, indices = [], []
    for chunk in labels.split(batch_size):
        idx = prior.sample((h, h), chunk.to(dev), temperature, gen)
        indices.append(idx.cpu())
        images.append(vq.decode_indices(idx.to(model_device(vq))).clamp(0, 1).cpu())
    if not indices:
        c, s = vq.config.in_channels, vq.config.image_size
        return torch.zeros(0, c, s, s), torch.zeros(0, h, h, dtype=torch.long)
    return torch.cat(images), torch.cat(indices)


def sample_labels(classes: list[str], conditional: bool, *, class_: int | None = None,
                  per_class: int | None = None, n: int | None = None) -> tuple[torch.Tensor, int]:
    """The label of every sample requested (-1: unconditional) and the grid's row length: ``per_class`` samples
    of every class (default 8), ``n`` of class ``class_`` (default 64), or ``n`` from an unconditional prior."""
    if class_ is not None:
        if not conditional:
            raise VQVAEError("this prior is unconditional: it takes no --class (use --n)")
        if not 0 <= class_ < len(classes):
            raise VQVAEError(f"--class {class_} is not a class of this prior (0..{len(classes) - 1}: {', '.join(classes)})")
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


def check_generation_options(temperature: float, seconds: float | None = None) -> None:
    """The temperature (and length) of every command that generates: both > 0."""
    if not temperature > 0:
        raise VQVAEError(f"--temperature must be > 0, got {temperature}")
    if seconds is not None and not seconds > 0:
        raise VQVAEError(f"--seconds must be > 0, got {seconds}")


def sample_image_file(prior_dir: str | Path, out: str | Path, *, class_: int | None = None,
                      per_class: int | None = None, n: int | None = None, temperature: float = 1.0, seed: int = 0,
                      overwrite: bool = False, device: str | None = "auto") -> int:
    """``vqvae sample``: samples of the prior in ``prior_dir`` decoded by its VQ-VAE, written to ``out``: a PNG grid
    (one row per class) or an .npz with ``images`` (uint8), ``labels`` (-1: unconditional), ``indices``, the
    directories of the prior and its VQ-VAE and the class names. Returns the number of samples."""
    path = check_out_file(out, overwrite, (".png", ".npz"))
    check_generation_options(temperature)
    prior, vq, config, _ = load_prior(prior_dir, "prior", device)
    labels, nrow = sample_labels(config.get("classes", []), prior.config.num_classes > 0, class_=class_,
                                 per_class=per_class, n=n)
    images, idx = sample_images(prior, vq, labels, temperature=temperature, seed=seed)
    if path.suffix.lower() == ".png":
        save_image_grid(images, path, nrow=nrow)
    else:
        u8 = to_uint8(images).numpy()
        atomic_write_npz(path, {
            "images": u8[:, 0] if u8.shape[1] == 1 else u8, "labels": labels.numpy(),
            "indices": idx.numpy().astype(np.int16 if prior.config.num_embeddings <= 32768 else np.int32),
            "prior_dir": str(Path(prior_dir).resolve()), "vqvae_dir": config["vqvae_dir"],
            "classes": np.asarray(config.get("classes", []), dtype=str)})
    return len(labels)


@torch.no_grad()
def sample_audio(prior: WaveNetPrior, vq: AudioVQVAE, speaker: int, seconds: float, *, temperature: float = 1.0,
                 seed: int = 0, class_: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``seconds`` of audio for ``speaker`` saying class ``class_``: codes drawn from the prior (conditioned on the
    speaker and the class where it is), decoded by the VQ-VAE's WaveNet (both at ``temperature``, from one generator
    seeded with ``seed``). Returns (waveform (T,) in [-1, 1], codes (L,))."""
    length = max(1, int(seconds * vq.config.sample_rate) // vq.config.hop)
    waves, codes = sample_utterances(prior, vq, [speaker], None if class_ is None else [class_], [length],
                                     temperature=temperature, seed=seed)
    return waves[0], codes[0]


@torch.no_grad()
def sample_utterances(prior: WaveNetPrior, vq: AudioVQVAE, speakers: list[int], classes: list[int] | None,
                      lengths: list[int], *, temperature: float = 1.0, seed: int = 0, batch_size: int = 64
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Utterance i: ``lengths[i]`` codes drawn from the prior for speaker ``speakers[i]`` (saying ``classes[i]``),
    decoded by the VQ-VAE's WaveNet, ``batch_size`` at a time (each batch's codes are drawn to its longest
    length and cut: the prior is causal), prior and decoder at ``temperature`` from one generator seeded with
    ``seed`` (on the CPU: the same samples on every device). Returns (waveforms (lengths[i] * hop,), codes
    (lengths[i],)), on the CPU."""
    dev, gen, waves, drawn = model_device(prior), torch.Generator().manual_seed(seed), [], []
    for lo in range(0, len(speakers), batch_size):
        spk = torch.tensor(speakers[lo : lo + batch_size], device=dev)
        cls = None if classes is None else torch.tensor(classes[lo : lo + batch_size], device=dev)
        n = lengths[lo : lo + batch_size]
        codes = prior.sample(len(n), max(n), spk, temperature, gen, classes=cls).to(model_device(vq))
        codes = [q[:k] for q, k in zip(codes, n)]
        ids = spk.to(model_device(vq)) if vq.num_speakers else None
        waves.extend(w.cpu() for w in vq.decode_many(codes, ids, temperature=temperature, generator=gen))
        drawn.extend(q.cpu() for q in codes)
    return waves, drawn


def score_audio_prior(prior_dir: str | Path, *, per: int = 5, temperature: float = 1.0, seed: int = 0,
                      wav_dir: str | Path | None = None, overwrite: bool = False,
                      device: str | None = "auto", one_stream: int = 8) -> dict[str, Any]:
    """``vqvae audio score``: ``per`` samples of the prior in ``prior_dir`` for every speaker (and every class, for a
    class-conditional prior), each as long as the median train utterance of its speaker (and class), judged by
    :class:`~vqvae.judges.audio.SpeechJudges` trained on the VQ-VAE's corpus: heard as the speaker asked for, as
    the class asked for, voiced. Also the real-time factor of prior + decoder (seconds of audio per second), in
    batches and one utterance at a time (``one_stream`` more utterances, drawn alone)."""
    if wav_dir is not None:
        check_out_dir(wav_dir, overwrite, is_file="--wav-dir {out} is a file, not a directory",
                      not_empty="{out} already exists and is not empty: pass --overwrite to write into it")
    check_generation_options(temperature)
    prior, vq, config, vq_config = load_prior(prior_dir, "audio_prior", device)
    train, test = (run_split(vq, vq_config, None, s) for s in ("train", "test"))
    hop, names = vq.config.hop, config.get("classes", []) if prior.config.num_classes else []
    asked = [(s, k) for s in range(len(train.speakers)) for k in (range(len(names)) if names else [None])]
    speakers, classes, lengths = [], [], []
    for s, k in asked:
        own = [n for n, who, c in zip(train.lengths, train.labels, train.classes or [None] * len(train))
               if who == s and (k is None or c == k)]
        n = max(1, int(np.median(own)) // hop) if own else max(1, int(np.median(train.lengths)) // hop)
        speakers += [s] * per
        classes += [k] * per
        lengths += [n] * per
    asked_classes = classes if names else None
    start = time.perf_counter()
    waves, _ = sample_utterances(prior, vq, speakers, asked_classes, lengths, temperature=temperature, seed=seed)
    rtf = sum(len(w) for w in waves) / vq.config.sample_rate / (time.perf_counter() - start)
    start, alone = time.perf_counter(), 0  # one utterance at a time, as a single listener would be served
    for i in range(min(one_stream, len(speakers))):
        alone += len(sample_utterances(prior, vq, speakers[i : i + 1], None if asked_classes is None else
                                       asked_classes[i : i + 1], lengths[i : i + 1], temperature=temperature,
                                       seed=seed + i)[0][0])
    rtf_one = alone / vq.config.sample_rate / max(time.perf_counter() - start, 1e-9)
    judges = SpeechJudges(train, test, seed=seed)
    if wav_dir is not None:
        remove_previous(wav_dir)
        files, expected = [], []
        for i, (w, s, k) in enumerate(zip(waves, speakers, classes)):
            said = "" if k is None else f"_says_{names[k]}"
            files.append(f"{i:03d}_{train.speakers[s]}{said}.wav")
            expected.append({"speaker": train.speakers[s], **({} if k is None else {"class": names[k]})})
            write_wav(Path(wav_dir) / files[-1], w, vq.config.sample_rate)
        write_verdicts(Path(wav_dir) / "verdicts.json", files, judges.verdicts(waves), expected)
    m = judges.samples(waves, speakers, asked_classes)
    return {**m, "per_speaker_and_class": per, "prior_and_decoder_real_time_factor": rtf,
            "prior_and_decoder_real_time_factor_one_stream": rtf_one}


def class_id(name: str | None, classes: list[str]) -> int | None:
    """The index of class ``name`` among a prior's ``classes`` (None for a prior without classes)."""
    if not classes:
        if name is not None:
            raise VQVAEError("this prior is not conditioned on classes: it takes no --class")
        return None
    if name is None or name not in classes:
        raise VQVAEError(f"{'unknown class ' + repr(name) if name else 'pass --class'}: this prior knows "
                         f"{', '.join(classes)}")
    return classes.index(name)


def speaker_id(name: str | None, speakers: list[str], fallback: str | None = None) -> int:
    """The index of speaker ``name`` (or ``fallback``) among a model's ``speakers``."""
    name = name or fallback
    if name is None:
        raise VQVAEError(f"pass --speaker (one of: {', '.join(speakers)})")
    if name not in speakers:
        raise VQVAEError(f"unknown speaker {name!r}: this model knows {', '.join(speakers)}")
    return speakers.index(name)


def sample_audio_file(prior_dir: str | Path, out: str | Path, *, speaker: str, seconds: float = 2.0,
                      temperature: float = 1.0, seed: int = 0, overwrite: bool = False, device: str | None = "auto",
                      class_: str | None = None) -> dict[str, float | int]:
    """``vqvae audio sample``: :func:`sample_audio` of the prior in ``prior_dir`` for the speaker named ``speaker``
    (saying the class named ``class_``, for a class-conditional prior), written to the WAV file ``out``. Returns its
    length in seconds and in codes."""
    path = check_out_file(out, overwrite, (".wav",))
    check_generation_options(temperature, seconds)
    prior, vq, config, _ = load_prior(prior_dir, "audio_prior", device)
    classes = config.get("classes", []) if prior.config.num_classes else []
    wave, codes = sample_audio(prior, vq, speaker_id(speaker, config.get("speakers", [])), seconds,
                               temperature=temperature, seed=seed, class_=class_id(class_, classes))
    write_wav(path, wave, vq.config.sample_rate)
    return {"seconds": len(wave) / vq.config.sample_rate, "codes": len(codes)}
