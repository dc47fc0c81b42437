"""The run's config (:class:`TrainConfig`) and the sections of a recipe read from a dict: unknown keys, wrong
types and non-finite numbers are rejected with a message naming them."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from vqvae.config.models import AudioModelConfig, ImageModelConfig, check_field
from vqvae.config.priors import AudioPriorConfig, ImagePriorConfig
from vqvae.errors import VQVAEError


@dataclass
class TrainConfig:
    """How one training run goes (data, optimiser, budget, logging)."""

    data: str = "fashion-mnist"  # "fashion-mnist", "mnist", "cifar10" or a path (IDX/CIFAR dir, image folder)
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate (Adam)
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (decays to min_lr_ratio * lr over the budget) or "constant"
    warmup_steps: int = 100  # linear warm-up of the learning rate
    min_lr_ratio: float = 0.05  # final learning rate of the cosine schedule, as a fraction of lr
    steps: int = 0  # stop after this many steps (0: no step limit; then max_seconds must be set)
    max_seconds: float = 0.0  # wall-clock budget for the optimisation steps (0: none)
    # Batches below are of train.batch_size examples: images, utterances, or code grids / sequences.
    kmeans_batches: int = 20  # training batches whose encoder outputs the k-means init sees (*.kmeans_init)
    precision: str = "fp32"  # nets' autocast: "fp32", "bf16", "fp16" (loss-scaled on CUDA); quantizer: fp32
    seed: int = 0
    threads: int = 0  # torch intra-op threads (0: leave PyTorch's default)
    num_workers: int = 0  # DataLoader processes loading image folders / speech files (0: in-process)
    log_every: int = 50  # steps between CSV/TensorBoard rows
    checkpoint_every: float = 60.0  # seconds between checkpoints (one is always written at the end)
    eval_batches: int = 0  # test-split batches evaluated at the end of training (0: the whole split)
    crop_length: int = 8192  # audio only: samples per training crop (codes per crop for an audio prior)
    # a non-finite loss or gradient: "skip" undoes the step (logged; 50 in a row stop the run), "stop" ends it
    on_nonfinite: str = "skip"
    # TensorBoard pictures and sounds of the model at work (reconstructions, samples, conversions), from rank
    # 0 on fixed examples, every media_every seconds (longer when the last took more than 2% of the time since
    # the one before) and after the last step; the codebook in the embedding projector at the end
    log_media: bool = True
    media_every: float = 60.0

    def validate(self) -> None:
        check_field(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        check_field(self.lr > 0, "train.lr", self.lr, "> 0")
        check_field(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        check_field(self.schedule in ("cosine", "constant"), "train.schedule", self.schedule,
                    '"cosine" or "constant"')
        check_field(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, ">= 0")
        check_field(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        check_field(self.steps >= 0, "train.steps", self.steps, ">= 0")
        check_field(self.max_seconds >= 0, "train.max_seconds", self.max_seconds, ">= 0")
        if self.steps == 0 and self.max_seconds == 0:
            raise VQVAEError("set train.steps or train.max_seconds (--steps / --max-seconds): "
                             "the run has no end")
        check_field(self.kmeans_batches >= 1, "train.kmeans_batches", self.kmeans_batches, ">= 1")
        check_field(self.precision in ("fp32", "bf16", "fp16"), "train.precision", self.precision,
                    '"fp32", "bf16" or "fp16"')
        check_field(self.threads >= 0, "train.threads", self.threads, ">= 0")
        check_field(self.num_workers >= 0, "train.num_workers", self.num_workers, ">= 0")
        check_field(self.log_every >= 1, "train.log_every", self.log_every, ">= 1")
        check_field(self.checkpoint_every > 0, "train.checkpoint_every", self.checkpoint_every, "> 0")
        check_field(self.eval_batches >= 0, "train.eval_batches", self.eval_batches, ">= 0")
        check_field(self.crop_length >= 1, "train.crop_length", self.crop_length, ">= 1")
        check_field(self.media_every > 0, "train.media_every", self.media_every, "> 0")
        check_field(self.on_nonfinite in ("skip", "stop"), "train.on_nonfinite", self.on_nonfinite,
                    '"skip" or "stop"')



def _coerce(cls_name: str, f: dataclasses.Field, value: Any) -> Any:
    hint = typing.get_type_hints(_CLASSES[cls_name])[f.name]
    key = f"{cls_name}.{f.name}"
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise VQVAEError(f"{key} must be a list of integers, got {value!r}")
        return list(value)
    if hint is bool or hint is str:
        if not isinstance(value, hint):
            raise VQVAEError(f"{key} must be {'true or false' if hint is bool else 'a string'}, "
                             f"got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise VQVAEError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (isinstance(value, float)
                or abs(value) < 10**308) or not math.isfinite(value):  # ints beyond floats
            raise VQVAEError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    raise TypeError(f"unsupported config type {hint} for {key}")


_CLASSES = {"model": ImageModelConfig, "prior": ImagePriorConfig, "train": TrainConfig,
            "audio": AudioModelConfig, "wavenet_prior": AudioPriorConfig}


def section_from_dict(name: str, values: dict[str, Any]) -> Any:
    """Build one config section from a dict, rejecting unknown keys and bad types.

    Args:
        name: the section (``model``, ``prior``, ``train``, ``audio`` or ``wavenet_prior``).
        values: its keys and values, as read from YAML or config.json.

    Returns:
        The section's dataclass (not validated: see its ``validate``).
    """
    cls = _CLASSES[name]
    if not isinstance(values, dict):
        raise VQVAEError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise VQVAEError(f"unknown config key(s) in {name}: {', '.join(unknown)} "
                         f"(known: {', '.join(fields)})")
    return cls(**{k: _coerce(name, fields[k], v) for k, v in values.items()})
