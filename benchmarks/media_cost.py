"""What TensorBoard media cost a run (`train.log_media`): each default recipe trained twice for the same
wall-clock budget, with media and without, one run after the other on the same machine; the training step
rate of each (steps over training seconds, as eval.json records them) and their ratio, and the seconds the
media took (eval.json's media_seconds, inside the training seconds). The priors train on the codes of the
VQ-VAE trained here without media. Run it alone: two cores shared with anything else move the rates more
than the media do.

Usage:
  python benchmarks/media_cost.py --out DIR [--seconds 150] [--fsdd data/fsdd]
      [--recipes fashion_mnist fashion_mnist_prior fsdd fsdd_prior]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

PRIOR_OF = {"fashion_mnist_prior": "fashion_mnist", "fsdd_prior": "fsdd"}
COMMAND = {"fashion_mnist": ["train"], "fashion_mnist_prior": ["train-prior"], "fsdd": ["audio", "train"],
           "fsdd_prior": ["audio", "train-prior"]}


def train(recipe: str, out: Path, seconds: float, media: bool, fsdd: str) -> dict:
    """One training run of ``recipe`` for ``seconds``; its eval.json."""
    argv = [*COMMAND[recipe]]
    if recipe in PRIOR_OF:
        argv.append(str(out.parent / f"{PRIOR_OF[recipe]}_off"))
    argv += ["--config", recipe, "--out", str(out), "--max-seconds", str(seconds), "--overwrite", "--quiet",
             f"train.log_media={'true' if media else 'false'}", "train.eval_batches=1"]
    if recipe == "fsdd":
        argv += ["--data", fsdd]
    print("$ vqvae " + " ".join(shlex.quote(a) for a in argv), flush=True)
    done = subprocess.run([sys.executable, "-m", "vqvae", *argv], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {done.stderr.strip()[-2000:]}")
    return json.loads((out / "eval.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the runs and results.json")
    ap.add_argument("--seconds", type=float, default=150.0, help="training budget of each run")
    ap.add_argument("--fsdd", default="data/fsdd", help="the FSDD corpus (`vqvae data fsdd`)")
    ap.add_argument("--recipes", nargs="+", default=list(COMMAND), choices=list(COMMAND))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    print("recipe | steps/s without media | with media | ratio | media seconds (share of the training time)")
    for recipe in args.recipes:
        off = train(recipe, out / f"{recipe}_off", args.seconds, False, args.fsdd)
        on = train(recipe, out / f"{recipe}_on", args.seconds, True, args.fsdd)
        rate_off, rate_on = off["step"] / off["train_seconds"], on["step"] / on["train_seconds"]
        rows[recipe] = {"steps_per_second_without": rate_off, "steps_per_second_with": rate_on,
                        "ratio": rate_on / rate_off, "media_seconds": on["media_seconds"],
                        "train_seconds": on["train_seconds"]}
        print(f"{recipe} | {rate_off:.3f} | {rate_on:.3f} | {rate_on / rate_off:.3f} | "
              f"{on['media_seconds']:.2f} s ({on['media_seconds'] / on['train_seconds']:.2%})", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
