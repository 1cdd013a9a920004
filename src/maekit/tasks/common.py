"""Pieces every task shares: devices and ranks, model shapes from options, the lr printout."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..engine.distributed import DistInfo, init_distributed, seed_everything
from ..engine.lock import check_output_dir
from ..engine.logs import setup_logging
from ..engine.optim import effective_batch_and_lr
from ..engine.precision import resolve_amp
from .config import RESUME_CHECKED

log = logging.getLogger("maekit.tasks")


@dataclass
class RunContext:
    """Where and how a task runs."""

    dist: DistInfo
    autocast_dtype: torch.dtype | None
    use_scaler: bool

    @property
    def device(self) -> torch.device:
        return self.dist.device


def device_name(device: str | None) -> str | None:
    """``auto`` -> None (engine picks CUDA if present); PASSL's ``gpu`` -> ``cuda``."""
    if device in (None, "", "auto"):
        return None
    return "cuda" + device[3:] if device.startswith("gpu") else device


def inference_device(device: str | None) -> str:
    """The device a command that only runs a model uses: ``auto`` (the one default of every
    command) is CUDA when torch sees a GPU, else the CPU."""
    return device_name(device) or ("cuda" if torch.cuda.is_available() else "cpu")


def start_run(*, device: str | None, seed: int, amp: str, run: Any = None) -> RunContext:
    """Initialise distributed (torchrun / SLURM), logging, seeds and precision. ``run``: a training
    config whose ``output_dir`` is checked first (:func:`maekit.engine.lock.check_output_dir`), so that
    a folder in use or holding another run is refused before minutes of data scanning."""
    if run is not None:
        check_output_dir(run.output_dir, resume=run.resume, overwrite=run.overwrite)
        if run.push_to_hub:  # a bad repository id or a missing token: said now, not after the last epoch
            from ..hub.push import check_push_target

            check_push_target(run.hub_model_id, "--hub_model_id")
    name = device_name(device)
    if name and name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for a GPU, but torch sees none; use --device cpu")
    dist = init_distributed(device=name)
    setup_logging(dist.rank)
    seed_everything(seed, dist.rank)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype, scaler = resolve_amp(amp, dist.device)
    return RunContext(dist, dtype, scaler)


def image_size(input_size: list[int] | int | tuple[int, ...]) -> int | tuple[int, int]:
    """``--input_size S`` or ``--input_size H W`` -> S or (H, W)."""
    if isinstance(input_size, int):
        return input_size
    sizes = [int(v) for v in input_size]
    if len(sizes) == 1:
        return sizes[0]
    if len(sizes) == 2:
        return sizes[0], sizes[1]
    raise ValueError(f"--input_size takes one or two numbers (S or H W), got {sizes}")


def shape_overrides(*, input_size, patch_size: int | None = None, in_chans: int | None = None) -> dict[str, Any]:
    """Model constructor overrides from the shape options (only those given)."""
    kw: dict[str, Any] = {} if input_size is None else {"img_size": image_size(input_size)}
    if patch_size is not None:
        kw["patch_size"] = patch_size
    if in_chans is not None:
        kw["in_chans"] = in_chans
    return kw


def config_overrides(cfg: Any) -> dict[str, Any]:
    """Constructor overrides of a config's model options: ``model_args`` and the shape flags that were set."""
    return {**cfg.model_args, **shape_overrides(input_size=cfg.input_size, patch_size=cfg.patch_size,
                                                in_chans=cfg.in_chans)}


def learning_rate(*, batch_size: int, accum_iter: int, world_size: int, blr: float, lr: float | None) -> tuple[int, float]:
    """Effective batch and actual lr (the Runner prints them, with the accumulation, before step 0)."""
    if batch_size < 1 or accum_iter < 1:
        raise ValueError(f"--batch_size and --accum_iter must be >= 1, got {batch_size} and {accum_iter}")
    eff, actual = effective_batch_and_lr(batch_size, accum_iter, world_size, blr, lr)
    if lr is None:
        log.info("base lr: %.2e", blr)
    return eff, actual


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def write_eval_json(output_dir: str | None, result: dict[str, Any], *, rank: int) -> None:
    """``output_dir/eval.json`` (rank 0 only; nothing when ``output_dir`` is not set)."""
    if not output_dir or rank != 0:
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


def task_runner(cfg: Any, ctx: RunContext, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                train_loader: Any, step_fn: Any, lr: float, config: dict[str, Any],
                extra_state: dict[str, Any] | None = None, **task: Any) -> Any:
    """The engine's :class:`~maekit.engine.runner.Runner` of a training task, its settings read once
    from the task config ``cfg`` (schedule, output and log folders, checkpoints, resume, compile,
    logging) and the run context ``ctx`` (devices, precision).

    ``lr`` is the scaled learning rate, ``config`` the resolved options saved as config.yaml and in
    checkpoints; ``extra_state`` joins the model's name and constructor arguments in the checkpoint;
    ``task``: what differs between tasks (``eval_fn``, ``best_metric``, ``monitors``,
    ``find_unused_parameters``).
    """
    from ..engine.report import Reporter
    from ..engine.runner import Runner

    extra = {"model_name": model.model_name, "model_args": dict(model.model_args), **(extra_state or {})}
    return Runner(model=model, optimizer=optimizer, train_loader=train_loader, step_fn=step_fn, epochs=cfg.epochs,
                  lr=lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs, output_dir=cfg.output_dir,
                  accum_iter=cfg.accum_iter, autocast_dtype=ctx.autocast_dtype, use_grad_scaler=ctx.use_scaler,
                  clip_grad=cfg.clip_grad, save_every=cfg.save_every, resume=cfg.resume or None,
                  start_epoch=cfg.start_epoch, log_dir=cfg.log_dir, config=config, dist=ctx.dist,
                  compile=cfg.compile, log_every=cfg.print_freq, overwrite=cfg.overwrite, extra_state=extra,
                  resume_keys=RESUME_CHECKED,
                  reporter=Reporter(log_dir=cfg.log_dir, output_dir=cfg.output_dir, report_to=cfg.report_to,
                                    config=config), **task)
