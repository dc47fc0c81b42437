"""Data: image datasets (:mod:`vqvae.data.images`: IDX, CIFAR-10 batches, image folders; image grids) and
speech (:mod:`vqvae.data.audio`: WAV files, speaker-folder corpora, the espeak-ng corpus). Every problem the
user can fix raises a one-line :class:`~vqvae.errors.VQVAEError`."""

from vqvae.data.audio import SpeechDataset, load_speech
from vqvae.data.images import (
           SPLITS,
           ImageDataset,
           image_grid,
           load_images,
           load_images_for,
           save_image_grid,
           to_float,
           to_uint8,
)
from vqvae.data.loader import pick_examples

__all__ = ["SPLITS", "ImageDataset", "SpeechDataset", "load_images", "load_images_for", "load_speech",
           "image_grid", "pick_examples", "save_image_grid", "to_float", "to_uint8"]
