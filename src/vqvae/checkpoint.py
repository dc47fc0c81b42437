"""Checkpoint directories: ``config.json`` + ``model.safetensors`` (+ ``trainer_state.json`` and
``trainer_state.safetensors`` for resuming). Nothing is ever loaded with pickle.

Every file is written to a temporary name in the same directory and renamed over the target,
so an interrupted save leaves the previous file intact, never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
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
FORMAT_VERSION = 1


def _tensors(state: dict[str, torch.Tensor]) -> bytes:
    # safetensors refuses shared or strided storage: give it plain contiguous copies.
    return st_save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()})


def save_model(directory: str | Path, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """Write the weights, then the config (the config names what the weights are)."""
    directory = Path(directory)
    atomic_write_bytes(directory / WEIGHTS, _tensors(state_dict))
    atomic_write_json(directory / CONFIG, {"format_version": FORMAT_VERSION, **config})


def read_config(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The checkpoint's config; a clear error when ``directory`` is not a checkpoint (of ``kind``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VQVAEError(f"checkpoint directory not found: {directory}")
    path = directory / CONFIG
    if not path.is_file() or not (directory / WEIGHTS).is_file():
        raise VQVAEError(f"{directory} is not a checkpoint directory (needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VQVAEError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise VQVAEError(f"{path} must hold a JSON object")
    if kind is not None and config.get("kind") != kind:
        raise VQVAEError(f"{directory} holds a {config.get('kind', 'unknown')!r} checkpoint, expected {kind!r}")
    return config


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return _load_tensors(Path(path))[0]


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], bytes]:
    try:
        raw = path.read_bytes()
        return st_load(raw), raw
    except (SafetensorError, OSError, ValueError) as exc:
        raise VQVAEError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_model_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights of a checkpoint and the SHA-256 of the very bytes they were read from: the fingerprint
    that ties cached codes and priors to one exact VQ-VAE (one read, so a run still saving new weights
    can never pair one file's tensors with another's hash)."""
    state, raw = _load_tensors(Path(directory) / WEIGHTS)
    return state, hashlib.sha256(raw).hexdigest()


def load_weights(model: torch.nn.Module, directory: str | Path) -> str:
    """Load a checkpoint's weights into ``model`` (built from its config.json); return their SHA-256."""
    state, sha = load_model_state(directory)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VQVAEError(f"weights in {directory} do not match its config.json: {str(exc).splitlines()[0]}") from None
    return sha


def save_trainer_state(
    directory: str | Path, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Optimiser state, RNG states (as ``tensors``) and JSON-able progress (``meta``) for ``--resume``."""
    opt = optimizer.state_dict()
    flat: dict[str, torch.Tensor] = {f"rng.{k}": v for k, v in tensors.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                flat[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    directory = Path(directory)
    atomic_write_bytes(directory / STATE_TENSORS, _tensors(flat))
    atomic_write_json(
        directory / STATE_JSON,
        {"meta": meta, "param_groups": opt["param_groups"], "optim_scalars": scalars},
    )


def load_trainer_state(
    directory: str | Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore the optimiser in place; return (rng tensors, meta)."""
    directory = Path(directory)
    if not (directory / STATE_JSON).is_file() or not (directory / STATE_TENSORS).is_file():
        raise VQVAEError(f"{directory} has no trainer state to resume from ({STATE_JSON}, {STATE_TENSORS})")
    try:
        info = json.loads((directory / STATE_JSON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VQVAEError(f"{directory / STATE_JSON} is not valid JSON ({exc})") from None
    flat = load_tensors(directory / STATE_TENSORS)
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
    _match_layouts(optimizer)
    return rng, info["meta"]


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give restored per-parameter state (Adam's moments) the memory layout of its parameter: it was saved
    contiguous, a channels_last parameter has channels_last moments, and a fused optimiser kernel pairs elements by
    storage order, so a mismatch would pair the wrong ones."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for name, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)
