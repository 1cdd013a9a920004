"""Sections of the GPU suite (``gpu_suite.py``) that run the real CLI on real JPEG files, and the
correctness checks: mixed precision against fp32, SIGTERM + resume, the data pipeline, NCCL.

Every function returns one JSON-ready dict; ``passed`` is set by the checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# The CLI with deterministic kernels (CUDA scatter-add in the masking backward is otherwise
# nondeterministic), so a resumed run can be compared with a straight one bit for bit.
DETERMINISTIC_CLI = ("import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
                     "from maekit.cli import main; sys.exit(main(sys.argv[1:]))")
TINY_MAE = ["--model", "mae_vit_tiny_patch16", "--input_size", "32", "--patch_size", "8"]
SMOKE_MAE = dict(img_size=32, patch_size=8, depth=1, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=2)
AMP_TOL = {"bf16": 3e-2, "fp16": 1e-2}  # max relative loss difference to fp32 over the 20 steps


def cli_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # needed by deterministic cuBLAS
    return env


# ----------------------------------------------------------------------------- JPEG files
def _write_part(job) -> None:
    from maekit.data.synthetic import write_photo_folder

    folder, count, size, seed = job
    write_photo_folder(folder, count, size, seed=seed)


def write_jpegs(root: Path, n: int, size: tuple[int, int] = (375, 500), workers: int = 4) -> Path:
    """``n`` photo-like JPEG files of ``size`` (H, W) in ``root/imgs/p<k>/`` (ImageNet-like by
    default), written by ``workers`` processes with maekit's own generator."""
    folder = root / "imgs"
    parts = max(1, min(workers, n // 64))
    jobs = [(folder / f"p{k}", n // parts + (k < n % parts), size, k * n) for k in range(parts)]
    if parts == 1:
        _write_part(jobs[0])
    else:
        with Pool(parts) as pool:
            pool.map(_write_part, jobs)
    return folder


# ----------------------------------------------------------------------------- CLI runs
def read_log(out: Path) -> list[dict]:
    path = out / "log.txt"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_cli(args: list[str], *, timeout: float, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, "-m", "maekit"]) + [str(a) for a in args]
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def pretrain_help() -> str:
    """``maekit pretrain -h``: which input-pipeline options this maekit has (``--fast_decode``,
    ``--decode gpu``)."""
    return run_cli(["pretrain", "-h"], timeout=120).stdout


def pretrain_on_jpegs(data: Path, out: Path, *, model_args: list[str], batch: int, workers: int, amp: str,
                      device: str, extra: list[str] = (), launcher=None, timeout: float = 300) -> dict:
    """Two epochs of ``maekit pretrain`` on the JPEG folder; img/s of the second (warm) epoch."""
    res = run_cli(["pretrain", *model_args, "--data_path", data, "--output_dir", out, "--batch_size", batch,
                   "--epochs", 2, "--warmup_epochs", 0, "--num_workers", workers, "--amp", amp, "--device", device,
                   "--save_every", 0, "--print_freq", 1000, *extra], timeout=timeout, launcher=launcher)
    log = read_log(out)
    if res.returncode != 0 or len(log) < 2:
        raise RuntimeError(f"maekit pretrain exited {res.returncode}: {(res.stdout + res.stderr)[-1500:]}")
    return {"img_s": round(log[-1]["train_images_per_sec"], 1), "loss": log[-1].get("train_loss")}


def data_pipeline(tmp: Path, dev: torch.device, *, smoke: bool, synthetic_img_s: float | None) -> dict:
    """MAE-B pretraining through the CLI on real JPEG files (CPU decode with workers; GPU decode
    when ``--decode gpu`` exists) and its fraction of the synthetic-input speed."""
    n, batch = (16, 8) if smoke else (4096, 256)
    workers = 2 if smoke else min(16, os.cpu_count() or 1)
    data = write_jpegs(tmp / "jpeg", n, (48, 64) if smoke else (375, 500), workers=workers)
    model = TINY_MAE if smoke else ["--model", "mae_vit_base_patch16"]
    amp = "none" if dev.type == "cpu" else "bf16"
    out = {"images": n, "batch": batch, "num_workers": workers, "synthetic_img_s": synthetic_img_s}
    cpu = pretrain_on_jpegs(data, tmp / "run_cpu_decode", model_args=model, batch=batch, workers=workers, amp=amp,
                            device=dev.type)
    out["cpu_decode"] = {**cpu, "fraction_of_synthetic": _frac(cpu["img_s"], synthetic_img_s)}
    helptext = pretrain_help()
    if smoke:  # one CLI start less; the call is the same as the one above plus a flag
        out["cpu_fast_decode"] = {"skipped": "--smoke runs the default decode only"}
    elif "--fast_decode" in helptext:  # crop-aware reduced JPEG decoding in the workers
        fast = pretrain_on_jpegs(data, tmp / "run_fast_decode", model_args=model, batch=batch, workers=workers,
                                 amp=amp, device=dev.type, extra=["--fast_decode"])
        out["cpu_fast_decode"] = {**fast, "fraction_of_synthetic": _frac(fast["img_s"], synthetic_img_s)}
    else:
        out["cpu_fast_decode"] = {"skipped": "this maekit has no `pretrain --fast_decode` option"}
    if dev.type != "cuda":
        out["gpu_decode"] = {"skipped": "no CUDA device"}
    elif "--decode" not in helptext:
        out["gpu_decode"] = {"skipped": "this maekit has no `pretrain --decode gpu` option yet"}
    else:
        gpu = pretrain_on_jpegs(data, tmp / "run_gpu_decode", model_args=model, batch=batch, workers=workers,
                                amp=amp, device=dev.type, extra=["--decode", "gpu"])
        out["gpu_decode"] = {**gpu, "fraction_of_synthetic": _frac(gpu["img_s"], synthetic_img_s)}
    return out


def _frac(a: float, b: float | None) -> float | None:
    return round(a / b, 3) if b else None


def nccl_run(tmp: Path, data: Path | None, *, smoke: bool) -> dict:
    """Two processes (torchrun, NCCL) pretraining MAE-B on the JPEG files, when two GPUs exist."""
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpu < 2:
        return {"skipped": f"{n_gpu} GPU(s) visible; the NCCL run needs 2"}
    if data is None:
        data = write_jpegs(tmp / "jpeg_nccl", 4096, workers=min(16, os.cpu_count() or 1))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "maekit"]
    res = pretrain_on_jpegs(data, tmp / "run_nccl", model_args=TINY_MAE if smoke else ["--model", "mae_vit_base_patch16"],
                            batch=256, workers=min(8, os.cpu_count() or 1), amp="bf16", device="cuda",
                            launcher=launcher)
    return {"processes": 2, "total_img_s": res["img_s"], "per_gpu_img_s": round(res["img_s"] / 2, 1)}


# ----------------------------------------------------------------------------- checks
def amp_check(dev: torch.device, *, smoke: bool, steps: int = 20) -> dict:
    """Per-step losses of 20 training steps in fp32, bf16 and fp16 + GradScaler (maekit's
    ``resolve_amp``), same init and batches; passes when every step is within ``AMP_TOL``."""
    from maekit.engine.optim import build_adamw, param_groups_weight_decay
    from maekit.engine.precision import resolve_amp
    from maekit.models import create_model

    name, kw, batch = (("mae_vit_tiny_patch16", SMOKE_MAE, 8) if smoke else ("mae_vit_base_patch16", {}, 32))

    def losses(amp: str) -> list[float]:
        dtype, use_scaler = resolve_amp(amp, dev)
        torch.manual_seed(0)
        model = create_model(name, **kw).to(dev).train()
        opt = build_adamw(param_groups_weight_decay(model, 0.05), lr=1.5e-4, betas=(0.9, 0.95))
        scaler = torch.amp.GradScaler(dev.type) if use_scaler else None
        g, out = torch.Generator().manual_seed(1), []
        for _ in range(steps):
            x = torch.randn(batch, 3, *model.img_size, generator=g).to(dev)
            noise = torch.rand(batch, model.num_patches, generator=g).to(dev)
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(x, mask_ratio=0.75, noise=noise).loss
            out.append(loss.item())
            (scaler.scale(loss) if scaler else loss).backward()
            scaler.step(opt) if scaler else opt.step()
            if scaler:
                scaler.update()
            opt.zero_grad(set_to_none=True)
        return out

    ref = losses("none")
    res = {"steps": steps, "batch": batch, "model": name, "fp32_losses": [round(v, 5) for v in ref],
           "tolerance_rel": AMP_TOL}
    for amp in ("bf16", "fp16"):
        if amp == "fp16" and dev.type != "cuda":
            res[amp] = {"skipped": "fp16 + GradScaler runs on CUDA only (maekit's --amp fp16 refuses the CPU)"}
            continue
        got = losses(amp)
        worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
        res[amp] = {"max_rel_diff": worst, "passed": worst <= AMP_TOL[amp], "losses": [round(v, 5) for v in got]}
    res["passed"] = all(v.get("passed", True) for k, v in res.items() if k in ("bf16", "fp16"))
    return res


def sigterm_check(tmp: Path, dev: torch.device, data: Path, *, smoke: bool) -> dict:
    """``maekit pretrain`` killed by SIGTERM mid-epoch then ``--resume auto`` ends with the same
    weights as an uninterrupted run (data order, masks from the device RNG, optimizer state)."""
    args = [*TINY_MAE, "--data_path", data, "--batch_size", 4, "--epochs", 2, "--warmup_epochs", 1,
            "--num_workers", 0 if smoke else 2, "--amp", "none", "--device", dev.type, "--print_freq", 1, "--blr", "1e-3"]
    launcher = [sys.executable, "-c", DETERMINISTIC_CLI]
    straight, split = tmp / "straight", tmp / "split"
    # The straight run goes alongside the one to be interrupted (start-up dominates both).
    ref = subprocess.Popen(launcher + ["pretrain", *map(str, args), "--output_dir", str(straight)], env=cli_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(launcher + ["pretrain", *map(str, args), "--output_dir", str(split)], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # first progress line of epoch 1: the run is mid-epoch
        if "Epoch: [1]" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    _, err = ref.communicate(timeout=300)
    if ref.returncode:
        raise RuntimeError(f"straight run exited {ref.returncode}: {err[-1500:]}")
    ckpt = torch.load(split / "checkpoint-last.pth", map_location="cpu", weights_only=True)
    mid = {"exit_code": proc.returncode, "epoch": ckpt.get("epoch"), "step_in_epoch": ckpt.get("step_in_epoch"),
           "has_cuda_rng": bool((ckpt.get("rng") or {}).get("cuda")) if isinstance(ckpt.get("rng"), dict)
           else any(bool(r.get("cuda")) for r in ckpt.get("rng") or [])}
    res = run_cli(["pretrain", *args, "--output_dir", split, "--resume", "auto"], timeout=300, launcher=launcher)
    if res.returncode:
        raise RuntimeError(f"resumed run exited {res.returncode}: {res.stderr[-1500:]}")
    a = torch.load(straight / "checkpoint-last.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(split / "checkpoint-last.pth", map_location="cpu", weights_only=True)["model"]
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    tol = 0.0 if dev.type == "cpu" else 1e-6
    interrupted = mid["exit_code"] == 143 and (mid["step_in_epoch"] or 0) > 0
    return {**mid, "max_abs_weight_diff": diff, "tolerance": tol,
            "passed": interrupted and diff <= tol and (dev.type != "cuda" or mid["has_cuda_rng"])}


def compile_check(pretrain_b: dict, tol: float = 1e-2) -> dict:
    """``--compile`` gives the eager loss: read from the MAE-B section (same weights, batch, noise)."""
    c = pretrain_b.get("compile_check")
    if not c:
        return {"skipped": pretrain_b.get("skipped", "MAE-B compile did not run")}
    return {**c, "tolerance_rel": tol, "passed": c["rel_diff"] <= tol}


def wall(t0: float) -> float:
    return round(time.perf_counter() - t0, 1)
