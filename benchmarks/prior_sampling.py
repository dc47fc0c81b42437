"""Cached vs naive sampling from the image priors, measured side by side in one run.

Naive sampling reruns the whole network once per latent position. The Gated PixelCNN's cached sampler
computes the vertical stack one row at a time and the horizontal stack one position at a time; the
transformer's keeps every layer's keys and values and runs one token per step. Both draw the samples of
their naive sampler for the same seed, which this script checks too. Targets (issue 25): the Gated PixelCNN
>= 50x on a 32x32 grid; the transformer >= 20x on 7x7 and 32x32 grids.

The Gated PixelCNN has the config's default size (12 layers of 64 channels, as the earlier measurements of
this benchmark), the transformer that of the fashion_mnist_transformer recipe (4 blocks of 128 channels);
--channels and --layers replace both.

Usage: python benchmarks/prior_sampling.py [--kind pixelcnn transformer] [--size 32 7 7] [--batch 1 100 500]
       [--channels C] [--layers L] [--guidance S] [--rounds 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from vqvae.priors import ImagePriorConfig, SamplingControls, build_prior


def measure(kind: str, size: int, batch: int, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    sizes = {"pixelcnn": (64, 12), "transformer": (128, 4)}[kind]
    channels, layers = args.channels or sizes[0], args.layers or sizes[1]
    config = ImagePriorConfig(kind=kind, channels=channels, num_layers=layers, grid_size=size,
                              class_dropout=0.1 if args.guidance != 1 else 0.0)
    model = build_prior(config).eval()
    labels = torch.zeros(batch, dtype=torch.long)
    controls = SamplingControls(guidance=args.guidance)
    times: dict[str, list[float]] = {"naive": [], "cached": []}
    same = True
    for r in range(args.rounds):
        samples = {}
        for name, fn in (("cached", model.sample), ("naive", model.sample_naive)):
            t0 = time.perf_counter()
            samples[name] = fn((size, size), labels, controls, torch.Generator().manual_seed(r))
            times[name].append(time.perf_counter() - t0)
        same &= torch.equal(samples["cached"], samples["naive"])
    naive, cached = min(times["naive"]), min(times["cached"])
    target = 50 if kind == "pixelcnn" else 20
    print(f"{kind:11s} ({channels} channels, {layers} layers) grid {size:2d}x{size:<2d} batch {batch:4d}: "
          f"naive {naive:8.2f} s, "
          f"cached {cached:7.3f} s, "
          f"speed-up {naive / cached:6.1f}x (target >= {target}); identical samples: {same}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", nargs="+", default=["pixelcnn", "transformer"], help="priors to measure")
    ap.add_argument("--size", nargs="+", type=int, default=[32, 7, 7], help="grid sides (default 32 7 7)")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 100, 500],
                    help="samples drawn at once, one per size (default 1 for 32; 100 and 500 for 7)")
    ap.add_argument("--channels", type=int, default=0, help="width (default: see above)")
    ap.add_argument("--layers", type=int, default=0, help="layers or blocks (default: see above)")
    ap.add_argument("--guidance", type=float, default=1.0, help="guidance scale (default 1: none)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of both samplers (default 1)")
    args = ap.parse_args()
    if len(args.batch) != len(args.size):
        ap.error("give one --batch per --size")
    print(f"K=512; guidance {args.guidance}; threads={torch.get_num_threads()}")
    for kind in args.kind:
        for size, batch in zip(args.size, args.batch):
            if kind == "pixelcnn" and size != 32:
                continue  # the PixelCNN's target is on the 32x32 grid
            measure(kind, size, batch, args)


if __name__ == "__main__":
    main()
