"""timm model folders: ``config.json`` (``architecture``, ``pretrained_cfg``...) + ``model.safetensors``.

This is the layout of timm's Hub repositories (``timm/vit_base_patch16_224.mae``) and of
``timm.models.save_for_hf``; ``timm.create_model("local-dir:PATH", pretrained=True)`` and
``timm.create_model("hf-hub:org/name", pretrained=True)`` read it with no other argument.

Written by timm itself: a genuine timm ``VisionTransformer`` of the same shape takes the weights
(strictly: the names are the official ones, docs/REFERENCE_RECIPES.md D.7), then
``save_for_hf`` records the architecture, ``model_args``, labels and a complete ``pretrained_cfg``
(num_classes, input size, pooling, mean / std, crop), so the export gives the same outputs in timm.
A pretraining model exports its encoder with ``num_classes=0``, like timm's own ``.mae`` weights.

Read: the weights (``model.safetensors``, else ``pytorch_model.bin``, or the files of a shard
index) under the official names,
and as hints the input size, ``num_heads`` and labels the config states.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_dir
from .base import label_list, preprocessing_hint, read_json_config, size_arg
from .errors import ConversionError

# (width, heads) -> the timm architecture of that shape; the other arguments are passed too.
_TIMM_ARCH = {(192, 3): "vit_tiny_patch16_224", (384, 6): "vit_small_patch16_224", (768, 12): "vit_base_patch16_224",
              (1024, 16): "vit_large_patch16_224", (1280, 16): "vit_huge_patch14_224"}


def timm_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` when it is timm's (it names an ``architecture``), else None."""
    cfg = read_json_config(folder)
    return cfg if isinstance(cfg.get("architecture"), str) else None


def timm_hints(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a timm ``config.json`` says beside the weights: heads, image size, preprocessing, labels."""
    args = cfg.get("model_args") if isinstance(cfg.get("model_args"), dict) else {}
    pre = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    hints: dict[str, Any] = {"source": f"the timm config.json ({cfg['architecture']})"}
    if args.get("num_heads") is not None:
        hints["num_heads"] = int(args["num_heads"])
    if size := size_arg(args.get("img_size") or (pre.get("input_size") or [None])[1:]):
        hints["img_size"] = size
    if (norm := preprocessing_hint(pre.get("mean"), pre.get("std"), pre.get("crop_pct"))) is not None:
        hints["preprocessing"] = norm
    if labels := label_list(cfg.get("label_names", pre.get("label_names"))):
        hints["class_names"] = labels
    return hints


def _timm_args(spec) -> dict[str, Any]:
    pool = spec.global_pool or "token"  # a pretraining encoder: cls token + final norm, as timm's '.mae'
    return {"patch_size": spec.patch_size, "in_chans": spec.in_chans, "embed_dim": spec.embed_dim,
            "depth": spec.depth, "num_heads": spec.num_heads, "mlp_ratio": spec.mlp_ratio,
            "img_size": list(spec.img_size), "num_classes": spec.num_classes or 0, "global_pool": pool}


_PROVENANCE = ("tag", "hf_hub_id", "hf_hub_filename", "url", "file", "license", "paper_ids", "paper_name",
               "origin_url", "notes", "architecture_tag")


def write_folder(tensors: Mapping[str, torch.Tensor], dst: Path, spec) -> tuple[Path, list[str]]:
    """``tensors`` (a timm ViT's state dict: decoder dropped, linear-probe head folded) as a timm
    folder written by ``timm.models.save_for_hf``; returns (folder, notes).

    timm's ViT has LayerNorm eps 1e-6 (the reference's) and no way to record another in the folder;
    a model with another eps (transformers' ViTMAE default, 1e-12) is written with a note: its outputs
    in timm differ by about 1e-5."""
    import timm
    from timm.models import save_for_hf

    if spec is None:
        raise ConversionError("a timm folder needs the model's architecture; give --model", dst)
    args = _timm_args(spec)
    with torch.device("meta"):  # no memory, no init: every tensor comes from ``tensors`` (assign)
        twin = timm.create_model(_TIMM_ARCH.get((spec.embed_dim, spec.num_heads), "vit_base_patch16_224"), **args)
    missing, unexpected = twin.load_state_dict(dict(tensors), strict=False, assign=True)
    if missing or unexpected:
        raise ConversionError(f"timm's VisionTransformer does not take these weights (missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]})", dst)
    pre = spec.preprocessor()
    data = {"mean": tuple(pre["image_mean"]), "std": tuple(pre["image_std"]), "crop_pct": pre["crop_pct"],
            "interpolation": "bicubic"}
    labels = {"label_names": list(spec.class_names)} if spec.class_names else None

    def write(tmp: Path) -> None:
        save_for_hf(twin, os.fspath(tmp), model_config=labels, model_args=args, safe_serialization=True,
                    data_config=data)
        # num_classes stays at the top level and in pretrained_cfg; in model_args as well it breaks
        # transformers' TimmWrapper (it passes num_classes=num_labels beside model_args).
        cfg = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        cfg.get("model_args", {}).pop("num_classes", None)
        # the twin's pretrained_cfg describes timm's own weights of that name (tag augreg_in21k_ft_in1k,
        # its Hub id, licence, paper): none of that is true of these weights
        for key in _PROVENANCE:
            cfg.get("pretrained_cfg", {}).pop(key, None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    notes = [] if spec.layer_norm_eps == 1e-6 else [
        (f"LayerNorm eps {spec.layer_norm_eps:g} written as timm's 1e-6 (timm's ViT records no other; outputs "
         "differ by about 1e-5)")]
    return atomic_write_dir(dst, write), notes
