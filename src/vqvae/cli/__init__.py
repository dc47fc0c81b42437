"""``vqvae`` command line: a thin shell over importable functions (image commands: :mod:`vqvae.cli.image`;
``vqvae audio ...`` and ``vqvae data speech``: :mod:`vqvae.cli.audio`).

Problems the user can fix print one line (``vqvae: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from vqvae.cli.audio import add_audio_commands
from vqvae.cli.image import add_image_commands
from vqvae.distributed import leave
from vqvae.errors import VQVAEError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqvae", description="VQ-VAE: train, evaluate, encode, decode.")
    sub = p.add_subparsers(dest="command", required=True)
    add_image_commands(sub)
    add_audio_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
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
    except (VQVAEError, OSError) as exc:  # OSError: unwritable output, full disk, ...: the system's own reason
        print(f"vqvae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vqvae: interrupted (checkpoints written so far are intact)", file=sys.stderr)
        return 130
    finally:
        leave(ok)  # under torchrun: every rank done, then the process group closed
    return 0
