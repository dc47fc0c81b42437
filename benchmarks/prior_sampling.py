"""Cached vs naive sampling from the Gated PixelCNN prior, measured side by side in one run.

Naive sampling reruns the whole network once per latent position; the cached sampler computes the
vertical stack one row at a time and the horizontal stack one position at a time. Both draw the same
samples for the same seed (tests/test_pixelcnn.py). Target: cached >= 10x faster on a 32x32 grid with
the default prior size.

Usage: python benchmarks/prior_sampling.py [--size 32] [--batch 1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from vqvae.priors import GatedPixelCNN, PixelCNNConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32, help="latent grid side (default 32)")
    ap.add_argument("--batch", type=int, default=1, help="samples drawn at once (default 1)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of both samplers (default 1)")
    args = ap.parse_args()
    torch.manual_seed(0)
    config = PixelCNNConfig()
    model = GatedPixelCNN(config).eval()
    labels = torch.zeros(args.batch, dtype=torch.long)
    shape = (args.size, args.size)
    times: dict[str, list[float]] = {"naive": [], "cached": []}
    same = True
    for r in range(args.rounds):
        samples = {}
        for name, fn in (("cached", model.sample), ("naive", model.sample_naive)):
            t0 = time.perf_counter()
            samples[name] = fn(shape, labels, 1.0, torch.Generator().manual_seed(r))
            times[name].append(time.perf_counter() - t0)
        same &= torch.equal(samples["cached"], samples["naive"])
    naive, cached = min(times["naive"]), min(times["cached"])
    print(f"prior: channels={config.channels} layers={config.num_layers} kernel={config.kernel_size} "
          f"K={config.num_embeddings}; grid {args.size}x{args.size}, batch {args.batch}, "
          f"threads={torch.get_num_threads()}")
    print(f"  naive  {naive:8.2f} s")
    print(f"  cached {cached:8.2f} s")
    print(f"speed-up cached vs naive = {naive / cached:.1f}x  (target >= 10); identical samples: {same}")


if __name__ == "__main__":
    main()
