"""ConvMAE building blocks: geometry, the convolutional stages (``CBlock``) and the exact
sparse path over visible positions (``VisibleMap``). The models are in :mod:`.convmae`.

Speed. Stages 1 and 2 run densely over all positions in the reference (the masked ones too):
at 224 px they (with the fusion convs) are ~45% of the ConvMAE-B pretraining FLOPs [calc].
This computation is provably *irrelevant* to the loss: a CBlock multiplies ``conv1``'s output
by the visible map before the depthwise conv, so a masked position contributes exactly 0 to
every neighbour's 5x5 sum; every other op (LayerNorm, 1x1 convs, conv MLP, GELU) is pointwise,
and the patch embeds and fusion convs have kernel = stride aligned with the mask blocks. Hence
features at visible positions depend on visible pixels only, and features at masked positions
only reach masked stage-3 tokens, which are discarded (their gradients are exactly zero). So
the depthwise receptive field does *not* spoil an exact sparse path: ``sparse_stages=True``
computes every pointwise op on the visible positions only (25% of them at ratio 0.75) and the
depthwise conv on a zero-filled map (the reference's masked map exactly), then gathers the
visible positions back. Loss, prediction and all gradients equal the dense path up to fp32
summation order (``tests/test_convmae.py`` checks both paths against a functional rewrite of
the reference forward and against each other). It is off by default, so that the default is
the reference computation. Both paths keep the CBlock data channel-last (1x1 convs as Linear
layers; on the CPU the depthwise conv reads the NHWC view, ~10x faster than NCHW there): the
same maths as the reference's NCHW convs, fp32 round-off aside. Measured on a 2-core CPU,
batch 4 at 224 px, fp32 train step: MAE-B 3.7 img/s, ConvMAE-B dense 1.8, sparse 2.9
(``benchmarks/convmae_vs_mae.py``); GPU figures are not measured here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from .layers import Block, layer_norm
from .pos_embed import _as_hw

CONV_NORM_EPS = 1e-5  # the CBlock / PatchEmbed LayerNorms of the reference use PyTorch's default


# ---------------------------------------------------------------------------- configuration
def _triple(value, name: str, cast=int) -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [cast(value)] * 3
    value = list(value)
    if len(value) != 3:
        raise ValueError(f"{name} takes one value per stage (3), got {value}")
    return [cast(v) for v in value]


def resolve_geometry(img_size, patch_size) -> tuple[tuple[int, int], list[int], tuple[int, int]]:
    """Normalise the reference's size arguments.

    Args:
        img_size: int, (H, W), or the reference 3-list ``[224, 56, 28]`` (image, stage-1,
            stage-2 input sizes; each an int or a pair).
        patch_size: the 3-list of stage strides ``[4, 2, 2]`` or an int P (``[P // 4, 2, 2]``).

    Returns:
        (H, W), [p1, p2, p3], the stage-3 grid (h, w).
    """
    if isinstance(patch_size, int):
        if patch_size < 4 or patch_size % 4:
            raise ValueError(f"an int patch_size is the overall stride and must be a multiple of 4, "
                             f"got {patch_size}")
        patches = [patch_size // 4, 2, 2]
    else:
        patches = _triple(patch_size, "patch_size")
    if min(patches) < 1:
        raise ValueError(f"patch sizes must be positive, got {patches}")
    stride = patches[0] * patches[1] * patches[2]
    if isinstance(img_size, Sequence) and len(img_size) == 3:
        sizes = [_as_hw(s) for s in img_size]
        hw = sizes[0]
        f1, f2 = patches[0], patches[0] * patches[1]
        expect = [hw, (hw[0] // f1, hw[1] // f1), (hw[0] // f2, hw[1] // f2)]
        if sizes != expect:
            raise ValueError(f"img_size {list(img_size)} is not consistent with patch_size {patches} "
                             f"(expected {[s[0] if s[0] == s[1] else s for s in expect]})")
    else:
        hw = _as_hw(img_size)
    if hw[0] % stride or hw[1] % stride:
        raise ValueError(f"img_size {hw[0]}x{hw[1]} is not divisible by the overall stride {stride} "
                         f"(patch_size {patches})")
    return hw, patches, (hw[0] // stride, hw[1] // stride)


# ---------------------------------------------------------------------------- layers
def _norm_channels(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map (applied in NHWC, as the reference)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvPatchEmbed(nn.Module):
    """Reference ``PatchEmbed`` of ConvMAE: strided conv -> LayerNorm (eps 1e-5) -> GELU; NCHW out."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=CONV_NORM_EPS)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, D, H/p, W/p)."""
        return self.act(_norm_channels(self.norm, self.proj(x)))

    def forward_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The same on gathered receptive fields: (..., C*p*p) in (c, kh, kw) order -> (..., D)."""
        return self.act(self.norm(F.linear(x, self.proj.weight.flatten(1), self.proj.bias)))


class CMlp(nn.Module):
    """Conv MLP: 1x1 conv, GELU, 1x1 conv (keys ``fc1``, ``fc2``), run as Linear layers on channel-last
    data: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias)))
        return self.drop(F.linear(x, self.fc2.weight.flatten(1), self.fc2.bias))


def _depthwise_nhwc(conv: nn.Conv2d, y: torch.Tensor) -> torch.Tensor:
    """Apply an NCHW conv to channel-last data (N, H, W, C) -> (N, H, W, C).

    On the CPU the conv reads the channels-last view directly (oneDNN's NHWC depthwise kernel,
    ~10x faster than NCHW for the 5x5 depthwise conv here); elsewhere the data is made NCHW
    contiguous, the layout the reference feeds it.
    """
    z = y.permute(0, 3, 1, 2)
    if z.device.type != "cpu":
        z = z.contiguous()
    return conv(z).permute(0, 2, 3, 1)


class CBlock(nn.Module):
    """Convolutional block of stages 1-2 (reference ``CBlock``).

    ``x + DropPath(conv2(dwconv5x5(vis * conv1(LN1(x)))))`` then ``x + DropPath(CMlp(LN2(x)))``;
    ``vis`` (N, 1, H, W), 1 = visible, is the masked convolution (skipped when None). The 1x1
    convs run as Linear layers on channel-last data (the same maths as the reference's NCHW
    convs, without its permute copies around each LayerNorm).
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=CONV_NORM_EPS)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=CONV_NORM_EPS)
        self.mlp = CMlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, vis: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W) (channels-last strides)."""
        vis = None if vis is None else vis.permute(0, 2, 3, 1)

        def depthwise(y):
            return _depthwise_nhwc(self.attn, y if vis is None else y * vis.to(y.dtype))

        return self._forward(x.permute(0, 2, 3, 1), depthwise).permute(0, 3, 1, 2)

    def forward_rows(self, x: torch.Tensor, vmap: "VisibleMap") -> torch.Tensor:
        """Sparse form on the visible positions only: (N, M, C) -> (N, M, C)."""
        return self._forward(x, lambda y: vmap.depthwise(y, self.attn))

    def _forward(self, x: torch.Tensor, depthwise) -> torch.Tensor:
        """Channel-last body: (..., C) -> (..., C); ``depthwise`` masks and applies ``attn``."""
        c = x.shape[-1]
        y = F.linear(self.norm1(x), self.conv1.weight.view(c, c), self.conv1.bias)
        y = F.linear(depthwise(y), self.conv2.weight.view(c, c), self.conv2.bias)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisibleMap:
    """The visible positions of one stage map, for the exact sparse path.

    Rows are ordered (visible token in ``ids_keep`` order, row in block, column in block); the
    depthwise conv runs on a zero-filled dense map, exactly the reference's masked map.
    """

    def __init__(self, ids_keep: torch.Tensor, grid_size: tuple[int, int], block: int):
        n, k = ids_keep.shape
        gh, gw = grid_size
        self.hw = (gh * block, gw * block)
        r = torch.arange(block, device=ids_keep.device)
        rows = (ids_keep // gw)[:, :, None, None] * block + r[:, None]
        cols = (ids_keep % gw)[:, :, None, None] * block + r[None, :]
        index = rows * self.hw[1] + cols  # (N, K, b, b) positions in the dense map
        offset = torch.arange(n, device=ids_keep.device)[:, None] * (self.hw[0] * self.hw[1])
        self.flat_index = (index.reshape(n, -1) + offset).reshape(-1)

    def depthwise(self, y: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """Scatter (N, M, C) rows into a zero map, apply ``conv``, gather the rows back."""
        n, m, c = y.shape
        h, w = self.hw
        dense = y.new_zeros(n * h * w, c).index_copy(0, self.flat_index, y.reshape(n * m, c))
        out = _depthwise_nhwc(conv, dense.view(n, h, w, c)).reshape(n * h * w, c)
        return out.index_select(0, self.flat_index).view(n, m, c)


def _regroup(x: torch.Tensor, tokens: int, block: int, p: int) -> torch.Tensor:
    """(N, K*b*b, C) rows (token, row, col) -> (N, K*(b/p)^2, C*p*p) receptive fields of a
    kernel = stride = p conv, features in the (c, kh, kw) order of a conv weight."""
    n, c, t = x.shape[0], x.shape[-1], block // p
    x = x.reshape(n, tokens, t, p, t, p, c).permute(0, 1, 2, 4, 6, 3, 5)
    return x.reshape(n, tokens * t * t, c * p * p)


def upsample_mask(mask: torch.Tensor, grid_size: tuple[int, int], factor: int) -> torch.Tensor:
    """Block-wise mask of a finer stage: (N, Gh*Gw) -> (N, 1, Gh*f, Gw*f) nearest upsampling
    (the reference's repeat / permute / reshape, generalised to any grid)."""
    n = mask.shape[0]
    m = mask.reshape(n, 1, *grid_size)
    return m.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def build_encoder(model: nn.Module, *, img_size, patch_size, in_chans, embed_dim, depth, num_heads,
                   mlp_ratio, layer_norm_eps, fusion: bool, drop: float = 0.0, drop_path_rate: float = 0.0,
                   pos_embed_trainable: bool = False) -> None:
    """Create the shared encoder modules on ``model`` in the reference order."""
    hw, patches, grid = resolve_geometry(img_size, patch_size)
    dims, depths = _triple(embed_dim, "embed_dim"), _triple(depth, "depth")
    ratios = _triple(mlp_ratio, "mlp_ratio", float)
    if not isinstance(num_heads, int):
        num_heads = int(list(num_heads)[-1])  # only stage 3 has attention
    model.img_size, model.in_chans = hw, in_chans
    model.stage_patch_sizes, model.embed_dims, model.depths, model.mlp_ratios = patches, dims, depths, ratios
    model.patch_size = patches[0] * patches[1] * patches[2]
    model.grid_size = grid
    model.embed_dim = model.num_features = dims[2]
    model.patch_embed1 = ConvPatchEmbed(patches[0], in_chans, dims[0])
    model.patch_embed2 = ConvPatchEmbed(patches[1], dims[0], dims[1])
    model.patch_embed3 = ConvPatchEmbed(patches[2], dims[1], dims[2])
    model.patch_embed4 = nn.Linear(dims[2], dims[2])
    if fusion:
        f1, f2 = patches[1] * patches[2], patches[2]
        model.stage1_output_decode = nn.Conv2d(dims[0], dims[2], f1, stride=f1)
        model.stage2_output_decode = nn.Conv2d(dims[1], dims[2], f2, stride=f2)
    model.num_patches = num_patches = grid[0] * grid[1]
    model.pos_embed = nn.Parameter(torch.zeros(1, num_patches, dims[2]), requires_grad=pos_embed_trainable)
    dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
    model.blocks1 = nn.ModuleList([CBlock(dims[0], ratios[0], drop, dpr[i]) for i in range(depths[0])])
    model.blocks2 = nn.ModuleList(
        [CBlock(dims[1], ratios[1], drop, dpr[depths[0] + i]) for i in range(depths[1])])
    model.blocks3 = nn.ModuleList([
        Block(dims[2], num_heads, ratios[2], qkv_bias=True, drop_path=dpr[depths[0] + depths[1] + i],
              norm_layer=layer_norm(layer_norm_eps), proj_drop=drop)
        for i in range(depths[2])
    ])
