"""MindFormers-shaped run YAML (docs/REFERENCE_RECIPES.md G.5) -> task, model and :class:`TrainingArguments`.

A pure function of the YAML dict (:func:`map_run_config`); the keys copied as they are form the
table ``_COPY`` of :mod:`.mindformers_sections`, the others by one function per section there.

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
``_COPY`` keys (seed, runner_config.epochs ...)        the option of that name or alias, as it is
run_mode                                              train | finetune | eval | predict
load_checkpoint                                       the run mode's checkpoint (train: starting
                                                      weights; finetune: required; eval / predict:
                                                      the weights evaluated)
resume_training                                       resume (True: ``auto``; or a path)
context.device_target                                 device (CPU -> cpu, GPU -> cuda, auto)
trainer.type / trainer.model_name                     task / model
runner_config.image_size, model_config.image_size     input_size (model_config's wins)
model.model_config.mask_ratio                         mask_ratio (pretraining only)
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

Unknown keys of the file give a :class:`RunConfigWarning`; an ``--options`` key that nothing reads
(it would not take effect) is a ``ValueError``. A missing file, a value of the wrong type, an
unknown run mode or task, a schedule or optimizer maekit does not have, or a model architecture
type that contradicts the task is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..tasks.aliases import ALIASES
from ..tasks.arguments import TrainingArguments
from ..tasks.config import FinetuneConfig, PretrainConfig
from .mindformers_sections import (TASK_BETAS, check_sizes, copy_keys, map_dataset, map_device, map_mixup,
                                   map_optimizer, map_processor, map_schedule)
from .run_yaml import (DEFAULT_CONFIG, RUN_MODES, RunConfigWarning, Section, apply_options,
                       check_options_take_effect, convert_value, option_type, parse_options, read_run_yaml,
                       resolve_run_config_path)
from .run_yaml import config_warning as _warn

DEFAULT_MODELS = {"masked_image_modeling": "mae_vit_base_p16", "image_classification": "vit_base_p16"}
"""MindFormers' model names, the Trainer's default per task."""

_ARCH_TASKS = {
    "vitmaeforpretraining": "masked_image_modeling",
    "maskedautoencoder": "masked_image_modeling",
    "vitforimageclassification": "image_classification",
}

_IGNORED_TOP = {
    "parallel", "parallel_config", "moe_config", "recompute_config", "runner_wrapper", "callbacks",
    "eval_callbacks", "train_dataset_task", "eval_dataset_task", "metric", "auto_tune", "filepath_prefix",
    "autotune_per_step", "profile", "profile_start_step", "profile_stop_step", "init_start_profile",
    "profile_communication", "profile_memory", "src_strategy_path_or_dir", "auto_trans_ckpt",
    "only_save_strategy", "remote_save_url", "use_parallel", "micro_batch_interleave_num", "do_eval",
    "eval_step_interval", "eval_epoch_interval", "local_rank", "device_num", "moe", "use_past", "mixup_op",
}
_IGNORED_DATASET = {
    "seed", "input_columns", "output_columns", "column_order", "python_multiprocessing", "drop_remainder",
    "repeat", "numa_enable", "prefetch_size", "type", "do_eval", "auto_tune", "filepath_prefix",
    "autotune_per_step", "profile", "tokenizer", "text_transforms", "eval_interval", "eval_offset",
    "mask_policy",  # read with the model's mask ratio (_map_datasets)
}
# The one table of the keys of each section (by name) that nothing reads and no warning names:
# MindSpore / Ascend settings maekit has no counterpart for, or values maekit takes from the model.
_IGNORED_KEYS = {
    "": _IGNORED_TOP,
    "model_config": {
        "type", "initializer_range", "qkv_bias", "hidden_act", "post_layernorm_residual", "layer_norm_eps",
        "attention_probs_dropout_prob", "hidden_dropout_prob", "layernorm_compute_type",
        "softmax_compute_type", "param_init_type", "compute_dtype", "parallel_config", "moe_config", "loss_type",
        "use_moe", "init_values", "window_size", "use_abs_pos_emb", "use_rel_pos_bias", "use_shared_rel_pos_bias",
        "encoder_stride", "decoder_dim_head", "decoder_intermediate_size"},
    "runner_config": {"sink_mode", "sink_size", "per_epoch_size", "initial_epoch", "has_trained_epoches",
                      "has_trained_steps"},
    "context": {"mode", "device_id", "enable_graph_kernel", "graph_kernel_flags", "max_call_depth",
                "save_graphs", "save_graphs_path", "max_device_memory", "jit_config", "runtime_num_threads"},
    "lr_schedule": {"total_steps", "decay_steps"},
    "optimizer": {"learning_rate"},
    "processor": {"type", "tokenizer", "return_tensors"},
    "image_processor": {"type", "patch_size", "mask_ratio", "interpolation", "image_mean", "image_std",
                        "is_hwc"},
    "train_dataset": _IGNORED_DATASET,
    "eval_dataset": _IGNORED_DATASET,
    "data_loader": {"type", "shuffle", "num_shards", "shard_id", "decode", "class_indexing", "extensions"},
    "mask_policy": {"type", "patch_size", "input_size"},
}
# constructor arguments a model_config may override (under these or the MindFormers / HF names of
# maekit.api.config.FIELD_ALIASES: hidden_size, num_hidden_layers ...)
_ARCH_ARGS = ("embed_dim", "depth", "num_heads", "decoder_embed_dim", "decoder_depth", "decoder_num_heads")


@dataclass
class MindFormersRun:
    """A run YAML mapped onto maekit (module docstring).

    Attributes:
        args: the task config (``PretrainConfig`` for masked image modeling, ``FinetuneConfig`` for
            image classification) of the options the YAML sets (``args.typed``), architecture
            overrides in ``args.model_args``; the datasets, checkpoints and model are kept apart
            because their meaning depends on the run mode.
        default_checkpoint: ``model.model_config.checkpoint_name_or_path`` when it is a path or a
            tagged name: the eval / predict weights when no ``load_checkpoint`` is given (a bare
            model name is None: its published weights, which the Trainer uses anyway, and stays
            right when ``trainer.model_name`` was changed).
    """

    run_mode: str
    task: str
    model: str | None
    args: Any
    train_dataset: str | None = None
    eval_dataset: str | None = None
    load_checkpoint: str | None = None
    default_checkpoint: str | None = None
    resume_training: bool | str = False


# ----------------------------------------------------------------------------- mapping
def load_run_config(config: str | os.PathLike | Mapping[str, Any] = DEFAULT_CONFIG,
                    options: Sequence[str] | Mapping[str, Any] = ()) -> MindFormersRun:
    """Read a run YAML (path, packaged name or an already loaded dict), apply ``options``, map it.
    An option key that would not take effect is a ``ValueError`` (unknown keys of the file only warn)."""
    if isinstance(config, Mapping):
        data, source = dict(config), None
    else:
        data, source = read_run_yaml(config)
    options = parse_options(options)
    data = apply_options(data, options)
    read: set[str] = set()
    rc = map_run_config(data, source=source, read=read)
    check_options_take_effect(options, read)
    return rc


def _run_keys(top: Section, where: str) -> tuple[str, str | None, bool | str]:
    """(run_mode, load_checkpoint or None, resume_training: False, True or a path)."""
    run_mode = top.get("run_mode", str, "train")
    if run_mode not in RUN_MODES:
        raise ValueError(f"{where}: run_mode must be one of {', '.join(RUN_MODES)}; got {run_mode!r}")
    load_checkpoint = top.get("load_checkpoint", "any")
    if load_checkpoint in (False, ""):
        load_checkpoint = None
    elif load_checkpoint is not None:
        load_checkpoint = convert_value(load_checkpoint, str, "load_checkpoint")
    resume = top.get("resume_training", "any", False)
    if resume not in (True, False, None, ""):
        resume = convert_value(resume, str, "resume_training")
    return run_mode, load_checkpoint, resume or False


def _task_and_model(top: Section, where: str) -> tuple[str, str | None, Section]:
    """(task, trainer.model_name or None, the ``model`` section): ``trainer.type`` checked against
    ``model.arch.type``."""
    trainer = top.section("trainer")
    task_text = trainer.get("type", str)
    model_name = trainer.get("model_name", str)
    trainer.warn_unknown()
    model = top.section("model")
    arch = model.section("arch")
    arch_type = arch.get("type", str)
    arch.warn_unknown()
    arch_task = _ARCH_TASKS.get(arch_type.lower()) if arch_type else None
    if arch_type and arch_task is None:
        _warn(f"model.arch.type {arch_type!r} is not a MindFormers MAE / ViT class; the model is "
              f"{model_name or 'the default'}")
    if task_text is None and arch_task is None:
        raise ValueError(f"{where}: trainer.type (masked_image_modeling or image_classification) is missing")
    task = task_text.strip().lower().replace("-", "_") if task_text is not None else arch_task
    if task not in TASK_BETAS:
        raise ValueError(f"{where}: unknown task trainer.type {task_text!r}: maekit trains masked_image_modeling "
                         "or image_classification")
    if arch_task is not None and arch_task != task:
        raise ValueError(f"{where}: model.arch.type {arch_type} is a {arch_task} model but trainer.type is "
                         f"{task}")
    return task, model_name, model


def _map_datasets(top: Section, fields: dict[str, Any], sizes: list) -> tuple[str | None, str | None]:
    """(train folder, eval folder); mean / std from the train set's Normalize (else the eval set's)."""
    train_dir, train_mean_std = map_dataset(top, "train_dataset", fields, sizes, train=True)
    eval_dir, eval_mean_std = map_dataset(top, "eval_dataset", fields, sizes, train=False)
    mean_std = train_mean_std if train_mean_std is not None else eval_mean_std
    if mean_std is not None:
        fields["mean"], fields["std"] = mean_std
    if train_mean_std is not None and eval_mean_std is not None and train_mean_std != eval_mean_std:
        _warn("train_dataset and eval_dataset normalise differently; maekit uses the train_dataset values "
              "for both")
    if "mixup_op" in top:
        map_mixup(top.section("mixup_op"), fields)
    for key in ("train_dataset", "eval_dataset"):  # mask ratio (train set; model_config's wins), mask size
        mask = top.section(key).section("mask_policy")
        if key == "train_dataset" and "mask_ratio" in mask:
            fields["mask_ratio"] = mask.get("mask_ratio", option_type("mask_ratio"))
        if "input_size" in mask:
            sizes.append((f"{key}.mask_policy.input_size", mask.data["input_size"]))
        mask.warn_unknown()
    return train_dir, eval_dir


def _map_model_config(model: Section, fields: dict[str, Any], *, image_size: Any, task: str, model_name: str | None,
                      where: str) -> tuple[str | None, str | None]:
    """``model.model_config`` -> shape / loss options and ``model_args`` (architecture overrides);
    returns (model name, default checkpoint)."""
    mc = model.section("model_config")
    default_checkpoint = mc.get("checkpoint_name_or_path", str) or None
    model_size = mc.get("image_size", "size")
    model_size = mc.get("img_size", "size") if model_size is None else model_size
    if model_size is not None or image_size is not None:
        fields["input_size"] = model_size if model_size is not None else image_size
    copy_keys(mc, "model_config", fields)
    _map_mask_ratio(mc, fields, task)
    from ..api.config import official_field

    arch_values = {official_field(k): mc.get(k, "any") for k in list(mc.data) if official_field(k) in _ARCH_ARGS
                   and k in mc}
    intermediate = mc.get("intermediate_size", int)
    mc.warn_unknown()
    model.warn_unknown()
    if default_checkpoint is not None:
        from ..hub import split_name
        from ..models import is_model

        if model_name is None and is_model(split_name(default_checkpoint)[0]):
            model_name = split_name(default_checkpoint)[0]
        if is_model(default_checkpoint):  # a bare name: its published weights, the Trainer's anyway
            default_checkpoint = None
    overrides = _architecture_overrides(model_name, task, arch_values, intermediate, fields, where)
    if overrides:
        fields["model_args"] = overrides
    return model_name, default_checkpoint


def _map_mask_ratio(mc: Section, fields: dict[str, Any], task: str) -> None:
    """``model_config.mask_ratio`` wins over ``train_dataset.mask_policy.mask_ratio`` (a warning when
    they differ); the loss options of the other task are dropped (a drop path rate for pretraining
    with a warning)."""
    if "mask_ratio" in mc:
        if "mask_ratio" in fields and fields["mask_ratio"] != mc.data["mask_ratio"]:
            _warn(f"model.model_config.mask_ratio {mc.data['mask_ratio']} and train_dataset.mask_policy.mask_ratio "
                  f"{fields['mask_ratio']} differ; using {mc.data['mask_ratio']}")
        fields["mask_ratio"] = mc.get("mask_ratio", float)
    if task != "masked_image_modeling":
        fields.pop("mask_ratio", None)
        fields.pop("norm_pix_loss", None)
    elif fields.pop("drop_path", None):
        _warn("model.model_config.drop_path_rate: pretraining uses no stochastic depth (as the references); "
              "ignored")


def map_run_config(data: Mapping[str, Any], source: str | None = None, read: set[str] | None = None) -> MindFormersRun:
    """Map a run-YAML dict onto maekit (module docstring); ``read`` collects the dotted keys read."""
    where = os.path.basename(source) if source else ""
    top = Section(data, "", read=read, ignored=_IGNORED_KEYS)
    fields: dict[str, Any] = {"output_dir": TrainingArguments.output_dir}  # MindFormers' default folder
    run_mode, load_checkpoint, resume = _run_keys(top, where)
    copy_keys(top, "", fields)
    map_device(top, fields)
    task, model_name, model = _task_and_model(top, where)
    runner = top.section("runner_config")
    copy_keys(runner, "runner_config", fields)
    image_size = runner.get("image_size", "size")
    runner.warn_unknown()
    sizes_seen: list[tuple[str, Any]] = []
    train_dir, eval_dir = _map_datasets(top, fields, sizes_seen)
    model_name, default_checkpoint = _map_model_config(
        model, fields, image_size=image_size, task=task, model_name=model_name, where=where)
    map_schedule(top, fields, mim=task == "masked_image_modeling", where=where)
    map_optimizer(top, fields, task=task, where=where)
    map_processor(top, sizes_seen)
    cls = PretrainConfig if task == "masked_image_modeling" else FinetuneConfig
    _map_maekit_fields(top, fields, cls)
    check_sizes(fields.get("input_size"), sizes_seen)
    return MindFormersRun(run_mode=run_mode, task=task, model=model_name, args=_task_config(cls, fields, task, where),
                     train_dataset=train_dir, eval_dataset=eval_dir, load_checkpoint=load_checkpoint,
                     default_checkpoint=default_checkpoint, resume_training=resume)


def _task_config(cls: type, fields: dict[str, Any], task: str, where: str) -> Any:
    """The task config of the mapped options (checked once, here); an option of the other task (a
    RandomErasing transform in a pretraining file) is ignored with a warning."""
    names = set(cls.__dataclass_fields__)
    other = sorted(k for k in fields if k not in names)
    if other:
        _warn(f"{', '.join(other)}: not an option of {task}; ignored")
    try:
        cfg = cls.from_dict({k: v for k, v in fields.items() if k in names}, source=where or "run config")
    except ValueError as e:
        raise ValueError(f"{where}: {e}" if where else str(e)) from None
    cfg.typed = frozenset(fields) & names  # the YAML's values count as given (Trainer, --init arch)
    return cfg


def _map_maekit_fields(top: Section, fields: dict[str, Any], cls: type) -> None:
    """Top-level keys named like options of the task (``amp: none``...) that no mapping above read
    (not MindFormers' own sections and keys); then the keys nothing read (but the ignored ones,
    ``_IGNORED_KEYS``) are warned about."""
    names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("hidden")}
    for key in list(top.data):
        name = ALIASES.get(key, key)
        if name in names and key not in top.used:
            fields[name] = top.get(key, "any")  # the task config checks the type
    top.warn_unknown()


def _architecture_overrides(model_name: str | None, task: str, values: dict[str, Any],
                            intermediate: int | None, fields: dict[str, Any], where: str) -> dict[str, Any]:
    """Constructor overrides for architecture fields that differ from the named model's."""
    if not values and intermediate is None:
        return {}
    from ..models.config import other_kind_args

    name, current = _named_architecture(model_name or DEFAULT_MODELS[task], task, fields, where)
    overrides: dict[str, Any] = {}
    for key, value in other_kind_args(values, decoder=task == "image_classification").items():
        if key not in current:
            _warn(f"model.model_config: {key} does not apply to {name}; ignored")
        elif value != current[key]:
            overrides[key] = value
    hidden = overrides.get("embed_dim", current.get("embed_dim"))
    if intermediate is not None and isinstance(hidden, int) and hidden and abs(intermediate / hidden - 4.0) > 1e-9:
        overrides["mlp_ratio"] = intermediate / hidden
    return overrides


def _named_architecture(name: str, task: str, fields: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """(the model's name for the task, its architecture with the YAML's patch size / channels)."""
    from ..convert.spec import arch_spec
    from ..models import classifier_name

    shape = {k: fields[k] for k in ("patch_size", "in_chans") if fields.get(k) is not None}
    try:
        if task == "image_classification":
            name = classifier_name(name)
        return name, arch_spec(name, shape).architecture  # built once on the meta device (cached)
    except ValueError as e:
        raise ValueError(f"{where}: trainer.model_name: {e}") from None


__all__ = ["DEFAULT_CONFIG", "DEFAULT_MODELS", "RUN_MODES", "MindFormersRun", "RunConfigWarning", "apply_options",
           "load_run_config", "map_run_config", "read_run_yaml", "resolve_run_config_path"]
