"""Image transforms of the reference recipes (docs/REFERENCE_RECIPES.md C.2, C.3, C.4), for any size and
1-4 channels.

Each pipeline starts with :class:`ConvertImage` (so it also accepts PIL images that did not
come from a maekit dataset) and returns a float tensor (C, H, W) normalised with ``mean`` /
``std``. ``input_size`` is an int (square) or (H, W).

Default normalisation: ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) for
3 channels; for any other channel count every channel gets the average of those values,
mean 0.449 / std 0.226 (so a grayscale image normalises like its RGB replication on average).
Explicit ``mean`` / ``std`` must have ``in_chans`` entries (a bare float is broadcast).
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .decode import RandomResizedCropDecode
from .gpu_decode import GpuDecodeCrop
from .images import convert_image, mode_for_chans

IMAGENET_DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
GRAY_DEFAULT_MEAN: float = round(sum(IMAGENET_DEFAULT_MEAN) / 3, 3)  # 0.449
GRAY_DEFAULT_STD: float = round(sum(IMAGENET_DEFAULT_STD) / 3, 3)  # 0.226
DEFAULT_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"

Size = int | Sequence[int]


def to_size(input_size: Size) -> tuple[int, int]:
    """``224`` -> (224, 224); ``(H, W)`` -> (H, W). Positive ints only."""
    if isinstance(input_size, numbers.Integral):
        h = w = int(input_size)
    else:
        if len(input_size) != 2:
            raise ValueError(f"input_size must be an int or (H, W), got {input_size!r}")
        h, w = input_size
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"input_size must hold positive integers, got {input_size!r}")
    return int(h), int(w)


def resolve_mean_std(in_chans: int = 3, mean: float | Sequence[float] | None = None,
                     std: float | Sequence[float] | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation constants (module docstring for the defaults).

    Raises:
        ValueError: a length differs from ``in_chans`` or a std is not positive.
    """
    if mean is None:
        mean = IMAGENET_DEFAULT_MEAN if in_chans == 3 else (GRAY_DEFAULT_MEAN,) * in_chans
    if std is None:
        std = IMAGENET_DEFAULT_STD if in_chans == 3 else (GRAY_DEFAULT_STD,) * in_chans
    out = []
    for name, values in (("mean", mean), ("std", std)):
        values = (float(values),) * in_chans if isinstance(values, (int, float)) else tuple(map(float, values))
        if len(values) != in_chans:
            raise ValueError(f"{name} has {len(values)} values {values} but in_chans={in_chans}; give one per channel")
        out.append(values)
    if any(s <= 0 for s in out[1]):
        raise ValueError(f"std must be positive, got {out[1]}")
    return out[0], out[1]


def default_crop_pct(input_size: Size) -> float:
    """Eval crop fraction of the references: 224/256 = 0.875 up to 224 pixels, else 1.0
    (for (H, W) the larger side decides)."""
    return 0.875 if max(to_size(input_size)) <= 224 else 1.0


class ConvertImage:
    """PIL image of any mode -> the 8-bit mode with ``in_chans`` channels
    (:func:`maekit.data.images.convert_image`); tensors pass through unchanged."""

    def __init__(self, in_chans: int = 3) -> None:
        mode_for_chans(in_chans)
        self.in_chans = in_chans

    def __call__(self, img):
        return convert_image(img, self.in_chans) if isinstance(img, Image.Image) else img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in_chans={self.in_chans})"


class RandomResizedCropNoRejection(transforms.RandomResizedCrop):
    """The linear-probe crop of the references (``util/crop.RandomResizedCrop``, TF/BYOL style).

    Unlike torchvision's crop there is no rejection loop and no centre-crop fallback: one
    draw of area = image area x U(scale) and aspect = exp(U(log ratio)); w = round(sqrt(A r)),
    h = round(sqrt(A / r)), each clipped to the image (and to at least 1 pixel); a uniform
    random offset. The crop is
    then resized to ``size`` like torchvision's. Same arguments as
    ``torchvision.transforms.RandomResizedCrop``.
    """

    @staticmethod
    def get_params(img, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
        _, height, width = TF.get_dimensions(img)
        area = height * width
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_ratio = torch.log(torch.tensor(ratio))
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item())).item()
        # max(1, .): the reference yields an empty crop (and crashes) on images of a few pixels.
        w = max(1, min(round(math.sqrt(target_area * aspect)), width))
        h = max(1, min(round(math.sqrt(target_area / aspect)), height))
        i = int(torch.randint(0, height - h + 1, size=(1,)).item())
        j = int(torch.randint(0, width - w + 1, size=(1,)).item())
        return i, j, h, w


class ResizeCover:
    """Resize keeping the aspect ratio so that the image just covers ``size`` = (H, W)
    (the non-square counterpart of ``Resize(int)``, which fits the shorter side)."""

    def __init__(self, size: Size, interpolation: InterpolationMode = InterpolationMode.BICUBIC) -> None:
        self.size = to_size(size)
        self.interpolation = interpolation

    def __call__(self, img):
        _, h, w = TF.get_dimensions(img)
        scale = max(self.size[0] / h, self.size[1] / w)
        new = (max(self.size[0], round(h * scale)), max(self.size[1], round(w * scale)))
        return TF.resize(img, list(new), interpolation=self.interpolation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation.value})"


def _final(in_chans: int, mean, std, uint8: bool = False) -> list:
    mean, std = resolve_mean_std(in_chans, mean, std)
    if uint8:  # normalised later, on the device (maekit.data.device.DeviceLoader)
        return [transforms.PILToTensor()]
    return [transforms.ToTensor(), transforms.Normalize(mean, std)]


def _crop_flip(input_size: Size, in_chans: int, mean, std, scale, no_rejection: bool, uint8: bool,
               fast_decode: bool, gpu_decode: bool) -> transforms.Compose:
    """RandomResizedCrop (torchvision's, or the no-rejection one) -> flip -> ToTensor -> Normalize
    (``uint8``: PILToTensor), decoded as the flags say."""
    size = to_size(input_size)
    cls = RandomResizedCropNoRejection if no_rejection else transforms.RandomResizedCrop
    if gpu_decode or fast_decode:  # gpu: crop, flip and uint8 conversion happen on the device
        crop = GpuDecodeCrop if gpu_decode else RandomResizedCropDecode
        steps = [crop(size, scale, in_chans=in_chans, crop_class=cls)]
    else:
        steps = [ConvertImage(in_chans), cls(size, scale=scale, interpolation=InterpolationMode.BICUBIC)]
    if not gpu_decode:
        steps += [transforms.RandomHorizontalFlip(), *_final(in_chans, mean, std, uint8)]
    out = transforms.Compose(steps)
    # Datasets hand a not-yet-decoded image to transforms that decode it themselves.
    out.lazy_decode = bool(getattr(steps[0], "lazy_decode", False))  # type: ignore[attr-defined]
    return out


def build_pretrain_transform(input_size: Size = 224, *, in_chans: int = 3,
                             mean: float | Sequence[float] | None = None,
                             std: float | Sequence[float] | None = None,
                             scale: tuple[float, float] = (0.2, 1.0), uint8: bool = False,
                             fast_decode: bool = False, gpu_decode: bool = False) -> transforms.Compose:
    """MAE pretraining (docs/REFERENCE_RECIPES.md C.2): RandomResizedCrop(input_size, scale=(0.2, 1),
    bicubic) -> RandomHorizontalFlip -> ToTensor -> Normalize. Returns (in_chans, H, W) float.

    ``uint8=True`` ends with ``PILToTensor`` instead: (in_chans, H, W) uint8, normalised on the
    training device by :class:`~maekit.data.DeviceLoader` (same values to float rounding).
    ``fast_decode=True`` crops with crop-aware reduced JPEG decoding
    (:class:`~maekit.data.decode.RandomResizedCropDecode`; pixels differ slightly, see there).
    ``gpu_decode=True``: workers send file bytes with the drawn box and flip; decoding, crop,
    flip happen on the device (:mod:`maekit.data.gpu_decode`; implies uint8).
    """
    return _crop_flip(input_size, in_chans, mean, std, scale, False, uint8, fast_decode, gpu_decode)


def build_finetune_transform(input_size: Size = 224, *, in_chans: int = 3,
                             mean: float | Sequence[float] | None = None,
                             std: float | Sequence[float] | None = None,
                             auto_augment: str | None = DEFAULT_AUTO_AUGMENT,
                             color_jitter: float | None = None, re_prob: float = 0.25, re_mode: str = "pixel",
                             re_count: int = 1, interpolation: str = "bicubic") -> transforms.Compose:
    """Fine-tuning train transform (docs/REFERENCE_RECIPES.md C.3): timm ``create_transform(is_training=True)``
    = RandomResizedCrop(scale 0.08-1, bicubic) -> flip -> RandAugment (``auto_augment``) or
    ColorJitter -> ToTensor -> Normalize -> RandomErasing(``re_prob``, ``re_mode``, ``re_count``).
    Defaults are the reference's (``--aa rand-m9-mstd0.5-inc1 --reprob 0.25 --remode pixel
    --recount 1``, no colour jitter).

    in_chans=3 is timm's pipeline unchanged. in_chans=1: RandAugment/ColorJitter need RGB,
    so the image is replicated to RGB for the PIL augmentations (fill colour = the gray
    mean) and converted back to 'L' (exact for gray content) before ToTensor. in_chans=2/4
    (LA/RGBA): RandAugment and colour jitter do not support alpha, so they are left out with
    a warning; crop, flip and random erasing still apply.
    """
    mode_for_chans(in_chans)
    mean, std = resolve_mean_std(in_chans, mean, std)
    common = {"input_size": to_size(input_size), "is_training": True, "interpolation": interpolation,
              "re_prob": re_prob, "re_mode": re_mode, "re_count": re_count}
    if in_chans == 3:
        return guard_posterize(transforms.Compose([ConvertImage(3), create_transform(
            auto_augment=auto_augment, color_jitter=color_jitter, mean=mean, std=std, **common)]))
    # The final stage (ToTensor, Normalize, RandomErasing) with this channel count's mean/std.
    primary, _, final = create_transform(auto_augment=None, color_jitter=None, mean=mean, std=std,
                                         separate=True, **common)
    if in_chans == 1:
        primary, secondary, _ = create_transform(auto_augment=auto_augment, color_jitter=color_jitter,
                                                 mean=mean * 3, std=std * 3, separate=True, **common)
        steps = [ConvertImage(3), primary, secondary, ConvertImage(1), final]
        return guard_posterize(transforms.Compose(steps))
    if auto_augment or color_jitter:
        warnings.warn(f"in_chans={in_chans}: auto_augment={auto_augment!r} and color_jitter={color_jitter!r} "
                      "need RGB images and are not applied (crop, flip and random erasing are)",
                      UserWarning, stacklevel=2)
    return transforms.Compose([ConvertImage(in_chans), primary, final])  # no RandAugment: nothing to guard


def _at_least_one_bit(level_fn, *args, **kwargs) -> tuple[int, ...]:
    return tuple(max(1, int(v)) for v in level_fn(*args, **kwargs))


def guard_posterize(transform):
    """Keep timm's increasing Posterize at >= 1 bit.

    With ``mstd`` magnitude noise the level can reach 10, where timm asks for 0 bits; Pillow >= 11
    raises ``ValueError: bits must be between or equal to 1 and 8`` and a fine-tuning run would die
    at a random step (about 2% of Posterize draws at ``rand-m9-mstd0.5-inc1``). 1 bit is the
    strongest posterization Pillow allows; every other op is unchanged.
    """
    for t in getattr(transform, "transforms", [transform]):
        if hasattr(t, "transforms"):
            guard_posterize(t)
        for op in getattr(t, "ops", []):
            if "Posterize" in getattr(op, "name", ""):  # a second guard would only clamp again
                op.level_fn = functools.partial(_at_least_one_bit, op.level_fn)
    return transform


def build_eval_transform(input_size: Size = 224, *, in_chans: int = 3,
                         mean: float | Sequence[float] | None = None,
                         std: float | Sequence[float] | None = None, crop_pct: float | None = None,
                         uint8: bool = False) -> transforms.Compose:
    """Evaluation / validation (docs/REFERENCE_RECIPES.md C.3, also the linear-probe val transform):
    Resize(int(input_size / crop_pct), bicubic; shorter side) -> CenterCrop(input_size) ->
    ToTensor -> Normalize, with ``crop_pct`` = :func:`default_crop_pct` (224 -> 256 -> 224;
    448 -> 448 -> 448). For (H, W) with H != W the image is resized, keeping its aspect
    ratio, to cover (int(H / crop_pct), int(W / crop_pct)), then centre-cropped to (H, W).
    ``uint8`` as in :func:`build_pretrain_transform`.
    """
    size = to_size(input_size)
    return transforms.Compose([ConvertImage(in_chans), *eval_geometry(size, crop_pct),
                               *_final(in_chans, mean, std, uint8)])


def eval_geometry(input_size: Size, crop_pct: float | None = None, whole: bool = False) -> list:
    """The resize + centre crop of :func:`build_eval_transform` (PIL images or (C, H, W) tensors);
    ``whole=True``: a plain bicubic resize to (H, W), the whole image kept (the reconstruction demo's;
    ``crop_pct`` is still checked)."""
    h, w = to_size(input_size)
    crop_pct = default_crop_pct((h, w)) if crop_pct is None else crop_pct
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if whole:
        return [transforms.Resize((h, w), interpolation=InterpolationMode.BICUBIC)]
    if h == w:
        resize = transforms.Resize(int(h / crop_pct), interpolation=InterpolationMode.BICUBIC)
    else:
        resize = ResizeCover((int(h / crop_pct), int(w / crop_pct)))
    return [resize, transforms.CenterCrop((h, w))]


def build_linprobe_transform(input_size: Size = 224, *, in_chans: int = 3,
                             mean: float | Sequence[float] | None = None,
                             std: float | Sequence[float] | None = None, uint8: bool = False,
                             fast_decode: bool = False, gpu_decode: bool = False) -> transforms.Compose:
    """Linear-probe train transform (docs/REFERENCE_RECIPES.md C.4): :class:`RandomResizedCropNoRejection`
    (input_size, bicubic, scale 0.08-1) -> RandomHorizontalFlip -> ToTensor -> Normalize.
    Use :func:`build_eval_transform` for its validation data. ``uint8``, ``fast_decode`` and
    ``gpu_decode`` as in :func:`build_pretrain_transform`."""
    return _crop_flip(input_size, in_chans, mean, std, (0.08, 1.0), True, uint8, fast_decode, gpu_decode)
