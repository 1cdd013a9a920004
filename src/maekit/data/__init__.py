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
from .builtin import DIGITS_TEST_SIZE, DIGITS_TRAIN_SIZE, DigitsDataset
from .datasets import ImageClassFolder, UnlabeledImageFolder, resolve_split_dir
from .decode import RandomResizedCropDecode, decode_crop
from .device import Batch, DeviceLoader, batch_mask_seeds
from .factory import resolve_dataset
from .images import SymlinkLoopWarning, UndecodableImageWarning, convert_image, find_images, load_image
from .loader import build_loader, build_sampler, collate_skip_none, default_num_workers, set_epoch
from .seeding import MASK_STREAM, sample_seed
from .transforms import (RandomResizedCropNoRejection, build_eval_transform, build_finetune_transform,
                         build_linprobe_transform, build_pretrain_transform, resolve_mean_std)

__all__ = [
    "Batch", "DIGITS_TEST_SIZE", "DIGITS_TRAIN_SIZE", "DeviceLoader", "DigitsDataset",
    "ImageClassFolder", "MASK_STREAM", "RandomResizedCropDecode", "RandomResizedCropNoRejection",
    "SymlinkLoopWarning", "UndecodableImageWarning", "UnlabeledImageFolder", "as_dataset", "batch_mask_seeds",
    "build_eval_transform", "build_finetune_transform", "build_linprobe_transform", "build_loader",
    "build_pretrain_transform", "build_sampler", "collate_skip_none", "convert_image", "decode_crop",
    "default_num_workers", "find_images", "load_image", "resolve_dataset", "resolve_mean_std",
    "resolve_split_dir", "sample_seed", "set_epoch",
]
