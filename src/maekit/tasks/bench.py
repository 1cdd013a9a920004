"""``maekit bench``: training-step throughput of a registered model on random data.

Times what ``maekit pretrain`` / ``finetune`` run per step (forward under the chosen precision,
backward, the engine's AdamW) on this machine; peers are compared in ``benchmarks/``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from ..engine.metrics import autocast_context
from ..engine.optim import build_adamw, param_groups_weight_decay
from ..engine.precision import resolve_amp
from ..models import create_model, is_pretraining_model
from .classify import make_step_fn
from .common import image_size, inference_device
from .config import BenchConfig
from .pretrain import make_pretrain_step


def measure(cfg: BenchConfig, *, progress: bool = False) -> dict:
    """Median images/s of ``cfg.steps`` training steps of ``cfg.model`` (the step ``maekit pretrain``
    or ``finetune`` runs); also peak CUDA memory when on a GPU. ``progress``: a line on stderr per
    step (a large model on a CPU takes minutes)."""
    dev = torch.device(inference_device(cfg.device))
    net = create_model(cfg.model, img_size=image_size(cfg.input_size)).to(dev).train()
    dtype, use_scaler = resolve_amp(cfg.amp, dev)
    scaler = torch.amp.GradScaler(dev.type) if use_scaler else None
    opt = build_adamw(param_groups_weight_decay(net, 0.05), lr=1e-4)
    fwd = torch.compile(net) if cfg.compile else net
    h, w = net.img_size
    x = torch.randn(cfg.batch_size, net.in_chans, h, w, device=dev)
    y = torch.randint(0, getattr(net, "num_classes", 1) or 1, (cfg.batch_size,), device=dev)
    if is_pretraining_model(cfg.model):
        step_fn, batch = make_pretrain_step(cfg, int(net.num_patches)), (x,)
    else:
        step_fn, batch = make_step_fn(torch.nn.CrossEntropyLoss()), (x, y)
    times = []
    for i in range(cfg.warmup + cfg.steps):
        t0 = time.perf_counter()
        _step(lambda: step_fn(fwd, batch)[0], opt, scaler, dev, dtype)
        if i >= cfg.warmup:
            times.append(time.perf_counter() - t0)
        if progress:
            kind = "timed" if i >= cfg.warmup else "warm-up"
            print(f"maekit bench: step {i + 1}/{cfg.warmup + cfg.steps} ({kind}) "
                  f"{time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
    out = {"model": cfg.model, "device": str(dev),
           "precision": str(dtype or torch.float32).replace("torch.", ""), "batch_size": cfg.batch_size,
           "images_per_sec": round(cfg.batch_size / statistics.median(times), 2)}
    if dev.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def _step(loss_fn, opt: torch.optim.Optimizer, scaler, dev: torch.device, dtype) -> None:
    """One training step as the Runner's (autocast forward, backward, optimizer step)."""
    with autocast_context(dev, dtype):
        loss = loss_fn()
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_bench(args: BenchConfig) -> int:
    """``maekit bench``: measure and print; returns the exit code."""
    res = measure(args, progress=True)
    if args.json:
        print(json.dumps(res))
    else:
        print(", ".join(f"{k}: {v}" for k, v in res.items()))
    return 0
