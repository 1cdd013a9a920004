"""What a registered model looks like, read off a weight-less (meta-device) instance.

``describe(name, args)`` builds the model on PyTorch's ``meta`` device (no memory, no init
cost) and records its family, its architecture numbers and the shape of every state-dict
entry. The format writers (HF ``config.json``) and the model inference / fit checks use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn

from .errors import ConversionError

PRETRAIN_FAMILIES = ("mae", "convmae")
CLASSIFIER_FAMILIES = ("vit", "convvit")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a registered model (what a converter needs to know about it)."""

    name: str
    args: dict[str, Any]
    family: str  # 'mae' | 'vit' | 'convmae' | 'convvit'
    img_size: tuple[int, int]
    patch_size: Any  # int (ViT) or tuple of 3 stage strides (ConvMAE)
    in_chans: int
    embed_dim: Any  # int or tuple of 3
    depth: Any  # int or tuple of 3
    num_heads: int
    mlp_ratio: Any  # float or tuple of 3
    layer_norm_eps: float
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    norm_pix_loss: bool | None = None
    num_classes: int | None = None
    global_pool: str | None = None  # 'avg' | 'token'
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_pretrain(self) -> bool:
        return self.family in PRETRAIN_FAMILIES

    @property
    def width(self) -> int:
        """Width of the attention blocks (stage 3 for ConvMAE)."""
        return self.embed_dim[-1] if isinstance(self.embed_dim, tuple) else self.embed_dim

    def arch(self) -> dict[str, Any]:
        """The architecture numbers as a flat dict (keys of the constructor arguments)."""
        keys = (
            "img_size",
            "patch_size",
            "in_chans",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_ratio",
            "layer_norm_eps",
            "decoder_embed_dim",
            "decoder_depth",
            "decoder_num_heads",
            "norm_pix_loss",
            "num_classes",
            "global_pool",
        )
        return {k: getattr(self, k) for k in keys}


def _ratio(fc1: nn.Module, dim: int) -> float:
    out = fc1.out_features if isinstance(fc1, nn.Linear) else fc1.out_channels
    return out / dim


def _facts(model: nn.Module) -> dict[str, Any]:
    from ..models.mae import MaskedAutoencoderViT

    try:
        from ..models.convmae import ConvViT, MaskedAutoencoderConvViT
    except ImportError:  # pragma: no cover - ConvMAE is part of the package
        ConvViT = MaskedAutoencoderConvViT = ()  # type: ignore[assignment]
    from timm.models import VisionTransformer

    f: dict[str, Any] = {}
    if isinstance(model, MaskedAutoencoderViT):
        d = model.cls_token.shape[-1]
        f.update(
            family="mae",
            img_size=tuple(model.img_size),
            patch_size=int(model.patch_size),
            in_chans=model.in_chans,
            embed_dim=d,
            depth=len(model.blocks),
            layer_norm_eps=model.norm.eps,
            norm_pix_loss=bool(model.norm_pix_loss),
        )
        blocks = model.blocks
    elif isinstance(model, VisionTransformer):
        d = model.embed_dim
        pe = model.patch_embed
        norm = model.fc_norm if model.global_pool == "avg" else model.norm
        f.update(
            family="vit",
            img_size=tuple(pe.img_size),
            patch_size=int(pe.patch_size[0]),
            in_chans=pe.proj.in_channels,
            embed_dim=d,
            depth=len(model.blocks),
            layer_norm_eps=getattr(norm, "eps", 1e-6),
            num_classes=model.num_classes,
            global_pool=model.global_pool,
        )
        blocks = model.blocks
    elif isinstance(model, (MaskedAutoencoderConvViT, ConvViT)):
        pre = isinstance(model, MaskedAutoencoderConvViT)
        f.update(
            family="convmae" if pre else "convvit",
            img_size=tuple(model.img_size),
            patch_size=tuple(model.stage_patch_sizes),
            in_chans=model.in_chans,
            embed_dim=tuple(model.embed_dims),
            depth=tuple(model.depths),
            mlp_ratio=tuple(float(r) for r in model.mlp_ratios),
        )
        if pre:
            f.update(norm_pix_loss=bool(model.norm_pix_loss), layer_norm_eps=model.norm.eps)
        else:
            norm = model.fc_norm if model.global_pool == "avg" else model.norm
            f.update(
                num_classes=model.num_classes,
                global_pool=model.global_pool,
                layer_norm_eps=getattr(norm, "eps", 1e-6),
            )
        blocks = model.blocks3
        d = model.embed_dims[-1]
    else:
        raise ConversionError(f"maekit.convert does not know models of type {type(model).__name__}")
    f["num_heads"] = blocks[0].attn.num_heads if len(blocks) else 0
    if "mlp_ratio" not in f:
        f["mlp_ratio"] = _ratio(blocks[0].mlp.fc1, d) if len(blocks) else 4.0
    if f["family"] in PRETRAIN_FAMILIES:
        f.update(
            decoder_embed_dim=model.decoder_embed.out_features,
            decoder_depth=len(model.decoder_blocks),
            decoder_num_heads=model.decoder_blocks[0].attn.num_heads if len(model.decoder_blocks) else 0,
        )
    return f


def _key(args: dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)


@lru_cache(maxsize=256)
def _describe(name: str, args_json: str) -> ModelSpec:
    from ..models import create_model

    args = json.loads(args_json)
    try:
        with torch.device("meta"):
            model = create_model(name, **args)
    except ValueError as e:
        raise ConversionError(f"cannot build model {name!r} with {args}: {e}") from e
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return ModelSpec(name=name, args=args, shapes=shapes, **_facts(model))


def describe(name: str, args: dict[str, Any] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``create_model(name, **args)`` (built on the meta device, cached)."""
    return _describe(name, _key(dict(args or {})))


@lru_cache(maxsize=1)
def _presets() -> tuple[tuple[str, ModelSpec], ...]:
    from ..models import canonical_name, list_models

    names = list_models()
    out = []
    for canonical in list_models(include_aliases=False):
        aliases = [n for n in names if canonical_name(n) == canonical]
        short = canonical.replace("_dec512d8b", "")
        friendly = short if short in aliases else canonical
        try:
            out.append((friendly, describe(friendly)))
        except ConversionError:  # a model kind this module does not know: not a candidate
            continue
    return tuple(out)


def presets(family: str) -> list[tuple[str, ModelSpec]]:
    """Registered models of one family as (name, spec), official names preferred over aliases."""
    return [(n, s) for n, s in _presets() if s.family == family]
