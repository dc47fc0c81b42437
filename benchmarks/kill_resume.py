"""SIGKILL, resume, repeat: a training command killed at moments spread over its run -- some in the middle of
a checkpoint write -- and resumed each time must end with the very weights of an uninterrupted run.

    python benchmarks/kill_resume.py [--kills 10] [--steps 400] [--out runs/kill_resume]

runs it for ``vqvae train`` (``--kills`` kills), ``vqvae train-prior`` and ``vqvae audio train`` (3 kills
each), on a small slice of Fashion-MNIST and a corpus of tones, and prints one line per command: kills
survived, whether the final weights are bitwise equal to the uninterrupted run's. ``tests/test_faults.py``
runs the same with fewer kills.

Deterministic settings (what makes "bitwise equal" possible): a step budget (``--steps``) with no wall-clock
budget (``train.max_seconds=0``: the learning-rate schedule then depends on the step alone), a fixed seed,
in-process data loading, the same thread count for every segment. The kill moments come from the run's own
progress (the last step in metrics.csv), so they land spread over the run whatever the speed of the machine;
every third kill is instead a SIGKILL the process sends itself right after writing the second file of a
checkpoint (checkpoint.py's ``VQVAE_FAULT_KILL_AFTER_FILE``), a save cut in half.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FAULT_ENV = "VQVAE_FAULT_KILL_AFTER_FILE"
IMAGE = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
         "model.restart_threshold=0.5", "train.batch_size=16", "train.warmup_steps=5", "train.eval_batches=1"]
PRIOR = ["prior.channels=8", "prior.num_layers=2", "prior.head_channels=16", "train.batch_size=16",
         "train.warmup_steps=5", "train.eval_batches=1"]
AUDIO = ["audio.sample_rate=8000", "audio.num_downsamples=2", "audio.hidden=8", "audio.embedding_dim=4",
         "audio.num_embeddings=8", "audio.local_channels=8", "audio.channels=8", "audio.skip_channels=8",
         "audio.max_dilation=4", "audio.dilation_cycles=1", "train.batch_size=2", "train.crop_length=256",
         "train.warmup_steps=1", "train.eval_batches=1"]
COMMON = ["train.max_seconds=0", "train.log_every=1", "train.checkpoint_every=0.05", "train.seed=3"]


def vqvae(*args: str) -> list[str]:
    return [sys.executable, "-m", "vqvae", *map(str, args)]


def last_step(run: Path) -> int:
    try:
        rows = (run / "metrics.csv").read_text().splitlines()
        return int(rows[-1].split(",", 1)[0]) if len(rows) > 1 else 0
    except (OSError, ValueError):
        return 0


def kill_and_resume(command: list[str], run: Path, steps: int, kills: int, timeout: float = 300) -> dict:
    """Run ``command`` (which writes ``run``, ``steps`` steps in all), killing it ``kills`` times at steps
    spread over the run (every third kill inside a checkpoint write) and resuming after each; then let it
    finish."""
    targets = [round(steps * (i + 1) / (kills + 1)) for i in range(kills)]
    killed, in_save, resumed_from = 0, 0, []
    for i, target in enumerate(targets):
        cmd = command if i == 0 else vqvae(*_resume(command, run))
        fault = i > 0 and i % 3 == 2  # a resumed segment (a whole checkpoint is there to fall back on)
        env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
        if fault:
            env[FAULT_ENV] = "2"
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        start = time.monotonic()
        if not fault:
            while p.poll() is None and not ((run / "manifest.json").exists() and last_step(run) >= target):
                if time.monotonic() - start > timeout:
                    break
                time.sleep(0.005)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        p.wait(timeout)
        if p.returncode != -signal.SIGKILL:
            raise RuntimeError(f"segment {i} ended with status {p.returncode} before it was killed: "
                               f"{p.stderr.read()}")
        killed += 1
        in_save += fault
        resumed_from.append(last_step(run))
        p.stderr.close()
    final = subprocess.run(vqvae(*_resume(command, run)), capture_output=True, text=True, timeout=timeout)
    if final.returncode != 0:
        raise RuntimeError(f"the last resume failed ({final.returncode}): {final.stderr.strip()[-500:]}")
    return {"kills": killed, "in_checkpoint_write": in_save, "killed_near_steps": resumed_from}


def _resume(command: list[str], run: Path) -> list[str]:
    """``vqvae [audio] train[-prior] --resume RUN --quiet`` for a command line of ``python -m vqvae ...``."""
    words = command[3:]
    head = words[:2] if words[0] == "audio" else words[:1]
    return [*head, "--resume", str(run), "--quiet"]


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) and wa[k].dtype == wb[k].dtype
                                          for k in wa)


def small_fmnist(out: Path, n_train: int = 512, n_test: int = 64) -> Path:
    """The first images of the real Fashion-MNIST as an IDX directory."""
    from vqvae.data import load_images

    out.mkdir(parents=True, exist_ok=True)
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        ds = load_images("fashion-mnist", split)
        images, labels = ds.images[:n, 0].numpy(), ds.labels[:n].numpy()
        (out / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + images.astype(np.uint8).tobytes()))
        (out / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())
    return out


def tone_corpus(out: Path) -> Path:
    """Three 'speakers', each a harmonic tone at its own pitch: a corpus that needs no synthesiser."""
    from vqvae.data.audio import write_wav

    rate, t = 8000, np.arange(3200) / 8000
    for s, f0 in enumerate((110.0, 190.0, 300.0)):
        (out / f"spk{s}").mkdir(parents=True, exist_ok=True)
        for i in range(3):
            x = sum(0.3 / h * np.sin(2 * np.pi * h * f0 * (1 + 0.02 * i) * t) for h in (1, 2, 3))
            write_wav(out / f"spk{s}" / f"u{i}.wav", x.astype(np.float32), rate)
    return out


def check(name: str, command_for, root: Path, steps: int, kills: int) -> dict:
    """The uninterrupted run and the killed-and-resumed one of ``command_for(out_dir)``; their weights
    compared."""
    ref, run = root / f"{name}-uninterrupted", root / f"{name}-killed"
    for d in (ref, run):
        shutil.rmtree(d, ignore_errors=True)
    done = subprocess.run(command_for(ref), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: the uninterrupted run failed: {done.stderr.strip()[-500:]}")
    result = kill_and_resume(command_for(run), run, steps, kills)
    result.update(command=name, bitwise_equal=same_weights(ref, run))
    return result


def run_all(root: Path, steps: int, kills: int, prior_kills: int = 3, audio_kills: int = 3) -> list[dict]:
    data, corpus = small_fmnist(root / "fmnist"), tone_corpus(root / "tones")

    def image(out: Path) -> list[str]:
        return vqvae("train", "--data", data, "--out", out, "--steps", steps, "--quiet", *IMAGE, *COMMON)

    results = [check("train", image, root, steps, kills)]
    vq = root / "train-uninterrupted"

    def prior(out: Path) -> list[str]:
        return vqvae("train-prior", vq, "--out", out, "--steps", steps, "--quiet", *PRIOR, *COMMON)

    results.append(check("train-prior", prior, root, steps, prior_kills))

    def audio(out: Path) -> list[str]:
        return vqvae("audio", "train", "--data", corpus, "--out", out, "--steps", steps, "--quiet",
                     *AUDIO, *COMMON)

    results.append(check("audio train", audio, root, steps, audio_kills))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10,
                   help="kills of `vqvae train` (train-prior and audio train: 3)")
    p.add_argument("--steps", type=int, default=400, help="steps of each run")
    p.add_argument("--out", default="runs/kill_resume", help="working directory (replaced)")
    args = p.parse_args()
    for r in run_all(Path(args.out), args.steps, args.kills):
        print(f"{r['command']}: {r['kills']}/{r['kills']} kills resumed "
              f"({r['in_checkpoint_write']} inside a checkpoint write; "
              f"killed near steps {r['killed_near_steps']}); "
              f"final weights bitwise equal to the uninterrupted run: {r['bitwise_equal']}")


if __name__ == "__main__":
    main()
