"""ConvMAE: masked convolution meets masked autoencoders (docs/REFERENCE_RECIPES.md A.8, B.5, C.6, D.3).

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
* ``forward`` (:class:`~.masking.PretrainingMixin`'s, as MAE's) takes ``noise=`` and returns
  ``MAEOutput`` (unpacks as ``loss, pred, mask``); masking nothing gives a finite loss
  (``masking.masked_mse_loss``). ``forward_features`` (unmasked encoder tokens) is new.
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

The building blocks, and why ``sparse_stages=True`` is exact and faster, are in
:mod:`.convmae_layers`.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from .base import MaekitModel, layer_groups
from .convmae_layers import VisibleMap, _regroup, build_encoder, upsample_mask
from .layers import GradCheckpointMixin, init_mae_weights, layer_norm, run_blocks
from .masking import PretrainingMixin, check_images, gather_tokens, patchify
from .vit import pool_name


# The reference ConvMAE layer ids (C.6, with timm's param_groups_layer_decay): patch_embed*, blocks1,
# blocks2, pos_embed -> 0, blocks3.k -> k + 1, norm / fc_norm / head -> last.
_CONV_GROUPS = layer_groups(r"^pos_embed|^patch_embed|^blocks1\.|^blocks2\.", r"^blocks3\.(\d+)")


def _stage_architecture(model) -> dict:
    """``MaekitModel.architecture`` with the per-stage values as resolved 3-tuples."""
    arch = MaekitModel.architecture(model)
    arch.update(patch_size=tuple(model.stage_patch_sizes), embed_dim=tuple(model.embed_dims),
                depth=tuple(model.depths), mlp_ratio=tuple(float(r) for r in model.mlp_ratios))
    return arch


def _conv_stages(model, x: torch.Tensor, vis1=None, vis2=None):
    """The stage-1 embedding (N, C1, h, w) through stages 1-2 (``vis1`` / ``vis2``: visible maps of the
    masked convolution) and the stage-3 embedding. Returns the stage-3 tokens (N, L, D) with pos, in
    spatial order, and the stage-1 and stage-2 maps."""
    f1 = run_blocks(model.blocks1, x, vis1, checkpoint=model.grad_checkpointing)
    f2 = run_blocks(model.blocks2, model.patch_embed2(f1), vis2, checkpoint=model.grad_checkpointing)
    return model.patch_embed4(model.patch_embed3(f2).flatten(2).transpose(1, 2)) + model.pos_embed, f1, f2


# ---------------------------------------------------------------------------- pretraining
class MaskedAutoencoderConvViT(PretrainingMixin, MaekitModel, GradCheckpointMixin, nn.Module):
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
        sparse_stages: compute stages 1-2 on the visible positions only (exact; see
            :mod:`.convmae_layers`).
    """

    def __init__(self, img_size=224, patch_size=(4, 2, 2), in_chans: int = 3, embed_dim=(256, 384, 768),
                 depth=(2, 2, 11), num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio=(4.0, 4.0, 4.0), norm_pix_loss: bool = False,
                 layer_norm_eps: float = 1e-6, sparse_stages: bool = False):
        super().__init__()
        build_encoder(self, img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                       depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, layer_norm_eps=layer_norm_eps,
                       fusion=True)
        self.sparse_stages = sparse_stages
        self._build_decoder(self.embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads,
                            self.mlp_ratios[0], layer_norm(layer_norm_eps), norm_pix_loss)
        self.initialize_weights(self.patch_embed3.proj, [self.mask_token])

    family = "convmae"

    group_matcher = _CONV_GROUPS  # the decoder goes with the last layer

    architecture = _stage_architecture

    # ------------------------------------------------------------- patches
    def stage_masks(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-3 mask (N, L), 1 = removed -> the stage-1 and stage-2 masks (N, 1, h, w)."""
        p2, p3 = self.stage_patch_sizes[1:]
        return upsample_mask(mask, self.grid_size, p2 * p3), upsample_mask(mask, self.grid_size, p3)

    # ------------------------------------------------------------- encoder
    def _dense_stages(self, imgs: torch.Tensor, vis1=None, vis2=None):
        """Stages 1-3 on the full maps. Returns stage-3 tokens (with pos), stage-1 and stage-2
        fusion tokens, all (N, L, D) in spatial order."""
        x, f1, f2 = _conv_stages(self, self.patch_embed1(imgs), vis1, vis2)
        fused = (self.stage1_output_decode(f1), self.stage2_output_decode(f2))
        return (x, *(f.flatten(2).transpose(1, 2) for f in fused))

    def _sparse_stages(self, imgs: torch.Tensor, ids_keep: torch.Tensor):
        """Stages 1-3 on the visible positions only. Returns (N, K, D) tensors in ``ids_keep`` order."""
        n, k = ids_keep.shape
        _, p2, p3 = self.stage_patch_sizes
        # x: rows of (visible token, row, column) of a block of side ``side`` per token
        x = gather_tokens(patchify(imgs, self.patch_size), ids_keep).reshape(n, k * self.patch_size**2, -1)
        side, fused = self.patch_size, []
        for embed, blocks, decode, b in ((self.patch_embed1, self.blocks1, self.stage1_output_decode, p2 * p3),
                                         (self.patch_embed2, self.blocks2, self.stage2_output_decode, p3)):
            x = embed.forward_rows(_regroup(x, k, side, side // b))
            vmap = VisibleMap(ids_keep, self.grid_size, b)
            x = run_blocks([blk.forward_rows for blk in blocks], x, vmap, checkpoint=self.grad_checkpointing)
            fused.append(F.linear(_regroup(x, k, b, b), decode.weight.flatten(1), decode.bias))
            side = b
        x = self.patch_embed3.forward_rows(_regroup(x, k, side, p3))
        pos = gather_tokens(self.pos_embed.expand(n, -1, -1), ids_keep)
        return (self.patch_embed4(x) + pos, *fused)

    def _encode(self, imgs: torch.Tensor, ids_keep: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Stages 1-3, fusion and norm on all tokens (spatial order), or with the (N, L) ``mask`` on
        the visible tokens ``ids_keep`` (N, K) (in its order): (N, K, D)."""
        if ids_keep is None:
            x, s1, s2 = self._dense_stages(imgs)
        elif self.sparse_stages:
            x, s1, s2 = self._sparse_stages(imgs, ids_keep)
        else:
            m1, m2 = self.stage_masks(mask)
            x, s1, s2 = (gather_tokens(t, ids_keep) for t in self._dense_stages(imgs, 1 - m1, 1 - m2))
        x = run_blocks(self.blocks3, x, checkpoint=self.grad_checkpointing)
        return self.norm(x + s1 + s2)


# ---------------------------------------------------------------------------- classifier


class ConvViT(MaekitModel, GradCheckpointMixin, nn.Module):
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
    family = "convvit"
    architecture = _stage_architecture

    def __init__(self, img_size=224, patch_size=(4, 2, 2), in_chans: int = 3, num_classes: int = 1000,
                 embed_dim=(256, 384, 768), depth=(2, 2, 11), num_heads: int = 12, mlp_ratio=(4.0, 4.0, 4.0),
                 global_pool: bool | str = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_norm_eps: float = 1e-6):
        super().__init__()
        build_encoder(self, img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
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

    # Reference classifier init: Linear trunc-normal(.02) / 0, LayerNorm 1 / 0, convs PyTorch's.
    _init_weights = staticmethod(partial(init_mae_weights, linear_init=partial(trunc_normal_, std=0.02)))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    group_matcher = _CONV_GROUPS

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
        x = _conv_stages(self, self.pos_drop(self.patch_embed1(x)))[0]
        return self.norm(run_blocks(self.blocks3, x, checkpoint=self.grad_checkpointing))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (mean -> ``fc_norm``, or token 0), then ``head`` unless ``pre_logits``."""
        x = self.fc_norm(x.mean(dim=1)) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
