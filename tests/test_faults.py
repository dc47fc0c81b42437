"""SIGKILL at moments spread over a run -- one of them inside a checkpoint write -- and resume each time: the
final weights equal an uninterrupted run's, bit for bit, for `train`, `train-prior` and `audio train`; and
SIGTERM (how clusters preempt) saves and stops like Ctrl-C. The full 10-kill run is
``benchmarks/kill_resume.py``."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vqvae import checkpoint

_spec = importlib.util.spec_from_file_location(
    "kill_resume", Path(__file__).parents[1] / "benchmarks" / "kill_resume.py")
kill_resume = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_resume)


@pytest.mark.slow
def test_killed_and_resumed_runs_end_bitwise_equal_to_uninterrupted_ones(tmp_path):
    results = kill_resume.run_all(tmp_path, steps=120, kills=3, prior_kills=3, audio_kills=3)
    for r in results:
        assert r["kills"] == 3 and r["in_checkpoint_write"] == 1, r
        assert r["bitwise_equal"], r


@pytest.mark.slow
def test_sigterm_saves_and_stops_and_resume_continues(tmp_path):
    data = kill_resume.small_fmnist(tmp_path / "fmnist")
    run = tmp_path / "run"
    cmd = kill_resume.vqvae("train", "--data", data, "--out", run, "--steps", 100000, "--quiet",
                            *kill_resume.IMAGE, *kill_resume.COMMON)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while p.poll() is None and kill_resume.last_step(run) < 20:
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "stopped by signal 15" in err and len(err.strip().splitlines()) == 1
    step = checkpoint.verify(run)["step"]
    assert step >= 20
    resumed = subprocess.run(kill_resume.vqvae("train", "--resume", run, "--steps", step + 5, "--quiet"),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.verify(run)["step"] == step + 5
