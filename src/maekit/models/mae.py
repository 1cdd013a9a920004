"""MaskedAutoencoderViT: the MAE pretraining model (docs/REFERENCE_RECIPES.md A.2-A.6, B.1-B.4).

Architecture, initialisation, masking, position tables, module names and loss are those of
the official ``models_mae.py``. Generalised to any ``in_chans`` and to non-square images
(``img_size=(H, W)``), and ``mask_ratio=0`` gives a finite loss (see ``masked_mse_loss``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import PatchEmbed

from .base import MaekitModel, stem_blocks_matcher
from .layers import Block, GradCheckpointMixin, init_mae_weights, layer_norm, run_blocks
from .masking import PretrainingMixin, gather_tokens, random_masking_indices
from .pos_embed import _as_hw, get_2d_sincos_pos_embed


def check_images(imgs: torch.Tensor, in_chans: int, img_size: tuple[int, int]) -> None:
    """Raise a ValueError that names expected and given shapes when images do not fit the model."""
    if imgs.ndim != 4:
        raise ValueError(f"expected images of shape (N, {in_chans}, {img_size[0]}, {img_size[1]}), "
                         f"got a tensor of shape {tuple(imgs.shape)}")
    if imgs.shape[1] != in_chans:
        raise ValueError(f"the model takes {in_chans}-channel images, got {imgs.shape[1]} channels "
                         f"(shape {tuple(imgs.shape)})")
    if tuple(imgs.shape[2:]) != tuple(img_size):
        raise ValueError(f"the model takes {img_size[0]}x{img_size[1]} images, got "
                         f"{imgs.shape[2]}x{imgs.shape[3]}; resize them or build the model with "
                         f"img_size=({imgs.shape[2]}, {imgs.shape[3]})")


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
        self.norm_pix_loss = norm_pix_loss
        norm_layer = layer_norm(layer_norm_eps)

        if self.img_size[0] % patch_size or self.img_size[1] % patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {patch_size}")
        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)  # timm's: conv, (N, L, D)
        self.patch_size = patch_size
        self.grid_size = self.patch_embed.grid_size
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed sin-cos tables: in the state dict (official keys) but never trained.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)]
        )
        self.norm = norm_layer(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
             for _ in range(decoder_depth)]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.initialize_weights()

    family = "mae"

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm parameter grouping: ``cls_token`` / ``pos_embed`` / ``patch_embed`` -> 0, ``blocks.k``
        -> k + 1, the rest (``norm``, the decoder) -> last (docs/REFERENCE_RECIPES.md C.3)."""
        return stem_blocks_matcher(r"^cls_token|^pos_embed|^patch_embed", r"^blocks\.(\d+)", coarse)

    # ------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """Reference init order (docs/REFERENCE_RECIPES.md A.5)."""
        self.pos_embed.data.copy_(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.grid_size, True)[None])
        self.decoder_pos_embed.data.copy_(
            get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid_size, True)[None]
        )
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear of fan_in C*p*p
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_mae_weights)

    # ------------------------------------------------------------- patches
    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def random_masking(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """(N, L, D) -> x_masked (N, len_keep, D), mask (N, L), ids_restore (N, L)."""
        ids_keep, mask, ids_restore = random_masking_indices(x.shape[0], x.shape[1], mask_ratio, noise,
                                                             device=x.device)
        return gather_tokens(x, ids_keep), mask, ids_restore

    # ------------------------------------------------------------- forward
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Encode the visible patches.

        Returns:
            latent (N, 1 + len_keep, D) with the cls token first, mask (N, L), ids_restore (N, L).
        """
        check_images(imgs, self.in_chans, self.img_size)
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = run_blocks(self.blocks, x, checkpoint=self.grad_checkpointing)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(N, 1 + len_keep, D) -> pred (N, L, p*p*C) for all patches."""
        x = self.decoder_embed(latent)
        n_mask = ids_restore.shape[1] + 1 - x.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(x.shape[0], n_mask, -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = gather_tokens(x_, ids_restore)  # back to spatial order
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        x = run_blocks(self.decoder_blocks, x, checkpoint=self.grad_checkpointing)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encoder on all patches, no masking.

        Returns:
            (N, 1 + L, D): normalised cls token then patch tokens in spatial (row-major) order.
        """
        check_images(imgs, self.in_chans, self.img_size)
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = run_blocks(self.blocks, x, checkpoint=self.grad_checkpointing)
        return self.norm(x)
