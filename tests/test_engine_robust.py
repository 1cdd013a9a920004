"""Engine robustness on a toy model: dying workers after a group signal, stop read before each
fetch (exact resume with augmentation drawn in the main process), non-finite weights, the run lock,
and the error boundary's classification."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from conftest import PY, python_env, loop_tracebacks
from maekit.engine import Runner, TrainingInterrupted, load_checkpoint
from maekit.engine.lock import LOCK_NAME, RunLock
from maekit.engine.nonfinite import NonFiniteParametersError
from maekit.errors import RUNTIME, USAGE, CheckpointError, RunFolderError, TrainingDiverged, describe, handle_cli_error
from test_engine_loop import collate, make_model


class Augmented(Dataset):
    """Draws from the global torch RNG per item, like torchvision's random crops and flips."""

    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] * (1 + 0.1 * torch.rand(1)), self.y[i]


def augmented_runner(out, step_fn, *, epochs=3, resume=None, optimizer=None, lr=1e-2, **kw):
    ds = Augmented()
    loader = DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=0),
                        collate_fn=collate, drop_last=True)
    model = make_model(0)
    opt = optimizer(model) if optimizer else torch.optim.AdamW(model.parameters(), lr=lr)
    return Runner(model=model, optimizer=opt, train_loader=loader, step_fn=step_fn, epochs=epochs, lr=lr,
                  warmup_epochs=1, output_dir=out, resume=resume, log_every=100, save_every=1, **kw)


def masked_step(model, batch):
    x, y, _ = batch
    keep = (torch.rand(x.shape[0], 1) > 0.25).float()  # model-side randomness (MAE masking)
    return ((model(x) - y) ** 2 * keep).mean(), x.shape[0]


@pytest.mark.parametrize("accum", [1, 2])
def test_sigterm_at_random_steps_resume_is_bitwise_exact(tmp_path, accum):
    straight = augmented_runner(tmp_path / "a", masked_step, accum_iter=accum)
    straight.fit()
    stops = sorted(random.Random(accum).sample(range(1, 18), 3))  # 6 batches x 3 epochs
    calls, out = [0], tmp_path / "b"

    def step(model, batch):
        calls[0] += 1
        if calls[0] in stops:
            os.kill(os.getpid(), signal.SIGTERM)  # seen before the next batch is fetched
        return masked_step(model, batch)

    resume, interrupted = None, 0
    while True:
        try:
            augmented_runner(out, step, accum_iter=accum, resume=resume).fit()
            break
        except TrainingInterrupted:
            interrupted += 1
            resume = "auto"
    assert interrupted >= 2
    final = load_checkpoint(out / "checkpoint-last.pth")["model"]
    for k, v in straight.model_without_ddp.state_dict().items():
        assert torch.equal(v, final[k]), k


WORKER_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time, torch
    from torch.utils.data import DataLoader, Dataset
    from maekit.engine import Runner, TrainingInterrupted

    class Slow(Dataset):
        def __len__(self): return 400
        def __getitem__(self, i):
            time.sleep(0.02)
            return torch.randn(4), torch.randn(1)

    def die_on_sigterm(_):  # as spawned workers do: the default action, not the parent's handler
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def collate(items):
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]), 0

    def step(model, batch):
        print("step", flush=True)
        x, y, _ = batch
        return ((model(x) - y) ** 2).mean(), len(x)

    loader = DataLoader(Slow(), batch_size=4, num_workers=2, collate_fn=collate, worker_init_fn=die_on_sigterm,
                        persistent_workers=True)
    model = torch.nn.Linear(4, 1)
    runner = Runner(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), train_loader=loader,
                    step_fn=step, epochs=2, lr=0.01, output_dir=sys.argv[1], log_every=1000)
    try:
        runner.fit()
    except TrainingInterrupted as e:
        sys.exit(e.exit_code)
""")


def test_group_sigterm_tolerates_workers_that_die(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(WORKER_SCRIPT)
    proc = subprocess.Popen([PY, str(script), str(tmp_path / "out")], env=python_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    for n, line in enumerate(proc.stdout):
        if n == 5:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert not loop_tracebacks(err), err[-3000:]
    ckpt = load_checkpoint(tmp_path / "out" / "checkpoint-last.pth")
    assert ckpt["epoch"] == -1 and ckpt["step_in_epoch"] >= 5


def test_nonfinite_weights_after_last_step_keep_previous_checkpoint(tmp_path):
    # Plain SGD: a loss scaled by 1e30 on the last batch of epoch 1 leaves finite loss but weights
    # beyond 1e19; the epoch must not be saved.
    calls = [0]

    def step(model, batch):
        calls[0] += 1
        loss, n = masked_step(model, batch)
        return (loss * 1e30 if calls[0] == 12 else loss), n

    runner = augmented_runner(tmp_path, step, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=1e-2))
    with pytest.raises(NonFiniteParametersError, match=r"epoch 1, step 5") as info:
        runner.fit()
    message = str(info.value)
    assert "lower the learning rate" in message and "--clip_grad" in message and "--resume auto" in message
    ckpt = load_checkpoint(tmp_path / "checkpoint-last.pth")
    assert ckpt["epoch"] == 0 and not (tmp_path / "checkpoint-1.pth").exists()
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values())
    assert not (tmp_path / LOCK_NAME).exists()  # released on failure


def test_a_loss_rising_by_orders_of_magnitude_keeps_the_last_good_checkpoint(tmp_path, caplog):
    # epoch 0 healthy, epoch 1 a loss 1000x higher (weights already going), epoch 2 NaN: the advice
    # names checkpoint-good.pth, which holds epoch 0, not the diverging epoch 1 of checkpoint-last.pth.
    calls = [0]

    def step(model, batch):
        calls[0] += 1
        loss, n = masked_step(model, batch)
        factor = 1.0 if calls[0] <= 6 else (1e3 if calls[0] <= 12 else math.nan)
        return loss * factor, n

    runner = augmented_runner(tmp_path, step)
    with pytest.raises(TrainingDiverged) as info:
        runner.fit()
    good = tmp_path / "checkpoint-good.pth"
    assert load_checkpoint(good)["epoch"] == 0 and load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 1
    assert f"resume from {good}, the last checkpoint whose loss was finite and not rising" in str(info.value)
    assert "kept the checkpoint of epoch 0 as checkpoint-good.pth" in caplog.text
    from maekit.engine.nonfinite import healthy_epochs

    assert healthy_epochs([{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 9.0},
                           {"epoch": 2, "train_loss": 11.0}, {"epoch": 3, "train_loss": math.nan},
                           {"epoch": 4, "train_loss": 0.5}]) == [0, 1, 4]


def test_overwrite_removes_the_earlier_runs_good_checkpoint(tmp_path):
    # A new run with --overwrite must not advise resuming from the earlier run's checkpoint-good.pth.
    for name in ("checkpoint-last.pth", "checkpoint-good.pth", "checkpoint-0.pth"):
        torch.save({"model": {}}, tmp_path / name)
    with pytest.raises(TrainingDiverged) as info:
        augmented_runner(tmp_path, lambda model, batch: (masked_step(model, batch)[0] * math.nan, 4),
                         overwrite=True).fit()
    assert not list(tmp_path.glob("checkpoint*.pth"))
    assert "checkpoint-good.pth" not in str(info.value) and "no checkpoint was written" in str(info.value)


def test_a_new_run_does_not_append_to_an_old_log_without_checkpoints(tmp_path):
    (tmp_path / "log.txt").write_text('{"epoch": 0, "train_loss": 99.0}\n{"epoch": 1, "train_loss": 98.0}\n')
    augmented_runner(tmp_path, masked_step, epochs=1).fit()
    log = [json.loads(x) for x in (tmp_path / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0] and log[0]["train_loss"] != 99.0


class InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: finite loss, non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, math.inf)


def test_clipped_nonfinite_gradients_are_reported(tmp_path):
    calls = [0]

    def step(model, batch):
        calls[0] += 1
        loss, n = masked_step(model, batch)
        if calls[0] == 8:  # epoch 1, step 1
            loss = loss + InfGrad.apply(model[0].weight).sum() * 1e-30
        return loss, n

    runner = augmented_runner(tmp_path, step, clip_grad=1.0)
    with pytest.raises(NonFiniteParametersError, match=r"non-finite gradients \(norm inf\) after the optimizer "
                                                       r"step at epoch 1, step 1"):
        runner.fit()
    assert load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 0


def test_lock_live_stale_and_foreign(tmp_path):
    lock_path = tmp_path / LOCK_NAME
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunFolderError, match=f"PID {sleeper.pid} on this host"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path) as lock:  # the sleeper is dead: taken over
        assert lock.held and json.loads(lock_path.read_text())["pid"] == os.getpid()
    assert not lock_path.exists()
    lock_path.write_text(json.dumps({"pid": 1234, "host": "elsewhere"}))
    with pytest.raises(RunFolderError, match="host elsewhere"):
        RunLock(tmp_path).acquire()


def test_error_classification():
    assert describe(OSError(errno.ENOSPC, "No space left on device", "/tmp/x"))[0] == RUNTIME
    assert "no space left" in describe(OSError(errno.ENOSPC, "No space", "/tmp/x"))[1]
    assert describe(FileNotFoundError(2, "nope", "a.pth"))[0] == USAGE
    assert describe(CheckpointError("bad"))[0] == USAGE
    assert describe(ConnectionRefusedError(111, "refused"))[0] == RUNTIME
    assert describe(ValueError("bad option"))== (USAGE, "bad option")
    assert describe(KeyError("bug")) is None and describe(ZeroDivisionError()) is None
    assert handle_cli_error("x", ZeroDivisionError()) is None  # a bug keeps its traceback


def test_checkpoint_write_failure_names_free_space(tmp_path, monkeypatch):
    from maekit.engine import checkpoint
    from maekit.errors import DiskFullError

    def full(path, write):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 4000")

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    free = type("U", (), {"free": 10, "total": 1 << 30, "used": 0})
    monkeypatch.setattr("maekit.errors.shutil.disk_usage", lambda p: free)
    with pytest.raises(DiskFullError, match=r"no space left on device .* has 10 B free of 1.0 GiB"):
        checkpoint.save_checkpoint(tmp_path / "c.pth", {"w": torch.zeros(1000)})


def test_stop_on_last_batch_saves_before_eval_and_resume_evaluates(tmp_path):
    evals = []

    def eval_fn(model):
        evals.append(1)
        return {"acc1": float(len(evals))}

    straight = augmented_runner(tmp_path / "a", masked_step, epochs=2, eval_fn=eval_fn)
    straight.fit()
    evals.clear()
    calls = [0]

    def step(model, batch):
        calls[0] += 1
        if calls[0] == 12:  # the last batch of epoch 1
            os.kill(os.getpid(), signal.SIGTERM)
        return masked_step(model, batch)

    with pytest.raises(TrainingInterrupted):
        augmented_runner(tmp_path / "b", step, epochs=2, eval_fn=eval_fn).fit()
    assert len(evals) == 1  # epoch 0 only: epoch 1's evaluation was left to the resumed run
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint-last.pth")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (0, 6)
    resumed = augmented_runner(tmp_path / "b", masked_step, epochs=2, eval_fn=eval_fn, resume="auto")
    resumed.fit()
    assert len(evals) == 2
    log = [json.loads(x) for x in (tmp_path / "b" / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1] and "test_acc1" in log[1]
    for k, v in straight.model_without_ddp.state_dict().items():
        assert torch.equal(v, resumed.model_without_ddp.state_dict()[k]), k


def test_stop_during_the_last_epochs_save_completes_and_a_requeue_exits_clean(tmp_path, caplog):
    def eval_fn(model):
        if load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 0:  # the last epoch's evaluation
            os.kill(os.getpid(), signal.SIGTERM)
        return {"acc1": 1.0}

    augmented_runner(tmp_path, masked_step, epochs=1, eval_fn=lambda m: {"acc1": 0.0}).fit()
    log = augmented_runner(tmp_path, masked_step, epochs=2, eval_fn=eval_fn, resume="auto").fit()
    assert log["epoch"] == 1 and load_checkpoint(tmp_path / "checkpoint-last.pth")["epoch"] == 1
    assert "SIGTERM arrived after the last epoch was saved: the run is complete" in caplog.text
    assert augmented_runner(tmp_path, masked_step, epochs=2, resume="auto").fit() == {}  # the requeue
    assert "is complete (checkpoint-last.pth finished epoch 1 of --epochs 2): nothing to do" in caplog.text


def test_epoch_where_every_image_failed_to_decode_is_an_error(tmp_path):
    from maekit.errors import DataError

    x, y = torch.zeros(0, 4), torch.zeros(0, 1)
    loader = [(x, y, 4)] * 6  # what collate_skip_none gives for batches of undecodable files
    model = make_model(0)
    runner = Runner(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_loader=loader,
                    step_fn=masked_step, epochs=2, lr=0.1, output_dir=tmp_path)
    with pytest.raises(DataError, match=r"every image of epoch 0 failed to decode \(24 files skipped"):
        runner.fit()
    assert not list(tmp_path.glob("checkpoint*"))


@pytest.mark.parametrize("left", ["persistent", "half_read_epoch", "mid_epoch_replay"])
def test_exit_with_live_loader_workers_does_not_hang(tmp_path, left):
    """maekit's workers ignore SIGTERM (a group signal must reach the main process only), so
    multiprocessing's exit handler (SIGTERM, then join) would wait for ever on a loader still alive
    at exit: a notebook's loader, an epoch left half-read, the replay loader of a mid-epoch resume.
    The process must exit at once, cleanly."""
    script = textwrap.dedent(f"""
        import torch
        from torch.utils.data import TensorDataset
        from maekit.data import build_loader
        ds = TensorDataset(torch.randn(64, 3, 8, 8), torch.zeros(64, dtype=torch.long))
        loader = build_loader(ds, batch_size=8, train=True, num_workers=2)
        left = {left!r}
        if left == "mid_epoch_replay":
            raw = loader.loader
            replay = raw.replay_class(raw.dataset, batch_sampler=list(raw.batch_sampler)[3:], num_workers=2,
                                      collate_fn=raw.collate_fn, worker_init_fn=raw.worker_init_fn)
            it = iter(replay)
        else:
            it = iter(loader)
        next(it)
        if left == "persistent":
            for _ in it:
                pass
        print("done", flush=True)
    """)
    res = subprocess.run([PY, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "done", res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr[-2000:]


def test_exit_kills_a_worker_that_outlived_its_iterator():
    """A worker still running at exit after its iterator is gone (PyTorch's terminate() is a SIGTERM,
    which maekit's workers ignore) is killed, so the exit neither hangs nor prints a traceback."""
    script = textwrap.dedent("""
        import torch
        from torch.utils.data import TensorDataset
        from maekit.data import build_loader
        import maekit.data.loader as L
        loader = build_loader(TensorDataset(torch.randn(64, 3, 8, 8), torch.zeros(64, dtype=torch.long)),
                              batch_size=8, train=True, num_workers=2)
        it = iter(loader.loader)
        next(it)
        L._LIVE_ITERATORS.discard(it)  # as if collected without its workers stopping
        print("done", flush=True)
    """)
    res = subprocess.run([PY, "-c", script], env=python_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "done", res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr[-2000:]


def test_thread_policy(monkeypatch):
    from maekit.engine.distributed import SMALL_STEP_VALUES, apply_thread_policy, main_threads

    assert main_threads(cores=2, workers=2, step_values=None) == 1  # 2 cores, 2 loader workers
    assert main_threads(cores=16, workers=4, step_values=SMALL_STEP_VALUES) == 1  # small work: one thread
    assert main_threads(cores=16, workers=4, step_values=64 * 3 * 224 * 224) == 12
    assert main_threads(cores=16, workers=2, step_values=None, local_procs=4) == 2
    model, loader = torch.nn.Linear(2, 2), DataLoader(list(range(8)), batch_size=4)
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is left alone
        assert apply_thread_policy(model, loader, "cpu") is None and torch.get_num_threads() == before
        monkeypatch.setenv("MAEKIT_NUM_THREADS", "1")
        assert apply_thread_policy(model, loader, "cpu") == 1
        monkeypatch.delenv("MAEKIT_NUM_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS")
        model.img_size, model.in_chans = 16, 3
        assert apply_thread_policy(model, loader, "cpu") == 1  # 4 x 3 x 16 x 16 values a step
    finally:
        torch.set_num_threads(before)
