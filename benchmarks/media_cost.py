"""What TensorBoard media cost a run (`train.log_media`): each default recipe trained for the same wall-clock
budget with media and without, one run after the other on the same machine (with --rounds 2: without, with,
with, without, so that a drift of the machine's speed falls on both alike); the training step rate of each
(steps over training seconds, as eval.json records them, averaged over the rounds) and their ratio, and the
seconds the media took (eval.json's media_seconds: inside the training seconds, but for the last media, made
after the last step). The priors train on the codes of the first VQ-VAE trained here without media. A budget
of seconds makes two runs differ (the learning rate follows the clock); one of --steps makes them do the same
work, to the bit, so that only the media and the machine differ. Run it alone: two cores shared with anything
else move the rates more than the media do.

Usage:
  python benchmarks/media_cost.py --out DIR [--seconds 150 | --steps N] [--rounds 1] [--on-first]
      [--fsdd data/fsdd]
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


def train(recipe: str, out: Path, seconds: float, media: bool, fsdd: str, steps: int = 0) -> dict:
    """One training run of ``recipe`` for ``seconds`` (or ``steps``, when not 0); its eval.json."""
    argv = [*COMMAND[recipe]]
    if recipe in PRIOR_OF:
        argv.append(str(out.parent / f"{PRIOR_OF[recipe]}_off"))
    budget = ["--steps", str(steps), "train.max_seconds=0"] if steps else ["--max-seconds", str(seconds)]
    argv += ["--config", recipe, "--out", str(out), *budget, "--overwrite", "--quiet",
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
    ap.add_argument("--rounds", type=int, default=1, help="pairs of runs per recipe, in turn")
    ap.add_argument("--on-first", action="store_true", help="start each recipe with the run with media")
    ap.add_argument("--steps", type=int, default=0,
                    help="a budget of steps instead of seconds: every run does the same work, to the bit")
    ap.add_argument("--recipes", nargs="+", default=list(COMMAND), choices=list(COMMAND))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    print("recipe | steps/s without media | with media | ratio | media seconds (share of the training time)")
    for recipe in args.recipes:
        runs = {False: [], True: []}
        for r in range(args.rounds):
            for media in ((False, True) if (r + args.on_first) % 2 == 0 else (True, False)):
                suffix = ("_on" if media else "_off") + (f"{r}" if r else "")
                runs[media].append(train(recipe, out / f"{recipe}{suffix}", args.seconds, media, args.fsdd,
                                         args.steps))
        rate_off, rate_on = (sum(e["step"] / e["train_seconds"] for e in runs[m]) / args.rounds
                             for m in (False, True))
        media_s = sum(e["media_seconds"] for e in runs[True]) / args.rounds
        train_s = sum(e["train_seconds"] for e in runs[True]) / args.rounds
        rows[recipe] = {"steps_per_second_without": rate_off, "steps_per_second_with": rate_on,
                        "ratio": rate_on / rate_off, "media_seconds": media_s, "train_seconds": train_s,
                        "rates_without": [e["step"] / e["train_seconds"] for e in runs[False]],
                        "rates_with": [e["step"] / e["train_seconds"] for e in runs[True]]}
        print(f"{recipe} | {rate_off:.3f} | {rate_on:.3f} | {rate_on / rate_off:.3f} | "
              f"{media_s:.2f} s ({media_s / train_s:.2%})", flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
