"""Memory and speed of the nearest-code search (``vqvae.quantize.search.nearest_codes``) at scale.

Prints, for D=64 vectors against K=16384 codes (options change every size):

  peak extra memory   the search of N = 2^max-log2n vectors run in a fresh subprocess: its peak RSS
                      (VmHWM, reset after the inputs exist where Linux allows, else ru_maxrss) minus its RSS
                      once the inputs exist.                                     target <= 512 MB
  time per million    seconds per 10^6 vectors at N = 2^min-log2n .. 2^max-log2n (medians over rounds);
                      should be flat in N, i.e. time linear in N.
  GFLOP/s             the search's 2 N K D / time at the largest N, beside a square float32 GEMM's
                      (torch.mm, 2048^3) measured in the same rounds, and their ratio.  target >= 0.7
  K=512               time per million for the search vs the previous algorithm (chunked addmm + argmin,
                      copied below as the baseline), alternated round by round.  target new/old <= 1.0

Contenders alternate round by round in one process and the medians are reported, since machines here
are noisy (the ratios are steadier than the absolute figures).

Usage: python benchmarks/quantizer_memory.py [--max-log2n 20] [--min-log2n 16] [--codes 16384] [--dim 64]
                                             [--rounds 3] [--small-codes 512] [--small-log2n 17]
                                             [--small-rounds 9] [--no-memory]
Quick run: python benchmarks/quantizer_memory.py --max-log2n 15 --min-log2n 13 --rounds 2 --small-log2n 15
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from vqvae.quantize.search import nearest_codes

GEMM_SIZE = 2048


def old_nearest_codes(flat: torch.Tensor, codebook: torch.Tensor,
                      chunk_size: int | None = None) -> torch.Tensor:
    """The previous search, kept as the baseline: rows in chunks of ~2^20 distances, addmm into a
    (chunk, K) buffer, argmin."""
    n, k = flat.shape[0], codebook.shape[0]
    out = torch.empty(n, dtype=torch.long, device=flat.device)
    if n == 0:
        return out
    chunk = chunk_size or max(1, (1 << 20) // k)
    codebook_t = codebook.t().contiguous()
    code_sq = codebook.pow(2).sum(1)
    buf = torch.empty(min(chunk, n), k, dtype=flat.dtype, device=flat.device)
    for start in range(0, n, chunk):
        rows = flat[start : start + chunk]
        d = torch.addmm(code_sq, rows, codebook_t, alpha=-2.0, out=buf[: rows.shape[0]])
        d.add_(rows.pow(2).sum(1, keepdim=True))
        torch.argmin(d, dim=1, out=out[start : start + rows.shape[0]])
    return out


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(n: int, d: int, k: int) -> None:
    """Run in a fresh process: create the inputs, then search once; print the RSS figures as JSON."""
    gen = torch.Generator().manual_seed(0)
    flat, codebook = torch.randn(n, d, generator=gen), torch.randn(k, d, generator=gen)
    base_kb = _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    t0 = time.perf_counter()
    idx = nearest_codes(flat, codebook)
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") if hwm_reset else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = dict(base_kb=base_kb, peak_kb=peak_kb, maxrss_kb=maxrss, maxrss_before_kb=maxrss_before,
                   hwm_reset=hwm_reset, seconds=seconds, checksum=int(idx.sum()))
    print(json.dumps(figures))


def measure_memory(n: int, d: int, k: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", str(n), str(d), str(k)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def scaling(args, gen: torch.Generator) -> None:
    d, k = args.dim, args.codes
    codebook = torch.randn(k, d, generator=gen)
    sizes = [1 << p for p in range(args.min_log2n, args.max_log2n + 1)]
    data = {n: torch.randn(n, d, generator=gen) for n in sizes}
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen), torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen)
    nearest_codes(data[sizes[0]][:4096], codebook)  # warm-up
    torch.mm(a, b)
    times = {n: [] for n in sizes}
    gemm = []
    for _ in range(args.rounds):
        for n in sizes:  # the GEMM between every search: its rate is sampled across the whole round
            gemm.append(timed(lambda: torch.mm(a, b)))
            times[n].append(timed(lambda n=n: nearest_codes(data[n], codebook)))
    print(f"time per million vectors, D={d}, K={k} (median of {args.rounds} rounds):")
    for n in sizes:
        print(f"  N = 2^{n.bit_length() - 1:<2d} {statistics.median(times[n]) / n * 1e6:8.2f} s")
    n = sizes[-1]
    search_rate = 2 * n * k * d / statistics.median(times[n]) / 1e9
    gemm_rate = 2 * GEMM_SIZE**3 / statistics.median(gemm) / 1e9
    print(f"search at N = 2^{n.bit_length() - 1}: {search_rate:.1f} GFLOP/s (2 N K D flops); "
          f"square fp32 GEMM ({GEMM_SIZE}^3 torch.mm): {gemm_rate:.1f} GFLOP/s")
    print(f"search / GEMM rate: {search_rate / gemm_rate:.2f}   (target >= 0.70)")


def small_codebook(args, gen: torch.Generator) -> None:
    d, k, n = args.dim, args.small_codes, 1 << args.small_log2n
    flat, codebook = torch.randn(n, d, generator=gen), torch.randn(k, d, generator=gen)
    same = torch.equal(nearest_codes(flat, codebook), old_nearest_codes(flat, codebook))
    print(f"K={k}: new and old give the same codes on random data: {same} (they may differ on near-ties)")
    new, old = [], []
    for _ in range(args.small_rounds):
        new.append(timed(lambda: nearest_codes(flat, codebook)))
        old.append(timed(lambda: old_nearest_codes(flat, codebook)))
    t_new, t_old = statistics.median(new) / n * 1e6, statistics.median(old) / n * 1e6
    print(f"K={k}, N = 2^{args.small_log2n}: time per million vectors, new {t_new:.3f} s, "
          f"old {t_old:.3f} s, new / old {t_new / t_old:.2f}   "
          f"(target <= 1.00; median of {args.small_rounds})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-log2n", type=int, default=20,
                    help="largest N = 2^this (and the N of the memory run)")
    ap.add_argument("--min-log2n", type=int, default=16)
    ap.add_argument("--codes", type=int, default=16384, help="K of the memory, scaling and GFLOP/s figures")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small-codes", type=int, default=512, help="K of the new-vs-old comparison")
    ap.add_argument("--small-log2n", type=int, default=17)
    ap.add_argument("--small-rounds", type=int, default=9)
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    ap.add_argument("--memory-child", nargs=3, type=int, metavar=("N", "D", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.no_memory:
        n = 1 << args.max_log2n
        m = measure_memory(n, args.dim, args.codes)
        extra_hwm = (m["peak_kb"] - m["base_kb"]) / 1024 if m["peak_kb"] is not None else None
        extra_maxrss = (m["maxrss_kb"] - m["base_kb"]) / 1024
        inputs = (n + args.codes) * args.dim * 4 / 2**20
        shown = f"{extra_hwm:.1f} MiB (VmHWM)" if extra_hwm is not None else "n/a (VmHWM)"
        print(f"peak extra memory, N = 2^{args.max_log2n}, D={args.dim}, K={args.codes} "
              f"(inputs {inputs:.0f} MiB): {shown}, {extra_maxrss:.1f} MiB (ru_maxrss)   (target <= 512 MB); "
              f"that run took {m['seconds']:.1f} s")
    gen = torch.Generator().manual_seed(0)
    small_codebook(args, gen)
    scaling(args, gen)


if __name__ == "__main__":
    main()
