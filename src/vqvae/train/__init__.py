"""Training: one loop (:mod:`vqvae.train.loop`), the contract of what plugs into it
(:mod:`vqvae.train.task`), the four tasks (:mod:`vqvae.train.tasks`: the image VQ-VAE, its prior, the audio
VQ-VAE, its prior), and here the four training commands, one per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqvae.recipes import AudioPriorRecipe, AudioRecipe, ImagePriorRecipe, ImageRecipe
from vqvae.train.loop import resume_recipe, train_task
from vqvae.train.tasks import AudioPriorTask, AudioTask, ImagePriorTask, ImageTask

__all__ = ["resume_recipe", "train_audio_and_evaluate", "train_audio_prior_and_evaluate",
           "train_image_and_evaluate", "train_image_prior_and_evaluate", "train_task"]


def train_image_and_evaluate(recipe: ImageRecipe, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train the image VQ-VAE of ``recipe`` into ``out_dir`` (``vqvae train``).

    Args:
        recipe: the image recipe.
        out_dir: the run directory.
        **options: ``resume``, ``overwrite``, ``progress``, ``device`` of :func:`vqvae.train.loop.train_task`.

    Returns:
        The test-split metrics.
    """
    return train_task(ImageTask(recipe), out_dir, **options)


def train_image_prior_and_evaluate(recipe: ImagePriorRecipe, vqvae_dir: str | Path | None,
                                   out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train an image prior (Gated PixelCNN or transformer, ``prior.kind``) on the codes of a VQ-VAE into
    ``out_dir`` (``vqvae train-prior``).

    Args:
        recipe: the prior recipe.
        vqvae_dir: the VQ-VAE's run directory (None on resume: the recorded one).
        out_dir: the prior's run directory.
        **options: ``resume``, ``overwrite``, ``progress``, ``device`` of :func:`vqvae.train.loop.train_task`.

    Returns:
        The test-split likelihoods.
    """
    return train_task(ImagePriorTask(recipe, vqvae_dir), out_dir, **options)


def train_audio_and_evaluate(recipe: AudioRecipe, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train the audio VQ-VAE of ``recipe`` into ``out_dir`` (``vqvae audio train``).

    Args:
        recipe: the audio recipe (``train.data``: a speaker-folder corpus).
        out_dir: the run directory.
        **options: ``resume``, ``overwrite``, ``progress``, ``device`` of :func:`vqvae.train.loop.train_task`.

    Returns:
        Its bits per sample (or spectral losses) and code usage on the test split.
    """
    return train_task(AudioTask(recipe), out_dir, **options)


def train_audio_prior_and_evaluate(recipe: AudioPriorRecipe, vqvae_dir: str | Path | None,
                                   out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train a WaveNet prior on the codes of an audio VQ-VAE into ``out_dir`` (``vqvae audio train-prior``).

    Args:
        recipe: the prior recipe.
        vqvae_dir: the audio VQ-VAE's run directory (None on resume: the recorded one).
        out_dir: the prior's run directory.
        **options: ``resume``, ``overwrite``, ``progress``, ``device`` of :func:`vqvae.train.loop.train_task`.

    Returns:
        Its test NLL per code.
    """
    return train_task(AudioPriorTask(recipe, vqvae_dir), out_dir, **options)
