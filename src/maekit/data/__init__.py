"""Data: image-folder and built-in datasets, any dataset object, channel conversion, transforms
and loaders.

Loaders yield ``(images, targets, num_skipped)`` on the training device; see
:mod:`maekit.data.loader` (samplers, workers), :mod:`maekit.data.device` (uint8 batches normalised
on the device), :mod:`maekit.data.seeding` (per-sample augmentation and mask seeds),
:mod:`maekit.data.decode` (crop-aware reduced JPEG decoding) and :mod:`maekit.data.adapt` (any
dataset object). The transform builders are public: ``build_pretrain_transform``,
``build_finetune_transform``, ``build_linprobe_transform``, ``build_eval_transform``.
"""

from .adapt import as_dataset
from .builtin import (
    BUILTIN_DATASETS,
    DIGITS_DEFAULT_SIZE,
    DIGITS_TEST_SIZE,
    DIGITS_TRAIN_SIZE,
    DigitsDataset,
    digits_split_indices,
)
from .decode import RandomResizedCropDecode, decode_crop
from .device import DeviceLoader, batch_mask_seeds
from .datasets import UNLABELLED_TARGET, ImageClassFolder, UnlabeledImageFolder, resolve_split_dir
from .factory import is_builtin, resolve_dataset
from .images import (
    IMG_EXTENSIONS,
    SymlinkLoopWarning,
    UndecodableImageWarning,
    convert_image,
    find_images,
    is_image_file,
    load_image,
    load_transformed,
    mode_for_chans,
    try_load_image,
)
from .loader import build_loader, build_sampler, collate_skip_none, default_num_workers, dist_info, set_epoch
from .seeding import MASK_STREAM, SeededDataset, SeededSampler, sample_seed
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
    "MASK_STREAM",
    "DeviceLoader",
    "RandomResizedCropDecode",
    "SeededDataset",
    "SeededSampler",
    "SymlinkLoopWarning",
    "as_dataset",
    "batch_mask_seeds",
    "decode_crop",
    "default_num_workers",
    "load_transformed",
    "sample_seed",
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
