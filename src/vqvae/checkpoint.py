"""Checkpoint directories: ``config.json`` + ``model.safetensors`` (+ ``trainer_state.json`` and
``trainer_state.safetensors`` for resuming) + ``manifest.json``. Nothing is ever loaded with pickle.

A checkpoint is whole or refused. Every file is written to a temporary name and renamed over its target, and
``manifest.json`` -- the step and the SHA-256 of every file -- is written last; each file is checked against
it when read, so files from different saves (a save cut short, a file copied in from elsewhere, a truncated
one) are refused with one line. While a new checkpoint is being written the last complete one is kept in
``.previous/`` (hard links: no copy), and :func:`recover` puts it back, so ``--resume`` always has a whole
checkpoint to use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vqvae.errors import VQVAEError
from vqvae.fileio import atomic_write_bytes, atomic_write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
MANIFEST = "manifest.json"
CODEBOOK = "codebook.npz"  # an autoencoder's code counts over the test split, written by its evaluation
FILES = (CONFIG, WEIGHTS, STATE_JSON, STATE_TENSORS)  # what a manifest may list
PREVIOUS = ".previous"  # the last complete checkpoint while a new one is written
FORMAT_VERSION = 2  # 2: with manifest.json
# kill tests only: VQVAE_FAULT_KILL_AFTER_FILE=N sends SIGKILL after the Nth file of a save (manifest last)
_FAULT = "VQVAE_FAULT_KILL_AFTER_FILE"


def _tensors(state: dict[str, torch.Tensor]) -> bytes:
    # safetensors refuses shared or strided storage: give it plain contiguous copies.
    return st_save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()})


def save_model(directory: str | Path, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """Write a model checkpoint whole: the weights, the config (naming what the weights are), the manifest.

    Args:
        directory: the checkpoint directory (created if missing).
        config: the JSON-able config; its ``step``, if any, goes into the manifest.
        state_dict: the model's weights."""
    write_checkpoint(directory, {WEIGHTS: _tensors(state_dict), CONFIG: _config_bytes(config)},
                     config.get("step"))


def _config_bytes(config: dict[str, Any]) -> bytes:
    return (json.dumps({**config, "format_version": FORMAT_VERSION}, indent=2, sort_keys=True)
            + "\n").encode()


def write_checkpoint(directory: str | Path, files: dict[str, bytes], step: int | None) -> None:
    """Write ``files`` (name -> bytes) as one checkpoint of ``step``: the complete checkpoint already there is
    kept in ``.previous/`` first; each file is replaced atomically; ``manifest.json`` (the step and every
    file's SHA-256) comes last and makes the new checkpoint whole.

    Args:
        directory: the checkpoint directory (created if missing).
        files: file name (one of ``FILES``) -> its bytes, written in this order.
        step: the training step the checkpoint holds, recorded in the manifest (None: unknown)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _keep_previous(directory)
    # from here until the new manifest is written the directory has none: a torn save never looks whole (so a
    # second save cut short cannot take it for the previous checkpoint)
    (directory / MANIFEST).unlink(missing_ok=True)
    _remove_temporaries(directory)
    for i, (name, data) in enumerate(files.items(), 1):
        atomic_write_bytes(directory / name, data)
        _fault(i)
    files_sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    atomic_write_json(directory / MANIFEST,
                      {"format_version": FORMAT_VERSION, "step": step, "files": files_sha})
    _fault(len(files) + 1)


def _remove_temporaries(directory: Path) -> None:
    """Remove what killed checkpoint writes left behind (see :func:`vqvae.fileio.atomic_write_bytes`)."""
    for name in (*FILES, MANIFEST):
        for tmp in directory.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _fault(n: int) -> None:
    if os.environ.get(_FAULT) == str(n):
        os.kill(os.getpid(), signal.SIGKILL)


def _manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of ``directory`` (None when there is none); a one-line error when it is unreadable."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
        if not (isinstance(m, dict) and isinstance(m.get("files"), dict) and set(m["files"]) <= set(FILES)
                and all(isinstance(v, str) for v in m["files"].values())):
            raise ValueError("not a manifest")
        return m
    except (ValueError, UnicodeDecodeError):
        raise VQVAEError(f"{path} is damaged (not a checkpoint manifest): "
                         "the checkpoint cannot be trusted") from None


def _keep_previous(directory: Path) -> None:
    """Hard-link the checkpoint now in ``directory`` (the files its manifest lists) into ``.previous/``,
    replacing the one there; at every moment one of the two is whole."""
    try:
        listed = _manifest(directory)
    except VQVAEError:
        return
    if listed is None or not all((directory / n).is_file() for n in listed["files"]):
        return
    tmp, prev, old = directory / f"{PREVIOUS}.tmp", directory / PREVIOUS, directory / f"{PREVIOUS}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in [*listed["files"], MANIFEST]:
        try:
            os.link(directory / name, tmp / name)
        except OSError:  # a file system without hard links
            shutil.copy2(directory / name, tmp / name)
    shutil.rmtree(old, ignore_errors=True)
    if prev.exists():
        os.replace(prev, old)
    os.replace(tmp, prev)
    shutil.rmtree(old, ignore_errors=True)


def _check_file(directory: Path, name: str, raw: bytes) -> None:
    """Refuse ``raw`` (the bytes of ``directory/name`` just read) unless the manifest lists exactly these
    bytes."""
    m = _manifest(directory)
    if m is None:
        if _is_checkpoint(directory):
            raise VQVAEError(f"{directory} has no {MANIFEST}: its last save did not complete (torn)")
        return  # a config.json that is not JSON: read_config says so
    want = m["files"].get(name)
    if want is None:
        raise VQVAEError(f"{directory / name} is not part of the checkpoint in {directory} "
                         f"(not in its {MANIFEST})")
    if hashlib.sha256(raw).hexdigest() != want:
        raise VQVAEError(f"{directory / name} is not the file the checkpoint's {MANIFEST} "
                         f"(step {m.get('step')}) lists: a save was cut short, or the file was changed "
                         "or copied in (torn checkpoint)")


def _is_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a checkpoint, whole or torn: a manifest or a JSON-object config.json."""
    if (directory / MANIFEST).exists():
        return True
    try:
        return isinstance(json.loads((directory / CONFIG).read_text()), dict)
    except (OSError, ValueError):
        return False


def verify(directory: str | Path) -> dict[str, Any]:
    """The manifest of a whole checkpoint in ``directory``: every file it lists is there with its SHA-256.

    Args:
        directory: the checkpoint directory.
    Returns:
        The manifest: ``format_version``, ``step`` and ``files`` (name -> SHA-256)."""
    directory = Path(directory)
    m = _manifest(directory)
    if m is None:
        raise VQVAEError(f"{directory} has no complete checkpoint (no {MANIFEST})")
    for name in m["files"]:
        try:
            raw = (directory / name).read_bytes()
        except OSError:
            raise VQVAEError(f"{directory / name} is missing: the checkpoint is torn") from None
        _check_file(directory, name, raw)
    return m


def whole(directory: str | Path) -> bool:
    """Whether ``directory`` needs no :func:`recover`.

    Args:
        directory: the checkpoint directory.
    Returns:
        True when its checkpoint is whole, or it holds no checkpoint at all."""
    directory = Path(directory)
    if not _is_checkpoint(directory):
        return True
    try:
        verify(directory)
        return True
    except VQVAEError:
        return False


def recover(directory: str | Path) -> str | None:
    """Make the checkpoint in ``directory`` whole before resuming: when it is torn (a save was killed) and
    ``.previous/`` holds a whole one, put that back (each file atomically, the manifest last) and say so;
    refused in one line when neither is whole.

    Args:
        directory: the run's checkpoint directory.
    Returns:
        A message saying which step the run resumes from, or None when nothing was put back."""
    directory = Path(directory)
    if not _is_checkpoint(directory):
        return None  # not a checkpoint (read_config says so)
    try:
        verify(directory)
        return None  # whole
    except VQVAEError as torn:
        prev = directory / PREVIOUS
        try:
            m = verify(prev)
        except VQVAEError:
            raise VQVAEError(f"cannot resume from {directory}: {torn} and there is no earlier complete "
                             "checkpoint (start again with --overwrite)") from None
    (directory / MANIFEST).unlink(missing_ok=True)
    for name in m["files"]:
        atomic_write_bytes(directory / name, (prev / name).read_bytes())
    atomic_write_bytes(directory / MANIFEST, (prev / MANIFEST).read_bytes())
    _remove_temporaries(directory)
    return (f"the last save in {directory} was cut short: resuming from the complete checkpoint before it "
            f"(step {m.get('step')})")


def read_config(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The checkpoint's config; a clear error when ``directory`` is not a checkpoint (of ``kind``).

    Args:
        directory: the checkpoint directory.
        kind: the ``kind`` the config must name (e.g. ``vqvae``, ``prior``); None accepts any.
    Returns:
        The parsed ``config.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VQVAEError(f"checkpoint directory not found: {directory}")
    path = directory / CONFIG
    if not path.is_file() or not (directory / WEIGHTS).is_file():
        raise VQVAEError(f"{directory} is not a checkpoint directory (needs {CONFIG} and {WEIGHTS})")
    raw = path.read_bytes()
    _check_file(directory, CONFIG, raw)
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VQVAEError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise VQVAEError(f"{path} must hold a JSON object")
    if kind is not None and config.get("kind") != kind:
        held = f"the kind {config['kind']!r}" if "kind" in config else "no kind"
        raise VQVAEError(f"{directory}'s config.json records {held}: expected a checkpoint of kind {kind!r}")
    return config


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint's .safetensors file, checked against its manifest (refused if torn).

    Args:
        path: the file, inside its checkpoint directory.
    Returns:
        name -> tensor, on the CPU."""
    return _load_tensors(Path(path))[0]


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], bytes]:
    """The tensors of a checkpoint's file ``path`` (checked against its manifest) and the bytes read."""
    try:
        raw = path.read_bytes()
        _check_file(path.parent, path.name, raw)
        return st_load(raw), raw
    except VQVAEError:
        raise
    except (SafetensorError, OSError, ValueError) as exc:
        raise VQVAEError(f"cannot read {path}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_model_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of a checkpoint and the SHA-256 of the very bytes they were read from: the fingerprint
    that ties cached codes and priors to one exact VQ-VAE (one read, so a run still saving new weights
    can never pair one file's tensors with another's hash).

    Args:
        directory: the checkpoint directory.
    Returns:
        (state dict on the CPU, hex SHA-256 of ``model.safetensors``)."""
    state, raw = _load_tensors(Path(directory) / WEIGHTS)
    return state, hashlib.sha256(raw).hexdigest()


def load_weights(model: torch.nn.Module, directory: str | Path) -> str:
    """Load a checkpoint's weights into ``model`` (built from its config.json); return their SHA-256.

    Args:
        model: the model to fill in place; weights that do not fit it are refused in one line.
        directory: the checkpoint directory.
    Returns:
        The hex SHA-256 of ``model.safetensors``."""
    state, sha = load_model_state(directory)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise VQVAEError(f"weights in {directory} do not match its config.json: "
                         f"{lines[min(1, len(lines) - 1)]}") from None
    return sha


def save_training(directory: str | Path, config: dict[str, Any], model_state: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> None:
    """Write a training checkpoint, whole: the model (as :func:`save_model`) with the optimiser state, RNG
    states (as ``tensors``) and JSON-able progress (``meta``, with its ``step``) for ``--resume``.

    Args:
        directory: the run's checkpoint directory.
        config: the JSON-able config, as :func:`save_model` takes it.
        model_state: the model's weights, as :func:`save_model` takes them.
        optimizer: the optimiser whose state is saved (tensors and scalars apart).
        tensors: the RNG states, name -> tensor.
        meta: JSON-able progress; ``step`` goes into the manifest."""
    files = {WEIGHTS: _tensors(model_state), CONFIG: _config_bytes(config),
             **_trainer_files(optimizer, tensors, meta)}
    write_checkpoint(directory, files, meta["step"])


def _trainer_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   meta: dict[str, Any]) -> dict[str, bytes]:
    opt = optimizer.state_dict()
    flat: dict[str, torch.Tensor] = {f"rng.{k}": v for k, v in tensors.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                flat[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    info = {"meta": meta, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    return {STATE_TENSORS: _tensors(flat),
            STATE_JSON: (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()}


def load_trainer_state(directory: str | Path,
                       optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore the optimiser in place; return (rng tensors, meta).

    Args:
        directory: the checkpoint directory of the run to resume (a missing or torn state is refused).
        optimizer: the optimiser to restore, over the parameters it had when saved (else a one-line error).
    Returns:
        (RNG states as :func:`save_training` got them, ``meta`` with at least ``step`` and ``seconds``)."""
    directory = Path(directory)
    if not (directory / STATE_JSON).is_file() or not (directory / STATE_TENSORS).is_file():
        raise VQVAEError(f"{directory} has no trainer state to resume from ({STATE_JSON}, {STATE_TENSORS})")
    raw = (directory / STATE_JSON).read_bytes()
    _check_file(directory, STATE_JSON, raw)
    flat = load_tensors(directory / STATE_TENSORS)
    try:
        info = json.loads(raw)
        state: dict[int, dict[str, Any]] = {}
        rng: dict[str, torch.Tensor] = {}
        for key, value in flat.items():
            if key.startswith("rng."):
                rng[key[4:]] = value
            else:
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        for pid, values in info["optim_scalars"].items():
            state.setdefault(int(pid), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
        meta = info["meta"]
        int(meta["step"]), float(meta["seconds"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError, IndexError,
            RuntimeError) as exc:
        raise VQVAEError(f"{directory / STATE_JSON} does not hold a trainer state this run can use "
                         f"({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'malformed'})") from None
    _match_layouts(optimizer)
    return rng, meta


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give restored per-parameter state (Adam's moments) the memory layout of its parameter: it was saved
    contiguous, a channels_last parameter has channels_last moments, and a fused optimiser kernel pairs
    elements by storage order, so a mismatch would pair the wrong ones."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for name, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)
