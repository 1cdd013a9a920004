"""MaskedAutoencoderViT: the MAE pretraining model (docs/REFERENCE_RECIPES.md A.2-A.6, B.1-B.4).

Architecture, initialisation, masking, position tables, module names and loss are those of
the official ``models_mae.py``. Generalised to any ``in_chans`` and to non-square images
(``img_size=(H, W)``), and masking nothing gives a finite loss (see ``masking.masked_mse_loss``).
The forward pass, the decoder and their initialisation are :class:`~.masking.PretrainingMixin`'s.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import PatchEmbed

from .base import VIT_GROUPS, MaekitModel
from .layers import Block, GradCheckpointMixin, layer_norm, run_blocks
from .masking import PretrainingMixin, gather_tokens
from .pos_embed import _as_hw


class MaskedAutoencoderViT(PretrainingMixin, MaekitModel, GradCheckpointMixin, nn.Module):
    """Masked autoencoder with a ViT encoder and a light ViT decoder.

    Args:
        img_size: int or (H, W).
        patch_size: p; H and W must be divisible by it.
        in_chans: C.
        embed_dim, depth, num_heads: encoder width, blocks and heads.
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder shape.
        mlp_ratio: MLP hidden width / width (encoder and decoder).
        norm_pix_loss: per-patch normalised pixel targets.
        layer_norm_eps: epsilon of every LayerNorm (1e-6 in the reference factories).
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, norm_pix_loss: bool = False, layer_norm_eps: float = 1e-6):
        super().__init__()
        self.img_size = _as_hw(img_size)
        self.in_chans = in_chans
        norm_layer = layer_norm(layer_norm_eps)

        if self.img_size[0] % patch_size or self.img_size[1] % patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {patch_size}")
        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)  # timm's: conv, (N, L, D)
        self.patch_size = patch_size
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed sin-cos table: in the state dict (official key) but never trained.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)]
        )
        self._build_decoder(embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                            norm_layer, norm_pix_loss)
        self.initialize_weights(self.patch_embed.proj, [self.cls_token, self.mask_token])

    family = "mae"
    num_prefix_tokens = 1  # the cls token

    group_matcher = VIT_GROUPS  # the decoder goes with the last layer

    def _encode(self, imgs: torch.Tensor, ids_keep: torch.Tensor | None = None, mask=None) -> torch.Tensor:
        """The patches (those of ``ids_keep`` (N, K), in its order, when given) with the cls token in
        front through the encoder: (N, 1 + K, D), normalised."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        if ids_keep is not None:
            x = gather_tokens(x, ids_keep)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = run_blocks(self.blocks, torch.cat([cls, x], dim=1), checkpoint=self.grad_checkpointing)
        return self.norm(x)
