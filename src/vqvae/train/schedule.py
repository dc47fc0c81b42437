"""The learning-rate schedule of every run: a linear warm-up over steps, then constant or a cosine decay over
the budget, whichever of its steps and seconds runs out first."""

from __future__ import annotations

import math

from vqvae.config import TrainConfig

__all__ = ["budget_used", "lr_at"]


def budget_used(train: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the budget used: whichever of steps / seconds runs out first.

    Args:
        train: the run's train section (``steps`` and ``max_seconds``; 0: no such limit).
        step: steps done.
        elapsed: seconds of training so far.

    Returns:
        The fraction, in [0, 1].
    """
    return min(1.0, max(step / train.steps if train.steps else 0.0,
                        elapsed / train.max_seconds if train.max_seconds else 0.0))


def lr_at(train: TrainConfig, step: int, elapsed: float) -> float:
    """The learning rate: linear warm-up, then constant or a cosine decay over the budget.

    Args:
        train: the run's train section (``lr``, ``warmup_steps``, ``schedule``, ``min_lr_ratio``, the budget).
        step: the step about to be taken.
        elapsed: seconds of training so far.

    Returns:
        The learning rate.
    """
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return train.lr
    progress = budget_used(train, step, elapsed)
    return train.lr * (train.min_lr_ratio
                       + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
