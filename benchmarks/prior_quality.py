"""The image priors judged as `make demo` judges them, for the README's table: on one trained VQ-VAE and one
classifier, train a prior with `vqvae train-prior` (the demo's budget), evaluate it (bits per latent, ELBO in
bits/dim), then draw 1,000 class-conditional samples (100 per class) at each sampling setting and score them
with `vqvae score` (recognition, Fréchet distance, precision, recall), beside 1,000 real test images and their
reconstructions. Each run is a sequence of the CLI's own commands, printed as they run.

Usage:
  python benchmarks/prior_quality.py VQVAE_DIR CLASSIFIER_DIR --out DIR [--seeds 0 1]
      [--settings "t=1" "g=2" "g=3,k=100"] [--overrides key=value ...]
  (--overrides: the train-prior recipe's, e.g. prior.kind=transformer)

A setting is comma-separated controls: t (temperature), k (top-k), p (top-p), g (guidance scale).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

FLAGS = {"t": "--temperature", "k": "--top-k", "p": "--top-p", "g": "--guidance"}


def run(argv: list[str]) -> str:
    """One vqvae command; its stdout. A failure stops the script with the command's error."""
    print("$ vqvae " + " ".join(shlex.quote(a) for a in argv), flush=True)
    done = subprocess.run([sys.executable, "-m", "vqvae", *argv], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def setting_flags(setting: str) -> list[str]:
    flags = []
    for part in filter(None, setting.split(",")):
        key, _, value = part.partition("=")
        if key not in FLAGS or not value:
            sys.exit(f"bad setting {setting!r}: use t=, k=, p=, g= separated by commas")
        flags += [FLAGS[key], value]
    return flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vqvae", help="the trained VQ-VAE (a logistic one, for bits/dim)")
    ap.add_argument("classifier", help="the judge (`vqvae train-classifier`)")
    ap.add_argument("--out", required=True, help="folder for the priors, samples and results.json")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="one prior per seed (train.seed)")
    ap.add_argument("--settings", nargs="+", default=["t=1"], help="sampling settings to score")
    ap.add_argument("--overrides", nargs="*", default=[], help="train-prior recipe overrides (key=value)")
    ap.add_argument("--reuse", action="store_true",
                    help="score more settings of priors trained here before, without training them again")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = out / "results.json"
    results = json.loads(done.read_text()) if args.reuse and done.exists() else []
    for seed in args.seeds:
        prior = out / f"prior_seed{seed}"
        start = time.perf_counter()
        if not (args.reuse and (prior / "eval.json").exists()):
            run(["train-prior", args.vqvae, "--out", str(prior), "--overwrite", "--quiet",
                 f"train.seed={seed}", *args.overrides])
        trained = time.perf_counter() - start
        likelihood = json.loads(run(["evaluate-prior", str(prior), "--json"]))
        steps = json.loads((prior / "eval.json").read_text()).get("step")
        for setting in args.settings:
            npz = out / f"samples_seed{seed}_{setting.replace(',', '_').replace('=', '')}.npz"
            start = time.perf_counter()
            run(["sample", str(prior), "--per-class", "100", "--seed", "1", "--out", str(npz), "--overwrite",
                 *setting_flags(setting)])
            sampled = time.perf_counter() - start
            score = json.loads(run(["score", str(npz), "--classifier", args.classifier, "--json"]))
            row = {"seed": seed, "setting": setting, "overrides": args.overrides, "steps": steps,
                   "train_seconds": round(trained, 1), "sample_seconds": round(sampled, 1),
                   "bits_per_latent": likelihood["prior_nll_bits_per_latent"],
                   "elbo_bits_per_dim": likelihood.get("elbo_bits_per_dim_learned_prior"),
                   **{f"{name}_{key}": score[name][key]
                      for name in ("samples", "reconstructions", "real_test")
                      for key in ("recognised", "frechet_distance", "precision", "recall")},
                   "worst_class": min(score["samples"]["recognised_per_class"].items(), key=lambda kv: kv[1])}
            row["fd_ratio"] = row["samples_frechet_distance"] / row["reconstructions_frechet_distance"]
            row["recall_ratio"] = row["samples_recall"] / row["reconstructions_recall"]
            results = [r for r in results if (r["seed"], r["setting"]) != (seed, setting)] + [row]
            print(f"seed {seed} {setting:12s}: {row['bits_per_latent']:.3f} bits/latent, ELBO "
                  f"{row['elbo_bits_per_dim']:.3f}; recognised {row['samples_recognised']:.3f} (worst "
                  f"{row['worst_class'][0]} {row['worst_class'][1]:.2f}; "
                  f"real {row['real_test_recognised']:.3f}), "
                  f"FD ratio {row['fd_ratio']:.2f}, precision {row['samples_precision']:.3f}, recall ratio "
                  f"{row['recall_ratio']:.2f}; {steps} steps, sampling {sampled:.0f} s", flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
