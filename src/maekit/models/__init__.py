"""Models: registry, MAE / ConvMAE pretraining models and classifiers. torch + timm only."""

from . import convmae_presets, mae_presets, vit  # noqa: F401  (registers the presets)
from .mae import MaskedAutoencoderViT
from .masking import patchify, random_masking_indices, unpatchify
from .outputs import MAEOutput
from .pos_embed import get_2d_sincos_pos_embed, resize_pos_embed
from .base import MaekitModel
from .config import ModelConfig
from .registry import (canonical_name, classifier_config, classifier_name, create_model, is_model, is_pretraining_model,
                       list_models, register_model)

__all__ = [
    "MAEOutput", "MaekitModel", "MaskedAutoencoderViT", "ModelConfig", "canonical_name", "classifier_config", "classifier_name",
    "create_model", "get_2d_sincos_pos_embed",
    "is_model", "is_pretraining_model", "list_models", "patchify", "random_masking_indices", "register_model",
    "resize_pos_embed", "unpatchify",
]
