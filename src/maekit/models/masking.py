"""Patchify / unpatchify and per-sample random masking (docs/REFERENCE_RECIPES.md B.1, B.2).

Shared by MAE and ConvMAE; pure tensor functions with no module state.
"""

from __future__ import annotations

import torch


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
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the per-sample random mask of the references.

    ``len_keep = int(L * (1 - mask_ratio))``; tokens with the smallest noise are kept.

    Args:
        batch: N.
        length: L tokens per sample.
        mask_ratio: fraction removed, in [0, 1).
        noise: optional (N, L) noise that fixes the mask; drawn from U[0, 1) otherwise.
        generator: optional torch.Generator for the noise.

    Returns:
        ids_keep (N, len_keep) in ascending-noise order, mask (N, L) float with 0 = keep and
        1 = removed in spatial order, ids_restore (N, L).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=device, generator=generator)
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


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking of a token sequence (official ``random_masking``).

    Args:
        x: (N, L, D) tokens.
        mask_ratio: fraction removed.
        noise: optional (N, L).

    Returns:
        x_masked (N, len_keep, D), mask (N, L), ids_restore (N, L).
    """
    n, length, _ = x.shape
    ids_keep, mask, ids_restore = random_masking_indices(n, length, mask_ratio, noise, device=x.device)
    return gather_tokens(x, ids_keep), mask.to(x.dtype) if x.is_floating_point() else mask, ids_restore


def masked_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool
) -> torch.Tensor:
    """Reconstruction loss of the references (docs/REFERENCE_RECIPES.md B.4).

    Args:
        pred, target: (N, L, P) predicted and true patch vectors.
        mask: (N, L), 1 = removed.
        norm_pix_loss: normalise each target patch by its mean and unbiased variance (+1e-6).

    Returns:
        Scalar: mean squared error over removed patches. With no removed patch
        (mask_ratio 0) the loss is the mean over all patches instead of 0/0 = NaN.
    """
    per_patch = ((pred.float() - loss_target(target, norm_pix_loss).float()) ** 2).mean(dim=-1)
    mask = mask.float()
    removed = mask.sum()
    # torch.where instead of an `if` keeps the function free of host syncs (and compile-friendly).
    return torch.where(removed > 0, (per_patch * mask).sum() / removed.clamp_min(1.0), per_patch.mean())


def loss_target(target: torch.Tensor, norm_pix_loss: bool) -> torch.Tensor:
    """(N, L, P) patches -> the loss target: as they are, or each patch normalised by its mean and
    unbiased variance (+1e-6) when ``norm_pix_loss``."""
    if not norm_pix_loss:
        return target
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + 1.0e-6) ** 0.5


class PretrainingMixin:
    """What MAE and ConvMAE pretraining models share: patches of ``patch_size`` on ``grid_size``,
    the loss, and ``forward`` = ``forward_encoder`` -> ``forward_decoder`` -> ``forward_loss``."""

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C) in the reference element order."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W)."""
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

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
