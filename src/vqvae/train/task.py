"""The contract between the training loop and a kind of run: a :class:`Task` says how to load the data, build
the model, compute one step's loss and evaluate the trained model; the loop
(:func:`vqvae.train.loop.train_task`) does the rest and hands the task a :class:`Logger` for what it writes
while it trains."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from vqvae.data.audio import crop_starts
from vqvae.data.loader import batch_generator
from vqvae.distributed import Ranks
from vqvae.errors import VQVAEError
from vqvae.recipes import RecipeSections

__all__ = ["Logger", "StepResult", "Task"]

# what a step returns: the loss to minimise, and {field: detached scalar tensor} for metrics.csv
StepResult = tuple[torch.Tensor, dict[str, torch.Tensor]]


class Logger:
    """What a task writes to TensorBoard while it trains, at the run's current step, from rank 0 only (every
    call is a no-op on the other ranks and before the run starts); and where the run stands.

    Args:
        writer: the run's ``SummaryWriter`` (None on ranks other than 0).
        step: the run's current step.
        new_epoch: whether the batch being trained on begins a new pass over the data.
    """

    def __init__(self, writer: Any = None, step: Callable[[], int] = lambda: 0,
                 new_epoch: Callable[[], bool] = lambda: False):
        self._writer, self._step, self._new_epoch = writer, step, new_epoch

    @property
    def step(self) -> int:
        return self._step()

    @property
    def new_epoch(self) -> bool:
        return self._new_epoch()

    def scalar(self, tag: str, value: float) -> None:
        """Log one scalar under ``tag`` at the current step.

        Args:
            tag: the TensorBoard tag.
            value: the value.
        """
        if self._writer is not None:
            self._writer.add_scalar(tag, value, self.step)

    def image(self, tag: str, pixels: np.ndarray) -> None:
        """Log one picture under ``tag`` at the current step.

        Args:
            tag: the TensorBoard tag.
            pixels: (H, W) grayscale or (H, W, 3) RGB uint8 pixels.
        """
        if self._writer is not None:
            self._writer.add_image(tag, pixels, self.step, dataformats="HW" if pixels.ndim == 2 else "HWC")

    def audio(self, tag: str, wave: torch.Tensor, sample_rate: int) -> None:
        """Log one sound under ``tag`` at the current step.

        Args:
            tag: the TensorBoard tag.
            wave: (T,) samples in [-1, 1] (clipped there).
            sample_rate: its rate, Hz.
        """
        if self._writer is not None:
            self._writer.add_audio(tag, wave.detach().float().cpu().clamp(-1, 1)[None], self.step,
                                   sample_rate=sample_rate)

    def embedding(self, tag: str, vectors: torch.Tensor, metadata: list[list[str]],
                  header: list[str]) -> None:
        """Log vectors for TensorBoard's embedding projector, at the current step.

        Args:
            tag: the projector's name for them.
            vectors: (N, D) vectors.
            metadata: N rows of labels, one per column of ``header``.
            header: the names of the metadata columns (two or more).
        """
        if self._writer is not None:
            self._writer.add_embedding(vectors.detach().float().cpu(), metadata=metadata,
                                       metadata_header=header, global_step=self.step, tag=tag)

    def histogram(self, tag: str, values: torch.Tensor) -> None:
        """Log a histogram of ``values`` under ``tag`` at the current step.

        Args:
            tag: the TensorBoard tag.
            values: the values (any shape).
        """
        if self._writer is not None:
            self._writer.add_histogram(tag, values, self.step)


class Task(ABC):
    """What one kind of run adds to the loop.

    The loop sets ``device``, ``ranks`` (this process under torchrun), ``net`` (the model, or DDP over it) and
    ``log`` before it calls, in order: :meth:`load`, :meth:`build`, :meth:`step` once per optimisation step
    (on this rank's part of a global batch, made by :meth:`plan` and ``fetch``), then :meth:`evaluate`.

    Args:
        recipe: the run's recipe (never changed: a task completes a copy from its data).
    """

    kind: ClassVar[str]  # the checkpoint kind it writes: vqvae, prior, audio, audio_prior
    fields: ClassVar[list[str]]  # what step() reports, in metrics.csv's column order

    def __init__(self, recipe: RecipeSections):
        self.recipe = recipe
        self.model: torch.nn.Module | None = None
        self.num_examples = 0  # examples in the training set (set by load)
        self.device, self.ranks = torch.device("cpu"), Ranks()
        self.net: torch.nn.Module | None = None
        self.log = Logger()
        # plan -> batch, in this process or a data worker (set by load)
        self.fetch: Callable[[Any], Any] | None = None

    @abstractmethod
    def load(self, out: Path, resume: bool, overwrite: bool) -> None:
        """Read and check the data (before ``out`` is touched); set ``num_examples`` and ``fetch``.

        Args:
            out: the run directory.
            resume: whether the run continues from the checkpoint in ``out``.
            overwrite: whether ``out`` may be a non-empty directory.
        """

    @abstractmethod
    def build(self) -> torch.nn.Module:
        """The model to train, on the CPU (the loop moves it); also set ``self.model``."""

    @abstractmethod
    def step(self, batch: Any) -> StepResult:
        """The loss of one batch and its metrics.

        Args:
            batch: this rank's part of a global batch, as ``fetch`` made it.
        Returns:
            ``(loss, metrics)``: the scalar loss and {field: detached scalar tensor} for the fields of
            ``fields``.
        """

    @abstractmethod
    def media(self) -> None:
        """Log to ``self.log`` what the model makes now of fixed examples (pictures, sounds); called on rank 0
        with the model in eval mode, gradients off and the random state put back afterwards
        (``train.log_media``)."""

    @abstractmethod
    def evaluate(self, out: Path, limit: int | None) -> dict[str, Any]:
        """Metrics of the trained model on the test split, sharded over the ranks; may write files of its own
        into ``out`` (rank 0).

        Args:
            out: the run directory.
            limit: evaluate the first ``limit`` examples only; None: all.
        Returns:
            The metrics that ``eval.json`` records.
        """

    def plan(self, indices: torch.Tensor, number: int) -> Any:
        """What this rank fetches of a global batch: its shard.

        Args:
            indices: (B,) the example indices of the global batch.
            number: the global batch's number (from 0 at the start of the run).
        Returns:
            What ``fetch`` takes: here this rank's shard of ``indices``.
        """
        return self.ranks.shard(indices)

    def crop_plan(self, lengths, indices: torch.Tensor, number: int) -> tuple[list[int], list[int]]:
        """This rank's shard of a global batch of crops, the starts drawn for the whole global batch from the
        batch's own generator (the same on every rank, resumable, whoever draws them).

        Args:
            lengths: the length of every example (samples or codes).
            indices: (B,) the example indices of the global batch.
            number: the global batch's number, which seeds its generator.
        Returns:
            ``(indices, starts)``: this rank's shard of the indices and of the crops' start offsets.
        """
        starts = crop_starts([lengths[i] for i in indices.tolist()], self.recipe.train.crop_length,
                             batch_generator(self.recipe.train.seed, number))
        return self.ranks.shard(indices).tolist(), self.ranks.shard(torch.tensor(starts)).tolist()

    def extra(self) -> dict[str, Any]:
        """What config.json records beside the architecture."""
        return {"train": self.recipe.to_dict()["train"]}

    def window_extra(self) -> dict[str, Any]:
        """Fields computed once per CSV row."""
        return {}

    def encoder_outputs(self, batch: Any) -> torch.Tensor:
        """Encoder outputs of a training batch, for the k-means init of the codebook.

        Args:
            batch: this rank's part of a global batch, as ``fetch`` made it.
        Returns:
            (N, D) encoder output vectors.
        Raises:
            VQVAEError: the task's model has no codebook.
        """
        raise VQVAEError(f"{self.kind} runs have no codebook to initialise with k-means")
