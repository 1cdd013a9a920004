"""Registered MAE pretraining presets (docs/REFERENCE_RECIPES.md A.1, A.2).

Small presets for small data and tests: ``mae_vit_tiny_patch16`` (ViT-Ti encoder, decoder
128 wide / 2 blocks / 4 heads) and ``mae_vit_small_patch16`` (ViT-S encoder, decoder 256 wide /
4 blocks / 8 heads). The decoders are lighter than the 512/8 of the paper models because a
small encoder on small images gains nothing from a decoder wider than itself.
"""

from __future__ import annotations

from .mae import MaskedAutoencoderViT
from .registry import register_model
from .vit import ENCODER_PRESETS

# The decoders of the paper models and of the small presets (ConvMAE's too).
PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
SMALL_DECODER = dict(decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8)


def _mae(encoder: str, decoder: dict, overrides: dict) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(**{**ENCODER_PRESETS[encoder], **decoder, **overrides})


@register_model
def mae_vit_tiny_patch16(**kw) -> MaskedAutoencoderViT:
    """MAE with a ViT-Ti/16 encoder and a 128-wide, 2-block decoder."""
    return _mae("tiny", dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4), kw)


@register_model
def mae_vit_small_patch16(**kw) -> MaskedAutoencoderViT:
    """MAE with a ViT-S/16 encoder and a 256-wide, 4-block decoder."""
    return _mae("small", SMALL_DECODER, kw)


@register_model(aliases=("mae_vit_base_patch16", "mae_vit_base_p16"))
def mae_vit_base_patch16_dec512d8b(**kw) -> MaskedAutoencoderViT:
    """MAE-B/16: ViT-B encoder, 512-wide 8-block decoder (paper)."""
    return _mae("base", PAPER_DECODER, kw)


@register_model(aliases=("mae_vit_large_patch16",))
def mae_vit_large_patch16_dec512d8b(**kw) -> MaskedAutoencoderViT:
    """MAE-L/16: ViT-L encoder, 512-wide 8-block decoder (paper)."""
    return _mae("large", PAPER_DECODER, kw)


@register_model(aliases=("mae_vit_huge_patch14",))
def mae_vit_huge_patch14_dec512d8b(**kw) -> MaskedAutoencoderViT:
    """MAE-H/14: ViT-H encoder, 512-wide 8-block decoder (paper)."""
    return _mae("huge", PAPER_DECODER, kw)
