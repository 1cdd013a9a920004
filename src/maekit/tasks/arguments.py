"""``TrainingArguments``: the options of ``maekit pretrain`` / ``maekit finetune`` for the :class:`~maekit.api.Trainer`.

One field per option of ``PretrainConfig`` and ``FinetuneConfig`` (the official ``main_pretrain.py``
/ ``main_finetune.py`` names), each ``None`` by default: "the task's default" (``maekit pretrain -h``
/ ``maekit finetune -h``); the defaults, bounds, choices and help are written once, in
:mod:`maekit.tasks.config`, and a set field is checked against them here. Only ``output_dir``
(``./output``, as MindFormers) and ``download`` (the Trainer's own) have defaults of their own.
Other spellings (``num_train_epochs``, ``learning_rate``, ``image_size``, ``num_labels``,
``drop_path_rate`` ...) are the alias table's (``maekit.tasks.config.ALIASES``).

A new task option needs a field here too (``tests/test_cli.py`` fails until it has one). The Trainer
builds the task config from the fields that are set (``PretrainConfig.from_dict(args.given() | ...)``);
a field the task does not have (``mask_ratio`` for classification, ``mixup`` for pretraining) is
ignored with a warning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import ALIASES, FinetuneConfig, PretrainConfig
from .validate import ConfigError, check_value, resolve_keys

TRAINER_ONLY = ("download",)
"""Fields the Trainer uses itself (not task options)."""


@dataclass(init=False)
class TrainingArguments:
    """Options of a training run (module docstring); keyword arguments only, aliases accepted.

    >>> TrainingArguments(output_dir="out", epochs=1, batch_size=8, image_size=32).input_size
    32
    """

    output_dir: str = "./output"
    download: bool = True  # a bare model name without a checkpoint: fetch its published weights
    # model and its shape
    model: str | None = None
    input_size: int | list[int] | None = None
    patch_size: int | None = None
    in_chans: int | None = None
    model_args: dict | None = None
    init: str | None = None
    finetune: str | None = None
    resume: str | None = None
    norm_pix_loss: bool | None = None
    sparse_stages: bool | None = None
    global_pool: bool | None = None
    drop_path: float | None = None
    # data
    data_path: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    nb_classes: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    split: str | None = None
    num_samples: int | None = None
    augment: str | None = None
    fast_decode: bool | None = None
    decode: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # schedule
    batch_size: int | None = None
    epochs: int | None = None
    accum_iter: int | None = None
    weight_decay: float | None = None
    lr: float | None = None
    blr: float | None = None
    min_lr: float | None = None
    warmup_epochs: float | None = None
    clip_grad: float | None = None
    layer_decay: float | None = None
    mask_ratio: float | None = None
    # fine-tuning augmentation and loss
    color_jitter: float | None = None
    aa: str | None = None
    smoothing: float | None = None
    reprob: float | None = None
    remode: str | None = None
    recount: int | None = None
    mixup: float | None = None
    cutmix: float | None = None
    cutmix_minmax: list[float] | None = None
    mixup_prob: float | None = None
    mixup_switch_prob: float | None = None
    mixup_mode: str | None = None
    # run
    device: str | None = None
    num_workers: int | None = None
    pin_mem: bool | None = None
    amp: str | None = None
    log_dir: str | None = None
    seed: int | None = None
    overwrite: bool | None = None
    start_epoch: int | None = None
    compile: bool | None = None
    grad_checkpointing: bool | None = None
    save_every: int | None = None
    print_freq: int | None = None
    report_to: str | None = None
    resume_ignore_args: bool | None = None
    push_to_hub: bool | None = None
    hub_model_id: str | None = None
    eval: bool | None = None
    dist_eval: bool | None = None
    # monitors of pretraining
    knn_data_path: str | None = None
    knn_every: int | None = None
    knn_k: int | None = None
    knn_temperature: float | None = None
    knn_bank_per_class: int | None = None
    knn_max_queries: int | None = None
    online_probe: bool | None = None
    recon_every: int | None = None

    def __init__(self, **kwargs: Any):
        try:
            given = resolve_keys(TrainingArguments, kwargs, source="TrainingArguments")
        except ConfigError as e:
            raise ValueError(str(e).replace(" for TrainingArguments", "")) from None
        for f in dataclasses.fields(self):
            value = given.get(f.name, f.default)
            if value is not None and f.name not in TRAINER_ONLY:
                value = _checked(f.name, value)
            setattr(self, f.name, value)
        if not isinstance(self.download, bool):
            raise ValueError(f"TrainingArguments.download: expected bool, got {self.download!r}")
        if not self.output_dir:
            raise ValueError("TrainingArguments.output_dir must be a folder")

    def to_dict(self) -> dict[str, Any]:
        """Every field (``None`` = the task's default)."""
        return dataclasses.asdict(self)

    def given(self) -> dict[str, Any]:
        """The fields that are set (not ``None``)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArguments:
        return cls(**data)

    def replace(self, **changes: Any) -> TrainingArguments:
        """A copy with some fields changed (aliases accepted)."""
        return type(self)(**{**self.to_dict(), **{ALIASES.get(k, k): v for k, v in changes.items()}})


def _checked(name: str, value: Any) -> Any:
    """``value`` of option ``name`` checked by the first training config that has it (type, choices,
    bounds); ``input_size`` keeps the one-number spelling as given."""
    cls = PretrainConfig if name in PretrainConfig.__dataclass_fields__ else FinetuneConfig
    try:
        value = check_value(cls, cls.__dataclass_fields__[name], value)
    except ConfigError as e:
        raise ValueError(f"TrainingArguments.{e}") from None
    return value[0] if name == "input_size" and len(value) == 1 else value


__all__ = ["ALIASES", "TRAINER_ONLY", "TrainingArguments"]
