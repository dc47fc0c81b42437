"""Feeding a training loop: the seeded order of global batches (:class:`Batches`), and :class:`Feed`, which
turns each global batch into this rank's tensors -- in the training process, or in
``torch.utils.data.DataLoader`` worker processes that read and decode files while the model trains
(``train.num_workers``).

A task splits the work in two. ``plan(indices, number)`` runs where the order is drawn, in the training
process: it takes the global batch's example indices and its number (batches drawn so far) and returns what
this rank must fetch (its shard; for crops, also where each crop starts, drawn from a generator seeded by the
batch number, so that the draws do not depend on when or where they are made). ``fetch(plan)`` reads the
examples (the same call for data held in memory and for files read on the fly). Both paths give the same
batches, and a run resumed from a checkpoint gets the batches an uninterrupted run would have had, mid-epoch
included: the state saved is that of the batches consumed, never that of the batches the workers have
prefetched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vqvae.errors import VQVAEError

__all__ = ["Batches", "Feed", "batch_generator", "iter_batches", "pick_examples", "rows"]


class Batches:
    """Epochs of random permutations of ``n`` examples from a seeded generator, ``batch_size`` at a time; a
    batch that would run past the end of a permutation starts the next one. Its state is saved for exact
    resume. ``number`` counts the batches drawn.

    Args:
        n: number of examples.
        batch_size: examples per batch.
        seed: seed of the generator of the permutations.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos, self.number = 0, 0
        self.new_epoch = False  # True right after next() began a new permutation

    def next(self) -> torch.Tensor:
        """The next batch's example indices, (batch_size,) int64."""
        self.new_epoch = self.pos + self.batch_size > self.n
        if self.new_epoch:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        self.number += 1
        return idx

    def state(self) -> dict[str, torch.Tensor]:
        """The order's state, for a checkpoint (the generator, the permutation, the position, the number)."""
        return {"data_gen": self.gen.get_state(), "data_perm": self.perm,
                "data_pos": torch.tensor(self.pos), "data_number": torch.tensor(self.number)}

    def restore(self, s: dict[str, torch.Tensor]) -> None:
        """Continue from a saved state.

        Args:
            s: a dict from :meth:`state` (``data_number`` may be missing: 0).
        """
        self.gen.set_state(s["data_gen"])
        self.perm = s["data_perm"]
        self.pos = int(s["data_pos"])
        self.number = int(s.get("data_number", 0))  # 0 for a state without it

    def copy(self) -> Batches:
        """An independent twin in the same state: it draws the batches this one will."""
        twin = Batches.__new__(Batches)
        twin.n, twin.batch_size, twin.seed, twin.new_epoch = (self.n, self.batch_size, self.seed,
                                                               self.new_epoch)
        twin.gen = torch.Generator()
        twin.restore({k: v.clone() for k, v in self.state().items()})
        return twin


def batch_generator(seed: int, number: int) -> torch.Generator:
    """The generator of the random draws that belong to global batch ``number`` of a run seeded with
    ``seed`` (crop offsets): the same on every rank, wherever and whenever the batch is planned.

    Args:
        seed: the run's data seed.
        number: the global batch's number.
    Returns:
        a CPU generator seeded from both.
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + number) % (2**63))


def rows(arrays: tuple, indices: Any) -> tuple:
    """``(a[indices] for a in arrays)``: the fetch of examples held in tensors or read from files on demand
    (:class:`vqvae.data.images.folder.ImageFiles`); a module-level function, so that
    ``functools.partial(rows, arrays)`` pickles for spawned workers.

    Args:
        arrays: indexable arrays (tensors, or file-backed arrays).
        indices: what to index each with.
    Returns:
        the tuple of ``a[indices]``.
    """
    return tuple(a[indices] for a in arrays)


def _unwrap(batch: Any) -> Any:
    """The DataLoader's collate function: ``__getitems__`` already made the batch."""
    return batch


class _Fetches(Dataset):
    """A map-style dataset whose 'index' is a (number, plan) pair and whose item is (number, fetch(plan))."""

    def __init__(self, fetch: Callable[[Any], Any]):
        self.fetch = fetch

    def __getitems__(self, request: tuple[int, Any]) -> tuple[int, Any]:
        number, plan = request
        return number, self.fetch(plan)

    def __getitem__(self, request: tuple[int, Any]) -> tuple[int, Any]:
        return self.__getitems__(request)


class _Plans:
    """The DataLoader's batch sampler: (number, plan) of every batch from a twin of the run's order, without
    end."""

    def __init__(self, batches: Batches, plan: Callable[[torch.Tensor, int], Any]):
        self.batches, self.plan = batches, plan

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while True:
            idx = self.batches.next()
            yield self.batches.number, self.plan(idx, self.batches.number)


def _loader(fetch: Callable[[Any], Any], requests: Iterable, num_workers: int, pin_memory: bool = False
            ) -> DataLoader:
    # a generator of its own: the workers' base seed is not drawn from torch's global generator, whose state a
    # run saves and restores (fetches draw nothing at random: crops are planned in the training process)
    return DataLoader(_Fetches(fetch), batch_sampler=requests, collate_fn=_unwrap, num_workers=num_workers,
                      prefetch_factor=2 if num_workers else None, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0))


def _one_line(exc: Exception) -> VQVAEError:
    """A worker's VQVAEError comes back wrapped in a traceback: keep its own message, one line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else str(exc)
    return VQVAEError(last.split("VQVAEError: ", 1)[-1])


class Feed:
    """This rank's part of each global batch of ``batches``, in order: ``fetch(plan(indices, number))``, made
    in this process (``num_workers=0``) or by DataLoader workers running ahead of the loop. :attr:`batches` is
    the order of the batches consumed: its state is what a checkpoint saves.

    Args:
        batches: the run's order of global batches.
        plan: ``(indices, number) -> plan``, run in this process (see the module docstring).
        fetch: ``plan -> batch``, run here or in a worker; picklable when ``num_workers`` > 0.
        num_workers: DataLoader worker processes; 0 (default) fetches in this process.
        pin_memory: page-locked batches (with workers only), which copy to a GPU asynchronously.
    Raises:
        VQVAEError: a negative ``num_workers``.
    """

    def __init__(self, batches: Batches, plan: Callable[[torch.Tensor, int], Any],
                 fetch: Callable[[Any], Any], num_workers: int = 0, pin_memory: bool = False):
        if num_workers < 0:
            raise VQVAEError(f"num_workers must be >= 0, got {num_workers}")
        self.batches, self.plan, self.fetch, self.num_workers = batches, plan, fetch, num_workers
        self.pin_memory = pin_memory and num_workers > 0  # page-locked batches copy to a GPU asynchronously
        self._it: Iterator | None = None

    def next(self) -> Any:
        """The next batch, as ``fetch`` makes it; a worker's VQVAEError comes back as one line."""
        if not self.num_workers:
            idx = self.batches.next()
            return self.fetch(self.plan(idx, self.batches.number))
        if self._it is None:  # the workers start from the order as it stands now (after a resume, say)
            plans = _Plans(self.batches.copy(), self.plan)
            self._it = iter(_loader(self.fetch, plans, self.num_workers, self.pin_memory))
        self.batches.next()
        try:
            number, batch = next(self._it)
        except VQVAEError as exc:
            raise _one_line(exc) from None
        if number != self.batches.number:
            raise RuntimeError(f"data workers delivered batch {number} "
                               f"where batch {self.batches.number} was due")
        return batch

    def close(self) -> None:
        """Stop the workers (a later :meth:`next` starts new ones where the order stands)."""
        self._it = None


def iter_batches(fetch: Callable[[list[int]], Any], starts: Iterable[int], batch_size: int, n: int,
                 num_workers: int = 0) -> Iterator[Any]:
    """``fetch(list(range(start, min(start + batch_size, n))))`` for each of ``starts``, in order, made here
    or by ``num_workers`` DataLoader workers (for evaluation and encoding of data read from files).

    Args:
        fetch: ``list of example indices -> batch``; picklable when ``num_workers`` > 0.
        starts: the first example index of every batch.
        batch_size: examples per batch (the last may be shorter).
        n: number of examples (no index reaches it).
        num_workers: DataLoader worker processes; 0 (default) fetches in this process.
    Returns:
        an iterator over the batches (a worker's VQVAEError comes back as one line).
    """
    requests = [(i, list(range(s, min(s + batch_size, n)))) for i, s in enumerate(starts)]
    if not num_workers:
        yield from (fetch(plan) for _, plan in requests)
        return
    try:
        for _, batch in _loader(fetch, requests, num_workers):
            yield batch
    except VQVAEError as exc:
        raise _one_line(exc) from None


def pick_examples(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Which ``n`` examples a picture or a recording shows: stratified over the classes or speakers (one of
    each first, in label order, then round-robin), each label's examples in a seeded random order, so that a
    class-sorted split shows every class in its first row and the same call picks the same examples at every
    step of a run.

    Args:
        labels: (N,) int64 labels of the split: classes, or speakers for speech (all equal for data without
            classes).
        n: how many examples (at most N).
        seed: seed of the order within each class.
    Returns:
        (min(n, N),) int64 indices into the split.
    """
    gen = torch.Generator().manual_seed(seed)
    members = [torch.nonzero(labels == c).flatten() for c in labels.unique(sorted=True).tolist()]
    members = [m[torch.randperm(len(m), generator=gen)] for m in members]
    order: list[torch.Tensor] = []
    for r in range(max((len(m) for m in members), default=0)):  # round-robin over the classes, until n
        order += [m[r] for m in members if r < len(m)]
        if len(order) >= n:
            break
    return torch.stack(order[:n]) if order and n > 0 else torch.zeros(0, dtype=torch.long)
