"""Fixed 2-D sine-cosine position embeddings (MAE, docs/REFERENCE_RECIPES.md A.6) and their resizing.

The table matches the official ``util/pos_embed.py`` exactly: the first half of the channels
encodes the x (column) coordinate, the second half the y (row) coordinate, patches in
row-major order, and an optional all-zero row in front for the cls token. We compute in
float64 (like the official NumPy code) and return float32.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed


def _as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def get_1d_sincos_pos_embed(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos code.

    Args:
        embed_dim: output width E (even).
        pos: (M,) positions.

    Returns:
        (M, E) tensor: ``concat(sin(pos * omega), cos(pos * omega))`` with
        ``omega[i] = 1 / 10000 ** (i / (E / 2))``.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even for a sin-cos code, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_size: int | tuple[int, int], cls_token: bool = False
) -> torch.Tensor:
    """2-D sin-cos table for a grid of patches.

    Args:
        embed_dim: channel width D (divisible by 4).
        grid_size: G or (Gh, Gw).
        cls_token: prepend one all-zero row.

    Returns:
        float32 tensor (Gh*Gw [+1], D); rows in row-major patch order.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2-D sin-cos table, got {embed_dim}")
    gh, gw = _as_hw(grid_size)
    # 'xy' indexing: grid_x[i, j] = j (column), grid_y[i, j] = i (row); the x code comes first.
    cols, rows = (torch.arange(n, dtype=torch.float64) for n in (gw, gh))
    grids = torch.meshgrid(cols, rows, indexing="xy")
    emb = torch.cat([get_1d_sincos_pos_embed(embed_dim // 2, g) for g in grids], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def resize_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resize a (1, prefix + Gh*Gw, D) position table to a new grid (docs/REFERENCE_RECIPES.md A.6).

    Bicubic, ``align_corners=False``, prefix (cls) rows kept in front, as the official
    ``interpolate_pos_embed``. ``old_grid`` defaults to a square grid.

    Returns:
        (1, prefix + new_h*new_w, D) tensor.
    """
    if old_grid is None:
        side = int(round((pos_embed.shape[1] - num_prefix_tokens) ** 0.5))
        if side * side != pos_embed.shape[1] - num_prefix_tokens:
            raise ValueError(f"cannot infer the grid of a position table with "
                             f"{pos_embed.shape[1] - num_prefix_tokens} patch rows; pass old_grid")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, list(new_grid), list(old_grid), num_prefix_tokens=num_prefix_tokens,
                                  interpolation="bicubic", antialias=False)
