"""Checkpoint files: atomic writes, weights_only loads, official files, corrupt files, RNG state."""

from __future__ import annotations

import json
import argparse
import os
import random

import numpy as np
import pytest
import torch

from maekit.engine import (CheckpointError, capture_rng_state, find_latest_checkpoint, load_checkpoint,
                           restore_rng_state, save_checkpoint)
from maekit.engine.checkpoint import copy_checkpoint
from maekit.engine.distributed import first_slurm_host


def _state():
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "scaler": None,
            "args": {"lr": 0.1, "model": "toy"}, "rng": [capture_rng_state()]}


def test_save_is_atomic_and_weights_only_loadable(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    save_checkpoint(path, _state())
    save_checkpoint(path, _state())  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pth"]  # no temp file left
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 3 and set(ckpt["model"]) == {"weight", "bias"}
    copy_checkpoint(path, tmp_path / "checkpoint-3.pth")
    assert torch.load(tmp_path / "checkpoint-3.pth", weights_only=True)["epoch"] == 3


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    save_checkpoint(path, {"epoch": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"epoch": 2, "bad": Boom()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-last.pth"]


def test_official_checkpoint_with_namespace_args(tmp_path):
    path = tmp_path / "checkpoint-19.pth"
    state = _state()
    state["args"] = argparse.Namespace(model="mae_vit_base_patch16", blr=1.5e-4, input_size=224, resume="")
    state["scaler"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0}
    torch.save(state, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # plain weights_only refuses the Namespace
    ckpt = load_checkpoint(path)
    assert ckpt["args"] == {"model": "mae_vit_base_patch16", "blr": 1.5e-4, "input_size": 224, "resume": ""}


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "pickle_code", "not_dict"])
def test_bad_files_raise_clear_error(tmp_path, kind):
    good = tmp_path / "good.pth"
    save_checkpoint(good, _state())
    bad = tmp_path / f"{kind}.pth"
    data = good.read_bytes()
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        bad.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "pickle_code":
        torch.save({"model": {}, "obj": __import__("datetime").timedelta(days=1)}, bad)
    else:
        torch.save([1, 2, 3], bad)
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_find_latest_checkpoint(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    assert find_latest_checkpoint(tmp_path / "missing") is None
    save_checkpoint(tmp_path / "checkpoint.pth", {"epoch": 0})
    assert find_latest_checkpoint(tmp_path).name == "checkpoint.pth"
    for n in (2, 10, 9):
        save_checkpoint(tmp_path / f"checkpoint-{n}.pth", {"epoch": n})
    save_checkpoint(tmp_path / "checkpoint-best.pth", {"epoch": 2})
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-10.pth"
    save_checkpoint(tmp_path / "checkpoint-last.pth", {"epoch": 11})
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-last.pth"
    # a save cut short (full disk, kill) is passed over without loading, as --resume auto skips it:
    # the architecture of a classification run is read from the same file the Runner resumes
    last = tmp_path / "checkpoint-last.pth"
    last.write_bytes(last.read_bytes()[:200])
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-10.pth"


def test_rng_state_round_trip_through_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pth", {"rng": capture_rng_state()})
    want = (torch.rand(3), np.random.rand(2), np.random.randn(), random.random(), random.gauss(0, 1))
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(2), np.random.randn(), random.random(), random.gauss(0, 1))
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2:] == got[2:]


def test_first_slurm_host():
    assert first_slurm_host("gpu[003-005,9],cpu1") == "gpu003"
    assert first_slurm_host("node7") == "node7"
    assert first_slurm_host("a1,b2") == "a1"


def test_init_distributed_without_launcher(monkeypatch):
    from maekit.engine import init_distributed

    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.distributed, info.device.type) == (0, 1, False, "cpu")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task srun is a plain single process
    assert init_distributed(device="cpu").distributed is False
    assert os.environ.get("RANK") is None


def test_slurm_variables(monkeypatch):
    from maekit.engine import distributed

    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[12-13]"}
    monkeypatch.setattr(os, "environ", env)
    assert distributed._launcher_env() == (5, 8, 1)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == (
        "gpu12", "29500", "5", "8", "1")
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "SLURM_PROCID": "9", "SLURM_NTASKS": "16"}
    monkeypatch.setattr(os, "environ", env)
    assert distributed._launcher_env() == (2, 4, 0)  # torchrun wins over SLURM


def test_seed_everything_is_rank_dependent():
    from maekit.engine import seed_everything

    assert seed_everything(3, rank=2) == 5
    a = (torch.rand(1), np.random.rand(), random.random())
    seed_everything(5)
    assert (torch.rand(1), np.random.rand(), random.random()) == a


def test_json_log_drop_from_epoch(tmp_path):
    from maekit.engine.logs import JsonLogWriter

    log = JsonLogWriter(tmp_path, enabled=True)
    for e in range(3):
        log.write({"epoch": e, "train_loss": 1.0 / (e + 1)})
    log.drop_from_epoch(2)  # the epoch-2 line was written but its checkpoint was not
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1]
    log.drop_from_epoch(5)
    assert (tmp_path / "log.txt").read_text().splitlines() == lines
