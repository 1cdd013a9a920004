"""MindFormers-shaped run YAML (REFERENCES G.5) -> task, model and :class:`TrainingArguments`.

Used by ``maekit run --config X.yaml --run_mode ...`` and ``Trainer(args="X.yaml")``. A config
is a path or a packaged name (``mae/run_mae_vit_base_p16_224_800ep.yaml``; a leading ``configs/``
is accepted, as in MindFormers' command lines). ``--options a.b.c=value`` sets a dotted key
(list items by index: ``train_dataset.transforms.4.mean=[...]``); values are read as YAML.

Mapping (everything else of MindFormers' layout is Ascend / MindSpore machinery and is ignored
silently: ``context`` but its device, ``parallel``, ``parallel_config``, ``moe_config``,
``recompute_config``, ``runner_wrapper`` (loss scale: ``amp`` here), ``callbacks``,
``eval_callbacks``, ``*_dataset_task``, ``metric``, profiling / auto-tune / strategy keys, and the
dataset pipeline's column / sink / prefetch keys; the augmentation is the reference recipe of
the task, only the values listed below are read from ``transforms``):

====================================================  =============================================
YAML                                                  maekit
====================================================  =============================================
run_mode                                              train | finetune | eval | predict
seed, output_dir                                      seed, output_dir
load_checkpoint                                       the run mode's checkpoint (train: starting
                                                      weights; finetune: required; eval / predict:
                                                      the weights evaluated)
resume_training                                       resume (True: ``auto``; or a path)
context.device_target                                 device (CPU -> cpu, GPU -> cuda, auto)
trainer.type / trainer.model_name                     task / model
runner_config.epochs, batch_size                      epochs, batch_size (per process)
runner_config.image_size                              input_size (model_config.image_size wins)
runner_config.num_classes                             nb_classes
runner_config.gradient_accumulation_steps             accum_iter
train_dataset.data_loader.dataset_dir                 the training data (folder or builtin:digits)
train_dataset.[data_loader.]num_parallel_workers      num_workers
train_dataset.transforms: Normalize mean / std        mean / std (0-255 values are divided by 255)
  RandomErasing probability / mode / max_count        reprob / remode / recount
  rand_augment_transform config_str                   aa
train_dataset.mask_policy.mask_ratio                  mask_ratio (model_config.mask_ratio wins)
[train_dataset.]mixup_op: mixup_alpha, cutmix_alpha,  mixup, cutmix, mixup_prob, mixup_switch_prob,
  prob, switch_prob, label_smoothing, mode            smoothing, mixup_mode
eval_dataset.data_loader.dataset_dir                  the evaluation data
model.arch.type                                       checked against the task
model.model_config: image_size, patch_size,           input_size, patch_size, in_chans,
  num_channels, norm_pix_loss (norm_pixel_loss),      norm_pix_loss, mask_ratio, drop_path,
  mask_ratio, drop_path_rate, use_mean_pooling,       global_pool, nb_classes
  num_labels (num_classes)
model.model_config: hidden_size, num_hidden_layers,   constructor overrides when they differ from
  num_attention_heads, intermediate_size,             the named model (embed_dim, depth,
  decoder_hidden_size, decoder_num_hidden_layers,     num_heads, mlp_ratio, decoder_embed_dim,
  decoder_num_attention_heads                         decoder_depth, decoder_num_heads)
model.model_config.checkpoint_name_or_path           eval / predict weights when no load_checkpoint
lr_schedule.type                                      must be cosine (warmup + half cosine)
lr_schedule.learning_rate                             blr (= learning_rate x 256 / lr_scale_factor)
                                                      with lr_scale: True, else lr (absolute)
lr_schedule.lr_end, warmup_epochs                     min_lr, warmup_epochs
layer_scale, layer_decay                              layer_decay (1.0 when layer_scale is False)
optimizer.type / weight_decay                         must be AdamW / weight_decay
optimizer.beta1, beta2, eps                           checked: the task's AdamW is (0.9, 0.95)
                                                      for pretraining, (0.9, 0.999) for fine-tuning,
                                                      eps 1e-8 (a warning when they differ)
processor.image_processor.size                        checked against the image size
any top-level TrainingArguments field (maekit keys)   that field (e.g. ``amp: none``, ``device``)
====================================================  =============================================

Unknown keys give a :class:`RunConfigWarning`. A missing file, a value of the wrong type, an
unknown run mode or task, a schedule or optimizer maekit does not have, or a model architecture
type that contradicts the task is a ``ValueError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tasks.arguments import TrainingArguments
from ..tasks.config import ALIASES
from .run_yaml import (DEFAULT_CONFIG, RUN_MODES, RunConfigWarning, Section, apply_options, convert_value,
                       read_run_yaml, resolve_run_config_path)
from .run_yaml import config_warning as _warn

DEFAULT_MODELS = {"masked_image_modeling": "mae_vit_base_p16", "image_classification": "vit_base_p16"}
"""MindFormers' model names, the Trainer's default per task."""

_ARCH_TASKS = {
    "vitmaeforpretraining": "masked_image_modeling",
    "maskedautoencoder": "masked_image_modeling",
    "vitforimageclassification": "image_classification",
}
_SCHEDULES = ("cosine", "cosinewithwarmuplr", "cosinewithwarmup", "warmupcosinedecaylr")
_OPTIMIZERS = ("adamw", "adamweightdecay", "fp32adamw", "fusedadamweightdecay")
_TASK_BETAS = {"masked_image_modeling": (0.9, 0.95), "image_classification": (0.9, 0.999)}

_IGNORED_TOP = {
    "parallel", "parallel_config", "moe_config", "recompute_config", "runner_wrapper", "callbacks",
    "eval_callbacks", "train_dataset_task", "eval_dataset_task", "metric", "auto_tune", "filepath_prefix",
    "autotune_per_step", "profile", "profile_start_step", "profile_stop_step", "init_start_profile",
    "profile_communication", "profile_memory", "src_strategy_path_or_dir", "auto_trans_ckpt",
    "only_save_strategy", "remote_save_url", "use_parallel", "micro_batch_interleave_num", "do_eval",
    "eval_step_interval", "eval_epoch_interval", "local_rank", "device_num", "moe", "use_past",
    "lr_scale", "lr_scale_factor", "layer_scale", "layer_decay", "run_mode", "seed", "output_dir",
    "load_checkpoint", "resume_training", "context", "trainer", "runner_config", "train_dataset",
    "eval_dataset", "model", "lr_schedule", "optimizer", "processor", "mixup_op",
}
_IGNORED_DATASET = {
    "seed", "input_columns", "output_columns", "column_order", "python_multiprocessing", "drop_remainder",
    "repeat", "numa_enable", "prefetch_size", "type", "do_eval", "auto_tune", "filepath_prefix",
    "autotune_per_step", "profile", "tokenizer", "text_transforms", "eval_interval", "eval_offset",
}
_IGNORED_MODEL_CONFIG = {
    "type", "initializer_range", "qkv_bias", "hidden_act", "post_layernorm_residual", "layer_norm_eps",
    "attention_probs_dropout_prob", "hidden_dropout_prob", "layernorm_compute_type", "softmax_compute_type",
    "param_init_type", "compute_dtype", "parallel_config", "moe_config", "loss_type", "use_moe",
    "init_values", "window_size", "use_abs_pos_emb", "use_rel_pos_bias", "use_shared_rel_pos_bias",
    "encoder_stride", "decoder_dim_head", "decoder_intermediate_size",
}
# MindFormers / HF architecture field -> constructor argument
_ARCH_FIELDS = {
    "hidden_size": "embed_dim", "embed_dim": "embed_dim",
    "num_hidden_layers": "depth", "depth": "depth",
    "num_attention_heads": "num_heads", "num_heads": "num_heads",
    "decoder_hidden_size": "decoder_embed_dim", "decoder_dim": "decoder_embed_dim",
    "decoder_embed_dim": "decoder_embed_dim",
    "decoder_num_hidden_layers": "decoder_depth", "decoder_depth": "decoder_depth",
    "decoder_num_attention_heads": "decoder_num_heads", "decoder_num_heads": "decoder_num_heads",
}


@dataclass
class RunConfig:
    """A run YAML mapped onto maekit (module docstring)."""

    run_mode: str
    task: str
    model: str | None
    args: TrainingArguments
    train_dataset: str | None = None
    eval_dataset: str | None = None
    load_checkpoint: str | None = None
    default_checkpoint: str | None = None
    resume_training: bool | str = False
    model_overrides: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------- mapping
def load_run_config(config: str | os.PathLike | Mapping[str, Any] = DEFAULT_CONFIG,
                    options: Sequence[str] | Mapping[str, Any] = ()) -> RunConfig:
    """Read a run YAML (path, packaged name or an already loaded dict), apply ``options``, map it."""
    if isinstance(config, Mapping):
        data, source = dict(config), None
    else:
        data, source = read_run_yaml(config)
    data = apply_options(data, options)
    return map_run_config(data, source=source)


def map_run_config(data: Mapping[str, Any], source: str | None = None) -> RunConfig:
    """Map a run-YAML dict onto maekit (module docstring)."""
    from ..api.pipelines import normalize_task

    where = os.path.basename(source) if source else ""
    top = Section(data, "")
    fields: dict[str, Any] = {}

    run_mode = top.get("run_mode", "str", "train")
    if run_mode not in RUN_MODES:
        raise ValueError(f"{where}: run_mode must be one of {', '.join(RUN_MODES)}; got {run_mode!r}")
    if "seed" in top:
        fields["seed"] = top.get("seed", "int")
    if "output_dir" in top:
        fields["output_dir"] = top.get("output_dir", "str")
    load_checkpoint = top.get("load_checkpoint", "any")
    if load_checkpoint in (False, ""):
        load_checkpoint = None
    elif load_checkpoint is not None:
        load_checkpoint = convert_value(load_checkpoint, "str", "load_checkpoint")
    resume = top.get("resume_training", "any", False)
    if resume not in (True, False, None, ""):
        resume = convert_value(resume, "str", "resume_training")
    resume = resume or False

    _map_device(top, fields)

    trainer = top.section("trainer")
    task_text = trainer.get("type", "str")
    model_name = trainer.get("model_name", "str")
    trainer.warn_unknown()
    model = top.section("model")
    arch = model.section("arch")
    arch_type = arch.get("type", "str")
    arch.warn_unknown()
    arch_task = _ARCH_TASKS.get(arch_type.lower()) if arch_type else None
    if arch_type and arch_task is None:
        _warn(f"model.arch.type {arch_type!r} is not a MindFormers MAE / ViT class; the model is "
              f"{model_name or 'the default'}")
    if task_text is None and arch_task is None:
        raise ValueError(f"{where}: trainer.type (masked_image_modeling or image_classification) is missing")
    task = normalize_task(task_text) if task_text is not None else arch_task
    if task not in _TASK_BETAS:
        raise ValueError(f"{where}: trainer.type {task_text!r} cannot be trained; use masked_image_modeling "
                         "or image_classification")
    if arch_task is not None and arch_task != task:
        raise ValueError(f"{where}: model.arch.type {arch_type} is a {arch_task} model but trainer.type is "
                         f"{task}")
    mim = task == "masked_image_modeling"

    runner = top.section("runner_config", ignored={
        "sink_mode", "sink_size", "per_epoch_size", "initial_epoch", "has_trained_epoches",
        "has_trained_steps"})
    if "epochs" in runner:
        fields["epochs"] = runner.get("epochs", "int")
    if "batch_size" in runner:
        fields["batch_size"] = runner.get("batch_size", "int")
    image_size = runner.get("image_size", "size")
    if "num_classes" in runner:
        fields["nb_classes"] = runner.get("num_classes", "int")
    if "gradient_accumulation_steps" in runner:
        fields["accum_iter"] = runner.get("gradient_accumulation_steps", "int")
    runner.warn_unknown()

    # datasets
    sizes_seen: list[tuple[str, Any]] = []
    train_dir, train_mean_std = _dataset(top, "train_dataset", fields, sizes_seen, train=True)
    eval_dir, eval_mean_std = _dataset(top, "eval_dataset", fields, sizes_seen, train=False)
    if train_mean_std is not None:
        fields["mean"], fields["std"] = train_mean_std
    elif eval_mean_std is not None:
        fields["mean"], fields["std"] = eval_mean_std
    if train_mean_std is not None and eval_mean_std is not None and train_mean_std != eval_mean_std:
        _warn("train_dataset and eval_dataset normalise differently; maekit uses the train_dataset values "
              "for both")
    if "mixup_op" in top:
        _mixup(top.section("mixup_op"), fields)

    # model
    mc = model.section("model_config", ignored=_IGNORED_MODEL_CONFIG)
    default_checkpoint = mc.get("checkpoint_name_or_path", "str") or None
    model_size = mc.get("image_size", "size")
    if model_size is None:
        model_size = mc.get("img_size", "size")
    if model_size is not None:
        fields["input_size"] = model_size
    elif image_size is not None:
        fields["input_size"] = image_size
    for key, name, kind in (("patch_size", "patch_size", "int"), ("num_channels", "in_chans", "int"),
                            ("in_chans", "in_chans", "int"), ("norm_pix_loss", "norm_pix_loss", "bool"),
                            ("norm_pixel_loss", "norm_pix_loss", "bool"),
                            ("drop_path_rate", "drop_path", "float"),
                            ("use_mean_pooling", "global_pool", "bool"),
                            ("num_labels", "nb_classes", "int"), ("num_classes", "nb_classes", "int")):
        if key in mc:
            fields[name] = mc.get(key, kind)
    if "mask_ratio" in mc:
        if "mask_ratio" in fields and fields["mask_ratio"] != mc.data["mask_ratio"]:
            _warn(f"model.model_config.mask_ratio {mc.data['mask_ratio']} and "
                  f"train_dataset.mask_policy.mask_ratio {fields['mask_ratio']} differ; using "
                  f"{mc.data['mask_ratio']}")
        fields["mask_ratio"] = mc.get("mask_ratio", "float")
    if not mim:
        fields.pop("mask_ratio", None)
        fields.pop("norm_pix_loss", None)
    elif fields.pop("drop_path", None):
        _warn("model.model_config.drop_path_rate: pretraining uses no stochastic depth (as the references); "
              "ignored")
    arch_values = {}
    for key, name in _ARCH_FIELDS.items():
        if key in mc:
            arch_values[name] = mc.get(key, "any")
    intermediate = mc.get("intermediate_size", "int")
    mc.warn_unknown()
    model.warn_unknown()
    if model_name is None and default_checkpoint is not None:
        from ..models import is_model
        from ..api.zoo import split_name

        if is_model(split_name(default_checkpoint)[0]):
            model_name = split_name(default_checkpoint)[0]
    overrides = _architecture_overrides(model_name, task, arch_values, intermediate, fields, where)

    _map_schedule(top, fields, mim=mim, where=where)
    _map_optimizer(top, fields, task=task, where=where)

    _map_processor(top, sizes_seen)
    _map_maekit_fields(top, fields)

    _check_sizes(fields.get("input_size"), sizes_seen)
    try:
        args = TrainingArguments(**fields)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    rc = RunConfig(run_mode=run_mode, task=task, model=model_name, args=args, train_dataset=train_dir,
                   eval_dataset=eval_dir, load_checkpoint=load_checkpoint,
                   default_checkpoint=default_checkpoint, resume_training=resume, model_overrides=overrides,
                   source=source, data=dict(data))
    return rc


def _map_device(top: Section, fields: dict[str, Any]) -> None:
    """``context.device_target`` -> ``device`` (Ascend and others: auto, with a warning)."""
    context = top.section("context", ignored={
        "mode", "device_id", "enable_graph_kernel", "graph_kernel_flags", "max_call_depth", "save_graphs",
        "save_graphs_path", "max_device_memory", "jit_config", "runtime_num_threads"})
    target = context.get("device_target", "str")
    if target is not None:
        low = target.lower()
        if low in ("cpu",):
            fields["device"] = "cpu"
        elif low in ("gpu", "cuda"):
            fields["device"] = "cuda"
        elif low == "auto":
            fields["device"] = "auto"
        else:
            _warn(f"context.device_target {target!r}: maekit runs on CUDA or the CPU; using auto")
            fields["device"] = "auto"
    context.warn_unknown()


def _map_schedule(top: Section, fields: dict[str, Any], *, mim: bool, where: str) -> None:
    """``lr_schedule``, ``lr_scale`` and layer decay -> blr / lr, min_lr, warmup_epochs, layer_decay."""
    lr_scale = top.get("lr_scale", "bool", False)
    lr_scale_factor = top.get("lr_scale_factor", "float", 256.0)
    sched = top.section("lr_schedule", ignored={"total_steps", "decay_steps"})
    stype = sched.get("type", "str")
    if stype is not None and stype.lower().replace("_", "") not in _SCHEDULES:
        raise ValueError(f"{where}: lr_schedule.type {stype!r} is not available; maekit trains with linear "
                         "warmup then half-cosine decay (type: cosine)")
    lr = sched.get("learning_rate", "float")
    if lr is not None:
        if lr_scale:
            fields["blr"] = lr * 256.0 / lr_scale_factor
        else:
            fields["lr"] = lr
    if "lr_end" in sched:
        fields["min_lr"] = sched.get("lr_end", "float")
    if "warmup_epochs" in sched:
        fields["warmup_epochs"] = sched.get("warmup_epochs", "float")
    if sched.get("warmup_lr_init", "float", 0.0):
        _warn("lr_schedule.warmup_lr_init is not supported: the warmup starts at 0")
    for key in ("warmup_steps", "warmup_ratio"):
        if sched.get(key, "float"):
            raise ValueError(f"{where}: lr_schedule.{key} is not supported; give warmup_epochs")
    total = sched.data.get("total_steps")
    if total not in (None, -1):
        _warn("lr_schedule.total_steps is ignored: the schedule spans runner_config.epochs")
    sched.warn_unknown()
    layer_scale = top.get("layer_scale", "bool", None)
    layer_decay = top.get("layer_decay", "float")
    if not mim:
        if layer_scale is False:
            fields["layer_decay"] = 1.0
        elif layer_decay is not None:
            fields["layer_decay"] = layer_decay


def _map_optimizer(top: Section, fields: dict[str, Any], *, task: str, where: str) -> None:
    """``optimizer`` -> weight_decay; the type must be AdamW, other betas / eps only warn."""
    opt = top.section("optimizer", ignored={"learning_rate"})
    otype = opt.get("type", "str")
    if otype is not None and otype.lower().replace("_", "") not in _OPTIMIZERS:
        raise ValueError(f"{where}: optimizer.type {otype!r} is not available; maekit uses AdamW "
                         "(type: adamw)")
    if "weight_decay" in opt:
        fields["weight_decay"] = opt.get("weight_decay", "float")
    betas = _TASK_BETAS[task]
    for key, want in (("beta1", betas[0]), ("beta2", betas[1]), ("eps", 1e-8)):
        value = opt.get(key, "float")
        if value is not None and abs(value - want) > 1e-12:
            _warn(f"optimizer.{key} {value} differs from the {task} recipe's {want}, which maekit uses")
    opt.warn_unknown()


def _map_processor(top: Section, sizes_seen: list[tuple[str, Any]]) -> None:
    """``processor.image_processor.size``: only checked against the image size."""
    proc = top.section("processor", ignored={"type", "tokenizer", "return_tensors"})
    ip = proc.section("image_processor", ignored={"type", "patch_size", "mask_ratio", "interpolation",
                                                   "image_mean", "image_std", "is_hwc"})
    psize = ip.get("size", "any")
    if psize is not None:
        sizes_seen.append(("processor.image_processor.size", psize))
    ip.warn_unknown()
    proc.warn_unknown()


def _map_maekit_fields(top: Section, fields: dict[str, Any]) -> None:
    """Top-level keys named like TrainingArguments fields (``amp: none``...); then every key
    MindFormers has but maekit ignores is marked read, and the rest is warned about."""
    field_names = set(TrainingArguments().to_dict()) | set(ALIASES)
    for key in list(top.data):
        if key in field_names and key not in _IGNORED_TOP:  # not MindFormers' own sections and keys
            name = ALIASES.get(key, key)
            fields[name] = top.get(key, "any")  # TrainingArguments checks the type
    for key in _IGNORED_TOP:
        top.used.add(key)
    top.warn_unknown()


def _dataset(top: Section, key: str, fields: dict[str, Any], sizes: list, *, train: bool):
    """(dataset_dir, (mean, std) or None) of ``train_dataset`` / ``eval_dataset``."""
    if key not in top:
        top.used.add(key)
        return None, None
    ds = top.section(key, ignored=_IGNORED_DATASET)
    loader = ds.section("data_loader", ignored={"type", "shuffle", "num_shards", "shard_id", "decode",
                                                "class_indexing", "extensions"})
    ltype = loader.data.get("type")
    if ltype and str(ltype) not in ("ImageFolderDataset", "ImageFolder"):
        _warn(f"{key}.data_loader.type {ltype!r}: maekit reads image folders (or builtin:digits)")
    dataset_dir = loader.get("dataset_dir", "str")
    workers = loader.get("num_parallel_workers", "int")
    loader.warn_unknown()
    ds_workers = ds.get("num_parallel_workers", "int")
    if workers is None:
        workers = ds_workers
    if train and workers is not None:
        fields["num_workers"] = workers
    batch = ds.get("batch_size", "int")
    if train and batch is not None and "batch_size" not in fields:
        fields["batch_size"] = batch  # runner_config.batch_size wins, as in MindFormers
    mean_std = None
    transforms = ds.get("transforms", "list") or []
    for i, t in enumerate(transforms):
        if not isinstance(t, Mapping) or "type" not in t:
            raise ValueError(f"{key}.transforms[{i}] must be a mapping with a type, got {t!r}")
        ttype = str(t["type"]).lower()
        here = f"{key}.transforms[{i}]"
        if ttype == "normalize":
            mean = convert_value(t.get("mean"), "floats", f"{here}.mean")
            std = convert_value(t.get("std"), "floats", f"{here}.std")
            if max(mean) > 1.0 or max(std) > 1.0:  # MindSpore normalises 0-255 pixels
                mean, std = [m / 255.0 for m in mean], [s / 255.0 for s in std]
            if len(mean) == 3 and abs(mean[1] - 118.575 / 255) < 1e-6 and abs(std[1] - 62.22 / 255) < 1e-6:
                _warn(f"{here}: green mean/std 118.575 / 62.22 is MindFormers' typo; ImageNet's is "
                      "116.28 / 57.12 (the values are used as given)")
            mean_std = ([round(m, 10) for m in mean], [round(s, 10) for s in std])
        elif ttype in ("randomerasing", "random_erasing"):
            if train:
                prob = t.get("probability", t.get("prob"))
                if prob is not None:
                    fields["reprob"] = convert_value(prob, "float", f"{here}.probability")
                if t.get("mode") is not None:
                    fields["remode"] = convert_value(t["mode"], "str", f"{here}.mode")
                if t.get("max_count") is not None:
                    fields["recount"] = convert_value(t["max_count"], "int", f"{here}.max_count")
        elif ttype in ("rand_augment_transform", "randaugment", "auto_augment_transform"):
            if train and t.get("config_str") is not None:
                fields["aa"] = convert_value(t["config_str"], "str", f"{here}.config_str")
        elif ttype in ("randomcropdecoderesize", "randomresizedcrop", "centercrop", "resize"):
            if t.get("size") is not None and ttype != "resize":
                sizes.append((f"{here}.size", t["size"]))
    mask = ds.section("mask_policy", ignored={"type", "patch_size", "input_size"})
    if train and "mask_ratio" in mask:
        fields["mask_ratio"] = mask.get("mask_ratio", "float")
    if "input_size" in mask:
        sizes.append((f"{key}.mask_policy.input_size", mask.data["input_size"]))
    mask.warn_unknown()
    if "mixup_op" in ds:
        if train:
            _mixup(ds.section("mixup_op"), fields)
        else:
            ds.used.add("mixup_op")
    ds.warn_unknown()
    return dataset_dir, mean_std


def _mixup(section: Section, fields: dict[str, Any]) -> None:
    for key, name, kind in (("mixup_alpha", "mixup", "float"), ("cutmix_alpha", "cutmix", "float"),
                            ("prob", "mixup_prob", "float"), ("switch_prob", "mixup_switch_prob", "float"),
                            ("label_smoothing", "smoothing", "float"), ("mode", "mixup_mode", "str"),
                            ("cutmix_minmax", "cutmix_minmax", "floats")):
        value = section.get(key, kind)
        if value is not None:
            fields[name] = value
    section.used.add("num_classes")
    section.warn_unknown()


def _check_sizes(size: Any, seen: list[tuple[str, Any]]) -> None:
    if size is None or not seen:
        return
    want = [size, size] if isinstance(size, int) else list(size)
    stale = []
    for where, value in seen:
        got = ([value, value] if isinstance(value, int)
               else list(value) if isinstance(value, (list, tuple)) else None)
        if got is not None and len(got) == 1:
            got = got * 2
        if got != want:
            stale.append(f"{where}={value}")
    if stale:
        _warn(f"the image size is {size} (model.model_config.image_size); these sizes differ and are not "
              f"used: {', '.join(stale)} (maekit's transforms and masks follow the model)")


def _architecture_overrides(model_name: str | None, task: str, values: dict[str, Any],
                            intermediate: int | None, fields: dict[str, Any], where: str) -> dict[str, Any]:
    """Constructor overrides for architecture fields that differ from the named model's."""
    if not values and intermediate is None:
        return {}
    from ..api.config import MAEConfig
    from ..tasks.common import classifier_name

    name = model_name or DEFAULT_MODELS[task]
    try:
        if task == "image_classification":
            name = classifier_name(name)
        shape = {}
        if fields.get("patch_size") is not None:
            shape["patch_size"] = fields["patch_size"]
        if fields.get("in_chans") is not None:
            shape["in_chans"] = fields["in_chans"]
        current = MAEConfig(name, shape).architecture()
    except ValueError as e:
        raise ValueError(f"{where}: trainer.model_name: {e}") from None
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        if task == "image_classification" and key.startswith("decoder_"):
            continue
        if key not in current:
            _warn(f"model.model_config: {key} does not apply to {name}; ignored")
            continue
        value = convert_value(value, "any", key)
        if value != current[key]:
            overrides[key] = value
    hidden = overrides.get("embed_dim", current.get("embed_dim"))
    if intermediate is not None and isinstance(hidden, int) and hidden:
        ratio = intermediate / hidden
        if abs(ratio - 4.0) > 1e-9:
            overrides["mlp_ratio"] = ratio
    return overrides


__all__ = ["DEFAULT_CONFIG", "DEFAULT_MODELS", "RUN_MODES", "RunConfig", "RunConfigWarning", "apply_options", "load_run_config",
           "map_run_config", "read_run_yaml", "resolve_run_config_path"]
