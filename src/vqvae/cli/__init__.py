"""``vqvae`` command line: a thin shell over importable functions (image commands: :mod:`vqvae.cli.image`;
``vqvae audio ...`` and ``vqvae data speech``: :mod:`vqvae.cli.audio`).

Problems the user can fix print one line (``vqvae: error: ...``) and exit with status 2; Ctrl-C exits 130
and SIGTERM 143 (after saving the checkpoint); anything else is a bug: its traceback, a line that says so,
status 1.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback

from vqvae.cli.audio import add_audio_commands
from vqvae.cli.image import add_image_commands
from vqvae.distributed import leave
from vqvae.errors import Preempted, VQVAEError
from vqvae.runs import holder_text, run_in_progress

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (not the usage block):
    ``vqvae train: error: ... (see --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``vqvae`` argument parser, with every command."""
    p = _Parser(prog="vqvae", description="VQ-VAE: train, evaluate, encode, decode.")
    sub = p.add_subparsers(dest="command", required=True)
    add_image_commands(sub)
    add_audio_commands(sub)
    r = sub.add_parser("report", help="one self-contained HTML page of one run or several side by side")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (any kind)")
    r.add_argument("--out", required=True, help="the .html file to write")
    r.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    r.add_argument("--media", action="append", default=[], metavar="DIR",
                   help="also show this folder's WAV files (with the judges' verdicts.json) and images, "
                        "e.g. the --wav-dir of `vqvae audio conversion` (repeatable)")
    r.set_defaults(fn=_report)
    return p


def _report(args: argparse.Namespace) -> None:
    from vqvae.report import build_report  # imported late: matplotlib is slow to import

    for run_dir in args.run_dirs:  # a report of a run in progress shows its files as they are now
        holder = run_in_progress(run_dir)
        if holder:
            print(f"vqvae: note: {run_dir} is still training ({holder_text(holder)}): the report shows it as "
                  "it is now", file=sys.stderr)
    print(f"report: "
          f"{build_report(args.run_dirs, args.out, overwrite=args.overwrite, media=args.media).resolve()}")


def main(argv: list[str] | None = None) -> int:
    """Run the ``vqvae`` command line.

    Args:
        argv: the arguments, without the program's name; None: ``sys.argv[1:]``.
    Returns:
        The exit status: 0, 2 (a problem the user can fix), 130 (Ctrl-C), 143 (SIGTERM) or 1 (a bug).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere, also after options that follow a positional argument
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    ok = False
    try:
        args.fn(args)
        ok = True
    except (VQVAEError, OSError) as exc:
        # OSError: unwritable output, full disk, ...: the system's own reason
        print(f"vqvae: error: {_os_reason(exc)}", file=sys.stderr)
        return 2
    except Preempted as exc:  # SIGTERM: the checkpoint of the last step is saved
        print(f"vqvae: {exc}: the checkpoint is saved; --resume continues", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("vqvae: interrupted (checkpoints written so far are intact)", file=sys.stderr)
        return 130
    except Exception:  # not the user's doing: the traceback is for the bug report
        traceback.print_exc()
        print("vqvae: internal error (a bug in vqvae, not in your input): "
              "please report it with the traceback above", file=sys.stderr)
        return 1
    finally:
        leave(ok)  # under torchrun: every rank done, then the process group closed
    return 0


def _os_reason(exc: BaseException) -> str:
    """One line for an error: a full disk met outside the checkpoint's own writes (a log appended to, an
    event file) says so, and what is kept."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else " writing the run's logs (metrics.csv, tb/)"
        return (f"no space left on the device{where}: a training run keeps its last complete checkpoint "
                "(--resume continues from it once there is space)")
    return str(exc)
