"""Two-process gloo DDP on CPU: equals one process with twice the accumulation; distributed eval."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from maekit.engine import Runner, build_adamw, evaluate, param_groups_weight_decay

N, BATCH, WORLD = 32, 4, 2


def dataset():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, generator=g)
    return TensorDataset(x, x @ torch.randn(4, 1, generator=g))


def eval_dataset():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(5, 6, generator=g), torch.tensor([0, 1, 2, 3, 4]))


def collate(items):
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]), 1


def step(model, batch):
    x, y, _ = batch
    return F.mse_loss(model(x), y), x.shape[0]


def runner(loader, accum, out=None, dist=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = build_adamw(param_groups_weight_decay(model, 0.05), lr=0.05, betas=(0.9, 0.95))
    return Runner(model=model, optimizer=opt, train_loader=loader, step_fn=step, epochs=2, lr=0.05,
                  warmup_epochs=1, accum_iter=accum, clip_grad=0.5, output_dir=out, dist=dist, device="cpu")


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from maekit.engine import all_reduce_sum, cleanup, init_distributed, seed_everything

    info = init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.distributed) == (rank, WORLD, True)
    ds = dataset()
    sampler = DistributedSampler(ds, num_replicas=WORLD, rank=rank, shuffle=False)
    r = runner(DataLoader(ds, batch_size=BATCH, sampler=sampler, collate_fn=collate, drop_last=True), accum=2,
               out=os.path.join(out, "ddp"), dist=info)
    seed_everything(0, rank)  # after the model init (same weights), before training: per-rank streams
    reductions = []

    def counting_hook(state, bucket):
        reductions.append(1)
        return allreduce_hook(state, bucket)

    r.model.register_comm_hook(None, counting_hook)
    log = r.fit()
    if rank == 0:
        torch.save({"params": [p.detach() for p in r.model_without_ddp.parameters()], "log": log,
                    "reductions": len(reductions)}, os.path.join(out, "ddp_result.pt"))

    # An all-bad batch on rank 1 only: the last micro-step of a window, then the first of the next.
    x, y, _ = collate([ds[i] for i in range(rank * BATCH, (rank + 1) * BATCH)])  # different data per rank
    loader = [(x, y, 0)] * 4
    if rank == 1:
        loader[1], loader[2] = (x[:0], y[:0], 4), (x[:0], y[:0], 4)
    r2 = runner(loader, accum=2, dist=info)
    log2 = r2.fit()
    flat = torch.cat([p.detach().flatten() for p in r2.model_without_ddp.parameters()])
    same = all_reduce_sum((flat - flat.mean()).abs().sum().reshape(1) * (1 if rank == 0 else -1))
    assert log2["skipped_files"] == 8

    ev = eval_dataset()
    ev_loader = DataLoader(ev, batch_size=2, sampler=DistributedSampler(ev, WORLD, rank, shuffle=False),
                           collate_fn=lambda items: (*collate(items)[:2], 0))
    stats = evaluate(nn.Identity(), ev_loader, device="cpu")
    if rank == 0:
        torch.save({"eval": stats, "same": same.item()}, os.path.join(out, "ddp_extra.pt"))
    cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_equals_single_process_accumulation(tmp_path):
    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.time() + 300  # generous: spawning two torch processes on a busy 2-core machine
    try:
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "DDP workers hung"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    ddp = torch.load(tmp_path / "ddp_result.pt", weights_only=True)
    # Single process: rank 0's two micro-batches then rank 1's, accumulated over 4 micro-steps.
    per_rank = [list(range(r, N, WORLD)) for r in range(WORLD)]
    order = []
    for w in range(N // WORLD // BATCH // 2):
        for r in range(WORLD):
            order += [per_rank[r][(2 * w + m) * BATCH:(2 * w + m + 1) * BATCH] for m in range(2)]
    single = runner(DataLoader(dataset(), batch_sampler=order, collate_fn=collate), accum=4)
    log = single.fit()
    for a, b in zip(ddp["params"], single.model_without_ddp.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
    assert ddp["log"]["train_loss"] == pytest.approx(log["train_loss"], rel=1e-5)
    assert ddp["log"]["skipped_files"] == log["skipped_files"] == N // BATCH
    # no_sync: one gradient all-reduce per window (2 windows x 2 epochs), not one per micro-batch.
    assert ddp["reductions"] == 4

    ckpt = torch.load(tmp_path / "ddp" / "checkpoint-last.pth", weights_only=True)
    assert len(ckpt["rng"]) == WORLD and not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])

    extra = torch.load(tmp_path / "ddp_extra.pt", weights_only=True)
    assert extra["same"] == pytest.approx(0.0, abs=1e-6)  # both ranks ended with the same weights
    ev = eval_dataset()
    want = evaluate(nn.Identity(), [(ev.tensors[0], ev.tensors[1], 0)], device="cpu")
    assert extra["eval"]["n"] == 5  # the padded duplicate on rank 1 is not counted
    for k in ("acc1", "acc5", "loss"):
        assert extra["eval"][k] == pytest.approx(want[k], rel=1e-6)
