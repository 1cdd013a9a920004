"""Pictures: reconstruction grids and training curves."""

from .plots import plot_curves, read_log
from .reconstruction import (
    IMAGENET_MEAN, IMAGENET_STD, ReconstructionPanels, denormalize_patches, panels_grid, reconstruct,
    tensor_to_pil, to_pixels,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ReconstructionPanels", "denormalize_patches", "panels_grid",
    "plot_curves", "read_log", "reconstruct", "tensor_to_pil", "to_pixels",
]
