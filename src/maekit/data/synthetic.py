"""Generated photo-like images for tests and benchmarks (no data download).

Flat colour or white noise would flatter or punish a JPEG decoder and a resampler: real photos
have a power spectrum falling about as 1/f^2 (edges and texture at every scale), which sets how
many DCT coefficients survive compression and so the decode time. :func:`photo_like` draws a
colour field with that spectrum plus a little sensor-like grain.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(height: int, width: int, seed: int = 0) -> Image.Image:
    """An RGB image of ``height`` x ``width`` with a natural-image (1/f) spectrum.

    The 1/f field is drawn at a quarter of the size (FFT cost), upsampled bicubically, and fine
    grain is added at full size so the image also has pixel-level detail.
    """
    rng = np.random.default_rng(seed)
    h, w = max(8, height // 4), max(8, width // 4)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))  # 1/f amplitude = 1/f^2 power
    chans = []
    mix = rng.normal(size=(3, 3)) * 0.3 + np.eye(3)  # correlated colour channels, as in photos
    base = [np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random(amp.shape)), s=(h, w)) for _ in range(3)]
    for c in range(3):
        field = sum(mix[c, k] * base[k] for k in range(3))
        field = (field - field.mean()) / (field.std() + 1e-12)
        chans.append(np.clip(128 + 45 * field, 0, 255).astype(np.uint8))
    small = Image.fromarray(np.stack(chans, axis=-1), "RGB")
    img = np.asarray(small.resize((width, height), Image.BICUBIC), dtype=np.int16)
    grain = rng.normal(0, 4, size=(height, width, 1)).astype(np.int16)
    return Image.fromarray(np.clip(img + grain, 0, 255).astype(np.uint8), "RGB")


def write_photo_folder(root: str | os.PathLike, count: int, size: tuple[int, int], *, seed: int = 0,
                       quality: int = 90, classes: int = 0) -> list[Path]:
    """Write ``count`` photo-like JPEGs of ``size`` = (H, W) under ``root`` (in ``classes`` class
    sub-folders ``c0, c1...`` when > 0) and return their paths."""
    root = Path(root)
    paths = []
    for i in range(count):
        folder = root / f"c{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:05d}.jpg"
        photo_like(size[0], size[1], seed=seed + i).save(path, quality=quality)
        paths.append(path)
    return paths
