"""Run directories: what each kind holds, loading a run with its config, the data a run was trained on, a prior
paired with its VQ-VAE (one check, for sampling, evaluating and resuming), a new run's directory (nothing the user
put there is removed), and the options of the commands that generate from a run (temperature, length, the speaker
and class named).

A run directory is a checkpoint (``config.json`` + ``model.safetensors``, see :mod:`vqvae.checkpoint`) whose
config records ``kind``: ``vqvae`` (image VQ-VAE), ``prior`` (Gated PixelCNN), ``audio`` (audio VQ-VAE) or
``audio_prior`` (WaveNet prior); a prior's config records ``vqvae_dir`` and ``vqvae_weights_sha256``. The model
class of each kind registers itself (:func:`vqvae.models.pretrained.model_class`): importing ``vqvae`` imports them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from vqvae import checkpoint
from vqvae.data import ImageDataset, load_images_for
from vqvae.data.audio import SpeechDataset, load_speech
from vqvae.devices import resolve_device
from vqvae.errors import VQVAEError
from vqvae.fileio import check_out_dir
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.models.pretrained import model_class

__all__ = ["CODEBOOK", "VQVAE_KIND_OF_PRIOR", "check_generation_options", "class_id", "data_spec", "load_prior", "load_run",
           "paired_vqvae", "prepare_out_dir", "run_split", "speaker_id"]

VQVAE_KIND_OF_PRIOR = {"prior": "vqvae", "audio_prior": "audio"}
CODEBOOK = "codebook.npz"  # an autoencoder's code counts over the test split, written by its final evaluation
# what a training command writes into its run directory, and the scores of its samples (`vqvae score --out
# PRIOR/score.json`): what a new run with --overwrite removes (nothing else, and under tb/ only TensorBoard's event files)
RUN_FILES = (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.STATE_JSON, checkpoint.STATE_TENSORS,
             checkpoint.MANIFEST, "metrics.csv", "eval.json", CODEBOOK, "reconstructions.png",
             "samples.png", "score.json")
RUN_DIRS = (checkpoint.PREVIOUS, f"{checkpoint.PREVIOUS}.tmp", f"{checkpoint.PREVIOUS}.old")


def load_run(run_dir: str | Path, kind: str, device: str | torch.device | None = "cpu") -> tuple[Any, dict[str, Any]]:
    """(the model of a run directory of ``kind``, in eval mode on ``device`` (``auto``: see
    :func:`vqvae.devices.resolve_device`); its config.json)."""
    device = resolve_device(device)  # a device this machine lacks is refused before anything is read
    config = checkpoint.read_config(run_dir, kind=kind)
    return model_class(kind).from_pretrained(run_dir, device), config


def data_spec(config: dict[str, Any], data: str | None = None) -> str:
    """The data to use: ``data`` when given, else what the run was trained on."""
    default = "fashion-mnist" if config.get("kind") in ("vqvae", None) else ""
    return data or config.get("train", {}).get("data", default)


def run_split(model: VQVAE | AudioVQVAE, config: dict[str, Any], data: str | None,
              split: str) -> ImageDataset | SpeechDataset:
    """``split`` of ``data`` (default: the run's own data) in the form ``model`` takes: images at its size, or
    utterances at its rate, refused when their speakers are not the ones the model knows."""
    spec = data_spec(config, data)
    if isinstance(model, VQVAE):
        return load_images_for(model.config, spec, split)
    ds = load_speech(spec, split, model.config.sample_rate)
    if config.get("speakers") is not None and ds.speakers != config["speakers"]:
        raise VQVAEError(f"the corpus's speakers {ds.speakers} are not the model's {config['speakers']}")
    return ds


def paired_vqvae(prior_config: dict[str, Any], prior_kind: str, device: str | torch.device | None = "cpu"):
    """(the VQ-VAE a prior of ``prior_kind`` was trained on, on ``device``; its config): the one recorded in
    ``prior_config``, refused when it is gone or its weights are not the ones the prior recorded."""
    vq_dir = prior_config.get("vqvae_dir")
    if not isinstance(vq_dir, (str, Path)) or not Path(vq_dir).is_dir():
        raise VQVAEError(f"the VQ-VAE this prior was trained on ({vq_dir}) is not there any more")
    vq, vq_config = load_run(vq_dir, VQVAE_KIND_OF_PRIOR[prior_kind], device)
    if vq.weights_sha256 != prior_config.get("vqvae_weights_sha256"):
        raise VQVAEError(f"{vq_dir} holds different weights from the VQ-VAE this prior was trained on")
    return vq, vq_config


def load_prior(prior_dir: str | Path, kind: str = "prior", device: str | torch.device | None = "cpu"):
    """(prior, its VQ-VAE, the prior's config, the VQ-VAE's config), both models on ``device``; refuses a VQ-VAE
    whose weights changed."""
    prior, config = load_run(prior_dir, kind, device)
    vq, vq_config = paired_vqvae(config, kind, device)
    if vq.config.num_embeddings != prior.config.num_embeddings:
        raise VQVAEError(f"{config['vqvae_dir']} has K={vq.config.num_embeddings} codes, the prior models "
                         f"{prior.config.num_embeddings}")
    return prior, vq, config, vq_config


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """A new run's directory: refuse a non-empty one unless ``overwrite``; then remove the files a run writes
    (:data:`RUN_FILES`, :data:`RUN_DIRS`, TensorBoard events under ``tb/``) and nothing else: what the user put
    there stays."""
    check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for stale in RUN_FILES:
        (out / stale).unlink(missing_ok=True)
    for stale in RUN_DIRS:
        shutil.rmtree(out / stale, ignore_errors=True)
    tb = out / "tb"
    if tb.is_dir():
        for events in tb.glob("events.out.tfevents.*"):
            events.unlink()
        if not any(tb.iterdir()):
            tb.rmdir()


def check_generation_options(temperature: float, seconds: float | None = None) -> None:
    """The temperature (and length) of every command that generates: both > 0."""
    if not temperature > 0:
        raise VQVAEError(f"--temperature must be > 0, got {temperature}")
    if seconds is not None and not seconds > 0:
        raise VQVAEError(f"--seconds must be > 0, got {seconds}")


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
