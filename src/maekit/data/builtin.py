"""Built-in demo data that ships with an installed package: ``builtin:digits``.

scikit-learn's handwritten digits (``load_digits``: 1797 images of 8x8 pixels, values
0..16, labels 0..9), scaled to 0..255 and upsampled with bicubic interpolation (smooth
strokes; nearest gives 4x4 blocks that look nothing like real images) to ``size``
(default 32x32, so a patch-4 model sees an 8x8 grid).

The split is fixed: a permutation of the 1797 indices from ``numpy.random.RandomState(0)``
(whose stream NumPy keeps frozen across versions); the first :data:`DIGITS_TEST_SIZE` = 360
indices are the test split (also called ``'val'``), the remaining :data:`DIGITS_TRAIN_SIZE`
= 1437 the train split; each split keeps the original dataset order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from .adapt import ItemConverter, MapDataset
from .datasets import UNLABELLED_TARGET, check_split
from .transforms import to_size

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS: tuple[str, ...] = ("digits",)

DIGITS_NUM_IMAGES = 1797
DIGITS_TEST_SIZE = 360
DIGITS_TRAIN_SIZE = DIGITS_NUM_IMAGES - DIGITS_TEST_SIZE  # 1437
DIGITS_DEFAULT_SIZE = 32
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=4)
def _digits_arrays(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(1797, H, W) uint8 upsampled images and (1797,) int64 labels, computed once per size."""
    from sklearn.datasets import load_digits  # imported lazily: only the demo needs it

    bunch = load_digits()
    small = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    h, w = size
    big = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.BICUBIC)) for im in small])
    big.setflags(write=False)
    labels = bunch.target.astype(np.int64)
    labels.setflags(write=False)
    return big, labels


class DigitsDataset(MapDataset):
    """``builtin:digits`` as PIL images (module docstring for the data and split).

    Args:
        split: ``'train'`` (1437 images) or ``'val'``/``'test'`` (360 images).
        transform: applied to the PIL image (``'L'`` for in_chans=1, replicated to ``'RGB'``
            for 3; any ``in_chans`` of ``images.convert_image``).
        in_chans: channels of the images.
        size: output size, int or (H, W); default 32.
        labelled: False returns target -1 (pretraining), True the digit 0..9.

    Attributes: ``classes`` = ['0', ..., '9'], ``class_to_idx``, ``targets``, ``indices``
    (positions in ``load_digits()``).
    """

    def __init__(self, split: str = "train", *, transform: Callable[[Any], Any] | None = None,
                 in_chans: int = 3, size: int | tuple[int, int] = DIGITS_DEFAULT_SIZE,
                 labelled: bool = True) -> None:
        self.split = check_split(split)
        perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(DIGITS_NUM_IMAGES)
        self.indices = np.sort(perm[DIGITS_TEST_SIZE:] if self.split == "train" else perm[:DIGITS_TEST_SIZE])
        self.size = to_size(size)
        self.in_chans = in_chans
        self.root = f"{BUILTIN_PREFIX}digits"
        self.classes = [str(i) for i in range(10)]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        images, labels = _digits_arrays(self.size)
        self.targets = (
            [int(t) for t in labels[self.indices]] if labelled else [UNLABELLED_TARGET] * len(self.indices)
        )
        items = [(images[i], t) for i, t in zip(self.indices, self.targets)]  # views of the cached arrays
        super().__init__(items, ItemConverter(transform, in_chans=in_chans))

    def __repr__(self) -> str:
        return (
            f"DigitsDataset(split={self.split!r}, images={len(self)}, size={self.size}, "
            f"in_chans={self.in_chans})"
        )
