"""``maekit pretrain``: masked-autoencoder pretraining (REFERENCES C.1, C.2) on any image folder."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch
from torch.utils.data import Dataset

from torchvision import transforms as T

from ..data import build_eval_transform, build_loader, build_pretrain_transform, resolve_dataset, resolve_mean_std
from ..engine.optim import build_adamw, param_groups_weight_decay
from ..engine.runner import Runner
from ..models import create_model, is_pretraining_model
from .common import count_parameters, learning_rate, model_overrides, shape_overrides, start_run

log = logging.getLogger("maekit.tasks")


def build_pretrain_model(*, model: str, input_size, patch_size=None, in_chans=None, norm_pix_loss=False,
                         **extra: Any) -> torch.nn.Module:
    """A registered MAE / ConvMAE pretraining model with the shape options applied."""
    if not is_pretraining_model(model):
        raise ValueError(f"{model!r} is not a pretraining model; use an mae_* or convmae_* name "
                         "(classifiers such as vit_* are for finetune / linprobe)")
    return create_model(model, norm_pix_loss=norm_pix_loss,
                        **shape_overrides(input_size=input_size, patch_size=patch_size, in_chans=in_chans), **extra)


def pretrain_transform(augment: str, img_size, *, in_chans: int, mean, std):
    """The reference augmentation, or a lighter one (``flip``: resize + flip; ``none``: resize only)."""
    if augment == "reference":
        return build_pretrain_transform(img_size, in_chans=in_chans, mean=mean, std=std)
    if augment not in ("flip", "none"):
        raise ValueError(f"unknown --augment {augment!r}; choose reference, flip or none")
    resize = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std, crop_pct=1.0)
    return T.Compose([T.RandomHorizontalFlip(), resize]) if augment == "flip" else resize


def sparse_stages_override(args: argparse.Namespace) -> dict[str, Any]:
    """``--sparse_stages`` is a ConvMAE constructor argument; MAE has no conv stages."""
    if not getattr(args, "sparse_stages", False):
        return {}
    if not args.model.startswith("convmae"):
        raise ValueError("--sparse_stages applies to ConvMAE models (convmae_*) only")
    return {"sparse_stages": True}


def run_pretrain(args: argparse.Namespace, *, dataset: Dataset | None = None) -> dict[str, Any]:
    """Pretrain from parsed options; returns the last epoch's log record.

    ``dataset`` (optional) replaces ``--data_path``: a torch Dataset of ``(image tensor, target)``
    items already transformed to the model's input (used by :class:`maekit.api.Trainer`).
    ``args.model_overrides`` (optional dict, not a flag) adds constructor arguments (``depth``...).
    """
    ctx = start_run(device=args.device, seed=args.seed, amp=args.amp)
    model = build_pretrain_model(model=args.model, input_size=args.input_size, patch_size=args.patch_size,
                                 in_chans=args.in_chans, norm_pix_loss=args.norm_pix_loss,
                                 **sparse_stages_override(args), **model_overrides(args))
    in_chans = model.in_chans
    mean, std = resolve_mean_std(in_chans, args.mean, args.std)
    transform = pretrain_transform(args.augment, model.img_size, in_chans=in_chans, mean=mean, std=std)
    if dataset is None:
        dataset = resolve_dataset(args.data_path, "train", labelled=False, transform=transform, in_chans=in_chans)
    loader = build_loader(dataset, batch_size=args.batch_size, train=True, num_workers=args.num_workers,
                          pin_memory=args.pin_mem, seed=args.seed)
    log.info("pretraining %s (%.2fM trainable parameters) on %d images from %s",
             args.model, count_parameters(model) / 1e6, len(dataset), args.data_path)
    eff_batch, lr = learning_rate(batch_size=args.batch_size, accum_iter=args.accum_iter,
                                  world_size=ctx.dist.world_size, blr=args.blr, lr=args.lr)
    optimizer = build_adamw(param_groups_weight_decay(model, args.weight_decay), lr=lr, betas=(0.9, 0.95))
    mask_ratio = args.mask_ratio

    def step_fn(net, batch):
        images = batch[0]
        return net(images, mask_ratio=mask_ratio).loss, images.shape[0]

    config = dict(vars(args), lr=lr, eff_batch_size=eff_batch, mean=list(mean), std=list(std),
                  world_size=ctx.dist.world_size, task="pretrain")
    runner = Runner(
        model=model, optimizer=optimizer, train_loader=loader, step_fn=step_fn, epochs=args.epochs, lr=lr,
        min_lr=args.min_lr, warmup_epochs=args.warmup_epochs, output_dir=args.output_dir,
        accum_iter=args.accum_iter, autocast_dtype=ctx.autocast_dtype, use_grad_scaler=ctx.use_scaler,
        clip_grad=args.clip_grad, save_every=args.save_every, resume=args.resume or None,
        start_epoch=args.start_epoch, log_dir=args.log_dir, config=config, dist=ctx.dist,
        # Every parameter takes part in the loss, except mask_token when nothing is masked.
        find_unused_parameters=mask_ratio == 0, compile=args.compile, log_every=args.print_freq,
        extra_state={"model_name": model.model_name, "model_args": dict(model.model_args)},
    )
    return runner.fit()
