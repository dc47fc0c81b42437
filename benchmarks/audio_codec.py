"""Bits per second against quality: an audio VQ-VAE with a residual stack (``audio.quantizer: rvq``), decoded
at every depth, its reconstructions and conversions judged by the speech judges (speaker, digit, pitch, STOI,
PESQ). A stack trained with quantizer dropout (``audio.quantize_dropout: true``) is one codec at every bit
rate; without it the lower depths are what the first levels alone carry.

Usage: python benchmarks/audio_codec.py RUN [--pairs 150] [--seconds 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from vqvae.evaluate.audio import evaluate_conversion
from vqvae.quantize import ResidualVQ
from vqvae.runs import load_run, run_split

COLUMNS = [("reconstructions_recognised_as_source", "speaker"),
           ("reconstructions_recognised_as_class", "digit"),
           ("reconstructions_voiced", "voiced"), ("reconstructions_pitch_within_10pct", "pitch 10%"),
           ("reconstructions_stoi", "STOI"), ("reconstructions_pesq_nb", "PESQ-NB"),
           ("converted_recognised_as_target", "conv. target"),
           ("converted_recognised_as_class", "conv. digit")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="an audio VQ-VAE run whose quantizer is a residual stack")
    ap.add_argument("--data", default=None, help="the corpus (default: the run's)")
    ap.add_argument("--pairs", type=int, default=150)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    model, config = load_run(args.run, "audio", "cpu")
    if not isinstance(model.quantizer, ResidualVQ):
        raise SystemExit(f"{args.run} has no residual stack (audio.quantizer: {model.config.quantizer})")
    train, test = (run_split(model, config, args.data, s) for s in ("train", "test"))
    full, c = model.quantizer, model.config
    rate = c.sample_rate / c.hop
    print(f"{args.run}: {full.num_quantizers} levels of K={full.num_embeddings}, {rate:g} codes per second, "
          f"{args.pairs} test takes of {args.seconds:g} s")
    print("| levels | bits/s | " + " | ".join(name for _, name in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for levels in range(1, full.num_quantizers + 1):
        model.quantizer = full.truncated(levels)
        model.config = dataclasses.replace(c, num_quantizers=levels)
        m = evaluate_conversion(model, train, test, pairs=args.pairs, seconds=args.seconds, seed=0)
        cells = [("-" if m.get(key) is None else f"{m[key]:.3f}") for key, _ in COLUMNS]
        bits = rate * levels * math.log2(full.num_embeddings)
        print(f"| {levels} | {bits:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
