"""The training loop and Runner on a toy regression model (no maekit model involved)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from maekit.engine import (NonFiniteLossError, Runner, TrainingInterrupted, build_adamw, evaluate, load_checkpoint,
                           lr_at, param_groups_weight_decay)

ITERS = 7  # 28 samples / batch 4: with accum_iter 2 the 7th micro-batch is a trailing one


def make_dataset(n=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def collate(items):
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]), 0


def make_loader(batch=4, n=28):
    ds = make_dataset(n)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    return DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate, drop_last=True)


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def mse_step(model, batch):
    x, y, _ = batch
    return F.mse_loss(model(x), y), x.shape[0]


def noisy_step(model, batch):
    # Draws from the global RNG like MAE masking does, so resume must restore RNG state.
    x, y, _ = batch
    keep = (torch.rand(x.shape[0], 1) > 0.25).float()
    return ((model(x) - y) ** 2 * keep).mean(), x.shape[0]


def make_runner(out, step_fn=noisy_step, *, model_seed=0, epochs=3, accum=2, batch=4, n=28, **kw):
    model = make_model(model_seed)
    opt = build_adamw(param_groups_weight_decay(model, 0.05), lr=1e-2, betas=(0.9, 0.95))
    kw.setdefault("save_every", 2)
    kw.setdefault("log_every", 1)
    return Runner(model=model, optimizer=opt, train_loader=make_loader(batch, n), step_fn=step_fn, epochs=epochs,
                  lr=1e-2, min_lr=1e-4, warmup_epochs=1, output_dir=out, accum_iter=accum,
                  config={"note": "toy", "path": out}, **kw)


def weights(runner):
    return [p.detach().clone() for p in runner.model_without_ddp.parameters()]


def read_log(out):
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


def test_lr_every_iteration_with_accum_and_lr_scale(tmp_path):
    model = make_model()
    w, b = [p for n, p in model.named_parameters() if n.endswith("weight")], [
        p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": w, "lr_scale": 0.5}, {"params": b}], lr=0.0)
    seen = []

    def step(m, batch):
        seen.append([g["lr"] for g in opt.param_groups])
        return mse_step(m, batch)

    Runner(model=model, optimizer=opt, train_loader=make_loader(), step_fn=step, epochs=3, lr=0.1, min_lr=0.01,
           warmup_epochs=1, accum_iter=2).fit()
    assert len(seen) == 3 * ITERS
    for k, lrs in enumerate(seen):
        epoch, i = divmod(k, ITERS)
        want = lr_at(epoch + (i - i % 2) / ITERS, base_lr=0.1, min_lr=0.01, epochs=3, warmup_epochs=1)
        assert lrs == pytest.approx([0.5 * want, want], abs=1e-15), (epoch, i)
    assert seen[0] == [0.0, 0.0]  # warmup starts at exactly 0
    assert seen[ITERS + 1] == seen[ITERS]  # set only at window starts


def test_trailing_micro_batch_grads_are_discarded(tmp_path):
    runner = make_runner(None, mse_step, epochs=1)
    runner.fit()
    # 7 micro-batches with accum 2: 3 optimizer steps, the 7th batch's gradient is dropped.
    state = runner.optimizer.state_dict()["state"]
    assert {int(s["step"]) for s in state.values()} == {3}
    assert all(p.grad is None for p in runner.model_without_ddp.parameters())


def test_accum_equals_bigger_batch(tmp_path):
    # 24 samples: 6 micro-batches of 4 in 3 windows vs 3 batches of 8; same data, same LR per step.
    a = make_runner(None, mse_step, accum=2, batch=4, n=24)
    b = make_runner(None, mse_step, accum=1, batch=8, n=24)
    a.fit()
    b.fit()
    for x, y in zip(weights(a), weights(b)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


class Crash(Exception):
    pass


def crash_at(call: int, step_fn):
    calls = [0]

    def step(model, batch):
        calls[0] += 1
        if calls[0] == call:
            raise Crash
        return step_fn(model, batch)

    return step


def test_straight_run_equals_crash_and_resume(tmp_path):
    a = make_runner(tmp_path / "a")
    a.fit()
    with pytest.raises(Crash):
        make_runner(tmp_path / "b", crash_at(2 * ITERS + 3, noisy_step)).fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint-last.pth")["epoch"] == 1
    b = make_runner(tmp_path / "b", model_seed=123, resume="auto")
    b.fit()
    assert b.start_epoch == 2
    for x, y in zip(weights(a), weights(b)):
        assert torch.equal(x, y)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["checkpoint-0.pth", "checkpoint-2.pth", "checkpoint-last.pth", "config.yaml", "log.txt"]
    log = read_log(tmp_path / "a")
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert {"train_loss", "train_lr", "train_images_per_sec", "skipped_files", "n_parameters"} <= set(log[0])
    assert read_log(tmp_path / "b")[-1]["train_loss"] == log[-1]["train_loss"]
    ckpt = torch.load(tmp_path / "a" / "checkpoint-last.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["args"]["path"] == str(tmp_path / "a") and len(ckpt["rng"]) == 1


@pytest.mark.parametrize("signal_at,next_step", [(3, 3), (4, 3), (5, 6)])
def test_sigterm_mid_epoch_saves_and_resume_continues(tmp_path, signal_at, next_step):
    # accum_iter 3, 7 batches: windows [0 1 2] [3 4 5] [6]. The flag is read before the next batch is
    # fetched: batches 4 and 5 sit inside a window -> window dropped, redo from 3; batch 6 starts
    # one -> stop before fetching it.
    a = make_runner(tmp_path / "a", accum=3)
    a.fit()
    calls = [0]

    def step(model, batch):
        calls[0] += 1
        if calls[0] == ITERS + signal_at + 1:  # during epoch 1, batch `signal_at`
            os.kill(os.getpid(), signal.SIGTERM)
        return noisy_step(model, batch)

    with pytest.raises(TrainingInterrupted) as info:
        make_runner(tmp_path / "c", step, accum=3).fit()
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    ckpt = load_checkpoint(tmp_path / "c" / "checkpoint-last.pth")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (0, next_step)
    c = make_runner(tmp_path / "c", accum=3, resume="auto")
    c.fit()
    assert (c.start_epoch, c.start_step) == (1, next_step)
    for x, y in zip(weights(a), weights(c)):
        assert torch.equal(x, y)
    log_a, log_c = read_log(tmp_path / "a"), read_log(tmp_path / "c")
    assert [r["epoch"] for r in log_c] == [0, 1, 2]
    assert [r["train_loss"] for r in log_c] == [r["train_loss"] for r in log_a]


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    states = []

    def record(model):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"acc1": 1.0}

    def step(model, batch):
        loss, n = mse_step(model, batch)
        return (loss * math.nan if step.calls == ITERS + 3 else loss), n

    def counting(model, batch):
        step.calls += 1
        return step(model, batch)

    step.calls = 0
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2"):
        make_runner(tmp_path, counting, eval_fn=record).fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert ckpt["epoch"] == 0 and len(states) == 1
    for k, v in states[0].items():
        assert torch.equal(ckpt["model"][k], v)
    assert len(read_log(tmp_path)) == 1


def test_eval_best_checkpoint_logs_and_tensorboard(tmp_path):
    scores = iter([10.0, 30.0, 20.0])
    runner = make_runner(tmp_path / "out", mse_step, log_dir=tmp_path / "tb", extra_state={"classes": ["a", "b"]},
                         eval_fn=lambda m: {"acc1": next(scores), "acc5": 99.0, "loss": 0.5})
    last = runner.fit()
    assert last["test_acc1"] == 20.0 and runner.best_value == 30.0
    best = load_checkpoint(tmp_path / "out" / "checkpoint-best.pth")
    assert best["epoch"] == 1 and best["extra"] == {"classes": ["a", "b"]}
    assert best["best"] == {"name": "test_acc1", "value": 30.0}
    log = read_log(tmp_path / "out")
    assert [r["test_acc1"] for r in log] == [10.0, 30.0, 20.0] and log[0]["test_acc5"] == 99.0
    assert (tmp_path / "out" / "config.yaml").read_text().startswith("note: toy")
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_empty_batches_and_skipped_files_are_counted(tmp_path):
    x, y = torch.randn(4, 4), torch.randn(4, 1)
    loader = [(x, y, 1), (x[:0], y[:0], 4), (x, y, 0), (x[:2], y[:2], 2)]
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    runner = Runner(model=model, optimizer=opt, train_loader=loader, step_fn=mse_step, epochs=1, lr=0.1,
                    output_dir=tmp_path)
    runner.fit()
    (rec,) = read_log(tmp_path)
    assert rec["skipped_files"] == 7
    assert rec["train_images_per_sec"] > 0 and rec["train_seconds"] > 0


def test_official_checkpoint_resumes(tmp_path):
    model = make_model(5)
    opt = build_adamw(param_groups_weight_decay(model, 0.05), lr=1e-2, betas=(0.9, 0.95))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
                "args": argparse.Namespace(lr=1e-2, model="toy")}, tmp_path / "checkpoint-1.pth")
    runner = make_runner(tmp_path, mse_step, resume=tmp_path / "checkpoint-1.pth")
    runner.fit()
    assert runner.start_epoch == 2
    assert [r["epoch"] for r in read_log(tmp_path)] == [2]


def test_evaluate_top1_top5_on_hand_made_logits():
    logits = torch.full((4, 6), -10.0)
    logits[0, 2] = 5  # sample 0: top-1 = 2 (correct)
    logits[1, 0] = 5  # sample 1: top-1 = 0 (wrong, label 1 is 2nd)
    logits[1, 1] = 4
    logits[2, 3] = 5  # sample 2: correct
    logits[3, :5] = torch.tensor([5.0, 4, 3, 2, 1])  # sample 3: label 5 is ranked 6th
    targets = torch.tensor([2, 1, 3, 5])
    loader = [(logits[:2], targets[:2], 0), (logits[:0], targets[:0], 3), (logits[2:], targets[2:], 1)]
    out = evaluate(nn.Identity(), loader, device="cpu")
    assert out["acc1"] == pytest.approx(50.0) and out["acc5"] == pytest.approx(75.0) and out["n"] == 4
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_plain_progress_lines_when_stdout_is_not_a_tty(caplog):
    caplog.set_level(logging.INFO, logger="maekit.engine")
    make_runner(None, mse_step, epochs=1, accum=1, log_every=3).fit()
    msgs = [r.getMessage() for r in caplog.records]
    assert "actual lr: 1.00e-02" in msgs and "effective batch size: 4" in msgs
    steps = [m.split("]  [")[1].split("]")[0] for m in msgs if m.startswith("Epoch: [0]  [")]
    assert steps == ["0/7", "3/7", "6/7"]
    assert any(m.startswith("Epoch: [0] Total time:") for m in msgs)
