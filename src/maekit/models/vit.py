"""Classification ViTs for fine-tuning and linear probing (docs/REFERENCE_RECIPES.md A.7).

These are timm ``VisionTransformer`` models (the ecosystem's ViT, fused attention) in the
configuration of the official ``models_vit.py``: qkv bias, LayerNorm eps 1e-6, learnable
position embeddings with a cls row, and either global average pooling of the patch tokens
followed by ``fc_norm`` (``global_pool=True``, the fine-tuning default) or the normed cls token
(``global_pool=False``). State-dict keys are the official ones, so official fine-tuned files
load strictly and our encoders load into ``timm.create_model('vit_*')``. The class is a subclass
of timm's that adds no module (so no key): only the :class:`~maekit.models.base.MaekitModel`
facts and the reference layer-decay grouping.
"""

from __future__ import annotations

from timm.layers import trunc_normal_
from timm.models import VisionTransformer as TimmVisionTransformer

from .base import VIT_GROUPS, MaekitModel
from .layers import layer_norm
from .registry import register_model


def pool_name(global_pool: bool | str) -> str:
    if isinstance(global_pool, str):
        if global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool must be True/False or 'avg'/'token', got {global_pool!r}")
        return global_pool
    return "avg" if global_pool else "token"


class VisionTransformer(MaekitModel, TimmVisionTransformer):
    """timm's ``VisionTransformer`` in the reference fine-tuning configuration (family ``'vit'``).

    Args:
        img_size: int or (H, W).
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: the ViT shape.
        num_classes: outputs of ``head`` (0: features out).
        global_pool: True / ``'avg'`` (mean of the patch tokens, then ``fc_norm``) or False /
            ``'token'`` (the normed cls token).
        drop_path_rate, drop_rate: stochastic depth and dropout.
        layer_norm_eps: epsilon of every LayerNorm (1e-6 in the reference).
    """

    family = "vit"

    def __init__(self, *, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, num_classes=1000, global_pool: bool | str = True, drop_path_rate=0.0,
                 drop_rate=0.0, layer_norm_eps=1e-6):
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            global_pool=pool_name(global_pool), embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=True, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            norm_layer=layer_norm(layer_norm_eps),
        )
        # timm 0.3.2 (the reference) initialises the cls token like pos_embed: trunc-normal std .02.
        trunc_normal_(self.cls_token, std=0.02)

    @property
    def img_size(self) -> tuple[int, int]:
        """(H, W) of the input."""
        return tuple(int(s) for s in self.patch_embed.img_size)

    @property
    def patch_size(self) -> int:
        return int(self.patch_embed.patch_size[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.patch_embed.grid_size)

    group_matcher = VIT_GROUPS  # the reference layer ids (docs/REFERENCE_RECIPES.md C.3)


_TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
_SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
_BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
_LARGE = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)
_HUGE = dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16)


@register_model(aliases=("maevit_tiny_patch16",))
def vit_tiny_patch16(**kw) -> VisionTransformer:
    """ViT-Ti/16 (192 wide, 12 blocks, 3 heads)."""
    return VisionTransformer(**{**_TINY, **kw})


@register_model(aliases=("maevit_small_patch16",))
def vit_small_patch16(**kw) -> VisionTransformer:
    """ViT-S/16 (384 wide, 12 blocks, 6 heads)."""
    return VisionTransformer(**{**_SMALL, **kw})


@register_model(aliases=("maevit_base_patch16", "vit_base_p16"))
def vit_base_patch16(**kw) -> VisionTransformer:
    """ViT-B/16 (768 wide, 12 blocks, 12 heads)."""
    return VisionTransformer(**{**_BASE, **kw})


@register_model(aliases=("maevit_large_patch16",))
def vit_large_patch16(**kw) -> VisionTransformer:
    """ViT-L/16 (1024 wide, 24 blocks, 16 heads)."""
    return VisionTransformer(**{**_LARGE, **kw})


@register_model(aliases=("maevit_huge_patch14",))
def vit_huge_patch14(**kw) -> VisionTransformer:
    """ViT-H/14 (1280 wide, 32 blocks, 16 heads)."""
    return VisionTransformer(**{**_HUGE, **kw})


ENCODER_PRESETS = {"tiny": _TINY, "small": _SMALL, "base": _BASE, "large": _LARGE, "huge": _HUGE}
