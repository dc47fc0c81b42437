"""One EMA training step of the quantizer vs the distance GEMM floor and vs lucidrains' layer.

A step = forward (nearest-code search, losses), EMA codebook update, backward through
``quantized`` and ``loss``. The contenders run interleaved, round after round, in one process,
and the script prints medians and the two ratios the project targets:

    step / GEMM               <= 2.0   (GEMM: one fp32 torch.mm of (N x D) . (D x K))
    lucidrains / step         >= 5.0   (vector_quantize_pytorch.VectorQuantize, training mode)

Usage: python benchmarks/quantizer_speed.py [--n 32768] [--dim 64] [--codes 512] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vqvae import VectorQuantizerEMA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--codes", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-lucidrains", action="store_true",
                    help="skip the comparison with vector-quantize-pytorch")
    args = ap.parse_args()
    torch.manual_seed(0)
    n, d, k = args.n, args.dim, args.codes
    x = torch.randn(n, d)
    w = torch.randn(d, k)

    ours = VectorQuantizerEMA(d, k, commitment_cost=0.25, decay=0.99).train()

    def gemm():
        torch.mm(x, w)

    def step_ours():
        xi = x.detach().requires_grad_()
        out = ours(xi)
        (out.quantized.sum() + out.loss).backward()

    contenders = {"gemm": gemm, "vqvae": step_ours}
    if not args.no_lucidrains:
        try:
            from vector_quantize_pytorch import VectorQuantize
        except ImportError as exc:  # the comparison is a benchmark-only dependency
            raise SystemExit(f"vector-quantize-pytorch is not installed ({exc}); "
                             "pip install '.[bench]'") from exc
        theirs = VectorQuantize(
            dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25, rotation_trick=False
        ).train()
        xb = x.view(1, n, d)

        def step_theirs():
            xi = xb.detach().requires_grad_()
            quantized, _, loss = theirs(xi)
            (quantized.sum() + loss).backward()

        contenders["lucidrains"] = step_theirs

    for fn in contenders.values():  # warm-up
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"N={n} D={d} K={k} fp32, threads={torch.get_num_threads()}, {args.rounds} interleaved rounds")
    for name, t in med.items():
        print(f"  {name:<11} median {t * 1e3:8.2f} ms   (min {min(times[name]) * 1e3:8.2f} ms)")
    print(f"ratio step/GEMM          = {med['vqvae'] / med['gemm']:.2f}  (target <= 2.0)")
    if "lucidrains" in med:
        print(f"ratio lucidrains/step    = {med['lucidrains'] / med['vqvae']:.2f}  (target >= 5.0)")


if __name__ == "__main__":
    main()
