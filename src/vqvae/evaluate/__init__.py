"""Whole-split metrics of the autoencoders and the priors (:mod:`vqvae.evaluate.image`,
:mod:`vqvae.evaluate.audio`), and of speaker conversion. Every metric accumulates sums over the whole split
and divides once at the end, never a mean of batch means (:class:`vqvae.metrics.MeanAccumulator`); under
torchrun each rank takes its share and the sums are added up (:mod:`vqvae.evaluate.sums`). The ``*_run``
functions here are the commands of the CLI: each loads a run directory and its data and returns the
metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqvae import checkpoint
from vqvae.distributed import join
from vqvae.errors import VQVAEError
from vqvae.evaluate.audio import evaluate_audio, evaluate_audio_prior, evaluate_conversion
from vqvae.evaluate.image import evaluate_image_model, evaluate_image_prior
from vqvae.evaluate.sums import write_codebook_usage
from vqvae.fileio import check_out_dir
from vqvae.runs import check_generation_options, load_prior, load_run, run_split

__all__ = ["evaluate_audio", "evaluate_audio_prior", "evaluate_conversion", "evaluate_conversion_run",
           "evaluate_image_model", "evaluate_image_prior", "evaluate_image_prior_run", "evaluate_run",
           "write_codebook_usage"]


def evaluate_run(run_dir: str | Path, *, kind: str | None = None, data: str | None = None,
                 split: str = "test", limit: int | None = None,
                 device: str | None = "auto") -> dict[str, Any]:
    """``vqvae evaluate`` and ``vqvae audio evaluate``: the autoencoder in ``run_dir`` on ``split``.

    Args:
        run_dir: an image (:func:`evaluate_image_model`) or audio (:func:`evaluate_audio`) VQ-VAE's run.
        kind: ``vqvae`` or ``audio`` to insist on one (refused in one line otherwise); None: the run's own.
        data: the data to evaluate on; None: what the run was trained on.
        split: ``train`` or ``test``.
        limit: evaluate the first ``limit`` examples only; None: all.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).

    Returns:
        The metrics, as ``eval.json`` holds them.
    """
    kind = kind or checkpoint.read_config(run_dir).get("kind")
    if kind not in ("vqvae", "audio"):
        raise VQVAEError(f"{run_dir} holds a run of kind {kind!r}, not an autoencoder "
                         f"(evaluate a prior with evaluate-prior)")
    ranks = join(device)
    model, config = load_run(run_dir, kind, ranks.device)
    test = run_split(model, config, data, split)
    if kind == "vqvae":
        return evaluate_image_model(model, test, limit=limit, ranks=ranks)
    return evaluate_audio(model, test, limit=limit, ranks=ranks,
                          train=run_split(model, config, data, "train"))


def evaluate_image_prior_run(prior_dir: str | Path, *, split: str = "test", limit: int | None = None,
                             device: str | None = "auto") -> dict[str, Any]:
    """``vqvae evaluate-prior``: :func:`evaluate_image_prior` of the prior in ``prior_dir`` with its VQ-VAE.

    Args:
        prior_dir: the prior's run directory.
        split: the split of its VQ-VAE's data, ``train`` or ``test``.
        limit: evaluate the first ``limit`` images only; None: all.
        device: where the models run (``auto``: see :func:`vqvae.devices.resolve_device`).

    Returns:
        The metrics of :func:`evaluate_image_prior`.
    """
    ranks = join(device)
    prior, vq, _, vq_config = load_prior(prior_dir, "prior", ranks.device)
    return evaluate_image_prior(prior, vq, run_split(vq, vq_config, None, split), limit=limit, ranks=ranks)


def evaluate_conversion_run(run_dir: str | Path, *, data: str | None = None, pairs: int = 16,
                            seconds: float = 1.5, seed: int = 0, temperature: float = 1.0,
                            wav_dir: str | Path | None = None, overwrite: bool = False,
                            device: str | None = "auto") -> dict[str, Any]:
    """``vqvae audio conversion``: :func:`evaluate_conversion` of the audio VQ-VAE in ``run_dir`` on ``data``.

    Args:
        run_dir: the audio VQ-VAE's run directory.
        data: the corpus; None: the one the run was trained on.
        pairs: test utterances converted.
        seconds: the first ``seconds`` of each.
        seed: draws the utterances, the target speakers and the decoder's samples.
        temperature: divides the decoder's logits (> 0).
        wav_dir: a directory to receive every input, reconstruction and conversion; None: none written.
        overwrite: ``wav_dir`` may be a non-empty directory.
        device: where the model runs (``auto``: see :func:`vqvae.devices.resolve_device`).

    Returns:
        The metrics of :func:`evaluate_conversion`.
    """
    if wav_dir is not None:
        check_out_dir(wav_dir, overwrite, is_file="--wav-dir {out} is a file, not a directory",
                      not_empty="{out} already exists and is not empty: pass --overwrite to write into it")
    check_generation_options(temperature, seconds)
    model, config = load_run(run_dir, "audio", device)
    train, test = (run_split(model, config, data, s) for s in ("train", "test"))
    return evaluate_conversion(model, train, test, pairs=pairs, seconds=seconds, seed=seed,
                               temperature=temperature, wav_dir=wav_dir)
