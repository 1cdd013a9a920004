"""GPU JPEG decoding and augmentation (``--decode gpu``): workers only read file bytes.

On a GPU the CPU cores, not the model, cap MAE's speed (about 150 reference-pipeline images/s per
core). With :class:`GpuDecodeCrop` as the transform, a worker parses the file header, draws the
RandomResizedCrop box and the flip on the full-size geometry (from the sample's seed, so the same
draws as the CPU pipeline's) and sends the undecoded bytes; :meth:`EncodedBatch.decode` then runs
``torchvision.io.decode_jpeg(list, device="cuda")`` on the whole batch (nvJPEG), cuts the boxes,
resizes them (bicubic, antialiased) and flips, on the device. Files that are not baseline RGB /
grayscale JPEGs (PNG, CMYK JPEG...) fall back to the CPU in the worker and travel decoded.

The boxes and flips equal the CPU pipeline's; the pixels differ slightly (nvJPEG's IDCT and
torch's bicubic resampler instead of libjpeg's and PIL's). Everything also runs on a CPU device
(``decode_jpeg`` on the CPU), which is how it is tested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import functional as TF

from .decode import RandomResizedCropDecode, decode_crop


@dataclass
class EncodedCrop:
    """One undecoded JPEG and what to do with it: ``data`` (bytes as a uint8 tensor), ``box``
    (top, left, height, width on the full image), ``flip``, output ``size`` (H, W), ``in_chans``."""

    data: torch.Tensor
    box: tuple[int, int, int, int]
    flip: bool
    size: tuple[int, int]
    in_chans: int


class GpuDecodeCrop(RandomResizedCropDecode):
    """Worker side of ``--decode gpu``: RandomResizedCrop + RandomHorizontalFlip drawn here,
    applied on the device (module docstring). Returns an :class:`EncodedCrop` for JPEGs, else the
    finished (in_chans, H, W) uint8 crop decoded on the CPU (:func:`~maekit.data.decode.decode_crop`,
    as ``--fast_decode`` decodes it).

    Args: as :class:`~maekit.data.decode.RandomResizedCropDecode` (the dataset hands over the
    opened, undecoded file); ``in_chans`` 1 or 3 for the GPU path (others decode on the CPU).
    """

    def __call__(self, img: Image.Image) -> EncodedCrop | torch.Tensor:
        box = self.get_params(img)
        flip = bool(torch.rand(1) < 0.5)  # same order of draws as RandomResizedCrop -> RandomHorizontalFlip
        fp = getattr(img, "fp", None)
        if img.format == "JPEG" and img.mode in ("RGB", "L") and self.in_chans in (1, 3) and fp is not None:
            fp.seek(0)
            raw = fp.read()
            # a truncated file (no end-of-image marker) would fail the whole batch's nvJPEG call:
            # it takes the CPU path below, whose decode error skips and names it like any bad file
            if raw.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
                data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                return EncodedCrop(data, tuple(int(v) for v in box), flip, tuple(self.size), self.in_chans)
        out = decode_crop(img, box, self.size, in_chans=self.in_chans, interpolation=self.interpolation)
        return TF.pil_to_tensor(TF.hflip(out) if flip else out)


class EncodedBatch:
    """A batch of :class:`EncodedCrop` and CPU-decoded (C, H, W) uint8 crops, in sample order."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int]:  # the batch size, as callers check images.shape[0]
        return (len(self.items),)

    def decode(self, device: torch.device | str) -> torch.Tensor:
        """(N, C, H, W) uint8 on ``device``: the JPEGs decoded in one batched call, cropped,
        resized, flipped; the fallback crops copied into their places."""
        device = torch.device(device)
        jpeg = [i for i, it in enumerate(self.items) if isinstance(it, EncodedCrop)]
        out = [None if isinstance(it, EncodedCrop) else it.to(device, non_blocking=True) for it in self.items]
        if jpeg:
            chans = {self.items[i].in_chans for i in jpeg}
            mode = ImageReadMode.GRAY if chans == {1} else ImageReadMode.RGB
            decoded = decode_jpeg([self.items[i].data for i in jpeg], mode=mode, device=device)
            for i, full in zip(jpeg, decoded):
                out[i] = _crop_flip(full.to(device), self.items[i])
        return torch.stack(out)  # type: ignore[arg-type]


def _crop_flip(full: torch.Tensor, it: EncodedCrop) -> torch.Tensor:
    top, left, h, w = it.box
    crop = full[:, top:top + h, left:left + w].float()
    crop = torch.nn.functional.interpolate(crop[None], size=it.size, mode="bicubic", antialias=True,
                                           align_corners=False)[0]
    crop = crop.round_().clamp_(0, 255).to(torch.uint8)
    return crop.flip(-1) if it.flip else crop

