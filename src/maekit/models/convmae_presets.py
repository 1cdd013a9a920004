"""Registered ConvMAE presets (docs/REFERENCE_RECIPES.md A.1, A.8).

Paper model: ConvMAE-B (widths 256/384/768, depths 2/2/11, 12 heads, strides 4/2/2, decoder
512 wide / 8 blocks / 16 heads) as ``convmae_convvit_base_patch16`` (alias of
``..._dec512d8b``) and its classifier ``convvit_base_patch16``.

Small presets for small data and tests: ``convmae_convvit_small_patch16`` /
``convvit_small_patch16`` with widths 128/256/384, depths 2/2/11, 6 heads (head width 64, as
ViT-S), strides 4/2/2 and a decoder 256 wide / 4 blocks / 8 heads (as ``mae_vit_small_patch16``).
Every argument can be overridden (``img_size``, ``in_chans``, ``depth=[1, 1, 2]``...).
"""

from __future__ import annotations

from .convmae import ConvViT, MaskedAutoencoderConvViT
from .mae_presets import PAPER_DECODER, SMALL_DECODER
from .registry import register_model

_BASE = dict(patch_size=[4, 2, 2], embed_dim=[256, 384, 768], depth=[2, 2, 11], num_heads=12,
             mlp_ratio=[4, 4, 4])
_SMALL = dict(patch_size=[4, 2, 2], embed_dim=[128, 256, 384], depth=[2, 2, 11], num_heads=6,
              mlp_ratio=[4, 4, 4])


@register_model
def convmae_convvit_small_patch16(**kw) -> MaskedAutoencoderConvViT:
    """ConvMAE-S: widths 128/256/384, depths 2/2/11, 6 heads; decoder 256 wide, 4 blocks, 8 heads."""
    return MaskedAutoencoderConvViT(**{**_SMALL, **SMALL_DECODER, **kw})


@register_model(aliases=("convmae_convvit_base_patch16",))
def convmae_convvit_base_patch16_dec512d8b(**kw) -> MaskedAutoencoderConvViT:
    """ConvMAE-B (paper): widths 256/384/768, depths 2/2/11, 12 heads; decoder 512 / 8 blocks / 16 heads."""
    return MaskedAutoencoderConvViT(**{**_BASE, **PAPER_DECODER, **kw})


@register_model
def convvit_small_patch16(**kw) -> ConvViT:
    """ConvViT-S classifier (encoder of ``convmae_convvit_small_patch16``)."""
    return ConvViT(**{**_SMALL, **kw})


@register_model
def convvit_base_patch16(**kw) -> ConvViT:
    """ConvViT-B classifier (encoder of ``convmae_convvit_base_patch16``)."""
    return ConvViT(**{**_BASE, **kw})
