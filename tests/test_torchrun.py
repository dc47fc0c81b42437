"""``torchrun --nproc_per_node 2 -m vqvae train``: two gloo processes on the CPU take the same steps as one
process with the same global batch and seed, and only rank 0 writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

TINY = ["model.hidden=16", "model.res_hidden=8", "model.embedding_dim=8", "model.num_embeddings=32",
        "model.restart_threshold=0", "train.batch_size=16", "train.warmup_steps=0", "train.schedule=constant",
        "train.log_every=2", "train.eval_batches=1", "train.threads=1",
        # fp32: the 1-rank and 2-rank runs are compared to 1e-5 (bf16 rounds per batch shape)
        "train.precision=fp32"]


def _run(argv: list[str], nproc: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "vqvae"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "vqvae"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, *argv], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_two_ranks_take_the_steps_of_one_process(small_fmnist, tmp_path):
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"ranks{nproc}"
        done = _run(["train", "--data", str(small_fmnist), "--out", str(out), "--steps", "6", "--quiet",
                     "--device", "cpu", "--json", *TINY], nproc)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[nproc] = out
    one, two = (load_file(runs[n] / "model.safetensors") for n in (1, 2))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    # ... although each rank saw only its half of every batch: rank 0 logs the reconstruction loss of its 8
    # images, which is not that of the 16 one process logs (while DDP's averaged gradients and the all-reduced
    # EMA statistics make the weights agree)
    rows = {n: (runs[n] / "metrics.csv").read_text().splitlines() for n in (1, 2)}
    column = rows[1][0].split(",").index("recon_loss")
    assert [r.split(",")[column] for r in rows[1][1:]] != [r.split(",")[column] for r in rows[2][1:]]
    # rank 0 alone wrote: one event file, one set of CSV rows, the same files as one process
    assert len(list((runs[2] / "tb").glob("events.out.tfevents.*"))) == 1
    assert ((runs[2] / "metrics.csv").read_text().count("\n")
            == (runs[1] / "metrics.csv").read_text().count("\n"))
    assert sorted(p.name for p in runs[2].iterdir()) == sorted(p.name for p in runs[1].iterdir())
    assert json.loads((runs[2] / "eval.json").read_text())["step"] == 6


@pytest.mark.slow
def test_a_global_batch_that_the_ranks_cannot_share_is_one_line(small_fmnist, tmp_path):
    done = _run(["train", "--data", str(small_fmnist), "--out", str(tmp_path / "r"), "--steps", "1",
                 "--quiet", "--device", "cpu", *TINY, "train.batch_size=15"], 2)
    assert done.returncode != 0
    assert "train.batch_size 15 (the global batch) must be a multiple of the 2 processes" in done.stderr
    assert not (tmp_path / "r").exists()


def test_each_rank_takes_its_contiguous_shard_of_the_global_batch():
    from vqvae.distributed import Ranks

    batch = torch.arange(10, 26)
    assert torch.equal(Ranks().shard(batch), batch)
    shards = [Ranks(rank=r, world=4).shard(batch) for r in range(4)]
    assert all(len(s) == 4 for s in shards) and torch.equal(torch.cat(shards), batch)
    assert Ranks(rank=0, world=4).main and not Ranks(rank=3, world=4).main
    # evaluation: the ranks' shares of a split's batches cover every batch exactly once
    starts = range(0, 10000, 500)
    shares = [list(Ranks(rank=r, world=3).mine(starts)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(starts) and [len(s) for s in shares] == [7, 7, 6]


@pytest.mark.slow
def test_resume_under_two_ranks_and_under_another_world_size(small_fmnist, tmp_path):
    base = ["--data", str(small_fmnist), "--quiet", "--device", "cpu", *TINY]
    whole = tmp_path / "whole"
    assert _run(["train", "--out", str(whole), "--steps", "6", *base], 2).returncode == 0
    reference = load_file(whole / "model.safetensors")
    for first, second in ((2, 2), (2, 1), (1, 2)):  # 3 steps with `first` ranks, then resumed with `second`
        out = tmp_path / f"resumed{first}{second}"
        assert _run(["train", "--out", str(out), "--steps", "3", *base], first).returncode == 0
        done = _run(["train", "--resume", str(out), "--steps", "6", "--quiet", "--device", "cpu"], second)
        assert done.returncode == 0, done.stderr[-2000:]
        resumed = load_file(out / "model.safetensors")
        # the global batches and the averaged gradients do not depend on the world size
        for key in reference:
            torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6,
                                       msg=f"{first}->{second} {key}")


@pytest.mark.slow
def test_evaluation_sharded_over_two_ranks_gives_the_one_process_figures(tmp_path):
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    tiny = [*TINY, "model.recon_loss=logistic", "model.restart_threshold=1"]
    assert _run(["train", "--data", "fashion-mnist", "--out", str(vq), "--steps", "4", "--quiet", *tiny],
                1).returncode == 0
    assert _run(["train-prior", str(vq), "--out", str(prior), "--steps", "2", "--quiet", "prior.num_layers=2",
                 "prior.channels=8", "prior.head_channels=16", "train.eval_batches=1"], 1).returncode == 0
    # the whole Fashion-MNIST test split: 20 batches of 500 images, 10 for each rank
    for command in (["evaluate", str(vq)], ["evaluate-prior", str(prior)]):
        results = []
        for nproc in (1, 2):
            done = _run([*command, "--json", "--device", "cpu"], nproc)
            assert done.returncode == 0, done.stderr[-2000:]
            assert len(done.stdout.strip().splitlines()) == 1  # rank 0 alone prints
            results.append(json.loads(done.stdout))
        one, two = results
        assert one.keys() == two.keys() and one["num_images"] == two["num_images"] == 10000
        for key, value in one.items():
            if isinstance(value, float):
                assert two[key] == pytest.approx(value, rel=1e-9), key
            else:
                assert two[key] == value, key  # counts of codes exactly


@pytest.mark.slow
def test_encoding_sharded_over_two_ranks_gives_the_one_process_codes(tmp_path):
    import numpy as np

    vq = tmp_path / "vq"
    assert _run(["train", "--data", "fashion-mnist", "--out", str(vq), "--steps", "2", "--quiet", *TINY],
                1).returncode == 0
    for nproc in (1, 2):
        done = _run(["encode", str(vq), "--out", str(tmp_path / f"codes{nproc}.npz"), "--device", "cpu"],
                    nproc)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = (np.load(tmp_path / f"codes{n}.npz") for n in (1, 2))
    assert sorted(one.files) == sorted(two.files) and one["train_indices"].shape == (60000, 7, 7)
    for key in one.files:
        assert np.array_equal(one[key], two[key]), key
    # the codes cache of train-prior, built by two ranks, holds the same codes
    done = _run(["train-prior", str(vq), "--out", str(tmp_path / "prior"), "--steps", "1", "--quiet",
                 "--device", "cpu", "prior.num_layers=1", "prior.channels=4", "prior.head_channels=8",
                 "train.batch_size=16", "train.eval_batches=1"], 2)
    assert done.returncode == 0, done.stderr[-2000:]
    cache = np.load(vq / "prior_codes.cache.npz")
    for key in ("train_indices", "test_indices", "train_labels", "test_labels"):
        assert np.array_equal(cache[key], one[key]), key


@pytest.mark.slow
def test_transformer_prior_under_two_ranks_takes_the_steps_of_one_process_and_resumes(small_fmnist, tmp_path):
    vq = tmp_path / "vq"
    assert _run(["train", "--data", str(small_fmnist), "--out", str(vq), "--steps", "2", "--quiet",
                 "--device", "cpu", *TINY], 1).returncode == 0
    # no dropout of any kind (the ranks draw their own random numbers), fp32 (compared to 1e-5)
    tiny = ["--quiet", "--device", "cpu", "prior.kind=transformer", "prior.channels=16", "prior.heads=2",
            "prior.num_layers=2", "prior.class_dropout=0", "train.batch_size=16", "train.eval_batches=1",
            "train.warmup_steps=0", "train.schedule=constant", "train.threads=1", "train.precision=fp32"]
    runs = {}
    for nproc in (1, 2):
        runs[nproc] = tmp_path / f"prior{nproc}"
        done = _run(["train-prior", str(vq), "--out", str(runs[nproc]), "--steps", "4", *tiny], nproc)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = (load_file(runs[n] / "model.safetensors") for n in (1, 2))
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    half = tmp_path / "half"
    assert _run(["train-prior", str(vq), "--out", str(half), "--steps", "2", *tiny], 2).returncode == 0
    done = _run(["train-prior", "--resume", str(half), "--steps", "4", "--quiet", "--device", "cpu"], 2)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = load_file(half / "model.safetensors")
    for key in one:
        torch.testing.assert_close(resumed[key], one[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_a_wall_clock_budget_ends_every_rank_at_the_same_step(small_fmnist, tmp_path):
    out = tmp_path / "timed"
    done = _run(["train", "--data", str(small_fmnist), "--out", str(out), "--max-seconds", "4", "--quiet",
                 "--device", "cpu", *TINY, "train.schedule=cosine", "train.steps=0"], 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["train_seconds"] >= 4


# -- the codebook agrees on every rank after every step ------------------------------------------------------
def _codebook_worker(rank: int, world: int, port: int, data: str, out: str, overrides: list[str],
                     results) -> None:
    """One rank of a real training run (the process group set up as torchrun would), recording the codebook
    before and after every step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from vqvae.distributed import leave
    from vqvae.recipes import load_recipe
    from vqvae.train.loop import train_task
    from vqvae.train.tasks import ImageTask

    task = ImageTask(load_recipe("fashion_mnist", [*overrides, f"train.data={data}"]))
    seen, step = [], task.step

    def recording_step(batch):
        seen.append(task.model.quantizer.codebook.detach().clone())  # after k-means / the last optimiser step
        result = step(batch)
        # after this step's EMA update and restarts
        seen.append(task.model.quantizer.codebook.detach().clone())
        return result

    task.step = recording_step
    ok = False
    try:
        train_task(task, out, progress=False, device="cpu")
        ok = True
    finally:
        leave(ok)
    q = task.model.quantizer
    results[rank] = (torch.stack(seen), int(q.restarts), bool(q.initialized))


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", ["ema", "vq"])
def test_the_codebook_is_bitwise_identical_on_every_rank_after_every_step(small_fmnist, tmp_path, quantizer):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    overrides = [*[o for o in TINY if not o.startswith("model.restart_threshold")], "train.steps=8",
                 f"model.quantizer={quantizer}", "model.kmeans_init=true", "train.kmeans_batches=2",
                 # codes used < 4 times a step are restarted: some are, every step
                 "model.restart_threshold=4.0"]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_codebook_worker,
                 args=(2, port, str(small_fmnist), str(tmp_path / "run"), overrides, results),
                 nprocs=2, join=True)
        (seen0, restarts0, init0), (seen1, restarts1, init1) = results[0], results[1]
    assert seen0.shape[0] == 16 and torch.equal(seen0, seen1)  # before and after each of the 8 steps
    assert init0 and init1 and restarts0 == restarts1 > 0  # a k-means init and dead-code restarts happened
    assert not torch.equal(seen0[0], seen0[-1])


# -- a rank that fails ends the job --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rank_that_raises_ends_the_job(tmp_path):
    """Rank 1 alone meets an unreadable image in its half of the first batch: the job ends non-zero with that
    one-line error, rank 0 does not wait for it forever."""
    from PIL import Image

    from vqvae.data.loader import Batches

    rng = np.random.default_rng(0)
    for i in range(40):
        path = tmp_path / "data" / "c" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
    train = [i for i in range(40) if (i + 1) % 10]  # every 10th image is a test image
    first = Batches(len(train), 16, seed=0).next()
    bad = train[int(first[8])]  # the first image of rank 1's half (rank 0 reads 0..7)
    assert bad != 0  # the first file is read when the folder is listed (its size)
    (tmp_path / "data" / "c" / f"{bad:03d}.png").write_bytes(b"not an image")
    done = _run(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--steps", "3",
                 "--quiet", "--device", "cpu", *TINY, "model.image_size=16"], 2)
    assert done.returncode != 0
    assert f"cannot read image {tmp_path / 'data' / 'c'}/{bad:03d}.png" in done.stderr


@pytest.mark.slow
def test_a_rank_killed_with_sigkill_ends_the_job(small_fmnist, tmp_path):
    import signal
    import time

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "vqvae"]
    job = subprocess.Popen([*launcher, "train", "--data", str(small_fmnist), "--out", str(tmp_path / "r"),
                            "--max-seconds", "300", "--quiet", "--device", "cpu", *TINY, "train.steps=0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "r" / "metrics.csv").exists():  # training has begun on both ranks
            assert job.poll() is None and time.monotonic() < deadline, "the job did not start training"
            time.sleep(0.5)
        children = open(f"/proc/{job.pid}/task/{job.pid}/children").read().split()
        assert len(children) == 2  # torchrun's two workers
        os.kill(int(children[1]), signal.SIGKILL)
        killed = time.monotonic()
        job.wait(timeout=120)
        assert job.returncode != 0 and time.monotonic() - killed < 120
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
