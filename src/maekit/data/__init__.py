"""Data: image-folder and built-in datasets, any dataset object, channel conversion, transforms
and loaders.

Loaders yield ``(images, targets, num_skipped)`` on the training device; see
:mod:`maekit.data.loader` (samplers, workers), :mod:`maekit.data.device` (uint8 batches normalised
on the device), :mod:`maekit.data.seeding` (per-sample augmentation and mask seeds),
:mod:`maekit.data.decode` (crop-aware reduced JPEG decoding), :mod:`maekit.data.gpu_decode`
(JPEG decoding and crops on the device) and :mod:`maekit.data.adapt` (any
dataset object); other sources of ``--data_path``: :mod:`maekit.data.shards` /
:mod:`maekit.data.shard_dataset` (WebDataset tar shards; ``maekit shard`` writes them with
:mod:`maekit.data.shard_writer`) and :mod:`maekit.data.hf_datasets` (``hf:`` Hugging Face datasets).
The transform builders are public: ``build_pretrain_transform``,
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
from .datasets import UNLABELLED_TARGET, ImageClassFolder, UnlabeledImageFolder, resolve_split_dir
from .decode import RandomResizedCropDecode, decode_crop
from .device import Batch, DeviceLoader, batch_mask_seeds
from .gpu_decode import EncodedBatch, GpuDecodeCrop
from .factory import is_builtin, resolve_dataset, source_options
from .hf_datasets import HFImageDataset, is_hf_source, wrap_hf_dataset
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
from .shard_dataset import ShardDataset, shard_dataset
from .shard_writer import write_shards
from .shards import is_shard_source, resolve_shards
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
    "MASK_STREAM",
    "UNLABELLED_TARGET",
    "ConvertImage",
    "DeviceLoader",
    "Batch",
    "EncodedBatch",
    "GpuDecodeCrop",
    "DigitsDataset",
    "HFImageDataset",
    "ImageClassFolder",
    "RandomResizedCropDecode",
    "RandomResizedCropNoRejection",
    "ResizeCover",
    "SeededDataset",
    "SeededSampler",
    "ShardDataset",
    "SymlinkLoopWarning",
    "UndecodableImageWarning",
    "UnlabeledImageFolder",
    "as_dataset",
    "batch_mask_seeds",
    "build_eval_transform",
    "build_finetune_transform",
    "build_linprobe_transform",
    "build_loader",
    "build_pretrain_transform",
    "build_sampler",
    "collate_skip_none",
    "convert_image",
    "decode_crop",
    "default_crop_pct",
    "default_num_workers",
    "digits_split_indices",
    "dist_info",
    "find_images",
    "is_builtin",
    "is_hf_source",
    "is_image_file",
    "is_shard_source",
    "load_image",
    "load_transformed",
    "mode_for_chans",
    "resolve_dataset",
    "resolve_mean_std",
    "resolve_shards",
    "resolve_split_dir",
    "sample_seed",
    "set_epoch",
    "shard_dataset",
    "source_options",
    "to_size",
    "try_load_image",
    "wrap_hf_dataset",
    "write_shards",
]
