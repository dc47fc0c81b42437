"""One training step of every quantizer vs the floor of its distance GEMMs and vs lucidrains' same layer.

A step = forward (search, losses, codebook update where there is one) and backward through ``quantized``
and ``loss``. All contenders run interleaved, round after round, in one process; the script prints the
median of each and the ratios the project targets:

    VectorQuantizerEMA step / GEMM               <= 0.8   (GEMM: one fp32 torch.mm of (N x D) . (D x K), its
                                                           output allocated each time, as a user's would be)
    lucidrains / ours, every variant              >= 3     (>= 10 for VectorQuantizerEMA)
    codebook variants: step / floor of GEMMs      <= 1.2   (ResidualVQ with L levels: L GEMMs)

Variants, each against vector-quantize-pytorch with the same settings: the EMA layer, cosine codes, the
rotation trick, ResidualVQ (4 levels), FSQ [8, 8, 8] and LFQ (9 bits), all on N vectors of D (FSQ also on N
vectors of 3, its own size: no projections). "gemm out=" is the same GEMM into a kept output: its arithmetic
alone, without the memory a fresh 64 MiB output costs.

Usage: python benchmarks/quantizer_speed.py [--n 32768] [--dim 64] [--codes 512] [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from vqvae import FSQ, LFQ, ResidualVQ, VectorQuantizerEMA

LEVELS = 4  # residual levels


def ours(d: int, k: int) -> dict[str, tuple[torch.nn.Module, int]]:
    """Our layer of each variant and how many distance GEMMs its floor holds (0: no codebook search)."""
    return {
        "ema": (VectorQuantizerEMA(d, k), 1),
        "cosine": (VectorQuantizerEMA(d, k, cosine=True), 1),
        "rotation": (VectorQuantizerEMA(d, k, rotation_trick=True), 1),
        "residual": (ResidualVQ(d, k, LEVELS), LEVELS),
        "fsq": (FSQ([8, 8, 8], d), 0),
        "fsq 3": (FSQ([8, 8, 8]), 0),
        "lfq": (LFQ(d, 512), 0),
    }


def theirs(d: int, k: int) -> dict[str, torch.nn.Module]:
    """lucidrains' layer of each variant, with our settings."""
    try:
        import vector_quantize_pytorch as vqp
    except ImportError as exc:  # the comparison is a benchmark-only dependency
        raise SystemExit(f"vector-quantize-pytorch is not installed ({exc}); pip install '.[bench]'") from exc
    common = dict(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25)
    return {
        "ema": vqp.VectorQuantize(**common, rotation_trick=False),
        "cosine": vqp.VectorQuantize(**common, use_cosine_sim=True, rotation_trick=False),
        "rotation": vqp.VectorQuantize(**common, rotation_trick=True),
        "residual": vqp.ResidualVQ(num_quantizers=LEVELS, **common, rotation_trick=False),
        "fsq": vqp.FSQ([8, 8, 8], dim=d),
        "fsq 3": vqp.FSQ([8, 8, 8]),
        "lfq": vqp.LFQ(dim=d, codebook_size=512, entropy_loss_weight=0.1, commitment_loss_weight=0.25),
    }


def our_step(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step():
        xi = x.detach().requires_grad_()
        out = layer(xi)
        (out.quantized.sum() + out.loss).backward()
    return step


def their_step(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    xb = x.view(1, *x.shape)

    def step():
        xi = xb.detach().requires_grad_()
        out = layer(xi)
        quantized, loss = out[0], out[-1]
        loss = loss.sum() if loss is not None and loss.numel() > 1 else loss
        ((quantized.sum() + loss) if loss is not None else quantized.sum()).backward()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--codes", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-lucidrains", action="store_true",
                    help="skip the comparison with vector-quantize-pytorch")
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    n, d, k = args.n, args.dim, args.codes
    x, w = torch.randn(n, d), torch.randn(d, k)
    kept = torch.empty(n, k)
    mine = {name: v for name, v in ours(d, k).items() if not args.only or name in args.only}
    contenders: dict[str, Callable[[], None]] = {"gemm": lambda: torch.mm(x, w),
                                                 "gemm out=": lambda: torch.mm(x, w, out=kept)}
    inputs = {name: x[:, :3].contiguous() if name == "fsq 3" else x for name in mine}
    for name, (layer, _) in mine.items():
        contenders[name] = our_step(layer.train(), inputs[name])
    if not args.no_lucidrains:
        for name, layer in theirs(d, k).items():
            if name in mine:
                contenders[f"lucidrains {name}"] = their_step(layer.train(), inputs[name])
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
        print(f"  {name:<20} median {t * 1e3:9.2f} ms   (min {min(times[name]) * 1e3:9.2f} ms)")
    print(f"{'variant':<10} {'ours ms':>9} {'floor':>7} {'floor out=':>11} {'lucidrains/ours':>16}")
    for name, (_, gemms) in mine.items():
        floor = f"{med[name] / (gemms * med['gemm']):.2f}" if gemms else "-"
        arithmetic = f"{med[name] / (gemms * med['gemm out=']):.2f}" if gemms else "-"
        ratio = f"{med[f'lucidrains {name}'] / med[name]:.2f}" if f"lucidrains {name}" in med else "-"
        print(f"{name:<10} {med[name] * 1e3:9.2f} {floor:>7} {arithmetic:>11} {ratio:>16}")
    print("targets: ema step/GEMM <= 0.8 and lucidrains/ours >= 10; every variant lucidrains/ours >= 3; "
          "codebook variants step/floor <= 1.2")


if __name__ == "__main__":
    main()
