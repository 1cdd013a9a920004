"""Patchify / unpatchify, per-sample random masking and the loss (docs/REFERENCE_RECIPES.md B.1, B.2,
B.4), and what the MAE and ConvMAE pretraining models share (:class:`PretrainingMixin`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import Block, init_mae_weights, run_blocks
from .pos_embed import get_2d_sincos_pos_embed


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


def patchify(imgs: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Cut images into flattened patches in the reference element order.

    Args:
        imgs: (N, C, H, W) with H and W divisible by the patch size.
        patch_size: p or (ph, pw).

    Returns:
        (N, L, ph*pw*C) with L = (H/ph)*(W/pw) patches in row-major order; inside a patch
        the channel varies fastest, then the column, then the row (``nchpwq->nhwpqc``).
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    n, c, h, w = imgs.shape
    if h % ph or w % pw:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {ph}x{pw}")
    gh, gw = h // ph, w // pw
    x = imgs.reshape(n, c, gh, ph, gw, pw)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, gh * gw, ph * pw * c)


def unpatchify(
    x: torch.Tensor,
    patch_size: int | tuple[int, int],
    grid_size: tuple[int, int] | None = None,
    in_chans: int | None = None,
) -> torch.Tensor:
    """Inverse of :func:`patchify`.

    Args:
        x: (N, L, ph*pw*C).
        patch_size: p or (ph, pw).
        grid_size: (Gh, Gw); defaults to a square grid.
        in_chans: C; defaults to ``x.shape[-1] // (ph*pw)``.

    Returns:
        (N, C, Gh*ph, Gw*pw).
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    n, length, dim = x.shape
    c = in_chans if in_chans is not None else dim // (ph * pw)
    if c * ph * pw != dim:
        raise ValueError(f"patch vectors of width {dim} do not fit patch {ph}x{pw} with {c} channels")
    if grid_size is None:
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(f"{length} patches do not form a square grid; pass grid_size")
        grid_size = (side, side)
    gh, gw = grid_size
    if gh * gw != length:
        raise ValueError(f"grid {gh}x{gw} does not hold {length} patches")
    x = x.reshape(n, gh, gw, ph, pw, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, c, gh * ph, gw * pw)


def random_masking_indices(
    batch: int,
    length: int,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the per-sample random mask of the references.

    ``len_keep = int(L * (1 - mask_ratio))``; tokens with the smallest noise are kept.

    Args:
        batch: N.
        length: L tokens per sample.
        mask_ratio: fraction removed, in [0, 1).
        noise: optional (N, L) noise that fixes the mask; drawn from U[0, 1) otherwise.
        device: where a drawn noise (and the outputs) go.

    Returns:
        ids_keep (N, len_keep) in ascending-noise order, mask (N, L) float with 0 = keep and
        1 = removed in spatial order, ids_restore (N, L).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=device)
    elif tuple(noise.shape) != (batch, length):
        raise ValueError(f"noise must have shape (N, L) = ({batch}, {length}), got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(batch, length, device=noise.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return ids_keep, mask, ids_restore


def per_sample_noise(seeds: torch.Tensor | list[int], length: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Masking noise drawn per sample from its own seed, for ``noise=`` of the MAE forward.

    Row i is ``torch.rand(length)`` from a CPU generator seeded with ``seeds[i]``, so a sample's
    mask depends only on its seed (e.g. ``maekit.data.sample_seed(seed, epoch, index, 1)``), not
    on the other samples of the batch, the batch size, the rank or the step it runs in.

    Args:
        seeds: (N,) int64 tensor or list of ints (non-negative, < 2**63).
        length: L tokens per sample.
        device: where the result goes (generated on the CPU, then copied).

    Returns:
        (N, L) float32 noise in [0, 1).
    """
    seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    out = torch.empty(len(seeds), length)
    gen = torch.Generator()
    for row, s in zip(out, seeds):
        gen.manual_seed(int(s))
        torch.rand(length, generator=gen, out=row)
    return out.to(device) if device is not None else out


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: (N, L, D) and (N, K) -> (N, K, D)."""
    return torch.gather(x, dim=1, index=ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool,
                    dim: int | None = None) -> torch.Tensor:
    """Reconstruction loss of the references (docs/REFERENCE_RECIPES.md B.4).

    Args:
        pred, target: (N, L, P) predicted and true patch vectors.
        mask: (N, L), 1 = removed.
        norm_pix_loss: normalise each target patch by its mean and unbiased variance (+1e-6).
        dim: None for the loss of the batch; 1 for each sample's.

    Returns:
        Scalar (``dim=1``: (N,)): mean squared error over removed patches. With no removed patch
        (mask_ratio 0) the loss is the mean over all patches instead of 0/0 = NaN.
    """
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    mask = mask.float()
    removed = mask.sum(dim=dim)
    # torch.where instead of an `if` keeps the function free of host syncs (and compile-friendly).
    masked_mean = (per_patch * mask).sum(dim=dim) / removed.clamp_min(1.0)
    return torch.where(removed > 0, masked_mean, per_patch.mean(dim=dim))


class PretrainingMixin:
    """What MAE and ConvMAE pretraining models share: the light ViT decoder, its initialisation, patches
    of ``patch_size`` on ``grid_size``, the loss, and ``forward`` = ``forward_encoder`` ->
    ``forward_decoder`` -> ``forward_loss``. A model sets ``num_prefix_tokens`` (MAE: its cls token,
    ConvMAE: none) and ``_encode(imgs, ids_keep=None, mask=None)``, its encoder on all patches or on
    the visible ones, returning (N, prefix + tokens, D)."""

    num_prefix_tokens = 0

    def _build_decoder(self, embed_dim: int, decoder_embed_dim: int, decoder_depth: int,
                       decoder_num_heads: int, mlp_ratio: float, norm_layer, norm_pix_loss: bool) -> None:
        """The encoder's final ``norm`` and the decoder modules under the official names, after the
        encoder's blocks (the reference order)."""
        self.norm_pix_loss = norm_pix_loss
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        # Fixed sin-cos table: in the state dict (official key) but never trained.
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + self.num_patches, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)
        ])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size**2 * self.in_chans, bias=True)

    def initialize_weights(self, patch_proj: nn.Conv2d, tokens: list[nn.Parameter]) -> None:
        """Reference init, in its order (docs/REFERENCE_RECIPES.md A.5, A.8): sin-cos tables (a zero
        cls row when the model has one), xavier on ``patch_proj`` as a Linear of fan-in C*p*p,
        normal(.02) ``tokens``, then Linear xavier / 0 and LayerNorm 1 / 0; other convs keep PyTorch's."""
        for table in (self.pos_embed, self.decoder_pos_embed):
            rows = get_2d_sincos_pos_embed(table.shape[-1], self.grid_size, self.num_prefix_tokens > 0)
            table.data.copy_(rows[None])
        w = patch_proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for token in tokens:
            nn.init.normal_(token, std=0.02)
        self.apply(init_mae_weights)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C) in the reference element order."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W)."""
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Encode the visible patches (ConvMAE: stage-3 tokens; the mask is drawn on that grid).

        Returns:
            latent (N, prefix + len_keep, D) (MAE: the cls token first; the visible tokens in
            ascending-noise order), mask (N, L) with 1 = removed, ids_restore (N, L).
        """
        check_images(imgs, self.in_chans, self.img_size)
        ids_keep, mask, ids_restore = random_masking_indices(imgs.shape[0], self.num_patches, mask_ratio,
                                                             noise, device=imgs.device)
        return self._encode(imgs, ids_keep, mask), mask, ids_restore

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encoder on all patches, no masking.

        Returns:
            (N, prefix + L, D): normalised tokens (MAE: the cls token first) in spatial (row-major)
            order (ConvMAE: fusion applied).
        """
        check_images(imgs, self.in_chans, self.img_size)
        return self._encode(imgs)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(N, prefix + len_keep, D) -> pred (N, L, p*p*C) for all patches (prefix tokens dropped)."""
        p = self.num_prefix_tokens
        x = self.decoder_embed(latent)
        n_mask = ids_restore.shape[1] + p - x.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(x.shape[0], n_mask, -1)
        x_ = gather_tokens(torch.cat([x[:, p:, :], mask_tokens], dim=1), ids_restore)  # back to spatial order
        x = torch.cat([x[:, :p, :], x_], dim=1) + self.decoder_pos_embed
        x = run_blocks(self.decoder_blocks, x, checkpoint=self.grad_checkpointing)
        return self.decoder_pred(self.decoder_norm(x))[:, p:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over removed patches (norm-pix targets if configured): a scalar."""
        return masked_mse_loss(pred, self.patchify(imgs), mask, self.norm_pix_loss)

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None):
        """Pretraining forward pass.

        Args:
            imgs: (N, C, H, W) normalised images.
            mask_ratio: fraction of patches (ConvMAE: stage-3 tokens) removed, in [0, 1).
            noise: optional (N, L) noise that fixes the mask (smallest noise = kept).

        Returns:
            MAEOutput(loss, pred (N, L, p*p*C), mask (N, L), ids_restore (N, L)).
        """
        from .outputs import MAEOutput

        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return MAEOutput(loss=self.forward_loss(imgs, pred, mask), pred=pred, mask=mask, ids_restore=ids_restore)
