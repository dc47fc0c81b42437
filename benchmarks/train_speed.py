"""Images per second of one training step of the reference VQ-VAE, plain eager fp32 against faster
settings, measured side by side in one run, beside the conv FLOP floor of this CPU.

The step is the real one: forward (encoder, EMA quantizer in fp32, decoder, losses), backward, Adam. The
model is ``fashion_mnist_reference`` (hidden 128, two residual blocks of 32, D=64, K=512), batches of 32
real 28x28 Fashion-MNIST images. Contenders (each from the same initial weights): eager fp32 (Adam's
default foreach kernels); channels_last; bf16 autocast (+ channels_last); the fused Adam kernel;
``torch.compile`` of the conv nets. They run interleaved, round after round, and the medians are printed.
The floor: the step's FLOPs (counted by ``torch.utils.flop_counter``) at this CPU's rate for a square
2048^3 GEMM measured in the same run (fp32, and bf16 for bf16 steps): no step can beat it.

Then the quality check: eager fp32 and the fastest contender train --psnr-steps steps each from the same
weights on the same batches, and their test PSNR (the first 2,000 test images) is compared. Target: the
fastest >= 1.5x eager fp32 img/s, PSNR within 0.2 dB.

Usage: python benchmarks/train_speed.py [--rounds 5] [--steps 20] [--psnr-steps 1000] [--threads 0]
       [--no-compile] [--device cpu|cuda] [--only CONTENDER ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import nullcontext

import torch

from vqvae.data import load_images, to_float
from vqvae.data.loader import Batches
from vqvae.devices import resolve_device
from vqvae.evaluate import evaluate_image_model
from vqvae.models import VQVAE
from vqvae.recipes import load_recipe

CONTENDERS = {  # name: (channels_last, precision, compile, fused Adam)
    "eager fp32": (False, "fp32", False, False),
    "eager fp32 channels_last": (True, "fp32", False, False),
    "eager fp32 fused Adam": (False, "fp32", False, True),
    "eager bf16": (False, "bf16", False, False),
    "eager bf16 channels_last": (True, "bf16", False, False),
    "eager bf16 fused Adam": (False, "bf16", False, True),
    "eager bf16 channels_last fused Adam": (True, "bf16", False, True),
    "compile fp32": (False, "fp32", True, False),
    "compile bf16 channels_last fused Adam": (True, "bf16", True, True),
}


class Trainer:
    """One contender: its own copy of the model and optimiser, and its step."""

    def __init__(self, base: VQVAE, lr: float, channels_last: bool, precision: str, compiled: bool,
                 fused: bool, device: torch.device = torch.device("cpu")):
        self.model = copy.deepcopy(base).to(device).train()
        self.channels_last, self.precision, self.device = channels_last, precision, device
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, fused=fused)
        # the conv nets, in place; the quantizer (data-dependent EMA updates, restarts) stays eager
        if compiled:
            for name in ("encoder", "pre_quantize", "decoder"):
                getattr(self.model, name).compile()

    def step(self, x: torch.Tensor) -> None:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self.precision == "bf16"
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with amp:
            loss = self.model(x).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def gemm_rate(dtype: torch.dtype, device: torch.device, n: int = 2048, rounds: int = 3) -> float:
    """GFLOP/s of a square n^3 GEMM in ``dtype``, best of ``rounds``."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b), device) for _ in range(rounds))
    return 2 * n**3 / best / 1e9


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def step_flops(base: VQVAE, x: torch.Tensor) -> int:
    """FLOPs of one forward + backward of the model (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(base).train()
    with FlopCounterMode(display=False) as counter:
        model(x).loss.backward()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per contender per round (default 20)")
    ap.add_argument("--psnr-steps", type=int, default=1000, help="steps of the quality check (0: skip it)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile contenders")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    ap.add_argument("--only", nargs="+", choices=list(CONTENDERS), help="run these contenders only")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe("fashion_mnist_reference")
    batch = 32
    train, test = load_images("fashion-mnist", "train"), load_images("fashion-mnist", "test")
    torch.manual_seed(0)
    base = VQVAE(recipe.model)
    names = [n for n in CONTENDERS
             if not (args.no_compile and CONTENDERS[n][2]) and (not args.only or n in args.only)]
    names = list(dict.fromkeys(["eager fp32", *names]))  # the baseline is always measured
    trainers = {n: Trainer(base, recipe.train.lr, *CONTENDERS[n], device=device) for n in names}
    x = to_float(train.images[:batch])
    for name, t in trainers.items():  # warm-up (and compilation) outside the timing
        start = time.perf_counter()
        for _ in range(3):
            t.step(x)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s")
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name, t in trainers.items():
            seconds = _timed(lambda t=t: [t.step(x) for _ in range(args.steps)], device)
            rates[name].append(args.steps * batch / seconds)
    flops = step_flops(base, x)
    fp32, bf16 = gemm_rate(torch.float32, device), gemm_rate(torch.bfloat16, device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, threads {torch.get_num_threads()}")
    print(f"\n{where}, batch {batch}, one step = {flops / 1e9:.2f} GFLOP (forward + backward); "
          f"square GEMM: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    print(f"FLOP floor: fp32 {batch / (flops / (fp32 * 1e9)):.0f} img/s, "
          f"bf16 {batch / (flops / (bf16 * 1e9)):.0f} img/s")
    eager = statistics.median(rates["eager fp32"])
    for name in names:
        r = statistics.median(rates[name])
        floor = batch / (flops / ((bf16 if CONTENDERS[name][1] == "bf16" else fp32) * 1e9))
        print(f"{name:26s} {r:7.0f} img/s  {r / eager:5.2f}x eager fp32  "
              f"{100 * r / floor:4.0f}% of its floor")
    best = max(names, key=lambda n: statistics.median(rates[n]))
    print(f"fastest: {best}, {statistics.median(rates[best]) / eager:.2f}x eager fp32 (target >= 1.5x)")
    if args.psnr_steps:
        quality(base, recipe.train.lr, train, test, best, args.psnr_steps, batch, device)


def quality(base: VQVAE, lr: float, train, test, best: str, steps: int, batch: int,
            device: torch.device) -> None:
    """Test PSNR of eager fp32 and of ``best`` after the same steps on the same batches."""
    psnr = {}
    for name in dict.fromkeys(["eager fp32", best]):
        t = Trainer(base, lr, *CONTENDERS[name], device=device)
        order = Batches(len(train), batch, seed=0)
        start = time.perf_counter()
        for _ in range(steps):
            t.step(to_float(train.images[order.next()]))
        seconds = time.perf_counter() - start
        model = t.model.to(memory_format=torch.contiguous_format).eval()
        subset = copy.copy(test)
        subset.images, subset.labels = test.images[:2000], test.labels[:2000]
        psnr[name] = evaluate_image_model(model, subset)["psnr"]
        print(f"{name}: {steps} steps in {seconds:.0f} s, test PSNR {psnr[name]:.2f} dB")
    if best != "eager fp32":
        print(f"PSNR {best} - eager fp32: {psnr[best] - psnr['eager fp32']:+.2f} dB (target within 0.2 dB)")


if __name__ == "__main__":
    main()
