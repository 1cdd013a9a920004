"""``maekit eval``: top-1 / top-5 of a classifier checkpoint or saved model on a validation set."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import torch.nn as nn

from ..engine.checkpoint import load_checkpoint
from ..weights import extract_state_dict
from .classify import (add_linear_probe_head, build_classifier, labelled_datasets, load_classifier_weights,
                       make_eval_fn, model_img_size, model_in_chans)
from .common import image_size, start_run, write_eval_json

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


def load_classifier(path: str, *, model_name: str | None = None, input_size=None) -> tuple[nn.Module, list | None]:
    """Rebuild a classifier from a file or folder; returns (model, class names or None).

    The architecture comes from the checkpoint (``extra.model_name`` / folder ``config.json``) or
    ``model_name``; the class count, pooling and linear-probe head from the weights themselves.
    """
    state, meta = _read_classifier(path)
    name = model_name or meta.get("model_name")
    if not name:
        raise ValueError(f"{path} does not record its architecture; pass --model (e.g. vit_base_patch16)")
    args = dict(meta.get("model_args") or {})
    probe = "head.1.weight" in state
    head_w = state.get("head.1.weight" if probe else "head.weight")
    if head_w is None:
        raise ValueError(f"{path} has no classifier head (is it a pretraining checkpoint? fine-tune it first)")
    args["num_classes"] = int(head_w.shape[0])
    args["global_pool"] = "fc_norm.weight" in state
    if input_size is not None:
        args["img_size"] = image_size(input_size)
    model = build_classifier(model=name, num_classes=args.pop("num_classes"), input_size=args.pop("img_size", 224),
                             global_pool=args.pop("global_pool"), patch_size=args.pop("patch_size", None),
                             in_chans=args.pop("in_chans", None),
                             # the rest of the recorded architecture (depth, widths...); no drop path at eval
                             **{k: v for k, v in args.items() if k != "drop_path_rate"})
    if probe:
        add_linear_probe_head(model)
    load_classifier_weights(model, state, label=path)
    return model, meta.get("class_names")


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate from parsed ``maekit eval`` options; returns ``{'test_acc1', 'test_acc5', 'test_loss'}``."""
    ctx = start_run(device=args.device, seed=0, amp=args.amp)
    model, class_names = load_classifier(args.resume, model_name=args.model, input_size=args.input_size)
    in_chans, img_size = model_in_chans(model), model_img_size(model)
    _, val, classes = labelled_datasets(args, in_chans=in_chans, img_size=img_size, train_transform=None)
    n_out = model.head[-1].out_features if isinstance(model.head, nn.Sequential) else model.head.out_features
    if n_out != len(classes):
        raise ValueError(f"the model predicts {n_out} classes but {args.data_path} has {len(classes)}")
    if class_names and list(class_names) != list(classes):
        log.warning("class folders %s differ from the names stored with the model %s", classes[:5], class_names[:5])
    from ..data import build_loader

    loader = build_loader(val, batch_size=args.batch_size, train=False, num_workers=args.num_workers,
                          dist_eval=args.dist_eval and ctx.dist.distributed)
    stats = make_eval_fn(loader, ctx)(model.to(ctx.device))
    log.info("Accuracy of the network on the %d validation images: %.1f%%", len(val), stats["acc1"])
    result = {f"test_{k}": v for k, v in stats.items()}
    write_eval_json(args.output_dir, result, rank=ctx.dist.rank)
    return result
