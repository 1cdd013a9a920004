"""``maekit eval``: top-1 / top-5 of a classifier checkpoint or saved model on a validation set."""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from ..data import resolve_mean_std
from .common import config_overrides, start_run, task_loader, write_json
from .config import EvalConfig
from .labelled import labelled_datasets, make_eval_fn

log = logging.getLogger("maekit.tasks")


def load_classifier(cfg: EvalConfig) -> nn.Module:
    """The classifier ``cfg.resume`` names (any source :func:`maekit.hub.load_model` reads), with the
    shape options and ``model_args`` of ``cfg`` applied; ``cfg.model`` names the architecture of a
    file that does not record one."""
    from ..hub import load_model
    from .arch_from_source import with_source_arch

    with_source_arch(cfg)  # says what the source records; refuses a contradicting --model / --patch_size
    model = load_model(cfg.resume, model_name=cfg.model, download=False, **config_overrides(cfg))
    if model.is_pretraining:
        raise ValueError(f"{cfg.resume} is a pretraining model ({model.model_name}): it has no classifier head "
                         "(fine-tune it first)")
    return model


def run_eval(cfg: EvalConfig, *, model: nn.Module | None = None, train_dataset=None,
             eval_dataset=None) -> dict[str, Any]:
    """Evaluate as ``cfg`` says; returns ``{'test_acc1', 'test_acc5', 'test_loss'}``.

    ``model`` (a classifier) replaces ``cfg.resume``; ``eval_dataset`` (any dataset object,
    :func:`maekit.data.as_dataset`) replaces ``cfg.data_path``. ``train_dataset`` is unused.
    """
    ctx = start_run(device=cfg.device, seed=0, amp=cfg.amp)
    if model is None:
        model = load_classifier(cfg)
    _, val, classes = labelled_datasets(cfg, in_chans=model.in_chans, img_size=model.img_size, train_transform=None,
                                        val_dataset=eval_dataset)
    n_out = model.head[-1].out_features if isinstance(model.head, nn.Sequential) else model.head.out_features
    if n_out != len(classes):
        raise ValueError(f"the model predicts {n_out} classes but {cfg.data_path} has {len(classes)}")
    if model.class_names and list(model.class_names) != list(classes):
        log.warning("class folders %s differ from the names stored with the model %s", classes[:5],
                    model.class_names[:5])
    mean, std = resolve_mean_std(model.in_chans, cfg.mean, cfg.std)  # uint8 batches are normalised on the device
    loader = task_loader(cfg, ctx, val, train=False, mean=mean, std=std)
    stats = make_eval_fn(loader, ctx)(model.to(ctx.device))
    log.info("Accuracy of the network on the %d validation images: %.1f%%", len(val), stats["acc1"])
    result = {f"test_{k}": v for k, v in stats.items()}
    write_json(cfg.output_dir, "eval.json", result, rank=ctx.dist.rank)
    return result
