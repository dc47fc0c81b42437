"""What every command of the CLI shares: argument types, the options of a training command and how they become
a recipe, and printing a command's result."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vqvae.distributed import is_main_process
from vqvae.errors import VQVAEError
from vqvae.nets.controls import SamplingControls
from vqvae.recipes import RecipeSections, load_recipe
from vqvae.runs import resumable
from vqvae.train import resume_recipe

__all__ = ["add_device", "add_training_command", "positive", "print_result", "recipe_of", "run_training",
           "seed"]


def seed(text: str) -> int:
    """The argparse type of a seed: an integer in [0, 2**63).

    Args:
        text: the argument as given.
    Returns:
        The seed.
    """
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {value}")
    return value


def positive(text: str) -> int:
    """The argparse type of a count: an integer >= 1.

    Args:
        text: the argument as given.
    Returns:
        The integer.
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: where the models of a command run.

    Args:
        p: the command's parser.
    """
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else MPS, else CPU), cpu, cuda, cuda:N or mps "
                        "(default auto)")


def add_sampling_controls(p: argparse.ArgumentParser) -> None:
    """``--temperature``, ``--top-k``, ``--top-p``, ``--guidance``: how a prior's logits become draws
    (:class:`~vqvae.nets.controls.SamplingControls`).

    Args:
        p: the command's parser.
    """
    p.add_argument("--temperature", type=float, default=1.0, help="divides the logits (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="draw among the k most likely codes (default 0: all)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="draw among the most likely codes that reach this probability (default 1: all)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale, for a prior trained with class dropout (default 1: "
                        "none)")


def controls_from_args(args: argparse.Namespace) -> SamplingControls:
    """The :class:`~vqvae.nets.controls.SamplingControls` of :func:`add_sampling_controls`' options.

    Args:
        args: the parsed arguments.
    Returns:
        the controls (bad values refused in one line, naming the option).
    """
    try:
        return SamplingControls(args.temperature, args.top_k, args.top_p, args.guidance)
    except VQVAEError as exc:
        raise VQVAEError(f"--{exc}".replace("top_k", "top-k").replace("top_p", "top-p")) from None


def print_result(result: dict[str, Any], as_json: bool,
                 summary: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Print a command's result (rank 0 only under torchrun): as JSON or as its summary.

    Args:
        result: what the command returns.
        as_json: print ``result`` as one JSON object (``--json``).
        summary: makes the human-readable text of ``result``.
    Returns:
        ``result``.
    """
    if is_main_process():  # under torchrun, rank 0 speaks for the job
        print(json.dumps(result) if as_json else summary(result))
    return result


def recipe_of(args: argparse.Namespace, kind: str, extra: list[str] = (),
              source: str | None = None) -> tuple[str, str | None, RecipeSections, bool]:
    """The recipe of a training command: ``--resume DIR`` takes the recipe saved in DIR (only
    --steps/--max-seconds may change it), otherwise ``--config`` plus overrides. ``--resume auto`` (what a
    requeued job runs again) resumes ``--out`` when it holds a checkpoint to resume from, with its saved
    recipe and this command's --steps/--max-seconds; otherwise it starts the run as the command says.

    Args:
        args: the parsed command line.
        kind: the recipe kind: ``vqvae``, ``prior``, ``audio`` or ``audio_prior``.
        extra: more ``key=value`` overrides, after the user's (e.g. ``train.data`` from ``--data``).
        source: what the run builds on (e.g. ``VQ-VAE``), when the command takes its run directory.
    Returns:
        ``(out, given, recipe, resume)``: the output directory, the run it builds on or None, the recipe,
        and whether the run resumes.
    Raises:
        VQVAEError: ``--resume`` with other options, or no source run directory where one is needed.
    """
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.max_seconds is not None:
        overrides.append(f"train.max_seconds={args.max_seconds}")
    given = getattr(args, "vqvae_dir", None)
    if args.resume == "auto":
        out = args.out or args.default_out
        if resumable(out):
            if is_main_process():
                print(f"vqvae: --resume auto: resuming {out} with its saved recipe", file=sys.stderr)
            return out, None, resume_recipe(out, overrides[len(args.overrides):], kind=kind), True
    elif args.resume:
        if args.config or args.overrides or extra or given or args.out:
            raise VQVAEError("--resume continues a run in its own directory with its saved recipe: "
                             "only --steps/--max-seconds may change")
        return args.resume, None, resume_recipe(args.resume, overrides, kind=kind), True
    if source and not given:
        raise VQVAEError(f"{args.command}"
                         f"{' ' + args.audio_command if getattr(args, 'audio_command', None) else ''} "
                         f"needs the {source} run directory (or --resume DIR)")
    recipe = load_recipe(args.config, [*overrides, *extra], kind=kind)
    return args.out or args.default_out, given, recipe, False


def add_training_command(parent, name: str, fn, help: str, recipe: str, out: str, example: str,
                         source: str | None = None) -> argparse.ArgumentParser:
    """A training command: ``[SOURCE_DIR] [--config] [--out] [--steps] [--max-seconds] [--resume]
    [--overwrite] [--quiet] [--json] [key=value ...]``.

    Args:
        parent: the subparsers to add it to.
        name: the command's name.
        fn: its handler, ``fn(args)``.
        help: its one-line help.
        recipe: the name of its default recipe, for ``--config``'s help.
        out: its default run directory.
        example: an example override, for the help.
        source: the help of the positional run directory it builds on; None: it takes none.
    Returns:
        The command's parser.
    """
    s = parent.add_parser(name, help=help)
    if source:  # the run this one builds on, before the overrides so that it is not taken for one
        s.add_argument("vqvae_dir", nargs="?", help=source)
    s.add_argument("--config", help=f"recipe: a YAML file or a built-in name (default: {recipe})")
    s.add_argument("--out", help=f"run directory (default: {out})")
    s.add_argument("--steps", type=int, help="stop after this many optimisation steps (a total)")
    s.add_argument("--max-seconds", type=float, help="wall-clock budget for training, in seconds (a total)")
    s.add_argument("--resume", metavar="DIR|auto",
                   help="continue the run in DIR where it stopped; auto: resume --out when it holds a "
                        "checkpoint, else start it (for jobs a scheduler requeues)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run directory's contents")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    add_device(s)
    s.add_argument("overrides", nargs="*", metavar="key=value", help=f"recipe overrides, e.g. {example}")
    s.set_defaults(fn=fn, default_out=out)
    return s


def run_training(args: argparse.Namespace, kind: str, train: Callable[..., dict[str, Any]],
                 summary: Callable[[dict[str, Any]], str], files: str,
                 source: str | None = None) -> dict[str, Any]:
    """A training command: the recipe (:func:`recipe_of`), ``train(recipe, [source run,] out, ...)``, its
    metrics printed, then the run directory and the ``files`` it holds.

    Args:
        args: the parsed command line.
        kind: the recipe kind.
        train: the training function (e.g. :func:`vqvae.train.train_image_and_evaluate`).
        summary: makes the human-readable text of the metrics.
        files: what the run directory holds beside the checkpoint, metrics.csv and eval.json.
        source: what the run builds on (as :func:`recipe_of`); None: nothing.
    Returns:
        The metrics.
    """
    extra = [f"train.data={args.data}"] if getattr(args, "data", None) else []
    out, given, recipe, resume = recipe_of(args, kind, extra, source)
    runs_on = () if source is None else (given,)
    # --resume auto with nothing to resume from starts over: the files of a run cut short before its first
    # checkpoint are replaced (as --overwrite does, nothing else in the directory is touched)
    overwrite = args.overwrite or (args.resume == "auto" and not resume)
    m = train(recipe, *runs_on, out, resume=resume, overwrite=overwrite, progress=not args.quiet,
              device=args.device)
    print_result(m, args.json, summary)
    if is_main_process():
        print(f"run directory: {Path(out).resolve()} "
              f"(config.json, model.safetensors, metrics.csv, eval.json, {files})")
    return m
