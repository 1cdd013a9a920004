"""``maekit pretrain``: masked-autoencoder pretraining (docs/REFERENCE_RECIPES.md C.1, C.2) on any image folder."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset

from torchvision import transforms as T

from ..data import (as_dataset, batch_mask_seeds, build_eval_transform, build_loader, build_pretrain_transform,
                    resolve_dataset, resolve_mean_std)
from ..data.factory import source_options
from ..engine.optim import build_adamw, param_groups_weight_decay
from ..models import create_model, is_pretraining_model
from ..models.masking import per_sample_noise
from ..hub.push import push_trained
from .common import count_parameters, learning_rate, shape_overrides, start_run, task_runner
from .config import PretrainConfig
from .monitoring import build_pretrain_monitors

log = logging.getLogger("maekit.tasks")


def build_pretrain_model(*, model: str, input_size, patch_size=None, in_chans=None, norm_pix_loss=False,
                         **extra: Any) -> torch.nn.Module:
    """A registered MAE / ConvMAE pretraining model with the shape options applied."""
    if not is_pretraining_model(model):
        raise ValueError(f"{model!r} is not a pretraining model; use an mae_* or convmae_* name "
                         "(classifiers such as vit_* are for finetune / linprobe)")
    return create_model(model, norm_pix_loss=norm_pix_loss,
                        **shape_overrides(input_size=input_size, patch_size=patch_size, in_chans=in_chans), **extra)


def pretrain_transform(augment: str, img_size, *, in_chans: int, mean, std, uint8: bool = False,
                       fast_decode: bool = False, gpu_decode: bool = False):
    """The reference augmentation, or a lighter one (``flip``: resize + flip; ``none``: resize only).
    ``uint8``: uint8 output, normalised on the device by the loader; ``fast_decode``: crop-aware
    reduced JPEG decoding, ``gpu_decode``: JPEG decoding on the device (``reference`` only)."""
    if augment == "reference":
        return build_pretrain_transform(img_size, in_chans=in_chans, mean=mean, std=std, uint8=uint8,
                                        fast_decode=fast_decode, gpu_decode=gpu_decode)
    if augment not in ("flip", "none"):
        raise ValueError(f"unknown --augment {augment!r}; choose reference, flip or none")
    resize = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std, crop_pct=1.0, uint8=uint8)
    return T.Compose([T.RandomHorizontalFlip(), resize]) if augment == "flip" else resize


def sparse_stages_override(model: str, sparse_stages: bool) -> dict[str, Any]:
    """``--sparse_stages`` is a ConvMAE constructor argument; MAE has no conv stages."""
    if not sparse_stages:
        return {}
    if not model.startswith("convmae"):
        raise ValueError("--sparse_stages applies to ConvMAE models (convmae_*) only")
    return {"sparse_stages": True}


def pretrain_model(cfg: PretrainConfig) -> torch.nn.Module:
    """The model ``cfg`` describes (name, shape flags, ``model_args``)."""
    return build_pretrain_model(model=cfg.model, input_size=cfg.input_size, patch_size=cfg.patch_size,
                                in_chans=cfg.in_chans, norm_pix_loss=cfg.norm_pix_loss,
                                **sparse_stages_override(cfg.model, cfg.sparse_stages), **cfg.model_args)


def model_to_train(cfg: PretrainConfig, model: torch.nn.Module | None) -> tuple[torch.nn.Module, PretrainConfig]:
    """(the model ``run_pretrain`` trains, the config it runs with): the one given, ``--init``'s
    (with the source's architecture in the config), or a new one from ``cfg``."""
    if model is None and cfg.init:  # the source's model and weights; its report is logged
        from .init_weights import init_pretrain_model

        model, cfg, _ = init_pretrain_model(cfg, pretrain_model)
    elif model is None:
        model = pretrain_model(cfg)
    elif cfg.init:
        raise ValueError(f"--init {cfg.init} and a model object were both given: give one starting point")
    elif not is_pretraining_model(model):
        raise ValueError(f"{type(model).__name__} is not a pretraining model (mae_* / convmae_*)")
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model, cfg


def make_pretrain_step(mask_ratio: float, num_patches: int):
    """The Runner's ``step_fn``: batch -> (masked-autoencoder loss, images)."""

    def step_fn(net, batch):
        images = batch[0]
        # Each image's mask comes from its own (seed, epoch, index) seed: independent of the batch
        # it lands in, the worker count, the world size and of where a run was resumed.
        seeds = batch_mask_seeds(batch)
        noise = per_sample_noise(seeds, num_patches, images.device) if seeds is not None else None
        return net(images, mask_ratio=mask_ratio, noise=noise).loss, images.shape[0]

    return step_fn


def run_pretrain(cfg: PretrainConfig, *, model: torch.nn.Module | None = None, train_dataset: Dataset | None = None,
                 eval_dataset: Dataset | None = None) -> dict[str, Any]:
    """Pretrain as ``cfg`` says; returns the last epoch's log record.

    Args:
        cfg: the options (:class:`maekit.tasks.config.PretrainConfig`).
        model: the pretraining model to train (its weights are the start); default: built from
            ``cfg.model`` and the shape options, randomly initialised. ``cfg.resume`` still wins.
        train_dataset: replaces ``cfg.data_path``: any map-style or iterable dataset of PIL images,
            uint8/float tensors, dicts with an image key or ``(image, label)`` pairs; maekit applies
            the transforms (float tensors of the model's input shape pass through:
            :func:`maekit.data.as_dataset`).
        eval_dataset: unused (pretraining does not evaluate); accepted for a uniform signature.
    """
    ctx = start_run(device=cfg.device, seed=cfg.seed, amp=cfg.amp, run=cfg)
    model, cfg = model_to_train(cfg, model)
    in_chans = model.in_chans
    mean, std = resolve_mean_std(in_chans, cfg.mean, cfg.std)
    transform = pretrain_transform(cfg.augment, model.img_size, in_chans=in_chans, mean=mean, std=std, uint8=True,
                                   fast_decode=cfg.fast_decode, gpu_decode=cfg.decode == "gpu")
    if train_dataset is not None:  # any dataset object; maekit applies the transform (maekit.data.adapt)
        dataset = as_dataset(train_dataset, transform=transform, in_chans=in_chans, input_size=model.img_size,
                             seed=cfg.seed, world_size=ctx.dist.world_size, rank=ctx.dist.rank)
    else:
        dataset = resolve_dataset(cfg.data_path, "train", labelled=False, transform=transform, in_chans=in_chans,
                                  **source_options(cfg))
    loader = build_loader(dataset, batch_size=cfg.batch_size, train=True, num_workers=cfg.num_workers,
                          pin_memory=cfg.pin_mem, seed=cfg.seed, device=ctx.device, mean=mean, std=std)
    log.info("pretraining %s (%.2fM trainable parameters) on %d images from %s",
             model.model_name, count_parameters(model) / 1e6, len(dataset), cfg.data_path)
    eff_batch, lr = learning_rate(batch_size=cfg.batch_size, accum_iter=cfg.accum_iter,
                                  world_size=ctx.dist.world_size, blr=cfg.blr, lr=cfg.lr)
    optimizer = build_adamw(param_groups_weight_decay(model, cfg.weight_decay), lr=lr, betas=(0.9, 0.95))
    step_fn = make_pretrain_step(cfg.mask_ratio, int(model.num_patches))
    # The monitors' fallback images: the user's dataset with the float evaluation transform.
    monitor_images = None if train_dataset is None else as_dataset(
        train_dataset, transform=build_eval_transform(model.img_size, in_chans=in_chans, mean=mean, std=std,
                                                      crop_pct=1.0), in_chans=in_chans, input_size=model.img_size)
    resolved = dict(cfg.to_dict(), model=model.model_name, lr=lr, eff_batch_size=eff_batch, mean=list(mean),
                    std=list(std), task="pretrain")
    runner = task_runner(
        cfg, ctx, model=model, optimizer=optimizer, train_loader=loader, step_fn=step_fn, lr=lr, config=resolved,
        # Every parameter takes part in the loss, except mask_token when nothing is masked.
        find_unused_parameters=cfg.mask_ratio == 0,
        monitors=build_pretrain_monitors(cfg, model, mean=mean, std=std, train_dataset=monitor_images, seed=cfg.seed))
    last = runner.fit()
    push_trained(cfg, runner.model_without_ddp, rank=ctx.dist.rank)
    return last
