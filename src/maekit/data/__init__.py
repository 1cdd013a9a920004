"""Data: image-folder and built-in datasets, channel conversion, transforms and loaders.

Loaders yield ``(images, targets, num_skipped)``; see :mod:`maekit.data.loader`.
"""

from .builtin import (
    BUILTIN_DATASETS,
    DIGITS_DEFAULT_SIZE,
    DIGITS_TEST_SIZE,
    DIGITS_TRAIN_SIZE,
    DigitsDataset,
    digits_split_indices,
)
from .datasets import UNLABELLED_TARGET, ImageClassFolder, UnlabeledImageFolder, resolve_split_dir
from .factory import is_builtin, resolve_dataset
from .images import (
    IMG_EXTENSIONS,
    UndecodableImageWarning,
    convert_image,
    find_images,
    is_image_file,
    load_image,
    mode_for_chans,
    try_load_image,
)
from .loader import build_loader, build_sampler, collate_skip_none, dist_info, set_epoch
from .transforms import (
    DEFAULT_AUTO_AUGMENT,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ConvertImage,
    RandomResizedCropNoRejection,
    ResizeCover,
    build_eval_transform,
    build_finetune_transform,
    build_linprobe_transform,
    build_pretrain_transform,
    default_crop_pct,
    resolve_mean_std,
    to_size,
)

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_AUTO_AUGMENT",
    "DIGITS_DEFAULT_SIZE",
    "DIGITS_TEST_SIZE",
    "DIGITS_TRAIN_SIZE",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMG_EXTENSIONS",
    "UNLABELLED_TARGET",
    "ConvertImage",
    "DigitsDataset",
    "ImageClassFolder",
    "RandomResizedCropNoRejection",
    "ResizeCover",
    "UndecodableImageWarning",
    "UnlabeledImageFolder",
    "build_eval_transform",
    "build_finetune_transform",
    "build_linprobe_transform",
    "build_loader",
    "build_pretrain_transform",
    "build_sampler",
    "collate_skip_none",
    "convert_image",
    "default_crop_pct",
    "digits_split_indices",
    "dist_info",
    "find_images",
    "is_builtin",
    "is_image_file",
    "load_image",
    "mode_for_chans",
    "resolve_dataset",
    "resolve_mean_std",
    "resolve_split_dir",
    "set_epoch",
    "to_size",
    "try_load_image",
]
