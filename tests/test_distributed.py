"""Under torch.distributed the EMA statistics are all-reduced: two ranks that each see half of a
batch end with exactly the codebook one process gets from the whole batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqvae import VectorQuantizer, VectorQuantizerEMA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, batches, init, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        ema = VectorQuantizerEMA(4, 8, decay=0.9)
        ema.load_state_dict(init)
        torch.manual_seed(0)  # same initial codebook on every rank, as DDP's start-up broadcast ensures
        vq = VectorQuantizer(4, 8, restart_threshold=2.0)
        torch.manual_seed(rank)  # different RNG per rank: restarted codes must still agree via broadcast
        local = VectorQuantizerEMA(4, 8, decay=0.9).eval()
        for x in batches:
            half = x.chunk(world)[rank]
            local.load_state_dict(ema.state_dict())
            out = ema(half)
            # perplexity describes this replica's batch, not the all-reduced counts
            torch.testing.assert_close(out.perplexity, local(half).perplexity)
            vq(half)
        results[rank] = (ema.codebook.clone(), vq.codebook.detach().clone())
    finally:
        dist.destroy_process_group()


def test_ema_statistics_are_all_reduced_across_ranks():
    torch.manual_seed(0)
    batches = [torch.randn(20, 4) + i for i in range(3)]
    single = VectorQuantizerEMA(4, 8, decay=0.9)
    init = {k: v.clone() for k, v in single.state_dict().items()}
    for x in batches:
        single(x)
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), batches, init, results), nprocs=2, join=True)
        (ema0, vq0), (ema1, vq1) = results[0], results[1]
    torch.testing.assert_close(ema0, single.codebook, rtol=1e-5, atol=1e-6)
    assert torch.equal(ema0, ema1)
    assert torch.equal(vq0, vq1)  # restarted codes were broadcast from rank 0
