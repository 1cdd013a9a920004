"""Evaluation of masked image modeling: the mean reconstruction loss over an evaluation set.

MindFormers' Trainer raises ``NotImplementedError`` for ``evaluate()`` on masked image modeling
(docs/REFERENCE_RECIPES.md G.2). maekit reports the pretraining loss itself (docs/REFERENCE_RECIPES.md B.4: MSE over the
removed patches, in the model's target units, i.e. per-patch normalised pixels for norm-pix
models), averaged over every image of the evaluation set, with the model in eval mode.

The masks are fixed: image ``i`` (in dataset order) is masked by noise drawn from its own seed,
``sample_seed(seed, 0, i, MASK_STREAM)`` (:class:`EvalMaskSeeds`), so two evaluations of the same
weights give the same number whatever the batch size, and an undecodable file (dropped by the
loader) changes no other image's mask. A loader whose batches carry no seeds (one built by the
caller) gets row ``i`` of ``torch.rand(N, L, generator=torch.Generator().manual_seed(seed))``.

Images go through the evaluation transform (resize, centre crop, normalise), as classification
evaluation does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..data import MASK_STREAM, build_eval_transform, resolve_mean_std, sample_seed
from ..data.seeding import DatasetView
from ..engine.metrics import autocast_context, eval_mode
from .common import start_run, task_dataset, task_loader, write_json
from .config import MaskOptions, PretrainConfig
from .pretrain import make_pretrain_step, pretrain_model

log = logging.getLogger("maekit.tasks")


class EvalMaskSeeds(DatasetView):
    """``dataset`` whose items also carry the mask seed of their index (module docstring)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return None if item is None else (*item[:2], sample_seed(self.seed, 0, index, MASK_STREAM))


def evaluate_reconstruction(model: nn.Module, loader, *, device: torch.device | str, seed: int = 0,
                            options: MaskOptions | None = None,
                            autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean reconstruction loss of a pretraining model over a sequential loader.

    Args:
        model: an MAE / ConvMAE pretraining model (its forward ``model(imgs, noise=, ...)`` -> ``.loss``).
        loader: a sequential (not shuffled) loader of ``(images, targets, num_skipped)``.
        seed: seed of the noise table (module docstring).
        options: the masking (:class:`~maekit.tasks.config.MaskOptions`, e.g. the run's
            :class:`~maekit.tasks.config.PretrainConfig`); default: the reference's.

    Returns:
        ``{'loss': mean over images, 'n': images counted}``.
    """
    step = make_pretrain_step(options or MaskOptions(), int(model.num_patches))  # the training step's forward
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.rand(len(loader.dataset), int(model.num_patches), generator=generator)
    pos, n, loss_sum = 0, 0, 0.0
    with eval_mode(model):
        for batch in loader:
            images, num_skipped = batch[0], batch[2]
            b = images.shape[0]
            rows = noise[pos:pos + b]
            pos += b + int(num_skipped)
            if b == 0:
                continue
            images = images.to(device, non_blocking=True)
            # EvalMaskSeeds: each image's own mask, whatever was skipped; else the rows of the table
            with autocast_context(device, autocast_dtype):
                loss, _ = step(model, (images, *batch[1:]), rows.to(images.device))
            # every image has the same number of removed patches, so the batch mean weighs images equally
            loss_sum += float(loss.float()) * b
            n += b
    if n == 0:
        raise ValueError("the evaluation set has no readable image")
    return {"loss": loss_sum / n, "n": n}


def run_reconstruction_eval(cfg: PretrainConfig, *, model: nn.Module | None = None, train_dataset=None,
                            eval_dataset=None) -> dict[str, Any]:
    """Evaluate a pretraining model on the validation split of ``cfg.data_path`` (``cfg.val_split``
    when set; ``builtin:digits``: its test split), or on ``eval_dataset`` (transformed ``(image,
    target)`` items). ``model`` (with its weights) replaces ``cfg.resume`` (a checkpoint of the model
    ``cfg`` describes). Uses the masking options, ``batch_size`` and ``seed`` (the mask seed).

    Returns:
        ``{'test_loss', 'test_n'}``; also written to ``output_dir/eval.json`` when set.
    """
    ctx = start_run(device=cfg.device, seed=cfg.seed, amp=cfg.amp)
    if model is None:
        if not cfg.resume:
            raise ValueError("evaluating a pretraining model needs its checkpoint (--resume / eval_checkpoint)")
        model = pretrain_model(cfg, cfg.resume)
    mean, std = resolve_mean_std(model.in_chans, cfg.mean, cfg.std)
    transform = build_eval_transform(model.img_size, in_chans=model.in_chans, mean=mean, std=std)
    dataset = task_dataset(cfg, "val", eval_dataset, transform=transform, in_chans=model.in_chans,
                           img_size=model.img_size, labelled=False)
    loader = task_loader(cfg, ctx, EvalMaskSeeds(dataset, cfg.seed), train=False, mean=mean, std=std)
    stats = evaluate_reconstruction(model.to(ctx.device), loader, device=ctx.device, seed=cfg.seed,
                                    options=cfg, autocast_dtype=ctx.autocast_dtype)
    masking = ", ".join(f"{k} {v}" for k, v in cfg.masking().items())
    log.info("Reconstruction loss of %s on %d images (%s, mask seed %d): %.4f",
             cfg.resume or model.model_name, stats["n"], masking, cfg.seed, stats["loss"])
    result = {"test_loss": stats["loss"], "test_n": stats["n"]}
    write_json(cfg.output_dir, "eval.json", result, rank=ctx.dist.rank)
    return result
