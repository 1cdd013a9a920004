"""Reconstruction panels of the official demo (docs/REFERENCE_RECIPES.md B.7), for MAE and ConvMAE.

Four panels per image: original, masked (removed patches blanked), reconstruction, and the
reconstruction with the visible patches pasted back. For models trained with norm-pix targets
the prediction is in per-patch normalised units; to show it as an image we re-apply each
patch's own mean and standard deviation taken from the ORIGINAL image, including the removed
patches. That uses information the model never saw (two numbers per patch), so such pictures
look better than what the model alone predicts; the reference notebooks do the same
(docs/REFERENCE_RECIPES.md B.7). Models trained on pixels need no such step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from torchvision.utils import make_grid

from ..models.masking import masked_mse_loss

from ..data.transforms import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from ..data.transforms import IMAGENET_DEFAULT_STD as IMAGENET_STD


@dataclass
class ReconstructionPanels:
    """Tensors in the model's normalised space, each (N, C, H, W); ``mask`` is 1 where removed."""

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    pasted: torch.Tensor
    mask: torch.Tensor
    loss: torch.Tensor  # (N,) per-image loss over removed patches


def denormalize_patches(pred: torch.Tensor, target_patches: torch.Tensor) -> torch.Tensor:
    """Map norm-pix predictions back to pixel units with each target patch's mean and std.

    Args:
        pred: (N, L, P) predictions in normalised units.
        target_patches: (N, L, P) patchified original images.
    """
    mean = target_patches.mean(dim=-1, keepdim=True)
    var = target_patches.var(dim=-1, keepdim=True)
    return pred * (var + 1.0e-6) ** 0.5 + mean


@torch.no_grad()
def reconstruct(model: torch.nn.Module, imgs: torch.Tensor, *, mask_ratio: float = 0.75,
                noise: torch.Tensor | None = None) -> ReconstructionPanels:
    """Run a pretraining model and build the four panels.

    Args:
        model: an MAE/ConvMAE model (``patchify``, ``unpatchify``, ``norm_pix_loss``).
        imgs: (N, C, H, W) normalised images.
        mask_ratio: fraction of patches removed.
        noise: optional (N, L) noise fixing the mask.
    """
    out = model(imgs, mask_ratio=mask_ratio, noise=noise)
    target = model.patchify(imgs)
    norm_pix = getattr(model, "norm_pix_loss", False)
    pred = denormalize_patches(out.pred.float(), target) if norm_pix else out.pred.float()
    recon = model.unpatchify(pred)
    mask = model.unpatchify(out.mask.float().unsqueeze(-1).expand(-1, -1, pred.shape[-1]))
    loss = masked_mse_loss(out.pred, target, out.mask, norm_pix, dim=1)
    masked = imgs * (1 - mask)
    return ReconstructionPanels(imgs, masked, recon, masked + recon * mask, mask, loss)


def to_pixels(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo Normalize: (N, C, H, W) -> values in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> PIL image ('L' for one or two channels, 'RGB' for three or four: an
    alpha channel is not shown)."""
    arr = (x.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8)
    if arr.shape[0] in (1, 2):
        return Image.fromarray(arr[0].numpy(), mode="L")
    return Image.fromarray(arr[:3].permute(1, 2, 0).numpy(), mode="RGB")


def panels_grid(panels: ReconstructionPanels, *, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD, padding: int = 2) -> Image.Image:
    """One row per image: original | masked | reconstruction | reconstruction + visible."""
    rows = [to_pixels(t[i : i + 1].float(), mean, std)[0] for i in range(panels.original.shape[0])
            for t in (panels.original, panels.masked, panels.reconstruction, panels.pasted)]
    grid = make_grid(torch.stack(rows), nrow=4, padding=padding, pad_value=1.0)
    return tensor_to_pil(grid if rows[0].shape[0] != 1 else grid[:1])
