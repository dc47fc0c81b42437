"""Run directories: what each kind holds, loading a run with its config, the data a run was trained on, a
prior paired with its VQ-VAE (one check, for sampling, evaluating and resuming), a new run's directory
(nothing the user put there is removed), and the options of the commands that generate from a run
(temperature, length, the speaker and class named).

A run directory is a checkpoint (``config.json`` + ``model.safetensors``, see :mod:`vqvae.checkpoint`) whose
config records ``kind``: ``vqvae`` (image VQ-VAE), ``prior`` (image prior), ``audio`` (audio VQ-VAE) or
``audio_prior`` (WaveNet prior); a prior's config records ``vqvae_dir`` and ``vqvae_weights_sha256``. The
model class of each kind registers itself (:func:`vqvae.models.pretrained.model_class`) when its module is
imported: ``import vqvae`` imports those of the four run kinds (``vqvae.judges.image`` the classifier's).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vqvae import checkpoint
from vqvae.data import ImageDataset, load_images_for
from vqvae.data.audio import SpeechDataset, load_speech
from vqvae.devices import resolve_device
from vqvae.distributed import Ranks
from vqvae.errors import VQVAEError
from vqvae.fileio import RUN_LOCK, check_out_dir
from vqvae.models import VQVAE, AudioVQVAE
from vqvae.models.pretrained import model_class

__all__ = ["VQVAE_KIND_OF_PRIOR", "check_free_space", "check_generation_options", "class_id", "data_spec",
           "hold_run_dir", "holder_text", "load_prior", "load_run", "paired_vqvae", "prepare_out_dir",
           "refuse_if_in_use", "resumable", "run_in_progress", "run_split", "speaker_id"]

VQVAE_KIND_OF_PRIOR = {"prior": "vqvae", "audio_prior": "audio"}
# what a training command writes into its run directory, and the scores of its samples (`vqvae score --out
# PRIOR/score.json`): what a new run with --overwrite removes (nothing else, and under tb/ only TensorBoard's
# event files and the codebook's projector files)
RUN_FILES = (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.STATE_JSON, checkpoint.STATE_TENSORS,
             checkpoint.MANIFEST, "metrics.csv", "eval.json", checkpoint.CODEBOOK, "reconstructions.png",
             "samples.png", "score.json")
PROJECTOR = {"tensors.tsv", "metadata.tsv"}  # the files of tb/STEP/codebook/
RUN_DIRS = (checkpoint.PREVIOUS, f"{checkpoint.PREVIOUS}.tmp", f"{checkpoint.PREVIOUS}.old")


def load_run(run_dir: str | Path, kind: str,
             device: str | torch.device | None = "cpu") -> tuple[Any, dict[str, Any]]:
    """The model of a run directory of ``kind``, in eval mode, and its config.json.

    Args:
        run_dir: the run directory.
        kind: the kind it must hold: ``vqvae``, ``prior``, ``audio`` or ``audio_prior``.
        device: where the model goes (``auto``: see :func:`vqvae.devices.resolve_device`).
    Returns:
        (model, config): the model on ``device`` and the run's config.json as a dict.
    """
    device = resolve_device(device)  # a device this machine lacks is refused before anything is read
    config = checkpoint.read_config(run_dir, kind=kind)
    holder = run_in_progress(run_dir)
    if holder:  # readers work on a run in progress: its last complete checkpoint
        print(f"vqvae: note: {run_dir} is still training ({holder_text(holder)}): reading its last complete "
              "checkpoint", file=sys.stderr)
    return model_class(kind).from_pretrained(run_dir, device), config


def data_spec(config: dict[str, Any], data: str | None = None) -> str:
    """The data to use: ``data`` when given, else what the run was trained on.

    Args:
        config: the run's config.json.
        data: the data asked for; None: the run's own (``fashion-mnist`` for an image run that records none).
    Returns:
        The data spec: a dataset name or a path.
    """
    default = "fashion-mnist" if config.get("kind") in ("vqvae", None) else ""
    return data or config.get("train", {}).get("data", default)


def run_split(model: VQVAE | AudioVQVAE, config: dict[str, Any], data: str | None,
              split: str) -> ImageDataset | SpeechDataset:
    """``split`` of ``data`` in the form ``model`` takes: images at its size, or utterances at its rate,
    refused when their speakers are not the ones the model knows.

    Args:
        model: the run's image or audio VQ-VAE.
        config: the run's config.json.
        data: the data to load; None: the run's own (:func:`data_spec`).
        split: ``train`` or ``test``.
    Returns:
        The split, as an :class:`~vqvae.data.ImageDataset` or a :class:`~vqvae.data.audio.SpeechDataset`.
    Raises:
        VQVAEError: the corpus's speakers are not the ones the run recorded.
    """
    spec = data_spec(config, data)
    if isinstance(model, VQVAE):
        return load_images_for(model.config, spec, split)
    ds = load_speech(spec, split, model.config.sample_rate)
    if config.get("speakers") is not None and ds.speakers != config["speakers"]:
        raise VQVAEError(f"the corpus's speakers {ds.speakers} are not the model's {config['speakers']}")
    return ds


def paired_vqvae(prior_config: dict[str, Any], prior_kind: str, device: str | torch.device | None = "cpu"):
    """The VQ-VAE a prior was trained on: the one recorded in ``prior_config``, refused when it is gone or its
    weights are not the ones the prior recorded.

    Args:
        prior_config: the prior's config.json (``vqvae_dir``, ``vqvae_weights_sha256``).
        prior_kind: ``prior`` or ``audio_prior``.
        device: where the VQ-VAE goes (as :func:`load_run`).
    Returns:
        (vq, vq_config): the VQ-VAE on ``device`` and its config.json.
    Raises:
        VQVAEError: the VQ-VAE's directory is gone or holds other weights.
    """
    vq_dir = prior_config.get("vqvae_dir")
    if not isinstance(vq_dir, (str, Path)) or not Path(vq_dir).is_dir():
        raise VQVAEError(f"the VQ-VAE this prior was trained on ({vq_dir}) is not there any more")
    vq, vq_config = load_run(vq_dir, VQVAE_KIND_OF_PRIOR[prior_kind], device)
    if vq.weights_sha256 != prior_config.get("vqvae_weights_sha256"):
        raise VQVAEError(f"{vq_dir} holds different weights from the VQ-VAE this prior was trained on")
    return vq, vq_config


def load_prior(prior_dir: str | Path, kind: str = "prior", device: str | torch.device | None = "cpu"):
    """A prior with its VQ-VAE; refuses a VQ-VAE whose weights changed.

    Args:
        prior_dir: the prior's run directory.
        kind: ``prior`` or ``audio_prior``.
        device: where both models go (as :func:`load_run`).
    Returns:
        (prior, vq, config, vq_config): both models on ``device``, the prior's config and the VQ-VAE's.
    Raises:
        VQVAEError: the VQ-VAE is gone, its weights changed, or its K is not the prior's.
    """
    prior, config = load_run(prior_dir, kind, device)
    vq, vq_config = paired_vqvae(config, kind, device)
    if vq.config.num_codes != prior.config.num_embeddings:
        raise VQVAEError(f"{config['vqvae_dir']} has K={vq.config.num_codes} codes, the prior models "
                         f"{prior.config.num_embeddings}")
    return prior, vq, config, vq_config


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """A new run's directory: refuse a non-empty one unless ``overwrite``; then remove the files a run writes
    (:data:`RUN_FILES`, :data:`RUN_DIRS`, TensorBoard's files under ``tb/``) and nothing else: what the user
    put there stays.

    Args:
        out: the run directory (created when missing).
        overwrite: whether a non-empty directory may be reused.
    """
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
        (tb / "projector_config.pbtxt").unlink(missing_ok=True)
        for step in tb.glob("[0-9]*/codebook"):  # the codebook in the embedding projector: STEP/codebook
            if step.is_dir() and not step.is_symlink() and {f.name for f in step.iterdir()} <= PROJECTOR:
                shutil.rmtree(step)
                if not any(step.parent.iterdir()):
                    step.parent.rmdir()
        if not any(tb.iterdir()):
            tb.rmdir()


def check_generation_options(temperature: float, seconds: float | None = None) -> None:
    """The temperature (and length) of every command that generates: both > 0.

    Args:
        temperature: ``--temperature``.
        seconds: ``--seconds``; None: the command takes no length.
    Raises:
        VQVAEError: either is not > 0.
    """
    if not temperature > 0:
        raise VQVAEError(f"--temperature must be > 0, got {temperature}")
    if seconds is not None and not seconds > 0:
        raise VQVAEError(f"--seconds must be > 0, got {seconds}")


def class_id(name: str | None, classes: list[str]) -> int | None:
    """The index of class ``name`` among a prior's ``classes``.

    Args:
        name: ``--class``; None when not given.
        classes: the prior's class names (empty for a prior without classes).
    Returns:
        The index, or None for a prior without classes.
    Raises:
        VQVAEError: a class given to a prior without classes, or a missing or unknown one.
    """
    if not classes:
        if name is not None:
            raise VQVAEError("this prior is not conditioned on classes: it takes no --class")
        return None
    if name is None or name not in classes:
        raise VQVAEError(f"{'unknown class ' + repr(name) if name else 'pass --class'}: this prior knows "
                         f"{', '.join(classes)}")
    return classes.index(name)


def speaker_id(name: str | None, speakers: list[str], fallback: str | None = None) -> int:
    """The index of speaker ``name`` (or ``fallback``) among a model's ``speakers``.

    Args:
        name: ``--speaker``; None when not given.
        speakers: the model's speaker names.
        fallback: the speaker to use when ``name`` is None (e.g. the input's folder name).
    Returns:
        The speaker's index.
    Raises:
        VQVAEError: no speaker given, or an unknown one.
    """
    name = name or fallback
    if name is None:
        raise VQVAEError(f"pass --speaker (one of: {', '.join(speakers)})")
    if name not in speakers:
        raise VQVAEError(f"unknown speaker {name!r}: this model knows {', '.join(speakers)}")
    return speakers.index(name)


def resumable(run_dir: str | Path) -> bool:
    """Whether a run could resume from ``run_dir``: it holds a whole checkpoint, or a torn one with a whole
    one before it in ``.previous/`` (what :func:`vqvae.checkpoint.recover` puts back).

    Args:
        run_dir: a run directory (it may not exist).
    Returns:
        True when resuming would find a complete checkpoint.
    """
    for candidate in (Path(run_dir), Path(run_dir) / checkpoint.PREVIOUS):
        try:
            checkpoint.verify(candidate)
            return True
        except VQVAEError:
            continue
    return False


def check_free_space(out: Path, model: torch.nn.Module, ranks: Ranks) -> None:
    """Refuse, before the budget starts, a run whose directory lacks the room for two checkpoints (a save
    writes the new one beside the last complete one): about 3 bytes of checkpoint per byte of weights (the
    weights and Adam's two moments). Rank 0 looks; every rank refuses together.

    Args:
        out: the run directory (or where it will be).
        model: the model the run trains.
        ranks: this process's ranks.
    Raises:
        VQVAEError: the free space, in MB, is below what two checkpoints need.
    """
    error = None
    if ranks.main:
        where = next(p for p in (out, *out.absolute().parents) if p.exists())
        size = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
        free = shutil.disk_usage(where).free
        if free < 2 * size:
            error = (f"not enough free space for {out}: {free / 1e6:.1f} MB free, a run needs about "
                     f"{2 * size / 1e6:.1f} MB (two checkpoints of {size / 1e6:.1f} MB): free some space or "
                     f"write to another --out")
    error = ranks.gather(error)[0]
    if error:
        raise VQVAEError(error)


def holder_text(holder: dict[str, Any]) -> str:
    """The job holding a run directory's lock, for a message: ``pid P on HOST, started TIME``."""
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}")


def refuse_if_in_use(run_dir: str | Path) -> None:
    """Refuse a second training job on ``run_dir`` before it reads anything there (the checkpoint of the job
    training in it may be half written).

    Args:
        run_dir: the run directory.
    Raises:
        VQVAEError: a training job holds its lock, named.
    """
    holder = run_in_progress(run_dir)
    if holder is not None:
        raise _in_use(run_dir, holder)


def _in_use(run_dir: str | Path, holder: dict[str, Any]) -> VQVAEError:
    return VQVAEError(f"{run_dir} is in use by another training job ({holder_text(holder)}): wait for it "
                      f"to end or write to another --out")


def _lock(out: Path, retry_seconds: float = 1.0) -> int:
    """Take the run directory's lock (creating the directory and its lock file): the open file, whose
    exclusive ``flock`` the operating system drops when the process ends, even by SIGKILL. A reader's
    momentary shared lock is waited out for up to ``retry_seconds``."""
    if out.exists() and not out.is_dir():
        raise VQVAEError(f"output path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = _read_holder(out)
            os.close(fd)
            raise _in_use(out, holder) from None
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode())
    return fd


def _read_holder(out: Path) -> dict[str, Any]:
    try:
        holder = json.loads((out / RUN_LOCK).read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def run_in_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """Who trains in ``run_dir`` now: ``{"pid", "host", "started"}`` while a training job holds its lock,
    else None.

    Args:
        run_dir: a run directory.
    Returns:
        the holder's pid, host and start time, or None when no job holds the lock.
    """
    path = Path(run_dir) / RUN_LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(Path(run_dir))
    finally:
        os.close(fd)  # also drops the shared lock when it was taken
    return None


@contextlib.contextmanager
def hold_run_dir(out: Path, ranks: Ranks) -> Iterator[None]:
    """A training job's lock on its run directory, taken before anything is written and held until the job
    ends: a second writer (train, resume, train-prior into the same directory, under torchrun too) is refused
    in one line naming the holder. Rank 0 takes it; every rank refuses together. A directory created here
    for a job that then fails before writing anything is removed again.

    Args:
        out: the run directory.
        ranks: this process's ranks.
    Raises:
        VQVAEError: another job holds the lock.
    """
    created, fd, error = not out.exists(), None, None
    if ranks.main:
        try:
            fd = _lock(out)
        except VQVAEError as exc:
            error = str(exc)
    error = ranks.gather(error)[0]
    if error:
        raise VQVAEError(error)
    try:
        yield
    except BaseException:
        if fd is not None and created and {p.name for p in out.iterdir()} == {RUN_LOCK}:
            (out / RUN_LOCK).unlink()
            out.rmdir()
        raise
    finally:
        if fd is not None:
            os.close(fd)
