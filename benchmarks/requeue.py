"""Preemption and requeue, as a cluster does it: the job's one command line, `vqvae train --out RUN --resume
auto ...`, is stopped by SIGTERM or SIGUSR1 at random steps and started again, the same line, until it ends;
then its final weights are compared, bit for bit, with an uninterrupted run of the same recipe. With --ranks 2
the job is `torchrun --nproc_per_node 2` (gloo on the CPU), SIGTERM goes to the whole job as a scheduler sends
it (torchrun's agent forwards it to its ranks), and one more restart kills one rank with SIGKILL while the job
runs (torchrun then stops the others).

Usage: python benchmarks/requeue.py [--ranks 1] [--stops 10] [--steps 120] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kill_resume import COMMON, IMAGE, last_step, same_weights, small_fmnist  # noqa: E402


def command(ranks: int, *args: object) -> list[str]:
    launcher = [sys.executable, "-m", "vqvae"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
        "-m", "vqvae"]
    return [*launcher, *map(str, args)]


def workers(parent: int) -> list[int]:
    """The vqvae processes under ``parent`` (torchrun's workers)."""
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=1, help="1 process, or 2 under torchrun (default 1)")
    ap.add_argument("--stops", type=int, default=10, help="preemptions before the job may end (default 10)")
    ap.add_argument("--steps", type=int, default=120, help="steps of the whole run (default 120)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the moments the signals come at")
    ap.add_argument("--out", help="work folder (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="requeue-"))
    data = small_fmnist(work / "fmnist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recipe = ["--data", data, "--steps", args.steps, "--quiet", "--device", "cpu", *IMAGE, *COMMON,
              "train.threads=1", "train.precision=fp32"]
    reference = work / "reference"
    done = subprocess.run(command(args.ranks, "train", "--out", reference, *recipe), env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the uninterrupted run failed: {done.stderr[-2000:]}")
    run, rng = work / "run", random.Random(args.seed)
    job = command(args.ranks, "train", "--out", run, "--resume", "auto", *recipe)
    stops = 0
    kill_one = args.ranks > 1  # one more restart: a rank killed outright
    while stops < args.stops + kill_one:
        target = min(last_step(run) + rng.randint(3, max(4, args.steps // (args.stops + 2))), args.steps - 2)
        p = subprocess.Popen(job, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        while p.poll() is None and last_step(run) < target:
            time.sleep(0.005)
        if p.poll() is not None:
            break  # the job ended before the moment came
        if kill_one and stops == args.stops:
            os.kill(workers(p.pid)[-1], signal.SIGKILL)
            how = "SIGKILL to one rank"
        else:
            # torchrun's agent forwards SIGTERM to its workers; SIGUSR1 would end the agent itself
            sig = rng.choice([signal.SIGTERM, signal.SIGUSR1]) if args.ranks == 1 else signal.SIGTERM
            os.killpg(p.pid, sig)  # the whole job, as a scheduler signals it
            how = sig.name
        _, err = p.communicate(timeout=300)
        stops += 1
        print(f"stop {stops}: {how} near step {target}, exit {p.returncode}, saved at step {last_step(run)}; "
              f"{err.strip().splitlines()[-1] if err.strip() else ''}", flush=True)
    done = subprocess.run(job, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the last restart failed: {done.stderr[-2000:]}")
    same = same_weights(reference, run)
    print(f"{args.ranks} rank(s), {stops} stops and restarts of one command line: final weights bitwise "
          f"equal to an uninterrupted run: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
