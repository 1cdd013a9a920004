"""Transformer block of the references (timm 0.3.2 ``Block``; docs/REFERENCE_RECIPES.md A.3).

Pre-norm residual block with a fused ``qkv`` projection and attention through
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available).
Module names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``)
are the checkpoint keys of every reference and of timm.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.models.vision_transformer import Block as TimmBlock


def layer_norm(eps: float = 1e-6):
    """LayerNorm factory with the MAE epsilon."""
    return partial(nn.LayerNorm, eps=eps)


class Block(TimmBlock):
    """The references' block, timm's ``vision_transformer.Block``: ``x + DropPath(Attn(LN(x)))`` then
    ``x + DropPath(MLP(LN(x)))`` on (B, N, D) tokens, attention through
    ``F.scaled_dot_product_attention`` (``qkv`` rows [Q; K; V], head-major inside each)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_layer=None, proj_drop: float = 0.0, attn_drop: float = 0.0):
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path,
                         norm_layer=norm_layer or layer_norm(), proj_drop=proj_drop, attn_drop=attn_drop)

    @property
    def drop_path(self) -> nn.Module:
        """The stochastic depth of both branches (timm's ``drop_path1`` / ``drop_path2``)."""
        return self.drop_path1


class GradCheckpointMixin:
    """timm's ``set_grad_checkpointing`` hook for models whose block loops use :func:`run_blocks`."""

    grad_checkpointing = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them:
        activation memory drops to about one block's worth plus the block inputs, for about
        one more forward pass of compute. Gradients are unchanged (RNG state is replayed)."""
        self.grad_checkpointing = bool(enable)


def run_blocks(blocks, x: torch.Tensor, *args, checkpoint: bool = False) -> torch.Tensor:
    """``x = blk(x, *args)`` for each callable in ``blocks``; with ``checkpoint`` (and autograd
    recording) each call goes through ``torch.utils.checkpoint`` (non-reentrant, so it composes
    with DDP, ``torch.compile`` and inputs that do not require grad)."""
    ckpt = checkpoint and torch.is_grad_enabled()
    for blk in blocks:
        x = torch.utils.checkpoint.checkpoint(blk, x, *args, use_reentrant=False) if ckpt else blk(x, *args)
    return x


def init_mae_weights(module: nn.Module, linear_init=nn.init.xavier_uniform_) -> None:
    """Reference init for Linear (``linear_init``: xavier-uniform in the MAE models, trunc-normal .02
    in the ConvViT classifier; zero bias) and LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        linear_init(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
