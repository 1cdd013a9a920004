"""The sections of a MindFormers run YAML that need more than a copy (:mod:`maekit.compat.mindformers`):
device, learning-rate schedule, optimizer, processor, datasets (folders, transforms, mixup) and
the image sizes they name. Each reads its section and writes task options into ``fields``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..tasks.aliases import ALIASES
from .run_yaml import Section, convert_value, option_type
from .run_yaml import config_warning as _warn

_SCHEDULES = ("cosine", "cosinewithwarmuplr", "cosinewithwarmup", "warmupcosinedecaylr")
_OPTIMIZERS = ("adamw", "adamweightdecay", "fp32adamw", "fusedadamweightdecay")
_DEVICES = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "auto": "auto"}  # context.device_target -> device
TASK_BETAS = {"masked_image_modeling": (0.9, 0.95), "image_classification": (0.9, 0.999)}


# The keys copied as they are, by section: each sets the task option of its name or of its alias
# (maekit.tasks.config.ALIASES: num_classes -> nb_classes ...), else of _OWN_NAMES (MindFormers'
# names no other dialect uses). The keys that need more (datasets, architecture ...) are mapped by
# the functions of this module and maekit.compat.mindformers.
_COPY: dict[str, tuple[str, ...]] = {
    "": ("seed", "output_dir"),
    "runner_config": ("epochs", "batch_size", "num_classes", "gradient_accumulation_steps"),
    "model_config": ("patch_size", "num_channels", "in_chans", "norm_pix_loss", "norm_pixel_loss",
                     "drop_path_rate", "use_mean_pooling", "num_labels", "num_classes"),
    "lr_schedule": ("lr_end", "warmup_epochs"),
    "optimizer": ("weight_decay",),
    "mixup_op": ("mixup_alpha", "cutmix_alpha", "prob", "switch_prob", "label_smoothing", "mode",
                 "cutmix_minmax"),
}
_OWN_NAMES = {"use_mean_pooling": "global_pool", "prob": "mixup_prob", "switch_prob": "mixup_switch_prob",
              "mode": "mixup_mode"}


def copy_keys(section: Section, name: str, fields: dict[str, Any]) -> None:
    """The ``_COPY`` keys of one section, each read as its option's type."""
    for key in _COPY[name]:
        option = _OWN_NAMES.get(key) or ALIASES.get(key, key)
        if (value := section.get(key, option_type(option))) is not None:
            fields[option] = value


def map_device(top: Section, fields: dict[str, Any]) -> None:
    """``context.device_target`` -> ``device`` (Ascend and others: auto, with a warning)."""
    context = top.section("context")
    target = context.get("device_target", str)
    if target is not None:
        fields["device"] = _DEVICES.get(target.lower(), "auto")
        if target.lower() not in _DEVICES:
            _warn(f"context.device_target {target!r}: maekit runs on CUDA or the CPU; using auto")
    context.warn_unknown()


def map_schedule(top: Section, fields: dict[str, Any], *, mim: bool, where: str) -> None:
    """``lr_schedule``, ``lr_scale`` and layer decay -> blr / lr, min_lr, warmup_epochs, layer_decay."""
    lr_scale = top.get("lr_scale", bool, False)
    lr_scale_factor = top.get("lr_scale_factor", float, 256.0)
    sched = top.section("lr_schedule")
    stype = sched.get("type", str)
    if stype is not None and stype.lower().replace("_", "") not in _SCHEDULES:
        raise ValueError(f"{where}: lr_schedule.type {stype!r} is not available; maekit trains with linear "
                         "warmup then half-cosine decay (type: cosine)")
    lr = sched.get("learning_rate", float)
    if lr is not None:
        if lr_scale:
            fields["blr"] = lr * 256.0 / lr_scale_factor
        else:
            fields["lr"] = lr
    copy_keys(sched, "lr_schedule", fields)
    if sched.get("warmup_lr_init", float, 0.0):
        _warn("lr_schedule.warmup_lr_init is not supported: the warmup starts at 0")
    for key in ("warmup_steps", "warmup_ratio"):
        if sched.get(key, float):
            raise ValueError(f"{where}: lr_schedule.{key} is not supported; give warmup_epochs")
    total = sched.data.get("total_steps")
    if total not in (None, -1):
        _warn("lr_schedule.total_steps is ignored: the schedule spans runner_config.epochs")
    sched.warn_unknown()
    layer_scale = top.get("layer_scale", bool, None)
    layer_decay = top.get("layer_decay", float)
    if not mim:
        if layer_scale is False:
            fields["layer_decay"] = 1.0
        elif layer_decay is not None:
            fields["layer_decay"] = layer_decay


def map_optimizer(top: Section, fields: dict[str, Any], *, task: str, where: str) -> None:
    """``optimizer`` -> weight_decay; the type must be AdamW, other betas / eps only warn."""
    opt = top.section("optimizer")
    otype = opt.get("type", str)
    if otype is not None and otype.lower().replace("_", "") not in _OPTIMIZERS:
        raise ValueError(f"{where}: optimizer.type {otype!r} is not available; maekit uses AdamW "
                         "(type: adamw)")
    copy_keys(opt, "optimizer", fields)
    betas = TASK_BETAS[task]
    for key, want in (("beta1", betas[0]), ("beta2", betas[1]), ("eps", 1e-8)):
        value = opt.get(key, float)
        if value is not None and abs(value - want) > 1e-12:
            _warn(f"optimizer.{key} {value} differs from the {task} recipe's {want}, which maekit uses")
    opt.warn_unknown()


def map_processor(top: Section, sizes_seen: list[tuple[str, Any]]) -> None:
    """``processor.image_processor.size``: only checked against the image size."""
    proc = top.section("processor")
    ip = proc.section("image_processor")
    psize = ip.get("size", "any")
    if psize is not None:
        sizes_seen.append(("processor.image_processor.size", psize))
    ip.warn_unknown()
    proc.warn_unknown()


def map_dataset(top: Section, key: str, fields: dict[str, Any], sizes: list, *, train: bool):
    """(dataset_dir, (mean, std) or None) of ``train_dataset`` / ``eval_dataset`` (both None when absent)."""
    ds = top.section(key)
    dataset_dir = _map_loader(ds, key, fields, train=train)
    batch = ds.get("batch_size", int)
    if train and batch is not None and "batch_size" not in fields:
        fields["batch_size"] = batch  # runner_config.batch_size wins, as in MindFormers
    mean_std = _map_transforms(ds.get("transforms", list) or [], key, fields, sizes, train=train)
    if train and "mixup_op" in ds:
        map_mixup(ds.section("mixup_op"), fields)
    ds.used.add("mixup_op")  # the eval set's is ignored
    ds.warn_unknown()
    return dataset_dir, mean_std


def _map_loader(ds: Section, key: str, fields: dict[str, Any], *, train: bool) -> str | None:
    """``data_loader``: the folder; its (else the dataset's) ``num_parallel_workers`` -> num_workers."""
    loader = ds.section("data_loader")
    ltype = loader.data.get("type")
    if ltype and str(ltype) not in ("ImageFolderDataset", "ImageFolder"):
        _warn(f"{key}.data_loader.type {ltype!r}: maekit reads image folders (or builtin:digits)")
    dataset_dir = loader.get("dataset_dir", str)
    workers = loader.get("num_parallel_workers", int, ds.get("num_parallel_workers", int))
    loader.warn_unknown()
    if train and workers is not None:
        fields["num_workers"] = workers
    return dataset_dir


# transform type -> (task option, the transform's keys for it): read from the train set only
_ERASING = (("reprob", ("probability", "prob")), ("remode", ("mode",)), ("recount", ("max_count",)))
_AUGMENT = (("aa", ("config_str",)),)
_TRAIN_TRANSFORMS = {"randomerasing": _ERASING, "random_erasing": _ERASING, "rand_augment_transform": _AUGMENT,
                     "randaugment": _AUGMENT, "auto_augment_transform": _AUGMENT}
_CROPS = ("randomcropdecoderesize", "randomresizedcrop", "centercrop")  # their sizes are checked


def _map_transforms(transforms: list, key: str, fields: dict[str, Any], sizes: list, *, train: bool):
    """A dataset's ``transforms``: Normalize -> (mean, std) returned; RandomErasing and RandAugment
    values -> options (train set only); crop sizes -> ``sizes`` (checked against the image size)."""
    mean_std = None
    for i, t in enumerate(transforms):
        if not isinstance(t, Mapping) or "type" not in t:
            raise ValueError(f"{key}.transforms[{i}] must be a mapping with a type, got {t!r}")
        ttype, here = str(t["type"]).lower(), f"{key}.transforms[{i}]"
        if ttype == "normalize":
            mean_std = _normalize(t, here)
        elif ttype in _CROPS and t.get("size") is not None:
            sizes.append((f"{here}.size", t["size"]))
        elif train and ttype in _TRAIN_TRANSFORMS:
            for option, names in _TRAIN_TRANSFORMS[ttype]:
                name = next((n for n in names if t.get(n) is not None), None)
                if name is not None:
                    fields[option] = convert_value(t[name], option_type(option), f"{here}.{name}")
    return mean_std


def _normalize(t: Mapping, here: str) -> tuple[list[float], list[float]]:
    """A Normalize transform's (mean, std) in 0-1 units."""
    mean = convert_value(t.get("mean"), list[float], f"{here}.mean")
    std = convert_value(t.get("std"), list[float], f"{here}.std")
    if max(mean) > 1.0 or max(std) > 1.0:  # MindSpore normalises 0-255 pixels
        mean, std = [m / 255.0 for m in mean], [s / 255.0 for s in std]
    if len(mean) == 3 and abs(mean[1] - 118.575 / 255) < 1e-6 and abs(std[1] - 62.22 / 255) < 1e-6:
        _warn(f"{here}: green mean/std 118.575 / 62.22 is MindFormers' typo; ImageNet's is "
              "116.28 / 57.12 (the values are used as given)")
    return [round(m, 10) for m in mean], [round(s, 10) for s in std]


def map_mixup(section: Section, fields: dict[str, Any]) -> None:
    """``mixup_op`` -> the mixup / cutmix options (read as their types)."""
    copy_keys(section, "mixup_op", fields)
    section.used.add("num_classes")
    section.warn_unknown()


def check_sizes(size: Any, seen: list[tuple[str, Any]]) -> None:
    """A warning naming the sizes ``seen`` ((where, value): crops, masks, the processor) that differ
    from the image size ``size`` (S, [S] and [S, S] are the same size)."""
    def height_width(value: Any) -> list | None:
        hw = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else None
        return hw * 2 if hw is not None and len(hw) == 1 else hw

    stale = [f"{where}={value}" for where, value in seen if height_width(value) != height_width(size)]
    if size is not None and stale:
        _warn(f"the image size is {size} (model.model_config.image_size); these sizes differ and are not "
              f"used: {', '.join(stale)} (maekit's transforms and masks follow the model)")
