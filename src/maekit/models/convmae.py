"""ConvMAE: masked convolution meets masked autoencoders (REFERENCES A.8, B.5, C.6, D.3).

``MaskedAutoencoderConvViT`` is the pretraining model of the official ``models_convmae.py`` and
``ConvViT`` the fine-tuning / linear-probing classifier of ``models_convvit.py``. Three stages:
two convolutional stages of ``CBlock`` (1x1 convs, a 5x5 depthwise conv applied to the
visible-masked features, a conv MLP; LayerNorm eps 1e-5) and a ViT stage (``layers.Block``,
LayerNorm eps 1e-6) that sees the visible tokens only; the outputs of stages 1 and 2 are added
to the stage-3 tokens through strided convs (``stage1_output_decode`` / ``stage2_output_decode``)
before the final norm. No cls token; fixed sin-cos position tables without a cls row; the
decoder is MAE's. The mask is drawn on the stage-3 grid exactly as MAE's (same noise / argsort
rule, ``noise=`` fixes it) and nearest-upsampled to the stage-1 and stage-2 grids
(block-wise masking). Module names and shapes are the official ones (D.3): official
checkpoints load with ``strict=True``; the encoder of a pretraining model loads into ``ConvViT``
after dropping ``decoder_*``, ``mask_token`` and ``stage*_output_decode``.

Deviations from the reference (behaviour at 224 px, 3 channels is unchanged unless stated):

* Any input size divisible by the overall stride (16), square or not, and any ``in_chans``.
  The reference hard-codes the 14/56/28 grids in the mask reshape and ``p = 16`` in
  ``patchify``; its ``unpatchify`` raises (it reads a non-existent ``self.patch_embed``). Here
  ``patchify`` / ``unpatchify`` use the model's grid and channels.
* ``img_size`` may be an int, ``(H, W)`` or the reference's 3-list ``[224, 56, 28]`` (checked
  against the patch sizes); ``patch_size`` may be the 3-list ``[4, 2, 2]`` or an int ``P``
  (the overall stride, split as ``[P // 4, 2, 2]``). ``mlp_ratio`` may be a number (all stages).
  The fusion convs use kernel = stride = the stage-to-token factor (``p2*p3`` and ``p3``),
  which is the reference's hard-coded 4 and 2 for ``[4, 2, 2]``.
* ``forward`` takes ``noise=`` and returns ``MAEOutput`` (unpacks as ``loss, pred, mask``);
  ``mask_ratio=0`` gives a finite loss (``masking.masked_mse_loss``). ``forward_features``
  (unmasked encoder tokens) is new.
* Attention runs through ``F.scaled_dot_product_attention`` (same maths, fp32 round-off).
* ``ConvViT`` mirrors timm's ``VisionTransformer`` interface: ``forward_features`` returns the
  token sequence (N, L, D) (``norm`` applied when ``global_pool='token'``) and pooling happens in
  ``forward_head(x, pre_logits=False)``; the reference's ``forward_features`` returned the
  pooled vector. ``global_pool`` is ``'avg'`` (or True: mean over *all* L tokens then
  ``fc_norm``; the default, as the fine-tuning recipe) or ``'token'`` (or False: ``norm`` then
  token 0 -- the first *patch* token, since ConvMAE has no cls token; a reference quirk kept
  because it is the reference linear-probe default, C.6). The unused one of ``norm`` /
  ``fc_norm`` is an ``nn.Identity`` (no state-dict keys), where the reference deletes ``norm``.
  Adds ``reset_classifier``, ``group_matcher`` (for timm's layer decay it yields the reference
  ids of C.6: ``patch_embed*``, ``blocks1``, ``blocks2``, ``pos_embed`` -> 0, ``blocks3.k`` ->
  k+1, ``norm`` / ``fc_norm`` / ``head`` -> 12),
  ``num_prefix_tokens = 0`` and ``grid_size``.

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
from timm.layers import DropPath, trunc_normal_

from .layers import Block, init_mae_weights, layer_norm
from .mae import check_images
from .masking import gather_tokens, masked_mse_loss, patchify, random_masking_indices, unpatchify
from .outputs import MAEOutput
from .pos_embed import _as_hw, get_2d_sincos_pos_embed
from .vit import pool_name

CONV_NORM_EPS = 1e-5  # the CBlock / PatchEmbed LayerNorms of the reference use PyTorch's default


# ---------------------------------------------------------------------------- configuration
def _triple(value, name: str, cast=int) -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [cast(value)] * 3
    value = list(value)
    if len(value) != 3:
        raise ValueError(f"{name} takes one value per stage (3), got {value}")
    return [cast(v) for v in value]


def resolve_geometry(img_size, patch_size) -> tuple[tuple[int, int], list[int], list[tuple[int, int]]]:
    """Normalise the reference's size arguments.

    Args:
        img_size: int, (H, W), or the reference 3-list ``[224, 56, 28]`` (image, stage-1,
            stage-2 input sizes; each an int or a pair).
        patch_size: the 3-list of stage strides ``[4, 2, 2]`` or an int P (``[P // 4, 2, 2]``).

    Returns:
        (H, W), [p1, p2, p3], [stage-1 map, stage-2 map, stage-3 grid] sizes as (h, w).
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
    maps, f = [], 1
    for p in patches:
        f *= p
        maps.append((hw[0] // f, hw[1] // f))
    return hw, patches, maps


# ---------------------------------------------------------------------------- layers
def _norm_channels(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map (applied in NHWC, as the reference)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvPatchEmbed(nn.Module):
    """Reference ``PatchEmbed`` of ConvMAE: strided conv -> LayerNorm (eps 1e-5) -> GELU; NCHW out."""

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
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
    """Conv MLP: 1x1 conv, GELU, 1x1 conv (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def forward_rows(self, x: torch.Tensor) -> torch.Tensor:
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
        return x + self.drop_path(self.mlp.forward_rows(self.norm2(x)))


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


def _build_encoder(model: nn.Module, *, img_size, patch_size, in_chans, embed_dim, depth, num_heads,
                   mlp_ratio, layer_norm_eps, fusion: bool, drop: float = 0.0, drop_path_rate: float = 0.0,
                   pos_embed_trainable: bool = False) -> None:
    """Create the shared encoder modules on ``model`` in the reference order."""
    hw, patches, maps = resolve_geometry(img_size, patch_size)
    dims, depths = _triple(embed_dim, "embed_dim"), _triple(depth, "depth")
    ratios = _triple(mlp_ratio, "mlp_ratio", float)
    if not isinstance(num_heads, int):
        num_heads = int(list(num_heads)[-1])  # only stage 3 has attention
    model.img_size, model.in_chans = hw, in_chans
    model.stage_patch_sizes, model.embed_dims, model.depths, model.mlp_ratios = patches, dims, depths, ratios
    model.patch_size = patches[0] * patches[1] * patches[2]
    model.grid_size = maps[2]
    model.embed_dim = model.num_features = dims[2]
    model.patch_embed1 = ConvPatchEmbed(hw, patches[0], in_chans, dims[0])
    model.patch_embed2 = ConvPatchEmbed(maps[0], patches[1], dims[0], dims[1])
    model.patch_embed3 = ConvPatchEmbed(maps[1], patches[2], dims[1], dims[2])
    model.patch_embed4 = nn.Linear(dims[2], dims[2])
    if fusion:
        f1, f2 = patches[1] * patches[2], patches[2]
        model.stage1_output_decode = nn.Conv2d(dims[0], dims[2], f1, stride=f1)
        model.stage2_output_decode = nn.Conv2d(dims[1], dims[2], f2, stride=f2)
    num_patches = maps[2][0] * maps[2][1]
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


# ---------------------------------------------------------------------------- pretraining
class MaskedAutoencoderConvViT(nn.Module):
    """ConvMAE pretraining model (official ``MaskedAutoencoderConvViT``).

    Args:
        img_size: int, (H, W) or the reference 3-list ``[224, 56, 28]``.
        patch_size: stage strides ``[4, 2, 2]`` (or the overall stride as an int).
        in_chans: C.
        embed_dim, depth, mlp_ratio: per-stage widths, block counts and MLP ratios (3-lists).
        num_heads: heads of the stage-3 ViT blocks.
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder shape (its MLP ratio is
            ``mlp_ratio[0]``, as the reference).
        norm_pix_loss: per-patch normalised pixel targets.
        layer_norm_eps: epsilon of the stage-3 blocks, final norm and decoder (1e-6 in the
            reference factories); the conv stages keep 1e-5 as the reference.
        sparse_stages: compute stages 1-2 on the visible positions only (exact; module docstring).
    """

    def __init__(self, img_size=224, patch_size=(4, 2, 2), in_chans: int = 3, embed_dim=(256, 384, 768),
                 depth=(2, 2, 11), num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio=(4.0, 4.0, 4.0), norm_pix_loss: bool = False,
                 layer_norm_eps: float = 1e-6, sparse_stages: bool = False):
        super().__init__()
        _build_encoder(self, img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                       depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, layer_norm_eps=layer_norm_eps,
                       fusion=True)
        norm_layer = layer_norm(layer_norm_eps)
        dim = self.embed_dim
        self.norm = norm_layer(dim)
        self.norm_pix_loss = norm_pix_loss
        self.sparse_stages = sparse_stages

        self.decoder_embed = nn.Linear(dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, self.mlp_ratios[0], qkv_bias=True,
                  norm_layer=norm_layer)
            for _ in range(decoder_depth)
        ])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size**2 * in_chans, bias=True)
        self.initialize_weights()

    # ------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """Reference init (A.8): sin-cos tables, xavier on ``patch_embed3.proj`` only, mask token
        normal(.02), Linear xavier / 0, every LayerNorm 1 / 0; other convs keep PyTorch's init."""
        self.pos_embed.data.copy_(get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.grid_size)[None])
        self.decoder_pos_embed.data.copy_(
            get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid_size)[None])
        w = self.patch_embed3.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_mae_weights)

    # ------------------------------------------------------------- patches
    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, 16*16*C) in the reference element order."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, 16*16*C) -> (N, C, H, W)."""
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

    def stage_masks(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-3 mask (N, L), 1 = removed -> the stage-1 and stage-2 masks (N, 1, h, w)."""
        p2, p3 = self.stage_patch_sizes[1:]
        return upsample_mask(mask, self.grid_size, p2 * p3), upsample_mask(mask, self.grid_size, p3)

    # ------------------------------------------------------------- encoder
    def _dense_stages(self, imgs: torch.Tensor, vis1=None, vis2=None):
        """Stages 1-3 on the full maps. Returns stage-3 tokens (with pos), stage-1 and stage-2
        fusion tokens, all (N, L, D) in spatial order."""
        x = self.patch_embed1(imgs)
        for blk in self.blocks1:
            x = blk(x, vis1)
        s1 = self.stage1_output_decode(x).flatten(2).transpose(1, 2)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x, vis2)
        s2 = self.stage2_output_decode(x).flatten(2).transpose(1, 2)
        x = self.patch_embed3(x).flatten(2).transpose(1, 2)
        x = self.patch_embed4(x) + self.pos_embed
        return x, s1, s2

    def _sparse_stages(self, imgs: torch.Tensor, ids_keep: torch.Tensor):
        """Stages 1-3 on the visible positions only. Returns (N, K, D) tensors in ``ids_keep`` order."""
        n, k = ids_keep.shape
        p1, p2, p3 = self.stage_patch_sizes
        b1, b2 = p2 * p3, p3
        pix = gather_tokens(patchify(imgs, self.patch_size), ids_keep).reshape(n, k * self.patch_size**2, -1)
        x = self.patch_embed1.forward_rows(_regroup(pix, k, self.patch_size, p1))
        vmap = VisibleMap(ids_keep, self.grid_size, b1)
        for blk in self.blocks1:
            x = blk.forward_rows(x, vmap)
        w = self.stage1_output_decode
        s1 = F.linear(_regroup(x, k, b1, b1), w.weight.flatten(1), w.bias)
        x = self.patch_embed2.forward_rows(_regroup(x, k, b1, p2))
        vmap = VisibleMap(ids_keep, self.grid_size, b2)
        for blk in self.blocks2:
            x = blk.forward_rows(x, vmap)
        w = self.stage2_output_decode
        s2 = F.linear(_regroup(x, k, b2, b2), w.weight.flatten(1), w.bias)
        x = self.patch_embed3.forward_rows(_regroup(x, k, b2, p3))
        pos = gather_tokens(self.pos_embed.expand(n, -1, -1), ids_keep)
        return self.patch_embed4(x) + pos, s1, s2

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Encode the visible tokens.

        Returns:
            latent (N, len_keep, D) in ascending-noise order (no cls token), mask (N, L) with
            1 = removed, ids_restore (N, L).
        """
        check_images(imgs, self.in_chans, self.img_size)
        ids_keep, mask, ids_restore = random_masking_indices(
            imgs.shape[0], self.num_patches, mask_ratio, noise, device=imgs.device)
        if self.sparse_stages:
            x, s1, s2 = self._sparse_stages(imgs, ids_keep)
        else:
            m1, m2 = self.stage_masks(mask)
            x, s1, s2 = self._dense_stages(imgs, 1 - m1, 1 - m2)
            x, s1, s2 = (gather_tokens(t, ids_keep) for t in (x, s1, s2))
        for blk in self.blocks3:
            x = blk(x)
        x = x + s1 + s2
        return self.norm(x), mask, ids_restore

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encoder on all tokens, no masking: (N, L, D) in spatial order, fusion and norm applied."""
        check_images(imgs, self.in_chans, self.img_size)
        x, s1, s2 = self._dense_stages(imgs)
        for blk in self.blocks3:
            x = blk(x)
        return self.norm(x + s1 + s2)

    # ------------------------------------------------------------- decoder
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(N, len_keep, D) -> pred (N, L, 16*16*C) for all patches (no cls token)."""
        x = self.decoder_embed(latent)
        n_mask = ids_restore.shape[1] - x.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(x.shape[0], n_mask, -1)
        x = gather_tokens(torch.cat([x, mask_tokens], dim=1), ids_restore) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over removed patches (norm-pix targets if configured)."""
        return masked_mse_loss(pred, self.patchify(imgs), mask, self.norm_pix_loss)

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75,
                noise: torch.Tensor | None = None) -> MAEOutput:
        """Pretraining forward pass.

        Args:
            imgs: (N, C, H, W) normalised images.
            mask_ratio: fraction of stage-3 tokens (16x16 patches) removed, in [0, 1).
            noise: optional (N, L) noise that fixes the mask (smallest noise = kept).

        Returns:
            MAEOutput(loss, pred (N, L, 16*16*C), mask (N, L), ids_restore (N, L)).
        """
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return MAEOutput(loss=loss, pred=pred, mask=mask, ids_restore=ids_restore)


# ---------------------------------------------------------------------------- classifier


class ConvViT(nn.Module):
    """ConvViT classifier for fine-tuning and linear probing (official ``models_convvit.ConvViT``).

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: as
            :class:`MaskedAutoencoderConvViT`.
        num_classes: classes of the ``head`` Linear (0: no head, features out).
        global_pool: True / ``'avg'``: mean over all L tokens then ``fc_norm``; False /
            ``'token'``: ``norm`` then token 0 (the first patch token: ConvMAE has no cls
            token; the reference linear-probe default).
        drop_rate: dropout after patch_embed1 and inside the blocks (reference ``drop_rate``).
        drop_path_rate: stochastic depth, ``linspace(0, rate, sum(depth))`` over the blocks of
            the three stages in order.
        layer_norm_eps: epsilon of the stage-3 blocks and ``norm`` / ``fc_norm``.
    """

    num_prefix_tokens = 0  # no cls token

    def __init__(self, img_size=224, patch_size=(4, 2, 2), in_chans: int = 3, num_classes: int = 1000,
                 embed_dim=(256, 384, 768), depth=(2, 2, 11), num_heads: int = 12, mlp_ratio=(4.0, 4.0, 4.0),
                 global_pool: bool | str = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_norm_eps: float = 1e-6):
        super().__init__()
        _build_encoder(self, img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                       depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, layer_norm_eps=layer_norm_eps,
                       fusion=False, drop=drop_rate, drop_path_rate=drop_path_rate, pos_embed_trainable=True)
        self.pos_drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.global_pool = pool_name(global_pool)
        norm_layer = layer_norm(layer_norm_eps)
        avg = self.global_pool == "avg"
        self.norm = nn.Identity() if avg else norm_layer(self.embed_dim)
        self.fc_norm = norm_layer(self.embed_dim) if avg else nn.Identity()
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Reference classifier init: Linear trunc-normal(.02) / 0, LayerNorm 1 / 0, convs PyTorch's."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm parameter grouping. With ``timm.optim.param_groups_layer_decay`` it gives the
        reference ConvMAE layer ids (C.6): ``patch_embed*``, ``blocks1``, ``blocks2``,
        ``pos_embed`` -> 0, ``blocks3.k`` -> k+1, ``norm`` / ``fc_norm`` / ``head`` -> last."""
        return dict(stem=r"^pos_embed|^patch_embed|^blocks1\.|^blocks2\.",
                    blocks=r"^blocks3\.(\d+)" if coarse else [(r"^blocks3\.(\d+)", None)])

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: bool | str | None = None) -> None:
        """New ``head`` for ``num_classes`` (trunc-normal .02 / 0). The pooling is fixed at build time."""
        if global_pool is not None and pool_name(global_pool) != self.global_pool:
            raise ValueError(f"this ConvViT was built with global_pool={self.global_pool!r}; build a new "
                             "model to change the pooling (it decides between the norm and fc_norm weights)")
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> tokens (N, L, D) in spatial order (``norm`` applied for token pooling)."""
        check_images(x, self.in_chans, self.img_size)
        x = self.pos_drop(self.patch_embed1(x))
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed3(x).flatten(2).transpose(1, 2)
        x = self.patch_embed4(x) + self.pos_embed
        for blk in self.blocks3:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (mean -> ``fc_norm``, or token 0), then ``head`` unless ``pre_logits``."""
        x = self.fc_norm(x.mean(dim=1)) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
