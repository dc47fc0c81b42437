"""What a run shows in TensorBoard while it trains (``train.log_media``): when (:class:`MediaClock`: every
``train.media_every`` seconds, longer when they cost more than ``MEDIA_SHARE`` of the time, and at the end)
and what, for each kind of run -- reconstructions of fixed test images, prior samples in rows named by class,
speech taken through the autoencoder (input, reconstruction, conversion) with their spectrograms, prior
samples per speaker and class, and the codebook in the embedding projector at the end. The examples are
:func:`~vqvae.data.pick_examples`: the same ones at every step, one of each class or speaker first."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqvae.data import ImageDataset, SpeechDataset, image_grid, pick_examples
from vqvae.data.audio import whole_codes
from vqvae.devices import model_device
from vqvae.fileio import read_npz
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.priors import ImagePrior, WaveNetPrior
from vqvae.priors.sampling import sample_images, sample_utterances
from vqvae.reconstruct import reconstruction_pairs
from vqvae.spectral import log_magnitude
from vqvae.train.task import Logger

__all__ = ["MEDIA_SHARE", "MediaClock", "log_codebook", "log_prior_sounds", "log_reconstructions",
           "log_takes", "prior_samples"]

MEDIA_SHARE = 0.02  # media never take more than this share of a run's time
TAKE_SECONDS = 1.0  # at most this much of each utterance a run plays


class MediaClock:
    """Calls ``media`` (a task's :meth:`~vqvae.train.task.Task.media`) when it is due: ``every`` seconds
    after the last call ended, or ``cost / MEDIA_SHARE`` when the last call took longer than that share --
    with ``model`` in eval mode, gradients off, and the random state put back, so that a run's weights do not
    depend on whether or when its media were logged.

    Args:
        media: what to call; None: nothing is ever logged.
        model: the model trained (put back in train mode after each call).
        every: the least seconds between two calls.
    """

    def __init__(self, media: Callable[[], None] | None = None, model: torch.nn.Module | None = None,
                 every: float = 60.0):
        self.media, self.model, self.every = media, model, every
        self.seconds = 0.0  # spent logging media
        self.next, self.last_step = time.perf_counter() + every, -1

    def due(self) -> bool:
        return self.media is not None and time.perf_counter() >= self.next

    def log(self, step: int) -> None:
        """Log the media of ``step`` (once per step)."""
        if self.media is None or step == self.last_step:
            return
        start = time.perf_counter()
        device = model_device(self.model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            self.model.eval()
            try:
                self.media()
            except Exception as exc:  # noqa: BLE001 -- a picture never costs the run: said once, then off
                _warn("TensorBoard media are off for the rest of the run", exc)
                self.media = None
            finally:
                self.model.train()
        cost = time.perf_counter() - start
        self.seconds += cost
        self.next, self.last_step = time.perf_counter() + max(self.every, cost / MEDIA_SHARE), step


def _warn(what: str, exc: Exception) -> None:
    why = str(exc).splitlines()[0] if str(exc) else ""
    print(f"vqvae: warning: {what} ({type(exc).__name__}: {why})", file=sys.stderr)


def log_reconstructions(log: Logger, model: VQVAE, data: ImageDataset, n: int = 16) -> None:
    """The picked test images (top row) over their reconstructions, as one picture."""
    pairs = reconstruction_pairs(model, data, n)
    log.image("media/reconstructions", image_grid(pairs, nrow=len(pairs) // 2))


def log_codebook(log: Logger, path: Path) -> None:
    """The codebook the final evaluation wrote (``codebook.npz``) in the embedding projector, each code with
    its test-split uses; nothing for a code space too large to write out. A failure is said in one line: the
    run's evaluation is kept."""
    try:
        arrays = read_npz(path, "codebook usage")
        if "codebook" in arrays:
            counts = arrays["counts"].tolist()
            log.embedding("codebook", torch.from_numpy(arrays["codebook"]),
                          [[str(k), str(int(c))] for k, c in enumerate(counts)], ["code", "test uses"])
    except Exception as exc:  # noqa: BLE001 -- a picture never costs the run
        _warn("the codebook is not in TensorBoard's projector", exc)


def prior_samples(prior: ImagePrior, vq: VQVAE, classes: list[str], conditional: bool, per_class: int,
                  seed: int) -> tuple[Tensor, list[str] | None]:
    """``per_class`` samples of each of the first 10 classes, class by class, and the names of those classes
    (10 times ``per_class`` samples and no names for an unconditional prior): the rows of a picture."""
    rows = min(10, len(classes)) if conditional else 10
    labels = torch.arange(rows).repeat_interleave(per_class) if conditional else torch.zeros(
        rows * per_class, dtype=torch.long)
    images, _ = sample_images(prior, vq, labels, seed=seed)
    return images, classes[:rows] if conditional else None


def log_takes(log: Logger, model: AudioVQVAE, data: SpeechDataset, n: int = 3, seed: int = 0) -> None:
    """``n`` picked test utterances (one per speaker first), at most ``TAKE_SECONDS`` each: the input, its
    reconstruction and its conversion to the next speaker (a model without codes: a sample of the same
    length for the speaker instead), as sounds and as one picture of their spectrograms."""
    c, dev = model.config, model_device(model)
    gen = torch.Generator().manual_seed(seed)
    picked = [(i, whole_codes(data.waves[i], c.hop, int(TAKE_SECONDS * c.sample_rate)))
              for i in pick_examples(torch.as_tensor(data.labels, dtype=torch.long), n, seed).tolist()]
    picked = [(i, x) for i, x in picked if len(x)]  # each file read once, an utterance of no code left out
    inputs, own, spk = [x for _, x in picked], [data.labels[i] for i, _ in picked], model.num_speakers
    if model.quantizer is None:
        made = [model.decode_indices(None, torch.tensor([s], device=dev) if spk else None, length=len(x),
                                     generator=gen)[0].cpu() for x, s in zip(inputs, own)]
        takes = [{"input": x, "sample": y} for x, y in zip(inputs, made)]
    else:
        codes = [model.encode(x[None].to(dev))[0] for x in inputs]
        other = [(s + 1) % spk for s in own] if spk > 1 else []  # a conversion needs a second speaker
        ids = torch.tensor(own + other, device=dev) if spk else None
        out = [w.cpu() for w in model.decode_many(codes * (2 if other else 1), ids, generator=gen)]
        takes = [{"input": x, "reconstruction": out[k]} for k, x in enumerate(inputs)]
        for k, t in enumerate(takes if other else []):
            t[f"as_{data.speakers[other[k]]}"] = out[len(inputs) + k]
    for k, (take, s) in enumerate(zip(takes, own)):
        name = f"media/{k}_{data.speakers[s]}"
        for role, wave in take.items():
            log.audio(f"{name}/{role}", wave, c.sample_rate)
        log.image(f"{name}/spectrograms", spectrogram_image(list(take.values()), c.sample_rate))


def log_prior_sounds(log: Logger, prior: WaveNetPrior, vq: AudioVQVAE, speakers: list[str],
                     classes: list[str], length: int, seed: int = 0, per_speaker: int = 2) -> None:
    """``per_speaker`` samples of ``length`` codes for each of the first 4 speakers, decoded by ``vq``; a
    class-conditional prior says a different class in each (round-robin over the classes)."""
    who = [s for s in range(min(4, max(1, len(speakers)))) for _ in range(per_speaker)]
    said = [k % len(classes) for k in range(len(who))] if prior.config.num_classes and classes else None
    waves, _ = sample_utterances(prior, vq, who, said, [length] * len(who), seed=seed)
    rate = vq.config.sample_rate
    for s in sorted(set(who)):
        mine = [k for k, w in enumerate(who) if w == s]
        base = f"media/{speakers[s]}" if speakers else "media/samples"
        for j, k in enumerate(mine):
            log.audio(f"{base}/{j}" + (f"_says_{classes[said[k]]}" if said else ""), waves[k], rate)
        log.image(f"{base}/spectrograms", spectrogram_image([waves[k] for k in mine], rate))


@lru_cache(maxsize=1)
def _magma() -> np.ndarray:
    import matplotlib  # imported late: it is slow to import

    return (matplotlib.colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def spectrogram_image(waves: list[Tensor], rate: int, floor_db: float = 80.0) -> np.ndarray:
    """The spectrograms of ``waves`` stacked top to bottom (low frequencies at the bottom of each, 32 ms
    windows every 4 ms, at least 256 pixels wide), on one scale: the loudest bin of the set at the top of the
    colour map, ``floor_db`` below it at the bottom; a white line between two.

    Returns:
        (H, W, 3) uint8 pixels.
    """
    n_fft = 1 << max(6, round(np.log2(0.032 * rate)))
    db = [20 / np.log(10) * log_magnitude(w.float().reshape(1, -1), n_fft, n_fft // 8)[0].flip(0).numpy()
          for w in waves]
    top = max(float(d.max(initial=-np.inf)) for d in db)
    width = max(d.shape[1] for d in db)
    parts = []
    for d in db:
        level = np.clip((d - top + floor_db) / floor_db, 0, 1)
        parts += [np.pad(level, ((0, 0), (0, width - d.shape[1]))), np.full((2, width), np.nan)]
    stack = np.concatenate(parts[:-1]).repeat(max(1, -(-256 // max(width, 1))), axis=1)
    pixels = _magma()[np.nan_to_num(stack * 255, nan=0).astype(np.uint8)]
    pixels[np.isnan(stack)] = 255
    return pixels
