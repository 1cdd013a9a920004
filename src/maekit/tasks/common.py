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
    """``--input_size S`` or ``--input_size H W`` (the configs check: one or two numbers) -> S or (H, W)."""
    if isinstance(input_size, int):
        return input_size
    sizes = [int(v) for v in input_size]
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def config_overrides(cfg: Any) -> dict[str, Any]:
    """Constructor overrides of a config's model options: ``model_args`` and the shape flags that were set."""
    shape = {"img_size": None if cfg.input_size is None else image_size(cfg.input_size),
             "patch_size": cfg.patch_size, "in_chans": cfg.in_chans}
    return {**cfg.model_args, **{k: v for k, v in shape.items() if v is not None}}


def learning_rate(cfg: Any, ctx: RunContext) -> tuple[int, float]:
    """Effective batch and actual lr of a training config (the Runner prints them, with the
    accumulation, before step 0)."""
    if cfg.lr is None:
        log.info("base lr: %.2e", cfg.blr)
    return effective_batch_and_lr(cfg.batch_size, cfg.accum_iter, ctx.dist.world_size, cfg.blr, cfg.lr)


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def write_json(output_dir: str | None, name: str, result: Any, *, rank: int) -> str | None:
    """``result`` written as ``output_dir/name`` (eval.json, knn.json, <task>_result.json); its path, or
    None on ranks other than 0 and when ``output_dir`` is not set."""
    if not output_dir or rank != 0:
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return path


def task_dataset(cfg: Any, split: str, given: Any = None, *, transform: Any, in_chans: int, img_size: Any,
                 labelled: bool, dist: DistInfo | None = None) -> Any:
    """The ``split`` ('train' / 'val') dataset of a task, items transformed by ``transform``:
    ``given`` (any dataset object, :func:`maekit.data.as_dataset`; ``dist`` splits an iterable train
    set over the ranks; or a folder, its ``<split>/`` subfolder when it has one, ``builtin:``, ``hf:``
    or tar shards), else the one ``cfg.data_path`` (with ``train_split`` / ``val_split`` and the
    tar-shard / ``hf:`` options) holds."""
    from ..data import as_dataset, resolve_dataset
    from ..data.factory import source_options

    if given is not None and not isinstance(given, (str, os.PathLike)):
        ranks = {} if dist is None else {"seed": cfg.seed, "world_size": dist.world_size, "rank": dist.rank}
        return as_dataset(given, transform=transform, in_chans=in_chans, input_size=img_size, **ranks)
    root = cfg.data_path if given is None else os.fspath(given)
    splits = {"train_split": getattr(cfg, "train_split", None), "val_split": getattr(cfg, "val_split", None)}
    if given is not None:  # the folder given for this split
        sub = os.path.join(root, split)
        splits[f"{split}_split"] = os.path.abspath(sub if os.path.isdir(sub) else root)
    return resolve_dataset(root, split, labelled=labelled, transform=transform, in_chans=in_chans,
                           **splits, **source_options(cfg, split))


def task_loader(cfg: Any, ctx: RunContext, dataset: Any, *, train: bool, mean: Any, std: Any) -> Any:
    """The loader of a task's ``dataset`` with ``cfg``'s batch size, workers and pinning (and seed, to
    train); an evaluation set is sharded under torchrun when ``cfg.dist_eval``; uint8 batches are
    normalised with ``mean`` / ``std`` on ``ctx.device``."""
    from ..data import build_loader

    dist_eval = not train and getattr(cfg, "dist_eval", False) and ctx.dist.distributed
    return build_loader(dataset, batch_size=cfg.batch_size, train=train, num_workers=cfg.num_workers,
                        pin_memory=cfg.pin_mem, seed=cfg.seed if train else 0, dist_eval=dist_eval,
                        device=ctx.device, mean=mean, std=std)


def train_task(cfg: Any, ctx: RunContext, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               train_loader: Any, step_fn: Any, lr: float, config: dict[str, Any],
               extra_state: dict[str, Any] | None = None, **task: Any) -> dict[str, Any]:
    """Train with the engine's :class:`~maekit.engine.runner.Runner`, its settings read once from the
    task config ``cfg`` (schedule, output and log folders, checkpoints, resume, compile, logging) and
    the run context ``ctx`` (devices, precision); then ``--push_to_hub``. Returns the last epoch's
    log record.

    ``lr`` is the scaled learning rate, ``config`` the resolved options saved as config.yaml and in
    checkpoints; ``extra_state`` joins the model's name and constructor arguments in the checkpoint;
    ``task``: what differs between tasks (``eval_fn``, ``best_metric``, ``monitors``,
    ``find_unused_parameters``).
    """
    from ..engine.report import Reporter
    from ..engine.runner import Runner
    from ..hub.push import push_trained

    extra = {"model_name": model.model_name, "model_args": dict(model.model_args), **(extra_state or {})}
    runner = Runner(model=model, optimizer=optimizer, train_loader=train_loader, step_fn=step_fn,
                    epochs=cfg.epochs, lr=lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
                    output_dir=cfg.output_dir, accum_iter=cfg.accum_iter, autocast_dtype=ctx.autocast_dtype,
                    use_grad_scaler=ctx.use_scaler, clip_grad=cfg.clip_grad, save_every=cfg.save_every,
                    resume=cfg.resume or None, start_epoch=cfg.start_epoch, log_dir=cfg.log_dir,
                    config=config, dist=ctx.dist, compile=cfg.compile, log_every=cfg.print_freq,
                    overwrite=cfg.overwrite, extra_state=extra, resume_keys=RESUME_CHECKED,
                    reporter=Reporter(log_dir=cfg.log_dir, output_dir=cfg.output_dir, report_to=cfg.report_to,
                                      config=config), **task)
    last = runner.fit()
    if runner.best_value is not None:
        log.info("Max accuracy: %.2f%%", runner.best_value)
    push_trained(cfg, runner.model_without_ddp, rank=ctx.dist.rank)
    return last
