"""maekit: Masked Autoencoders (MAE) and ConvMAE for PyTorch."""

from .models import MAEOutput, create_model, list_models

__version__ = "0.1.0"

__all__ = ["MAEOutput", "__version__", "create_model", "list_models"]
