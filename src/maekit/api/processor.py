"""Image processor: any image input -> normalised ``pixel_values`` (N, C, H, W) for a model.

Two geometric modes:

- ``'crop'`` (classifiers, feature extraction): the reference evaluation protocol,
  Resize(int(size / crop_pct), bicubic, shorter side) -> CenterCrop(size), crop_pct 0.875 up
  to 224 px (``maekit.data.build_eval_transform``, docs/REFERENCE_RECIPES.md C.3).
- ``'resize'`` (reconstruction): plain bicubic resize to (H, W), as the official demo
  (docs/REFERENCE_RECIPES.md B.7) and MindFormers' processor do: the whole image is shown.

Then the image is converted to the model's channels (``maekit.data.convert_image``: 1 'L',
3 'RGB' with alpha dropped, ...), ToTensor and Normalize(mean, std) (ImageNet for 3 channels).

Accepted inputs (one, or a list / tuple of them): a path (``str`` / ``Path``), an http(s) URL, a
PIL image, a numpy array (HW, HWC or CHW; uint8 0-255, or float 0-1; 4-D = a batch), a torch
tensor (CHW, HW or NCHW; float 0-1 or uint8). Float arrays and tensors are resized as tensors
(antialiased bicubic, clamped to [0, 1]), without a detour through 8 bits.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from ..data.images import _DECODE_ERRORS, convert_image, load_image, mode_for_chans
from ..data.transforms import default_crop_pct, eval_geometry, resolve_mean_std, to_size
from ..hub.cache import is_url, read_url_bytes
from ..models import create_model
from ..models.base import PROCESSOR_NAME
from ..viz.reconstruction import tensor_to_pil, to_pixels
from .config import MAEConfig

ImageInput = Any  # str | Path | PIL.Image | np.ndarray | torch.Tensor | a list of them
_MODES = ("crop", "resize")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert('L')


def _describe_input(x: Any) -> str:
    if isinstance(x, (str, Path)):
        return repr(os.fspath(x))
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _open_image(x: str | Path, in_chans: int) -> Image.Image:
    """A path or URL -> converted PIL image; errors name the input."""
    if is_url(x):
        source, failure = io.BytesIO(read_url_bytes(str(x))), f"cannot decode the image at {x}"
    else:
        source = Path(x).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"image not found: {os.fspath(x)}")
        if source.is_dir():
            raise ValueError(f"{os.fspath(x)} is a folder, not an image (pass the image files in it)")
        failure = f"cannot read image {os.fspath(x)}"
    try:
        return load_image(source, in_chans)
    except _DECODE_ERRORS as e:
        raise ValueError(f"{failure}: {type(e).__name__}: {e}") from e


def _array_to_chw(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image as an array/tensor -> (C, H, W) float tensor in [0, 1] (layout guessed)."""
    t = torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x.detach().cpu()
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
        if t.numel() and float(t.max()) > 1.0 + 1e-3:
            raise ValueError(f"float images must hold values in [0, 1]; got a maximum of "
                             f"{float(t.max()):.4g} "
                             f"({_describe_input(x)}); divide by 255 or pass uint8")
    elif t.dtype in (torch.int16, torch.int32, torch.int64, torch.uint16):
        raise ValueError(f"integer images other than uint8 are ambiguous ({_describe_input(x)}); "
                         "convert to uint8 (0-255) or float (0-1)")
    else:
        raise ValueError(f"unsupported image dtype {t.dtype}")
    if t.ndim == 2:
        return t[None]
    if t.ndim != 3:
        raise ValueError(f"an image must be HW, HWC or CHW; got {_describe_input(x)}")
    channels_first = t.shape[0] in (1, 2, 3, 4)
    channels_last = t.shape[-1] in (1, 2, 3, 4)
    if isinstance(x, np.ndarray):  # numpy: HWC unless only CHW fits
        return t.permute(2, 0, 1) if channels_last or not channels_first else t
    return t if channels_first or not channels_last else t.permute(2, 0, 1)


def _convert_channels(t: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(C, H, W) -> (in_chans, H, W) with the rules of ``maekit.data.images`` (alpha dropped
    for 1/3 channels, luma 601 for gray, opaque alpha added for 2/4)."""
    c = t.shape[0]
    if c == in_chans:
        return t
    if c not in (1, 2, 3, 4):
        raise ValueError(f"cannot convert a {c}-channel image to {in_chans} channels")
    has_alpha = c in (2, 4)
    color = t[:-1] if has_alpha else t
    alpha = t[-1:] if has_alpha else torch.ones_like(t[:1])
    want_color = 1 if in_chans in (1, 2) else 3
    if color.shape[0] == 3 and want_color == 1:
        w = torch.tensor(_LUMA, dtype=t.dtype).view(3, 1, 1)
        color = (color * w).sum(0, keepdim=True)
    elif color.shape[0] == 1 and want_color == 3:
        color = color.expand(3, -1, -1)
    return torch.cat([color, alpha]) if in_chans in (2, 4) else color


class ImageProcessor:
    """Resize / crop, channel conversion, ToTensor, Normalize (module docstring).

    Args:
        size: model input size, int or (H, W).
        num_channels: the model's ``in_chans`` (1-4).
        image_mean, image_std: per-channel normalisation (default ImageNet for 3 channels,
            0.449 / 0.226 for others: ``maekit.data.resolve_mean_std``).
        resize_mode: ``'crop'`` (evaluation protocol) or ``'resize'`` (whole image).
        crop_pct: ``'crop'`` mode fraction; default 0.875 up to 224 px, else 1.
    """

    def __init__(self, size: int | Sequence[int] = 224, *, num_channels: int = 3,
                 image_mean: float | Sequence[float] | None = None,
                 image_std: float | Sequence[float] | None = None,
                 resize_mode: str = "crop", crop_pct: float | None = None):
        if resize_mode not in _MODES:
            raise ValueError(f"resize_mode must be one of {_MODES}, got {resize_mode!r}")
        mode_for_chans(num_channels)
        self.size = to_size(size)
        self.num_channels = int(num_channels)
        self.image_mean, self.image_std = resolve_mean_std(self.num_channels, image_mean, image_std)
        self.resize_mode = resize_mode
        self.crop_pct = float(crop_pct) if crop_pct is not None else default_crop_pct(self.size)
        whole = resize_mode == "resize"  # eval_geometry checks crop_pct
        self._geometry = transforms.Compose(eval_geometry(self.size, self.crop_pct, whole=whole))
        self._pil_transform = transforms.Compose([self._geometry, transforms.ToTensor(),
                                                  transforms.Normalize(self.image_mean, self.image_std)])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: nn.Module | MAEConfig, **kwargs: Any) -> ImageProcessor:
        """Defaults for a model (or config): its size and channels; ``'resize'`` for
        pretraining models (reconstruction), ``'crop'`` for classifiers."""
        if isinstance(model, MAEConfig):
            with torch.device("meta"):
                model = create_model(model.model_name, **model.model_args)
        return cls.from_dict({**model.preprocessor_config(), **kwargs})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageProcessor:
        # a centre-cropping transformers processor (BitImageProcessor...) feeds the model its crop_size
        size = (data.get("do_center_crop") and data.get("crop_size")) or data.get("size", 224)
        if isinstance(size, dict):  # ours and Hugging Face's {"height", "width"}; HF's {"shortest_edge"}
            size = (size["height"], size["width"]) if "height" in size else size.get("shortest_edge", 224)
        # transformers' processors resize the whole image unless they centre-crop (do_center_crop)
        hf_mode = "crop" if data.get("do_center_crop") else "resize"
        mode = data.get("resize_mode", hf_mode if "do_resize" in data else "crop")
        return cls(size, num_channels=data.get("num_channels", 3), image_mean=data.get("image_mean"),
                   image_std=data.get("image_std"), resize_mode=mode, crop_pct=data.get("crop_pct"))

    @classmethod
    def from_pretrained(cls, name_or_path: Any, **kwargs: Any) -> ImageProcessor:
        """Same as :meth:`AutoImageProcessor.from_pretrained`."""
        return AutoImageProcessor.from_pretrained(name_or_path, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_processor_type": type(self).__name__,
            "size": {"height": self.size[0], "width": self.size[1]},
            "num_channels": self.num_channels,
            "resize_mode": self.resize_mode,
            "crop_pct": self.crop_pct,
            "resample": "bicubic",
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` into ``save_directory``."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / PROCESSOR_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageProcessor) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2)}"

    # ------------------------------------------------------------------ transforms
    def _tensor_transform(self, t: torch.Tensor) -> torch.Tensor:
        t = self._geometry(_convert_channels(t, self.num_channels))
        return TF.normalize(t.clamp(0.0, 1.0), list(self.image_mean), list(self.image_std))

    # ------------------------------------------------------------------ inputs
    def load(self, images: ImageInput) -> tuple[list[Image.Image | torch.Tensor], bool]:
        """Inputs -> (list of converted PIL images or (C, H, W) float tensors, was_batch)."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("no images given (an empty list)")
            return [x for item in images for x in self.load(item)[0]], True
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            return [_array_to_chw(x) for x in images], True
        return [self._load_one(images)], False

    def _load_one(self, image: ImageInput) -> Image.Image | torch.Tensor:
        if isinstance(image, (str, Path)):
            return _open_image(image, self.num_channels)
        if isinstance(image, Image.Image):
            return convert_image(image, self.num_channels)
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and (
                image.ndim == 2 or image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
            arr = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
            return convert_image(Image.fromarray(arr), self.num_channels)
        if isinstance(image, (np.ndarray, torch.Tensor)):
            return _array_to_chw(image)
        raise ValueError(f"unsupported image input {_describe_input(image)}: pass a path, URL, PIL image, "
                         "numpy array, torch tensor or a list of them")

    def preprocess(self, images: ImageInput) -> torch.Tensor:
        """Inputs -> ``pixel_values`` (N, C, H, W) float32."""
        loaded, _ = self.load(images)
        return self.transform(loaded)

    def transform(self, loaded: list[Image.Image | torch.Tensor]) -> torch.Tensor:
        """Already-loaded images (:meth:`load`) -> (N, C, H, W)."""
        return torch.stack([self._pil_transform(x) if isinstance(x, Image.Image)
                            else self._tensor_transform(x) for x in loaded])

    def __call__(self, images: ImageInput, return_tensors: str | None = "pt") -> dict[str, torch.Tensor]:
        """``{'pixel_values': (N, C, H, W)}`` (N = 1 for a single image)."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        return {"pixel_values": self.preprocess(images)}

    # ------------------------------------------------------------------ outputs
    def to_pil(self, pixel_values: torch.Tensor) -> list[Image.Image]:
        """(N, C, H, W) normalised -> PIL images ('L' for 1 channel, 'RGB' for 3; alpha is not shown)."""
        pix = to_pixels(pixel_values.float(), self.image_mean, self.image_std)  # Normalize undone: [0, 1]
        return [tensor_to_pil(x) for x in pix]


class AutoImageProcessor:
    """``AutoImageProcessor.from_pretrained(name | folder | file | URL | model)`` -> ``ImageProcessor``."""

    @classmethod
    def from_pretrained(cls, name_or_path: Any, **kwargs: Any) -> ImageProcessor:
        """A folder's ``preprocessor_config.json`` if it has one; otherwise the defaults for the
        model it names (:meth:`ImageProcessor.from_model`). ``kwargs`` override fields."""
        if isinstance(name_or_path, (nn.Module, MAEConfig)):
            return ImageProcessor.from_model(name_or_path, **kwargs)
        if isinstance(name_or_path, (str, os.PathLike)) and not is_url(name_or_path):
            path = Path(name_or_path)
            path = path / PROCESSOR_NAME if path.is_dir() else path
            if path.is_file() and path.name == PROCESSOR_NAME:
                return ImageProcessor.from_dict({**json.loads(path.read_text(encoding="utf-8")), **kwargs})
        from .config import AutoConfig

        return ImageProcessor.from_model(AutoConfig.from_pretrained(name_or_path), **kwargs)
