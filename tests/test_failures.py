"""The failure cases a long run meets (issue 15), through the CLI: real processes, real signals,
real files. Process and signal behaviour runs the CLI in a subprocess; messages run it in-process."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import PY, loop_tracebacks, python_env, run_cli

# A 1-block MAE at 16 px: a step is milliseconds, so a test is dominated by process start-up.
TINY_YAML = ("model: mae_vit_tiny_patch16\ninput_size: 16\npatch_size: 8\n"
             "model_args: {depth: 1, embed_dim: 48, num_heads: 3, decoder_depth: 1, decoder_embed_dim: 32, "
             "decoder_num_heads: 2}\n")
FAST = ["--num_workers", "0", "--amp", "none", "--device", "cpu", "--print_freq", "1"]


@pytest.fixture
def tiny(tmp_path) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    return cfg


def args(tiny: Path, data: Path, out: Path, *extra, epochs: int = 1) -> list[str]:
    return ["pretrain", "--config", str(tiny), "--data_path", str(data), "--output_dir", str(out),
            "--batch_size", "8", "--epochs", str(epochs), "--warmup_epochs", "1", "--blr", "1e-3", *FAST,
            *map(str, extra)]


def cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "maekit", *map(str, argv)], env=python_env(), capture_output=True, text=True,
                          timeout=600)


def epochs_logged(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines() if line.strip()]


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in weights(path).values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ NaN
def test_huge_lr_stops_without_writing_nonfinite_weights(digit_folders, tmp_path, tiny, capsys):
    out = tmp_path / "out"
    code = run_cli(*args(tiny, digit_folders / "unlabelled", out, "--blr", "1e6", "--warmup_epochs", "0", epochs=3))
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    assert "non-finite" in err.lower() or "is nan" in err.lower()
    assert "lower the learning rate" in err and "--clip_grad" in err
    for ckpt in out.glob("checkpoint*.pth"):  # whatever was written before the divergence is usable
        assert all_finite(ckpt), ckpt.name


# -------------------------------------------------------------------------------------- signals
def _start(argv: list[str]) -> subprocess.Popen:
    # Own process group, as under a shell job or SLURM step: the group is what gets signalled.
    return subprocess.Popen([PY, "-m", "maekit", *argv], env=python_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(proc: subprocess.Popen, needle: str, count: int = 1) -> list[str]:
    seen, lines = 0, []
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            seen += 1
            if seen == count:
                return lines
    raise AssertionError("run ended before " + needle + ":\n" + "".join(lines[-30:]))


def test_group_sigterm_with_two_workers_saves_and_exits_143(digit_folders, tmp_path, tiny):
    out = tmp_path / "out"
    # batch 2: 32 steps an epoch, so the signal sent at step 2 lands in epoch 0 also when this test
    # process is slow to read the line (parallel test workers; at batch 8 the epoch had ended once)
    argv = args(tiny, digit_folders / "unlabelled", out, "--num_workers", "2", "--batch_size", "2", epochs=2)
    proc = _start(argv)
    _wait_for(proc, "Epoch: [0]  [ 2/32]")
    os.killpg(proc.pid, signal.SIGTERM)  # main process and both DataLoader workers
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, rest[-3000:]
    assert "DataLoader worker" not in rest and not loop_tracebacks(rest), rest[-3000:]
    ckpt = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert ckpt["epoch"] == -1 and 0 < ckpt["step_in_epoch"] < 32
    assert not (out / ".maekit.lock").exists()
    assert run_cli(*argv, "--resume", "auto") == 0  # in-process: the signal was the other process's
    assert epochs_logged(out) == [0, 1]


def test_sigusr1_saves_and_exits(digit_folders, tmp_path, tiny):
    out = tmp_path / "out"
    proc = _start(args(tiny, digit_folders / "unlabelled", out, epochs=2))
    _wait_for(proc, "Epoch: [0]  [1/8]")
    proc.send_signal(signal.SIGUSR1)  # SLURM --signal=USR1@120: pre-emption is near
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, rest[-3000:]
    assert torch.load(out / "checkpoint-last.pth", weights_only=True)["step_in_epoch"] > 0


def interrupt_then_finish(argv: list[str], waits: list[int]) -> int:
    """Run ``argv`` with ``--resume auto`` after the first, SIGTERM after ``waits[i]`` progress lines
    of run i, then finish; returns how many runs were interrupted (a run may end before its signal)."""
    resume, interrupted = [], 0
    for k in waits:
        proc = _start(argv + resume)
        _wait_for(proc, "]  [", count=k)  # progress lines of this run
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=300)
        if proc.returncode == 0:  # the last steps were faster than the signal: nothing left to do
            return interrupted
        assert proc.returncode == 143, rest[-3000:]
        interrupted, resume = interrupted + 1, ["--resume", "auto"]
    assert run_cli(*argv, *resume) == 0  # in-process: no signal left to take
    return interrupted


@pytest.mark.parametrize("workers,seed,source", [("0", 15, "folder"), ("2", 7, "folder"), ("2", 4, "shards")])
def test_sigterm_at_random_steps_then_resume_is_bitwise_exact(digit_folders, tmp_path, tiny, workers, seed, source):
    # --augment reference: with 0 workers crops and flips are drawn in the main process, so no
    # batch may be fetched after the stop flag is seen; with 2 workers the per-sample seeds from
    # (seed, epoch, index) make the data independent of when the run stopped. Tar shards: the
    # skipped batches are read again, each sample seeded by (seed, epoch, shard, key).
    data = digit_folders / "unlabelled"
    if source == "shards":
        assert run_cli("shard", data, tmp_path / "shards", "--shard_size", "16") == 0
        data = tmp_path / "shards"
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = ["--augment", "reference", "--save_every", "0", "--num_workers", workers]
    assert run_cli(*args(tiny, data, straight, *extra, epochs=2)) == 0  # in-process: nothing to signal
    rng = random.Random(seed)
    assert interrupt_then_finish(args(tiny, data, split, *extra, epochs=2),
                                 [rng.randint(1, 5) for _ in range(2)]) >= 1
    a, b = weights(straight / "checkpoint-last.pth"), weights(split / "checkpoint-last.pth")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert epochs_logged(split) == [0, 1]


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_sigterm_then_resume_auto_completes_a_classifier_run(digit_folders, tmp_path, command):
    """Issue 21 item 6: a fine-tune / linear probe stopped by SIGTERM resumes from the CLI (it crashed with
    ``build_classifier() got multiple values for keyword argument 'num_classes'``), and a fine-tune
    checkpoint starts another fine-tune."""
    cfg = tmp_path / "vit.yaml"
    cfg.write_text("model: vit_tiny_patch16\ninput_size: 16\npatch_size: 8\n"
                   "model_args: {depth: 1, embed_dim: 48, num_heads: 3}\n")
    out = tmp_path / "out"
    argv = [command, "--config", str(cfg), "--data_path", str(digit_folders), "--output_dir", str(out),
            "--batch_size", "8", "--epochs", "2", "--warmup_epochs", "0", "--save_every", "0", *FAST]
    assert interrupt_then_finish(argv, [3]) == 1
    assert epochs_logged(out) == [0, 1]
    ckpt = torch.load(out / "checkpoint-last.pth", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["extra"]["model_args"]["num_classes"] == 3
    if command == "finetune":  # its checkpoint starts another fine-tune (the same crash)
        assert run_cli(*argv[:6], tmp_path / "again", *argv[7:], "--finetune", out / "checkpoint-last.pth") == 0


# ------------------------------------------------------------------------------ output folder
def test_two_runs_one_folder_then_stale_lock_is_taken_over(digit_folders, tmp_path, tiny, capsys):
    out = tmp_path / "out"
    argv = args(tiny, digit_folders / "unlabelled", out, epochs=100000)
    first = _start(argv)
    _wait_for(first, "Epoch: [0]  [0/8]")
    assert json.loads((out / ".maekit.lock").read_text())["pid"] == first.pid
    second = run_cli(*argv, "--resume", "auto")  # in-process: another process than the first all the same
    out2, err2 = capsys.readouterr()
    assert second == 2, err2[-2000:]
    assert f"in use by a running maekit process (PID {first.pid}" in err2
    assert "pretraining mae_vit" not in out2  # refused before the data and model were built
    first.kill()  # SIGKILL: no handler runs, the lock stays behind
    first.communicate()
    assert (out / ".maekit.lock").exists()
    third = run_cli(*args(tiny, digit_folders / "unlabelled", out, "--overwrite", epochs=1))
    out3, err3 = capsys.readouterr()
    assert third == 0, err3[-3000:]
    assert f"stale lock {out / '.maekit.lock'} of PID {first.pid}" in out3 + err3
    assert not (out / ".maekit.lock").exists() and epochs_logged(out) == [0]


def test_new_run_into_used_folder_refuses_then_overwrite(digit_folders, tmp_path, tiny, capsys):
    out = tmp_path / "out"
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out)) == 0
    before = (out / "checkpoint-last.pth").read_bytes()
    capsys.readouterr()
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out)) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--resume auto" in err and "--overwrite" in err
    assert (out / "checkpoint-last.pth").read_bytes() == before and epochs_logged(out) == [0]
    # checked when the task starts, before the data is looked at (a scan of ImageNet takes minutes)
    assert run_cli(*args(tiny, tmp_path / "no_such_data", out)) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out, "--overwrite", "--seed", "1")) == 0
    assert epochs_logged(out) == [0]
    assert (out / "checkpoint-last.pth").read_bytes() != before


def test_resume_auto_skips_truncated_checkpoint_and_removes_orphans(digit_folders, tmp_path, tiny, caplog):
    out = tmp_path / "out"
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out, "--save_every", "1", epochs=2)) == 0
    last = out / "checkpoint-last.pth"
    last.write_bytes(last.read_bytes()[:1000])  # a save cut short by a full disk, before atomic writes
    orphan = out / ".checkpoint-last.pth.k2j4h5g6.file.tmp"
    orphan.write_bytes(b"\0" * 4096)  # what a SIGKILL during torch.save leaves behind
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out, "--resume", "auto", "--save_every", "1",
                         epochs=3)) == 0
    text = caplog.text
    assert "skipping checkpoint-last.pth" in text and "removed .checkpoint-last.pth.k2j4h5g6.file.tmp" in text
    assert not orphan.exists()
    assert epochs_logged(out) == [0, 1, 2]
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_finetune_resume_auto_skips_a_truncated_last_checkpoint(digit_folders, tmp_path, capsys):
    """The architecture of a classifier run is read from the file --resume auto resumes: a cut-short
    checkpoint-last.pth is passed over there too (it failed reading the architecture before)."""
    cfg = tmp_path / "vit.yaml"
    cfg.write_text("model: vit_tiny_patch16\ninput_size: 16\npatch_size: 8\n"
                   "model_args: {depth: 1, embed_dim: 48, num_heads: 3}\n")
    out = tmp_path / "out"
    argv = ["finetune", "--config", cfg, "--data_path", digit_folders, "--output_dir", out, "--batch_size", "8",
            "--warmup_epochs", "0", "--save_every", "1", *FAST]
    assert run_cli(*argv, "--epochs", "2") == 0
    last = out / "checkpoint-last.pth"
    cut = last.read_bytes()[:1000]
    last.unlink()  # a hard link of checkpoint-1.pth: a new file, cut short
    last.write_bytes(cut)
    capsys.readouterr()
    assert run_cli(*argv, "--epochs", "3", "--resume", "auto") == 0
    said = "".join(capsys.readouterr())
    assert "skipping checkpoint-last.pth" in said and "skipping checkpoint-1.pth" not in said
    assert epochs_logged(out) == [0, 1, 2]


# ---------------------------------------------------------------------------- error boundary
def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_checkpoint_unknown_device_and_debug(digit_folders, tmp_path, tiny, capsys, monkeypatch):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file at all")
    data = digit_folders / "unlabelled"
    assert run_cli(*args(tiny, data, tmp_path / "o", "--resume", bad)) == 2
    assert "cannot read checkpoint" in _err(capsys)
    assert run_cli("eval", "--resume", bad, "--data_path", digit_folders, *FAST[:6]) == 2
    assert "bad.pth" in _err(capsys)
    assert run_cli(*args(tiny, data, tmp_path / "o2", "--device", "tpu")) == 2
    assert "--device 'tpu'" in _err(capsys)
    assert run_cli("convert", tmp_path / "missing.pth", tmp_path / "conv") == 2
    assert "missing.pth" in _err(capsys)
    monkeypatch.setenv("MAEKIT_DEBUG", "1")
    assert run_cli(*args(tiny, data, tmp_path / "o3", "--device", "tpu")) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "--device 'tpu'" in err


def test_network_failure_is_a_runtime_message(tmp_path, capsys, monkeypatch):
    import socket

    from PIL import Image

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MAEKIT_HOME", str(tmp_path / "cache"))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert run_cli("predict", "--model", f"http://127.0.0.1:{port}/w.pth", "--input", image) == 1
    assert "Connection refused" in _err(capsys)


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_names_folder_and_free_space(digit_folders, tmp_path, tiny):
    disk = tmp_path / "disk"
    argv = args(tiny, digit_folders / "unlabelled", disk / "out")
    if _mount_tmpfs(disk, "size=256k"):
        try:
            res = cli(*argv)
        finally:
            subprocess.run(["umount", str(disk)], check=False)
        assert res.returncode == 1, res.stderr[-3000:]
        assert "no space left on device" in res.stderr and f"{disk / 'out'}" in res.stderr
        assert " free of 256.0 KiB" in res.stderr
    elif sys.platform == "linux":  # not root: a file-size limit makes the checkpoint write fail
        cmd = " ".join([PY, "-m", "maekit", *argv])
        res = subprocess.run(["bash", "-c", f"ulimit -f 256; exec {cmd}"], env=python_env(), capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 1, res.stderr[-3000:]
        assert "file-size limit" in res.stderr
    else:
        pytest.skip("needs Linux (tmpfs mount as root, or ulimit -f)")
    assert "Traceback" not in res.stderr


def test_read_only_output_folder(digit_folders, tmp_path, tiny):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "ro,size=64k"):
        pytest.skip("a read-only folder needs a read-only mount (root): chmod does not stop root")
    try:
        res = cli(*args(tiny, digit_folders / "unlabelled", ro / "out"))
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "read-only" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- silent no-ops
@pytest.mark.parametrize("extra,needle", [
    (["--clip_grad", "-1"], "clip_grad"),
    (["--clip_grad", "0"], "clip_grad"),
    (["--accum_iter", "9"], "--accum_iter 9 is more than the 8 batches"),
    (["--epochs", "0"], "epochs"),
    (["--start_epoch", "3", "--epochs", "2"], "--start_epoch 3 is not before --epochs 2"),
])
def test_silent_no_ops_are_refused(digit_folders, tmp_path, tiny, capsys, extra, needle):
    assert run_cli(*args(tiny, digit_folders / "unlabelled", tmp_path / "o"), *extra) == 2
    assert needle in _err(capsys)
    assert not list((tmp_path / "o").glob("checkpoint*"))


def test_resume_of_finished_run_and_undecodable_data(digit_folders, tmp_path, tiny, capsys):
    out = tmp_path / "out"
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out)) == 0
    capsys.readouterr()
    # a requeued job of a finished run: done, exit 0 (a checkpoint named explicitly stays a mistake)
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out, "--resume", "auto")) == 0
    assert run_cli(*args(tiny, digit_folders / "unlabelled", out, "--resume", out / "checkpoint-last.pth")) == 2
    assert "nothing left to train; raise --epochs" in _err(capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(16):
        (broken / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n but nothing else")
    with pytest.warns(UserWarning):
        code = run_cli(*args(tiny, broken, tmp_path / "o2"))
    assert code != 0
    assert "decod" in _err(capsys)  # the engine's "every image ... failed to decode", or a monitor's earlier check


# -------------------------------------------------------------------------- model config
@pytest.mark.parametrize("key,value,needle", [
    ("depth", 1e9, "depth = 1000000000 is out of range; it must be between 1 and 1024"),
    ("img_size", -32, "img_size = -32 is out of range"),
    ("patch_size", 0, "patch_size = 0 is out of range"),
])
def test_model_config_out_of_range_is_refused_before_allocation(tmp_path, key, value, needle):
    from maekit.errors import ConfigError
    from maekit.models import create_model
    from maekit.models.base import MaekitModel

    folder = tmp_path / "model"
    create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_args"][key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    t0 = time.time()
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        MaekitModel.from_pretrained(folder)
    assert time.time() - t0 < 30  # refused before building 1e9 blocks


# ----------------------------------------------------------------- a network that never answers
@pytest.fixture
def silent_server():
    """A loopback port that accepts connections and never answers; yields its URL."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


_PUSH = ("import torch, maekit\nfrom maekit.hub import push_to_hub\n"
         "m = maekit.create_model('mae_vit_tiny_patch16', img_size=32, patch_size=8, depth=1, decoder_depth=1)\n"
         "try:\n    push_to_hub(m, 'me/x')\nexcept maekit.errors.RuntimeFailure as e:\n    print('FAILURE', e)\n")


@pytest.mark.parametrize("case", ["hf-hub", "hf-dataset", "push_to_hub", "python-push", "wandb", "wandb-no-key"])
def test_a_server_that_never_answers_fails_in_bounded_time(digit_folders, tmp_path, tiny, silent_server, case):
    image = next((digit_folders / "val" / "one").glob("*.png"))
    env = dict(python_env(), HF_ENDPOINT=silent_server, HF_HUB_DOWNLOAD_TIMEOUT="1", HF_HUB_ETAG_TIMEOUT="1",
               HF_HOME=str(tmp_path / "hf"), HF_TOKEN="hf_test", WANDB_BASE_URL=silent_server, WANDB_INIT_TIMEOUT="1",
               WANDB_MODE="online", HOME=str(tmp_path), WANDB_API_KEY="a" * 40)
    train = args(tiny, digit_folders / "unlabelled", tmp_path / "out")
    argv, code, needles = {
        "hf-hub": (["predict", "--model", "hf-hub:me/x", "--input", image], 1, ["hf-hub:me/x: cannot reach the Hub"]),
        "hf-dataset": (args(tiny, "hf:me/data", tmp_path / "out"), 1, ["hf:me/data: cannot reach the Hub"]),
        "push_to_hub": ([*train, "--push_to_hub", "--hub_model_id", "me/x"], 1,
                        ["pushing to me/x: cannot reach the Hub", "the run is saved in"]),
        "python-push": (None, 0, ["FAILURE pushing to me/x: cannot reach the Hub"]),
        "wandb": ([*train, "--report_to", "wandb"], 1, [f"no answer from {silent_server} within 1 s",
                                                        "WANDB_INIT_TIMEOUT"]),
        "wandb-no-key": ([*train, "--report_to", "wandb"], 2, ["--report_to wandb: No API key", "WANDB_API_KEY"]),
    }[case]
    if case == "wandb-no-key":
        del env["WANDB_API_KEY"]
    command = [PY, "-c", _PUSH] if argv is None else [PY, "-m", "maekit", *map(str, argv)]
    started = time.monotonic()
    res = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert res.returncode == code, res.stderr[-3000:]
    said = res.stdout + res.stderr
    for needle in needles:
        assert needle in said, said[-3000:]
    if case.startswith(("hf", "push", "python")):
        assert silent_server in said and "HF_HUB_DOWNLOAD_TIMEOUT" in said
    assert "Traceback" not in said
    assert took < 90  # bounded: 1 s waits, no retries of a silent host (it hung for minutes before)


# ------------------------------------------------------------------- full disk, kills during writes
def _limited(limit: int):
    def preexec():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize("dst", ["folder", "model.safetensors", "model.pth", "model.pdparams", "model.ckpt"])
def test_convert_past_a_file_size_limit_is_one_line_naming_the_folder(tmp_path, dst):
    from maekit.models import create_model

    src = tmp_path / "src"
    create_model("mae_vit_tiny_patch16", img_size=32, patch_size=8, depth=1, decoder_depth=1).save_pretrained(src)
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / dst
    res = subprocess.run([PY, "-m", "maekit", "convert", src, target, *(["--to", "maekit"] if dst == "folder" else [])],
                         env=python_env(), capture_output=True, text=True, timeout=300, preexec_fn=_limited(64 << 10))
    assert res.returncode == 1, res.stderr[-3000:]
    assert "file-size limit" in res.stderr and str(tmp_path / "out") in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no partial file, no temp left


def test_shard_past_a_file_size_limit_leaves_no_truncated_shard(digit_folders, tmp_path):
    dst = tmp_path / "shards"
    res = subprocess.run([PY, "-m", "maekit", "shard", digit_folders / "train", dst, "--shard_size", "50"],
                         env=python_env(), capture_output=True, text=True, timeout=300, preexec_fn=_limited(24 << 10))
    assert res.returncode == 1, res.stderr[-3000:]
    assert "file-size limit" in res.stderr and str(dst) in res.stderr and "Traceback" not in res.stderr
    assert not list(dst.glob("*.tar")) and not (dst / "shards.json").exists()


def test_shard_skips_and_names_corrupt_files(digit_folders, tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for p in list((digit_folders / "unlabelled").glob("*.png"))[:5]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert run_cli("shard", src, tmp_path / "shards") == 0
    captured = capsys.readouterr()
    assert "5 images in 1 shards" in captured.out
    assert "skipped 1 corrupt image file(s): " + str(src / "broken.png") in captured.err
    assert json.loads((tmp_path / "shards" / "shards.json").read_text())["shardlist"][0]["nsamples"] == 5


_KILL_MID_SWAP = """
import os, signal, sys
from maekit import fileio
fileio._exchange = lambda a, b: False  # the rename fallback, killed between its two renames
real = os.replace
def replace(a, b):
    real(a, b)
    if str(a) == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
fileio.atomic_write_dir(sys.argv[1], lambda tmp: (tmp / "config.json").write_text("new"))
"""


@pytest.mark.parametrize("exchange", [True, False])
def test_sigkill_while_replacing_a_folder_loses_nothing(tmp_path, exchange):
    from maekit.fileio import atomic_write_dir

    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "config.json").write_text("old")
    (dst / "notes.txt").write_text("mine")
    if exchange:  # the atomic swap: the old folder or the new one, and the user's other files kept
        atomic_write_dir(dst, lambda tmp: (tmp / "config.json").write_text("new"))
        assert (dst / "config.json").read_text() == "new" and (dst / "notes.txt").read_text() == "mine"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
        return
    res = subprocess.run([PY, "-c", _KILL_MID_SWAP, str(dst)], env=python_env(), capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    assert not dst.exists()  # killed in the moment the old folder was renamed aside
    atomic_write_dir(dst, lambda tmp: (tmp / "config.json").write_text("newer"))  # the next run repairs it
    assert (dst / "config.json").read_text() == "newer" and (dst / "notes.txt").read_text() == "mine"


def test_a_one_class_finetune_warns(digit_folders, tmp_path, capfd):
    data = tmp_path / "one"
    for split in ("train", "val"):
        (data / split / "zero").mkdir(parents=True)
        for p in list((digit_folders / split / "zero").glob("*.png"))[:8]:
            (data / split / "zero" / p.name).write_bytes(p.read_bytes())
    cfg = tmp_path / "vit.yaml"
    cfg.write_text("model: vit_tiny_patch16\ninput_size: 16\npatch_size: 8\n"
                   "model_args: {depth: 1, embed_dim: 48, num_heads: 3}\n")
    assert run_cli("finetune", "--config", cfg, "--data_path", data, "--output_dir", tmp_path / "out",
                   "--batch_size", "8", "--epochs", "1", "--warmup_epochs", "0", *FAST) == 0
    said = capfd.readouterr()
    assert "the training data has one class (zero): a one-class classifier learns nothing" in said.out + said.err


def test_predict_on_a_folder_skips_and_reports_corrupt_files(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a_red.png")
    (folder / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("RGB", (40, 30), (10, 10, 200)).save(folder / "c_blue.png")
    assert run_cli("predict", "--model", "mae_vit_tiny_patch16", "--no_download", "--input", folder,
                   "--input_size", "32", "--patch_size", "8", "--output_dir", tmp_path / "out", "--json",
                   "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert [Path(r["input"]).name for r in json.loads(captured.out)] == ["a_red.png", "c_blue.png"]
    assert f"skipped 1 unreadable image file(s) of 3: {folder / 'b_broken.png'}" in captured.err


class _KillsItsWorker(torch.utils.data.Dataset):
    """Item 3 kills the worker process that loads it, as the out-of-memory killer would."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(3, 4, 4), 0


def test_a_loader_worker_killed_like_by_the_oom_killer_is_one_line_naming_it():
    from maekit.errors import RUNTIME, describe

    loader = torch.utils.data.DataLoader(_KillsItsWorker(), batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError) as caught:
        list(loader)
    code, message = describe(caught.value)
    assert code == RUNTIME
    # the signal is named where PyTorch's SIGCHLD handler saw it (not after a loader reset it)
    assert re.search(r"data-loading worker \(pid \d+\) (is killed by signal: Killed|exited unexpectedly)", message)
    assert "out-of-memory killer" in message and "--resume auto" in message and "--num_workers" in message
