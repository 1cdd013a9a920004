"""Export a ViT classifier as a timm model folder: ``timm.create_model("local-dir:PATH", pretrained=True)``.

The folder is written by timm itself (``timm.models.save_for_hf``: ``config.json`` with the
architecture, ``model_args`` and a complete ``pretrained_cfg`` -- num_classes, input size,
pooling, mean / std, crop -- plus ``model.safetensors``) from a genuine timm model that holds
our weights (loaded strictly: the keys are the official ones), so timm needs no other argument
and gives the same logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

# (width, heads) -> the timm architecture of the same shape; the other arguments are recorded too.
_TIMM_ARCH = {(192, 3): "vit_tiny_patch16_224", (384, 6): "vit_small_patch16_224", (768, 12): "vit_base_patch16_224",
              (1024, 16): "vit_large_patch16_224", (1280, 16): "vit_huge_patch14_224"}


def export_timm(model: nn.Module, save_directory: str | os.PathLike) -> Path:
    """Write ``model`` (a maekit ``vit_*`` classifier) as a timm folder; returns the folder.

    Raises:
        ValueError: a pretraining or ConvViT model (timm has no MAE / ConvMAE architecture;
            export the classifier built from it), or a LayerNorm epsilon timm's ViT cannot take.
    """
    import timm
    from timm.models import save_for_hf

    if model.family != "vit":
        raise ValueError(f"timm has no {model.family} architecture; export a vit_* classifier "
                         "(maekit.load_model(source, num_classes=...) builds one from pretraining weights)")
    arch = model.architecture()
    if arch["layer_norm_eps"] != 1e-6:
        raise ValueError(f"timm's ViT uses LayerNorm eps 1e-6; this model has {arch['layer_norm_eps']}")
    args = {k: arch[k] for k in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio")}
    args.update(img_size=list(arch["img_size"]), num_classes=model.num_classes, global_pool=model.global_pool)
    twin = timm.create_model(_TIMM_ARCH.get((arch["embed_dim"], arch["num_heads"]), "vit_base_patch16_224"), **args)
    twin.load_state_dict(model.state_dict(), strict=True)
    pre = model.preprocessor_config()
    data = dict(mean=tuple(pre["image_mean"]), std=tuple(pre["image_std"]), crop_pct=pre["crop_pct"],
                interpolation="bicubic")
    labels = {"label_names": list(model.class_names)} if model.class_names else None
    save_for_hf(twin, os.fspath(save_directory), model_config=labels, model_args=args, safe_serialization=True,
                data_config=data)
    return Path(save_directory)
