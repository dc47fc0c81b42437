"""Running under ``torchrun``: one process per device, gloo on the CPU and NCCL on CUDA.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them a command is one process and nothing
here does anything. In training, ``train.batch_size`` is the *global* batch: every rank draws the same global
batch from the same seeded order and trains on its own contiguous shard of ``batch_size / world_size``
examples, and DDP averages the gradients, so N ranks take the same steps as one process with the whole batch.
Evaluation and encoding split a dataset's batches between the ranks and add up their sums. Rank 0 alone writes
files and prints.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vqvae.devices import resolve_device
from vqvae.errors import VQVAEError

__all__ = ["Ranks", "is_main_process", "join", "leave"]


def is_main_process() -> bool:
    """False in every process torchrun started but rank 0's."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: ``rank`` of ``world`` processes, on ``device``.

    Args:
        rank: this process's rank, 0 to ``world - 1`` (0: the main process).
        world: the number of processes in the job (1: no torchrun).
        device: the device this process computes on.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and outputs."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch of example indices.

        Args:
            batch: the global batch's example indices, the same on every rank.
        Returns:
            This rank's part (``torch.tensor_split`` into ``world`` parts); all of ``batch`` with one rank.
        """
        return batch if self.world == 1 else torch.tensor_split(batch, self.world)[self.rank]

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model the training step calls: DDP over ``model`` when there are several ranks. Buffers are
        not broadcast: the quantizer keeps its codebook identical on every rank itself (all-reduced EMA
        statistics, k-means and restarts broadcast from rank 0).

        Args:
            model: the model, already on this rank's device.
        Returns:
            ``model`` itself with one rank, else a ``DistributedDataParallel`` around it.
        """
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # a module that leaves parameters out of some steps (a residual stack's quantizer dropout) says so
        unused = any(getattr(m, "skips_parameters", False) for m in model.modules())
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
            return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False,
                                           find_unused_parameters=unused)
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False,
                                       find_unused_parameters=unused)

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for with one rank)."""
        if self.world > 1:
            dist.barrier()

    def clock(self, seconds: float) -> float:
        """Rank 0's ``seconds`` on every rank: one clock for the learning-rate schedule and the wall-clock
        budget, so that no rank stops a step before the others.

        Args:
            seconds: this rank's elapsed time, in seconds.
        Returns:
            Rank 0's ``seconds``.
        """
        if self.world == 1:
            return seconds
        value = torch.tensor([seconds], dtype=torch.float64, device=self.device)
        dist.broadcast(value, src=0)
        return float(value)

    def mine(self, items: range) -> range:
        """This rank's share of ``items`` (every ``world``-th, starting at ``rank``).

        Args:
            items: the indices to share out (e.g. a dataset's batch numbers).
        Returns:
            The sub-range of ``items`` this rank handles.
        """
        return items[self.rank :: self.world]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over the ranks (on every rank), on the device ``tensor`` was on.

        Args:
            tensor: this rank's values; every rank passes the same shape and dtype.
        Returns:
            The sum over the ranks (``tensor`` itself with one rank).
        """
        if self.world == 1:
            return tensor
        reduced = tensor.to(self.device)  # NCCL reduces CUDA tensors only
        dist.all_reduce(reduced)
        return reduced.to(tensor.device)

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (on every rank).

        Args:
            obj: this rank's object; anything picklable.
        Returns:
            A list of ``world`` objects, rank 0's first.
        """
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def leave(ok: bool) -> None:
    """End this process's part in a torchrun job: after a command that succeeded, wait for every rank and
    close the process group (a process that exits with it open can abort while a peer is still talking to
    it); after a failure, close it without waiting (torchrun stops the other ranks). Without a process group
    nothing happens.

    Args:
        ok: whether the command succeeded.
    """
    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def join(device: str | torch.device | None, batch_size: int = 0) -> Ranks:
    """This process's :class:`Ranks`; under torchrun, the process group is started here (once), and ``device``
    is the rank's own GPU (``cuda:LOCAL_RANK``) when it names CUDA. A global ``batch_size`` (training) must be
    a multiple of the number of processes.

    Args:
        device: the ``--device`` value, as :func:`vqvae.devices.resolve_device` takes it.
        batch_size: the global batch of a training run; 0 (default) checks nothing.
    Returns:
        This process's :class:`Ranks` (rank, number of processes, device).
    Raises:
        VQVAEError: ``device`` is refused, or ``batch_size`` is not a multiple of the number of processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(device=resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    base = resolve_device(device)
    dev = torch.device("cuda", local) if base.type == "cuda" else base
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if batch_size and batch_size % world:
        raise VQVAEError(f"train.batch_size {batch_size} (the global batch) must be a multiple of the "
                         f"{world} processes")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=10))
    return Ranks(rank, world, dev)
