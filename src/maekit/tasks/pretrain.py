"""``maekit pretrain``: masked-autoencoder pretraining (docs/REFERENCE_RECIPES.md C.1, C.2) on any image folder."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from ..data import batch_mask_seeds, build_eval_transform, build_pretrain_transform, resolve_mean_std
from ..engine.optim import build_adamw, param_groups_weight_decay
from ..models import create_model, is_pretraining_model
from ..models.masking import per_sample_noise
from .common import (config_overrides, count_parameters, learning_rate, start_run, task_dataset, task_loader,
                     train_task)
from .config import MaskOptions, PretrainConfig
from .monitoring import build_pretrain_monitors

log = logging.getLogger("maekit.tasks")


def pretrain_transform(augment: str, img_size, *, in_chans: int, mean, std, uint8: bool = False,
                       fast_decode: bool = False, gpu_decode: bool = False):
    """The reference augmentation, or a lighter one (``flip``: resize + flip; ``none``: resize only).
    ``uint8``: uint8 output, normalised on the device by the loader; ``fast_decode``: crop-aware
    reduced JPEG decoding, ``gpu_decode``: JPEG decoding on the device (``reference`` only)."""
    if augment == "reference":
        return build_pretrain_transform(img_size, in_chans=in_chans, mean=mean, std=std, uint8=uint8,
                                        fast_decode=fast_decode, gpu_decode=gpu_decode)
    resize = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std, crop_pct=1.0, uint8=uint8)
    return T.Compose([T.RandomHorizontalFlip(), resize]) if augment == "flip" else resize


def pretrain_model(cfg: PretrainConfig, weights: Any = None) -> torch.nn.Module:
    """The registered MAE / ConvMAE pretraining model ``cfg`` describes (name, shape flags,
    ``norm_pix_loss``, ``sparse_stages``, ``model_args``); with ``weights`` (any source
    :func:`maekit.hub.load_weights_into` reads) loaded, decoder included (an encoder-only source
    cannot reconstruct: a ValueError)."""
    if not is_pretraining_model(cfg.model):
        raise ValueError(f"{cfg.model!r} is not a pretraining model; use an mae_* or convmae_* name "
                         "(classifiers such as vit_* are for finetune / linprobe)")
    if cfg.sparse_stages and not cfg.model.startswith("convmae"):  # a ConvMAE constructor argument
        raise ValueError("--sparse_stages applies to ConvMAE models (convmae_*) only")
    sparse = {"sparse_stages": True} if cfg.sparse_stages else {}
    model = create_model(cfg.model, norm_pix_loss=cfg.norm_pix_loss, **sparse, **config_overrides(cfg))
    if weights is not None:
        from ..hub import load_weights_into

        load_weights_into(model, weights, require_decoder=True)
    return model


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


def make_pretrain_step(cfg: MaskOptions, num_patches: int):
    """The Runner's ``step_fn``: batch -> (masked-autoencoder loss, images), masked as ``cfg`` says
    (:meth:`~maekit.tasks.config.MaskOptions.masking`); also the step ``maekit bench`` times and the
    forward of the reconstruction evaluation. ``noise``: the masks of a batch without mask seeds."""

    def step_fn(net, batch, noise=None):
        images = batch[0]
        # Each image's mask comes from its own (seed, epoch, index) seed: independent of the batch
        # it lands in, the worker count, the world size and of where a run was resumed.
        seeds = batch_mask_seeds(batch)
        if seeds is not None:
            noise = per_sample_noise(seeds, num_patches, images.device)
        return net(images, noise=noise, **cfg.masking()).loss, images.shape[0]

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
    in_chans, img_size = model.in_chans, model.img_size
    mean, std = resolve_mean_std(in_chans, cfg.mean, cfg.std)
    transform = pretrain_transform(cfg.augment, img_size, in_chans=in_chans, mean=mean, std=std, uint8=True,
                                   fast_decode=cfg.fast_decode, gpu_decode=cfg.decode == "gpu")
    dataset = task_dataset(cfg, "train", train_dataset, transform=transform, in_chans=in_chans,
                           img_size=img_size, labelled=False, dist=ctx.dist)
    loader = task_loader(cfg, ctx, dataset, train=True, mean=mean, std=std)
    log.info("pretraining %s (%.2fM trainable parameters) on %d images from %s",
             model.model_name, count_parameters(model) / 1e6, len(dataset), cfg.data_path)
    eff_batch, lr = learning_rate(cfg, ctx)
    optimizer = build_adamw(param_groups_weight_decay(model, cfg.weight_decay), lr=lr, betas=(0.9, 0.95))
    resolved = dict(cfg.to_dict(), model=model.model_name, lr=lr, eff_batch_size=eff_batch, mean=list(mean),
                    std=list(std), task="pretrain")
    return train_task(
        cfg, ctx, model=model, optimizer=optimizer, train_loader=loader, lr=lr, config=resolved,
        step_fn=make_pretrain_step(cfg, int(model.num_patches)),
        # Every parameter takes part in the loss, except mask_token when nothing is masked.
        find_unused_parameters=cfg.mask_ratio == 0,
        monitors=build_pretrain_monitors(cfg, model, mean=mean, std=std, train_dataset=train_dataset))
