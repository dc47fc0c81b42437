"""SIGKILL at moments spread over a run -- one of them inside a checkpoint write -- and resume each time: the
final weights equal an uninterrupted run's, bit for bit, for `train`, `train-prior` and `audio train`; and
SIGTERM (how clusters preempt) saves and stops like Ctrl-C. The full 10-kill run is
``benchmarks/kill_resume.py``."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
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


# -- two jobs on one run directory ------------------------------------------------------------------------
def test_the_run_lock_refuses_a_second_holder_names_the_first_and_dies_with_it(tmp_path):
    import os

    from vqvae.distributed import Ranks
    from vqvae.errors import VQVAEError
    from vqvae.runs import hold_run_dir, run_in_progress

    out = tmp_path / "run"
    assert run_in_progress(out) is None
    with hold_run_dir(out, Ranks()):
        holder = run_in_progress(out)
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        with pytest.raises(VQVAEError, match=f"in use by another training job \\(pid {os.getpid()} on "):
            with hold_run_dir(out, Ranks()):
                pass
        (out / "model.safetensors").write_text("written by the job")
    assert run_in_progress(out) is None  # released with the job: nothing stale
    with hold_run_dir(out, Ranks()):  # a directory with a run in it is kept, files and all
        pass
    assert (out / "model.safetensors").exists()
    # a job that fails before writing anything leaves no directory behind
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError), hold_run_dir(fresh, Ranks()):
        raise RuntimeError("bad input")
    assert not fresh.exists()
    with pytest.raises(VQVAEError, match="exists and is not a directory"):
        with hold_run_dir(tmp_path / "run" / "model.safetensors", Ranks()):
            pass


@pytest.mark.slow
def test_a_second_training_job_on_a_running_run_is_refused_and_readers_still_read(tmp_path):
    data = kill_resume.small_fmnist(tmp_path / "fmnist")
    run = tmp_path / "run"
    first = subprocess.Popen(kill_resume.vqvae("train", "--data", data, "--out", run, "--steps", 100000,
                                               "--quiet", *kill_resume.IMAGE, *kill_resume.COMMON),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while first.poll() is None and kill_resume.last_step(run) < 5:
            time.sleep(0.01)
        before = sorted(p.name for p in run.iterdir())
        for argv in (["train", "--data", data, "--out", run, "--overwrite", "--steps", 5],
                     ["train", "--resume", run, "--steps", 5]):
            second = subprocess.run(kill_resume.vqvae(*argv, "--quiet"), capture_output=True, text=True,
                                    timeout=120)
            assert second.returncode == 2, second.stderr
            assert f"is in use by another training job (pid {first.pid} on " in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1
        reader = subprocess.run(kill_resume.vqvae("evaluate", run, "--limit", 16, "--json"),
                                capture_output=True, text=True, timeout=120)
        assert reader.returncode == 0, reader.stderr
        assert f"is still training (pid {first.pid} on " in reader.stderr
        assert sorted(p.name for p in run.iterdir()) == before or first.poll() is None
    finally:
        first.kill()  # SIGKILL: the lock dies with the process
        first.wait(timeout=60)
    # the killed job may have been inside a save: resume recovers the last complete checkpoint
    again = kill_resume.vqvae("train", "--resume", run, "--steps", 100000, "--max-seconds", 1, "--quiet")
    resumed = subprocess.run(again, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr


# -- preemption and requeue -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_requeued_job_with_resume_auto_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    data = kill_resume.small_fmnist(tmp_path / "fmnist")
    args = ["--data", data, "--steps", 60, "--quiet", *kill_resume.IMAGE, *kill_resume.COMMON]
    reference = tmp_path / "reference"
    assert subprocess.run(kill_resume.vqvae("train", "--out", reference, *args), capture_output=True,
                          timeout=300).returncode == 0
    run = tmp_path / "run"
    job = kill_resume.vqvae("train", "--out", run, "--resume", "auto", *args)  # the job script's one line
    for target, sig in ((15, signal.SIGTERM), (30, signal.SIGUSR1), (45, signal.SIGTERM)):
        p = subprocess.Popen(job, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while p.poll() is None and kill_resume.last_step(run) < target:
            time.sleep(0.005)
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 143, err
        assert f"stopped by signal {int(sig)}" in err
    done = subprocess.run(job, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--resume auto: resuming" in done.stderr
    assert kill_resume.same_weights(reference, run)


# -- a full disk --------------------------------------------------------------------------------------
def test_too_little_free_space_is_refused_before_training_with_the_figures(small_fmnist, tmp_path, capsys,
                                                                           monkeypatch):
    import shutil

    from vqvae.cli import main

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=3_000_000))  # a 3 MB disk
    out = tmp_path / "run"
    code = main(["train", "--data", str(small_fmnist), "--out", str(out), "--steps", "2", "--quiet",
                 *kill_resume.IMAGE, "model.hidden=256"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "not enough free space" in err and "3.0 MB free" in err and "two checkpoints of" in err
    assert not out.exists()  # nothing written


def test_no_space_at_any_write_of_a_save_names_the_file_keeps_the_last_checkpoint_and_stops(
        small_fmnist, tmp_path, capsys, monkeypatch):
    import errno
    import os
    import shutil

    from vqvae.cli import main

    args = ["--quiet", "--steps", "4"]
    base = tmp_path / "base"
    assert main(["train", "--data", str(small_fmnist), "--out", str(base), "--steps", "2", "--quiet",
                 *kill_resume.IMAGE, "train.checkpoint_every=1000"]) == 0
    real_fsync, calls = os.fsync, []

    def counting(fd):
        calls.append(fd)
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", counting)
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    assert main(["train", "--resume", str(probe), *args]) == 0
    writes = len(calls)  # every atomic write of the resumed run: the final save and what follows it
    assert writes >= 5
    for n in range(1, writes + 1):
        run = tmp_path / f"full{n}"
        shutil.copytree(base, run)
        calls.clear()

        def full(fd, n=n):
            calls.append(fd)
            if len(calls) == n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_fsync(fd)
        monkeypatch.setattr(os, "fsync", full)
        capsys.readouterr()
        assert main(["train", "--resume", str(run), *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"no space left to write {run}" in err, (n, err)
        assert "MB free" in err and "--resume continues" in err
        monkeypatch.setattr(os, "fsync", real_fsync)  # space again: the run resumes and ends
        assert main(["train", "--resume", str(run), *args]) == 0, capsys.readouterr().err
        assert checkpoint.verify(run)["step"] == 4


@pytest.mark.slow
def test_a_requeued_two_rank_job_with_a_rank_killed_ends_bitwise_equal(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "requeue.py"
    done = subprocess.run([sys.executable, str(script), "--ranks", "2", "--stops", "2", "--steps", "40",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "3 stops and restarts of one command line: final weights bitwise equal to an uninterrupted " \
           "run: True" in done.stdout
    assert "SIGKILL to one rank" in done.stdout
