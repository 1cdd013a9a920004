"""``maekit eval``: top-1 / top-5 of a classifier checkpoint or saved model on a validation set."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch.nn as nn

from ..engine.checkpoint import load_checkpoint
from ..weights import extract_state_dict
from .classify import add_linear_probe_head, build_classifier, labelled_datasets, load_classifier_weights, make_eval_fn
from .common import start_run, write_eval_json
from .config import EvalConfig

log = logging.getLogger("maekit.tasks")


def _read_classifier(path: str) -> tuple[dict, dict]:
    """(state dict, description) from a training checkpoint, an official file or a model folder."""
    if os.path.isdir(path):
        from ..convert import load_state_dict

        meta: dict[str, Any] = {}
        cfg = os.path.join(path, "config.json")
        if os.path.isfile(cfg):
            with open(cfg, encoding="utf-8") as f:
                meta = json.load(f)
        return load_state_dict(path), meta
    ckpt = load_checkpoint(path)
    return extract_state_dict(ckpt), dict(ckpt.get("extra") or {})


def load_classifier(path: str, *, model_name: str | None = None, input_size=None, patch_size: int | None = None,
                    in_chans: int | None = None, model_args: dict | None = None) -> tuple[nn.Module, list | None]:
    """Rebuild a classifier from a file or folder; returns (model, class names or None).

    The architecture comes from the checkpoint (``extra.model_name`` / folder ``config.json``) or
    ``model_name``; the class count, pooling and linear-probe head from the weights themselves.
    ``input_size`` / ``patch_size`` / ``in_chans`` / ``model_args`` override what the checkpoint records.
    """
    state, meta = _read_classifier(path)
    name = model_name or meta.get("model_name")
    if not name:
        raise ValueError(f"{path} does not record its architecture; pass --model (e.g. vit_base_patch16)")
    args = dict(meta.get("model_args") or {})
    args.update(model_args or {})
    probe = "head.1.weight" in state
    head_w = state.get("head.1.weight" if probe else "head.weight")
    if head_w is None:
        raise ValueError(f"{path} has no classifier head (is it a pretraining checkpoint? fine-tune it first)")
    for key in ("num_classes", "global_pool", "drop_path_rate"):  # from the weights; no drop path at eval
        args.pop(key, None)
    size = input_size if input_size is not None else args.pop("img_size", 224)
    args.pop("img_size", None)
    patch_size = patch_size if patch_size is not None else args.pop("patch_size", None)
    in_chans = in_chans if in_chans is not None else args.pop("in_chans", None)
    args.pop("patch_size", None), args.pop("in_chans", None)
    model = build_classifier(model=name, num_classes=int(head_w.shape[0]), input_size=size,
                             global_pool="fc_norm.weight" in state, patch_size=patch_size, in_chans=in_chans,
                             **args)  # the rest of the recorded architecture (depth, widths...)
    if probe:
        add_linear_probe_head(model)
    load_classifier_weights(model, state, label=path)
    return model, meta.get("class_names")


def run_eval(cfg: EvalConfig, *, model: nn.Module | None = None, train_dataset=None,
             eval_dataset=None) -> dict[str, Any]:
    """Evaluate as ``cfg`` says; returns ``{'test_acc1', 'test_acc5', 'test_loss'}``.

    ``model`` (a classifier) replaces ``cfg.resume``; ``eval_dataset`` (transformed ``(image,
    target)`` items) replaces ``cfg.data_path``. ``train_dataset`` is unused.
    """
    ctx = start_run(device=cfg.device, seed=0, amp=cfg.amp)
    class_names = getattr(model, "class_names", None)
    if model is None:
        model, class_names = load_classifier(cfg.resume, model_name=cfg.model, input_size=cfg.input_size,
                                             patch_size=cfg.patch_size, in_chans=cfg.in_chans,
                                             model_args=cfg.model_args)
    _, val, classes = labelled_datasets(cfg, in_chans=model.in_chans, img_size=model.img_size, train_transform=None,
                                        val_dataset=eval_dataset)
    n_out = model.head[-1].out_features if isinstance(model.head, nn.Sequential) else model.head.out_features
    if n_out != len(classes):
        raise ValueError(f"the model predicts {n_out} classes but {cfg.data_path} has {len(classes)}")
    if class_names and list(class_names) != list(classes):
        log.warning("class folders %s differ from the names stored with the model %s", classes[:5], class_names[:5])
    from ..data import build_loader

    loader = build_loader(val, batch_size=cfg.batch_size, train=False, num_workers=cfg.num_workers,
                          pin_memory=cfg.pin_mem, dist_eval=cfg.dist_eval and ctx.dist.distributed)
    stats = make_eval_fn(loader, ctx)(model.to(ctx.device))
    log.info("Accuracy of the network on the %d validation images: %.1f%%", len(val), stats["acc1"])
    result = {f"test_{k}": v for k, v in stats.items()}
    write_eval_json(cfg.output_dir, result, rank=ctx.dist.rank)
    return result
