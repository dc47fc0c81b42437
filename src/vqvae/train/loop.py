"""The training loop that every kind of run shares: the learning-rate schedule, the seeded batch order, logs
(CSV, TensorBoard, progress bar), checkpoints every ``train.checkpoint_every`` seconds and on Ctrl-C, exact
resume, and the final record (``eval.json``). What differs between kinds -- data, model, loss, evaluation --
is a :class:`vqvae.train.task.Task`; :func:`train_task` runs one. A run directory holds ``config.json`` +
``model.safetensors`` (the model), ``trainer_state.*`` (for ``--resume``), ``metrics.csv`` and TensorBoard
events under ``tb/``, and at the end ``eval.json``."""

from __future__ import annotations

import csv
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vqvae import checkpoint
from vqvae.config import TrainConfig
from vqvae.data.loader import Batches, Feed
from vqvae.devices import autocast, available_memory, grad_scaler
from vqvae.distributed import Ranks, is_main_process, join
from vqvae.errors import Preempted, VQVAEError
from vqvae.fileio import atomic_write_json, truncate_metrics
from vqvae.quantize.codebook import Quantizer
from vqvae.recipes import RECIPE_KINDS, RecipeSections, recipe_with_overrides
from vqvae.runs import check_free_space, hold_run_dir, prepare_out_dir, refuse_if_in_use
from vqvae.train.media import MediaClock
from vqvae.train.schedule import lr_at
from vqvae.train.task import Logger, Task

__all__ = ["Batches", "Run", "resume_recipe", "train_task"]


def resume_recipe(out_dir: str | Path, overrides: list[str] = (), kind: str = "vqvae") -> RecipeSections:
    """The recipe saved in a run directory, with ``overrides`` (e.g. a new ``train.steps`` total) applied.

    Args:
        out_dir: the run directory.
        overrides: ``section.key=value`` strings.
        kind: the run's kind (``vqvae``, ``prior``, ``audio`` or ``audio_prior``).

    Returns:
        The validated recipe.
    """
    if is_main_process():  # before anything is read (a running job's checkpoint may be half written); rank 0
        refuse_if_in_use(out_dir)  # alone: the other ranks of this job may find its own lock already taken
    _recover(out_dir)
    saved = checkpoint.read_config(out_dir, kind=kind)
    section = RECIPE_KINDS[kind][1][0]  # the architecture section: model, prior, audio, ...
    if not isinstance(saved.get("train"), dict) or not isinstance(saved.get(section), dict):
        raise VQVAEError(f"{out_dir} was not written by a training command (no saved recipe): "
                         f"it cannot be resumed")
    return recipe_with_overrides({section: saved[section], "train": saved["train"]}, overrides, kind)


class Run:
    """What the loop of one run shares between model kinds: a run directory, a model with its optimiser,
    the data order, a budget, logs (CSV, TensorBoard, progress bar), checkpoints and resume.
    Args:
        out, kind, model, train: the run directory, the checkpoint kind, the model, the train section.
        n, extra, fields: training examples, what config.json adds to the architecture, the CSV's fields.
        resume, progress, ranks, feed: continue from ``out``, progress bar, this rank, (plan, fetch)."""

    def __init__(self, out: Path, kind: str, model: torch.nn.Module, train: TrainConfig, n: int,
                 extra: dict[str, Any], fields: list[str], resume: bool, progress: bool, ranks: Ranks,
                 feed: tuple[Any, Any]):
        self.out, self.kind, self.model, self.train_config, self.extra = out, kind, model, train, extra
        self.ranks, self.device = ranks, ranks.device
        self.scaler = grad_scaler(self.device, train.precision)
        fused = self.device.type in ("cpu", "cuda")  # the fused kernel where torch has it (one pass)
        self.opt = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                    fused=fused)
        self.batches = Batches(n, min(train.batch_size, n), train.seed)  # the same on every rank
        # feed = (plan, fetch) of the task (see vqvae.data.loader): what this rank's step gets of each batch
        self.feed = Feed(self.batches, *feed, num_workers=train.num_workers,
                         pin_memory=self.device.type == "cuda")
        self.step, self.elapsed, self.skipped = 0, 0.0, 0
        self.media = MediaClock()  # TensorBoard media: set by train_task where train.log_media is on
        self.signal: int | None = None  # SIGTERM seen (on this rank): save and stop after this step
        self.stopping = False  # ... on any rank
        if resume:
            self._restore()
        self.fields = ["step", "seconds", "lr", *fields, "skipped"]
        self.progress = progress and ranks.main
        if not ranks.main:  # only rank 0 writes
            self.writer = self.csv_file = self.csv = None
            self.log = Logger(None, lambda: self.step, lambda: self.batches.new_epoch)
            return
        from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import
        self.writer = SummaryWriter(str(out / "tb"), purge_step=self.step if resume else None)
        self.log = Logger(self.writer, lambda: self.step, lambda: self.batches.new_epoch)
        csv_path = out / "metrics.csv"
        new_csv = not csv_path.exists()
        # a resumed run appends under the columns its metrics.csv already has
        header = None if new_csv else next(csv.reader(csv_path.open()), None)
        self.csv_file = csv_path.open("a", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=header or self.fields, extrasaction="ignore")
        if new_csv:
            self.csv.writeheader()

    def _restore(self) -> None:
        out = self.out
        saved_step = checkpoint.read_config(out, kind=self.kind).get("step")
        try:
            self.model.load_state_dict(checkpoint.load_model_state(out)[0])
            rng, meta = checkpoint.load_trainer_state(out, self.opt)
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            if meta.get("grad_scaler"):
                self.scaler.load_state_dict(meta["grad_scaler"])
            self.batches.restore(rng)
            self.step, self.elapsed = int(meta["step"]), float(meta["seconds"])
            self.skipped = int(meta.get("skipped", 0))
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as exc:
            if isinstance(exc, VQVAEError):
                raise
            why = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
            raise VQVAEError(f"cannot resume from {out}: its checkpoint does not match its recipe "
                             f"({why})") from None
        if saved_step is not None and saved_step != self.step:
            raise VQVAEError(f"cannot resume from {out}: model.safetensors is from step {saved_step} but the "
                             f"trainer state from step {self.step} (a save was interrupted)")
        if self.ranks.main:
            truncate_metrics(out / "metrics.csv", self.step)

    def save(self) -> None:
        """Write the checkpoint of this step, whole (see :mod:`vqvae.checkpoint`); never one with a non-finite
        weight or buffer (then the last checkpoint stays and the run stops with one line)."""
        model_state = self.model.state_dict()  # the same on every rank: every rank refuses together
        bad = [k for k, v in model_state.items()
               if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise VQVAEError(f"step {self.step}: {bad[0]} is not finite: not saved, the last checkpoint in "
                             f"{self.out} is kept (lower train.lr, check the data)")
        if not self.ranks.main:
            return
        config = self.model.checkpoint_config({**self.extra, "step": self.step})
        state = {"torch": torch.get_rng_state(), **self.batches.state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {"step": self.step, "seconds": self.elapsed, "grad_scaler": self.scaler.state_dict(),
                "skipped": self.skipped}
        checkpoint.save_training(self.out, config, model_state, self.opt, state, meta)

    def done(self) -> bool:
        train = self.train_config
        return bool((train.steps and self.step >= train.steps)
                    or (train.max_seconds and self.elapsed >= train.max_seconds))

    def fit(self, step_fn, window_extra=lambda: {}) -> None:
        """Optimise until the budget ends; each CSV row gets the means of the step's fields over its window
        plus ``window_extra()`` and the count of skipped steps (sums stay on the device until then).

        A step whose loss or gradient is not finite touches nothing: the model's buffers (the EMA codebook and
        its statistics) are put back and the optimiser does not step; ``train.on_nonfinite`` says whether the
        run goes on (``skip``, counted in ``skipped``; 50 such steps in a row stop it) or stops (``stop``).
        SIGTERM (how clusters preempt) saves and stops after the current step, as Ctrl-C does.
        Args:
            step_fn: ``step_fn(batch)`` (this rank's part of a global batch) returns (loss, {field: scalar}).
            window_extra: fields computed once per CSV row."""
        train, model = self.train_config, self.model
        model.train()
        start = time.perf_counter() - self.elapsed
        self._sums, self._since_log, last_save, in_a_row = {}, 0, time.perf_counter(), 0
        bar = tqdm(total=train.steps or None, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=f"train {self.kind}")
        on_term = _catch_sigterm(self)
        # what a forward pass may change, put back when a step is not finite: buffers (the EMA codebook, its
        # statistics, ...) and a gradient-learned codebook (dead-code restarts); found once, not every step
        undo = [*model.buffers(), *(m.codebook for m in model.modules() if isinstance(m, Quantizer)
                                    and isinstance(m.codebook, torch.nn.Parameter))]
        try:
            while not self.done():
                lr = lr_at(train, self.step, self.elapsed)
                if self._step(step_fn, lr, undo):
                    in_a_row = 0
                    self.step += 1
                    bar.update(1)
                else:
                    self.skipped, in_a_row = self.skipped + 1, in_a_row + 1
                    if train.on_nonfinite == "stop" or in_a_row >= MAX_NONFINITE_IN_A_ROW:
                        self._stop_nonfinite(in_a_row)
                if self.stopping:  # SIGTERM or SIGUSR1 on any rank, seen by all after this step
                    signum = int(self.signal or signal.SIGTERM)  # another rank's signal: SIGTERM
                    raise Preempted(f"stopped by signal {signum} at step {self.step}")
                # all ranks go by rank 0's clock: the schedule and the end of a wall-clock budget must agree
                self.elapsed = self.ranks.clock(time.perf_counter() - start)
                if self.ranks.main and self._since_log and (self.step % train.log_every == 0 or self.done()):
                    self._log_row(lr, window_extra, bar)
                if self.media.due():
                    self.media.log(self.step)
                if time.perf_counter() - last_save >= train.checkpoint_every:
                    self.save()
                    last_save = time.perf_counter()
        except KeyboardInterrupt:
            self.save()  # Ctrl-C and SIGTERM keep the work done so far; `--resume` continues from here
            raise
        finally:
            on_term()
            self.feed.close()
            bar.close()
            if self.csv_file is not None:
                self.csv_file.close()
        self.save()
        self.media.log(self.step)  # what the trained model makes, whenever the last media were logged

    def _step(self, step_fn, lr: float, undo: list[torch.Tensor]) -> bool:
        """One step on the next batch; False (nothing changed: ``undo`` put back) when it was not finite."""
        opt, model = self.opt, self.model
        for group in opt.param_groups:
            group["lr"] = lr
        before = [b.detach().clone() for b in undo]
        with autocast(self.device, self.train_config.precision):
            loss, metrics = step_fn(self.feed.next())
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        finite = torch.isfinite(loss.detach()).float()
        if not self.scaler.is_enabled():  # with fp16 scaling, an overflowing gradient is the scaler's to skip
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads:
                finite = finite * torch.isfinite(torch.nn.utils.get_total_norm(grads, float("inf"))).float()
        # one sum over the ranks: every rank skips the same steps and stops at the same step on SIGTERM
        flags = self.ranks.sum(torch.stack([finite,
                                            finite.new_tensor(float(self.signal is not None))])).tolist()
        self.stopping = flags[1] > 0
        if flags[0] < self.ranks.world:
            with torch.no_grad():
                for b, old in zip(undo, before):
                    b.copy_(old)
            opt.zero_grad(set_to_none=True)
            return False
        self.scaler.step(opt)
        self.scaler.update()
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._since_log += 1
        return True

    def _log_row(self, lr: float, window_extra, bar) -> None:
        row = {k: float(v) / self._since_log for k, v in self._sums.items()}
        row.update(step=self.step, seconds=round(self.elapsed, 3), lr=lr, skipped=self.skipped,
                   **window_extra())
        self.csv.writerow(row)
        self.csv_file.flush()
        for k, v in row.items():
            if k != "step":
                self.writer.add_scalar(f"train/{k}", v, self.step)
        bar.set_postfix({k: f"{row[k]:.4g}" for k in self.fields[3:]}, refresh=False)
        self._sums, self._since_log = {}, 0

    def _stop_nonfinite(self, in_a_row: int) -> None:
        why = ("train.on_nonfinite is stop" if self.train_config.on_nonfinite == "stop"
               else f"{in_a_row} such steps in a row: the run has diverged")
        self.save()  # the state of the last good step (the bad one changed nothing)
        raise VQVAEError(f"step {self.step + 1}: the loss or a gradient is not finite ({why}); "
                         f"the checkpoint of step {self.step} is saved in {self.out} "
                         f"(check the data, lower train.lr)")

    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Record the final evaluation: eval.json and TensorBoard (rank 0).
        Args:
            metrics: the task's evaluation, to which ``step`` and ``train_seconds`` are added.
        Returns:
            ``metrics``."""
        metrics.update(step=self.step, train_seconds=round(self.elapsed, 1))
        if self.train_config.log_media:
            metrics["media_seconds"] = round(self.media.seconds, 2)
        if not self.ranks.main:
            return metrics
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"test/{k}", v, self.step)
        self.writer.close()
        atomic_write_json(self.out / "eval.json", metrics)
        return metrics


def _recover(out_dir: str | Path, wait: float = 120.0) -> None:
    """A run directory whose last save was cut short gets its previous checkpoint back (by rank 0, see
    :func:`vqvae.checkpoint.recover`); other ranks wait until it holds a whole checkpoint again."""
    if not Path(out_dir).is_dir():
        return
    if is_main_process():
        note = checkpoint.recover(out_dir)
        if note:
            print(f"vqvae: {note}", file=sys.stderr)
        return
    deadline = time.monotonic() + wait
    while not checkpoint.whole(out_dir) and time.monotonic() < deadline:
        time.sleep(0.2)  # still torn after the wait: read_config refuses it in one line


def _build(task: Task) -> torch.nn.Module:
    """``task.build()`` on the CPU, after checking on the meta device (no memory used, no random numbers
    drawn) that training it fits in ``task.device``'s memory: one line, before the directory is touched."""
    rng = torch.get_rng_state()
    try:
        with torch.device("meta"):
            probe = task.build()
    except Exception:  # noqa: BLE001 -- a module that cannot be built on the meta device: no estimate, build it
        probe = None
    torch.set_rng_state(rng)
    if probe is not None:
        params = sum(p.numel() * p.element_size() for p in probe.parameters())
        # weights + grads + Adam's 2 moments, and the buffers
        need = 4 * params + sum(b.numel() * b.element_size() for b in probe.buffers())
        free = available_memory(task.device)
        short = torch.tensor(float(free is not None and need > free))
        if float(task.ranks.sum(short)) > 0:  # together: no rank waits in a barrier for one that raised
            free = free or 0
            raise VQVAEError(f"training this model needs about {need / 2**30:.3g} GiB (weights, gradients, "
                             f"Adam's moments) but {task.device} has {free / 2**30:.3g} GiB free: make it "
                             f"smaller (e.g. num_embeddings, channels)")
    try:
        return task.build()
    except (RuntimeError, MemoryError) as exc:
        if (not isinstance(exc, MemoryError) and "memory" not in str(exc).lower()
                and "alloc" not in str(exc).lower()):
            raise  # not an allocation failure: a bug, with its traceback
        raise VQVAEError(f"cannot allocate the model: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                         f"(make it smaller, e.g. num_embeddings, channels)") from None


PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # save the step's checkpoint and stop, exit 143
MAX_NONFINITE_IN_A_ROW = 50  # skipped steps in a row after which a run with on_nonfinite: skip stops


def _catch_sigterm(run: Run):
    """Until the returned function is called, SIGTERM or SIGUSR1 asks ``run`` to save and stop after the
    current step (from the main thread only, where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def ask(signum, frame):  # noqa: ARG001
        run.signal = signum
    # SIGTERM: how schedulers preempt; SIGUSR1: what SLURM's --signal sends ahead of the time limit
    previous = {sig: signal.signal(sig, ask) for sig in PREEMPT_SIGNALS}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def train_task(task: Task, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
               progress: bool = True, device: str | torch.device | None = "auto") -> dict[str, Any]:
    """Run one training task into ``out_dir``: check the data before the directory is touched, optimise
    until the budget ends (resuming where the directory's checkpoint stopped), evaluate on the test split.

    Args:
        task: what the run trains (:class:`~vqvae.train.task.Task`).
        out_dir: its run directory.
        resume: continue from the checkpoint in ``out_dir``.
        overwrite: ``out_dir`` may be a non-empty directory (the files of a run in it are replaced).
        progress: show a progress bar (rank 0).
        device: where to train (``auto``: see :func:`vqvae.devices.resolve_device`).

    Returns:
        The metrics written to ``eval.json``.
    """
    out, train = Path(out_dir), task.recipe.train
    ranks = join(device, train.batch_size)
    task.device, task.ranks = ranks.device, ranks
    with hold_run_dir(out, ranks):  # before anything is written, until the job ends
        if resume:
            _recover(out)
            checkpoint.read_config(out, kind=task.kind)
        torch.manual_seed(train.seed)
        if train.threads:
            torch.set_num_threads(train.threads)
        task.load(out, resume, overwrite)  # data and checks first: a bad input leaves the directory as it was
        model = _build(task)  # ... and a model that fits in memory, and on the disk
        check_free_space(out, model, ranks)
        if not resume and ranks.main:
            prepare_out_dir(out, overwrite)
        ranks.barrier()
        model = model.to(task.device)
        task.net = ranks.wrap(model)  # what a training step calls: DDP over the model under torchrun
        run = Run(out, task.kind, model, train, task.num_examples, task.extra(), task.fields, resume,
                  progress, ranks, feed=(task.plan, task.fetch))
        task.log = run.log
        run.media = MediaClock(task.media if train.log_media and ranks.main else None, model,
                               train.media_every)
        if getattr(task.recipe.architecture, "kmeans_init", False) and run.step == 0:
            with torch.no_grad():  # each rank's shard; the layer broadcasts rank 0's centroids
                vectors = [task.encoder_outputs(run.feed.next()) for _ in range(train.kmeans_batches)]
                model.quantizer.initialize_from(torch.cat(vectors))
        run.fit(task.step, task.window_extra)
        model.eval()
        limit = train.eval_batches * train.batch_size if train.eval_batches else None
        metrics = task.evaluate(out, limit=limit)
        return run.finish(metrics)
