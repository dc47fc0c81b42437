"""Training: one loop (:mod:`vqvae.train.loop`) and the four tasks that plug into it
(:mod:`vqvae.train.tasks`): the image VQ-VAE, its prior, the audio VQ-VAE, its prior."""

from vqvae.train.loop import resume_recipe, train_task
from vqvae.train.tasks import (
    train_audio_and_evaluate,
    train_audio_prior_and_evaluate,
    train_image_and_evaluate,
    train_image_prior_and_evaluate,
)

__all__ = ["resume_recipe", "train_image_and_evaluate", "train_audio_and_evaluate",
           "train_audio_prior_and_evaluate", "train_image_prior_and_evaluate", "train_task"]
