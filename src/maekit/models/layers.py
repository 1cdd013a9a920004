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
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, Mlp


def layer_norm(eps: float = 1e-6):
    """LayerNorm factory with the MAE epsilon."""
    return partial(nn.LayerNorm, eps=eps)


class Attention(nn.Module):
    """Multi-head self-attention; ``qkv`` rows are [Q; K; V], head-major inside each."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_layer=None, proj_drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        norm_layer = norm_layer or layer_norm()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


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


def init_mae_weights(module: nn.Module) -> None:
    """Reference init for Linear (xavier-uniform, zero bias) and LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
