"""The quantizers after the paper under torch.distributed (2 gloo ranks): a ResidualVQ with EMA levels and
quantizer dropout, and a VectorQuantizerEMA with a cosine codebook per head, k-means init and restarts, each
trained on different per-rank batches. Both ranks hold the same codebooks and statistics, which are those of
one process on the whole batch: all-reduced sums for the moving averages, rank 0's draws for k-means and
restarts (compared rank to rank; a single process replays the moving averages from rank 0's state)."""

import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqvae import ResidualVQ, VectorQuantizerEMA

WORLD, STEPS, THRESHOLD = 2, 5, 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rvq():
    return ResidualVQ(4, 8, 3, decay=0.8, quantize_dropout=True, dropout_seed=1)


def _ema(restart_threshold=THRESHOLD):
    return VectorQuantizerEMA(4, 4, decay=0.8, heads=2, separate_codebook_per_head=True, cosine=True,
                              restart_threshold=restart_threshold, kmeans_init=True)


def _batches():
    """Per step a batch of 48 whose two heads' pieces turn round the circle in opposite senses (so codes
    die)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for step in range(STEPS):
        a = 0.6 * step
        x = torch.randn(48, 4, generator=g) * 0.4
        x += torch.tensor([2 * math.cos(a), 2 * math.sin(a), 2 * math.cos(-a), 2 * math.sin(-a)])
        out.append(x)
    return out


def _states(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _depth(indices):
    return int((indices >= 0).reshape(-1, indices.shape[-1])[0].sum())


def _worker(rank, world, port, batches, rvq_init, ema_init, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        rvq, ema = _rvq(), _ema()
        rvq.load_state_dict(rvq_init)
        ema.load_state_dict(ema_init)
        torch.manual_seed(rank)  # k-means and restarts draw differently on each rank: only a broadcast agrees
        snapshots = []
        kmeans = ema.initialize_from

        def recording(vectors):  # the state right after k-means, before the first moving-average step
            kmeans(vectors)
            snapshots.append(_states(ema))

        ema.initialize_from = recording
        depths = []
        for x in batches:
            half = x.chunk(world)[rank]
            depths.append(_depth(rvq(half).indices))
            ema(half)
            snapshots.append(_states(ema))
        results[rank] = dict(rvq=_states(rvq), depths=depths, ema=snapshots)
    finally:
        dist.destroy_process_group()


def test_quantizers_agree_across_ranks_and_with_one_process():
    torch.manual_seed(0)
    batches = _batches()
    single_rvq = _rvq()
    rvq_init, ema_init = _states(single_rvq), _states(_ema())
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(WORLD, _free_port(), batches, rvq_init, ema_init, results), nprocs=WORLD,
                 join=True)
        r0, r1 = dict(results[0]), dict(results[1])

    # ResidualVQ: the same depths on both ranks and in one process; the same statistics: the whole batch's
    depths = [_depth(single_rvq(x).indices) for x in batches]
    assert r0["depths"] == r1["depths"] == depths and len(set(depths)) > 1
    for key, value in single_rvq.state_dict().items():
        assert torch.equal(r0["rvq"][key], r1["rvq"][key]), key
        torch.testing.assert_close(r0["rvq"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert int(single_rvq.levels[-1].ema_cluster_size.counter) < STEPS  # dropout left the last level out

    # VectorQuantizerEMA: k-means, every step and every restart identical on both ranks
    assert len(r0["ema"]) == len(r1["ema"]) == STEPS + 1
    for s0, s1 in zip(r0["ema"], r1["ema"]):
        for key in s0:
            assert torch.equal(s0[key], s1[key]), key
    assert int(r0["ema"][0]["initialized"]) == 1
    assert int(r0["ema"][-1]["restarts"]) > 0
    # the moving averages of every step are one process's on the whole batch, from the same state (rank 0's
    # after k-means, or after the step before), on the rows that were not restarted
    single = _ema(restart_threshold=0.0)
    for step, x in enumerate(batches):
        before, after = r0["ema"][step], r0["ema"][step + 1]
        single.load_state_dict(before)
        single(x)
        live = single.ema_cluster_size.average >= THRESHOLD
        assert live.any()
        assert int(after["restarts"]) - int(before["restarts"]) == int((~live).sum())
        for key, got in (("embeddings", single.embeddings), ("ema_dw.hidden", single.ema_dw.hidden),
                         ("ema_cluster_size.hidden", single.ema_cluster_size.hidden)):
            torch.testing.assert_close(after[key][live], got[live], rtol=1e-5, atol=1e-6, msg=f"{key} {step}")
        assert int(after["ema_cluster_size.counter"]) == int(single.ema_cluster_size.counter)
    torch.testing.assert_close(r0["ema"][-1]["embeddings"].norm(dim=1), torch.ones(8))  # cosine codes


def _ddp_worker(rank: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from vqvae.distributed import Ranks

        torch.manual_seed(0)
        stack = ResidualVQ(4, 8, 3, ema=False, quantize_dropout=True, dropout_seed=2)
        net = Ranks(rank=rank, world=WORLD).wrap(stack)
        opt = torch.optim.Adam(stack.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(10 + rank)
        depths = []
        for _ in range(4):  # levels left out get no gradient: DDP was told to expect it
            out = net(torch.randn(16, 4, generator=g))
            depths.append(int((out.indices[0] >= 0).sum()))
            opt.zero_grad()
            (out.quantized.square().mean() + out.loss).backward()
            opt.step()
        results[rank] = (depths, [level.weight.detach().clone() for level in stack.levels])
    finally:
        dist.destroy_process_group()


def test_learned_levels_left_out_by_dropout_train_under_ddp():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), results), nprocs=WORLD, join=True)
        (depths, weights), (depths_1, weights_1) = results[0], results[1]
    assert depths == depths_1 and min(depths) < 3  # the same draws on both ranks, some step left levels out
    assert all(torch.equal(a, b) for a, b in zip(weights, weights_1))
