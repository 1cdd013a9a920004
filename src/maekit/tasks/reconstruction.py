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

from ..data import (MASK_STREAM, as_dataset, batch_mask_seeds, build_eval_transform, build_loader, resolve_dataset,
                    resolve_mean_std, sample_seed)
from ..engine.metrics import autocast_context
from ..models.masking import per_sample_noise
from .common import start_run, write_eval_json
from .config import PretrainConfig
from .pretrain import pretrain_model

log = logging.getLogger("maekit.tasks")


class EvalMaskSeeds(Dataset):
    """``dataset`` whose items also carry the mask seed of their index (module docstring)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return None if item is None else (*item[:2], sample_seed(self.seed, 0, index, MASK_STREAM))


def reconstruction_noise(num_images: int, num_patches: int, seed: int) -> torch.Tensor:
    """The (num_images, num_patches) noise table of the fixed masks (module docstring)."""
    return torch.rand(num_images, num_patches, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, loader, *, device: torch.device | str, mask_ratio: float = 0.75,
                            seed: int = 0, autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean reconstruction loss of a pretraining model over a sequential loader.

    Args:
        model: an MAE / ConvMAE pretraining model (``model(imgs, mask_ratio=, noise=)`` -> ``.loss``).
        loader: a sequential (not shuffled) loader of ``(images, targets, num_skipped)``.
        mask_ratio: fraction of patches removed, in (0, 1).
        seed: seed of the noise table (module docstring).

    Returns:
        ``{'loss': mean over images, 'n': images counted}``.
    """
    if not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(f"the reconstruction loss needs a mask_ratio in (0, 1), got {mask_ratio}")
    noise = reconstruction_noise(len(loader.dataset), int(model.num_patches), seed)
    was_training = model.training
    model.eval()
    pos, n, loss_sum = 0, 0, 0.0
    for batch in loader:
        images, num_skipped = batch[0], batch[2]
        b = images.shape[0]
        rows = noise[pos:pos + b]
        pos += b + int(num_skipped)
        if b == 0:
            continue
        seeds = batch_mask_seeds(batch)  # EvalMaskSeeds: each image's own, whatever was skipped
        if seeds is not None:
            rows = per_sample_noise(seeds, int(model.num_patches))
        images = images.to(device, non_blocking=True)
        with autocast_context(device, autocast_dtype):
            out = model(images, mask_ratio=float(mask_ratio), noise=rows.to(images.device))
        # every image has the same number of removed patches, so the batch mean weighs images equally
        loss_sum += float(out.loss.float()) * b
        n += b
    model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation set has no readable image")
    return {"loss": loss_sum / n, "n": n}


def run_reconstruction_eval(cfg: PretrainConfig, *, model: nn.Module | None = None, train_dataset=None,
                            eval_dataset=None) -> dict[str, Any]:
    """Evaluate a pretraining model on the validation split of ``cfg.data_path`` (``cfg.val_split``
    when set; ``builtin:digits``: its test split), or on ``eval_dataset`` (transformed ``(image,
    target)`` items). ``model`` (with its weights) replaces ``cfg.resume`` (a checkpoint of the model
    ``cfg`` describes). Uses ``mask_ratio``, ``batch_size`` and ``seed`` (the mask seed).

    Returns:
        ``{'test_loss', 'test_n'}``; also written to ``output_dir/eval.json`` when set.
    """
    ctx = start_run(device=cfg.device, seed=cfg.seed, amp=cfg.amp)
    if model is None:
        if not cfg.resume:
            raise ValueError("evaluating a pretraining model needs its checkpoint (--resume / eval_checkpoint)")
        from ..hub import load_weights_into

        model = pretrain_model(cfg)
        # the decoder too: an encoder-only file cannot reconstruct (a ValueError, not a warning)
        load_weights_into(model, cfg.resume, require_decoder=True)
    mean, std = resolve_mean_std(model.in_chans, cfg.mean, cfg.std)
    transform = build_eval_transform(model.img_size, in_chans=model.in_chans, mean=mean, std=std)
    if eval_dataset is not None:  # any dataset object; maekit applies the transform
        dataset = as_dataset(eval_dataset, transform=transform, in_chans=model.in_chans, input_size=model.img_size)
    else:
        dataset = resolve_dataset(cfg.data_path, "val", labelled=False, transform=transform,
                                  in_chans=model.in_chans, val_split=cfg.val_split)
    loader = build_loader(EvalMaskSeeds(dataset, cfg.seed), batch_size=cfg.batch_size, train=False,
                          num_workers=cfg.num_workers, pin_memory=cfg.pin_mem)
    stats = evaluate_reconstruction(model.to(ctx.device), loader, device=ctx.device, mask_ratio=cfg.mask_ratio,
                                    seed=cfg.seed, autocast_dtype=ctx.autocast_dtype)
    log.info("Reconstruction loss of %s on %d images (mask ratio %.2f, mask seed %d): %.4f",
             cfg.resume or model.model_name, stats["n"], cfg.mask_ratio, cfg.seed, stats["loss"])
    result = {"test_loss": stats["loss"], "test_n": stats["n"]}
    write_eval_json(cfg.output_dir, result, rank=ctx.dist.rank)
    return result
