"""Streaming an image folder from disk against holding the dataset in memory, measured side by side.

1. Exports Fashion-MNIST (70,000 images) as a folder of PNG files, ``train/<class>/*.png`` and
   ``test/<class>/*.png`` (once; kept in --folder), and a 10,000-file folder made of the first 900
   training and 100 test images of each class (hard links).
2. Training img/s of the reference recipe (``fashion_mnist``) for --seconds of optimisation, through the
   real training path (``train_image_and_evaluate``), reading the IDX files into memory vs reading the
   70k-file folder with --workers DataLoader workers; the two alternate for --rounds rounds. Target: streaming
   within 10% of memory.
3. Peak RSS of the loader (the process and its workers, summed, sampled every 20 ms) over one epoch of the
   training split of each folder, each in a fresh process. Target: the 70k-file folder within 20% of the
   10k one.

Usage: python benchmarks/streaming.py [--folder runs/fmnist-png] [--seconds 60] [--rounds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image


def export(folder: Path) -> tuple[Path, Path]:
    """The 70k-file folder and the 10k-file folder (made when missing)."""
    from vqvae.data import load_images

    full, small = folder / "fmnist-70k", folder / "fmnist-10k"
    if not (full / "complete").exists():
        for split in ("train", "test"):
            data = load_images("fashion-mnist", split)
            for i, (image, label) in enumerate(zip(data.images[:, 0].numpy(), data.labels.tolist())):
                path = full / split / data.classes[label].replace("/", "-") / f"{i:05d}.png"  # T-shirt/top
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
        (full / "complete").write_text("")
    if not (small / "complete").exists():
        for split, per_class in (("train", 900), ("test", 100)):
            for class_dir in sorted((full / split).iterdir()):
                target = small / split / class_dir.name
                target.mkdir(parents=True, exist_ok=True)
                for source in sorted(class_dir.iterdir())[:per_class]:
                    if not (target / source.name).exists():
                        os.link(source, target / source.name)
        (small / "complete").write_text("")
    return full, small


def train_speed(data: str, workers: int, seconds: float) -> float:
    """img/s of the reference recipe's training steps on ``data``."""
    from vqvae.recipes import load_recipe
    from vqvae.train import train_image_and_evaluate

    recipe = load_recipe("fashion_mnist", [f"train.data={data}", f"train.num_workers={workers}",
                                           f"train.max_seconds={seconds}", "train.steps=0",
                                           "train.eval_batches=1"])
    with tempfile.TemporaryDirectory() as out:
        m = train_image_and_evaluate(recipe, Path(out) / "run", progress=False, device="cpu")
    return m["step"] * recipe.train.batch_size / m["train_seconds"]


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its child processes."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(_tree_rss(int(child)) for child in f.read().split())
    except (OSError, StopIteration):
        pass
    return total


def loader_peak(folder: str, workers: int) -> None:
    """(In a fresh process.) One epoch of the training split of ``folder`` through the training feed; prints
    JSON: files, batches, seconds, peak RSS of the process tree."""
    import torch

    from vqvae.data import load_images
    from vqvae.data.loader import Batches, Feed, rows

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(os.getpid()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    data = load_images(folder, "train", image_size=28, channels=1)
    batches = Batches(len(data), 64, seed=0)
    feed = Feed(batches, lambda idx, number: idx, partial(rows, (data.images,)), num_workers=workers)
    steps = len(data) // 64
    checksum = sum(int(feed.next()[0].sum()) for _ in range(steps))
    feed.close()
    done.set()
    sampler.join()
    print(json.dumps({"files": len(data), "batches": steps, "seconds": time.perf_counter() - start,
                      "peak_rss_mb": peak[0] / 2**20, "checksum": checksum,
                      "threads": torch.get_num_threads()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default="runs/fmnist-png", help="where the PNG folders are made (kept)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="optimisation seconds per training measurement")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of memory vs streaming")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streaming path")
    ap.add_argument("--skip-training", action="store_true", help="measure the loader's memory only")
    ap.add_argument("--peak", nargs=2, metavar=("FOLDER", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak:
        return loader_peak(args.peak[0], int(args.peak[1]))
    t0 = time.perf_counter()
    full, small = export(Path(args.folder))
    print(f"folders: {full} ({sum(1 for _ in full.rglob('*.png'))} PNG files), {small} "
          f"({sum(1 for _ in small.rglob('*.png'))} PNG files); export took {time.perf_counter() - t0:.0f} s")
    peaks = {}
    for name, folder in (("10k", small), ("70k", full)):
        out = subprocess.run([sys.executable, __file__, "--peak", str(folder), str(args.workers)],
                             check=True, capture_output=True, text=True).stdout
        peaks[name] = json.loads(out.strip().splitlines()[-1])
        p = peaks[name]
        print(f"loader, {name} folder: {p['files']} training images, {p['batches']} batches of 64 in "
              f"{p['seconds']:.1f} s with {args.workers} workers, "
              f"peak RSS (process + workers) {p['peak_rss_mb']:.0f} MB")
    ratio = peaks["70k"]["peak_rss_mb"] / peaks["10k"]["peak_rss_mb"]
    print(f"peak RSS 70k / 10k: {ratio:.3f} (target <= 1.20)")
    if args.skip_training:
        return
    speeds: dict[str, list[float]] = {"memory": [], "streaming": []}
    for r in range(args.rounds):
        speeds["memory"].append(train_speed("fashion-mnist", 0, args.seconds))
        speeds["streaming"].append(train_speed(str(full), args.workers, args.seconds))
        print(f"round {r + 1}: memory {speeds['memory'][-1]:.0f} img/s, streaming ({args.workers} workers) "
              f"{speeds['streaming'][-1]:.0f} img/s")
    mem, stream = float(np.median(speeds["memory"])), float(np.median(speeds["streaming"]))
    print(f"training img/s, median of {args.rounds}: memory {mem:.0f}, streaming {stream:.0f}; "
          f"streaming / memory = {stream / mem:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
