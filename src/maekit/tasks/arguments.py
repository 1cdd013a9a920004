"""``TrainingArguments``: the options of the training commands, as a dataclass.

Field names are the command-line option names of ``maekit pretrain`` / ``maekit finetune`` (the
official ``main_pretrain.py`` / ``main_finetune.py`` flags). Every field defaults to ``None``,
which means "the command's default" (``maekit pretrain -h`` / ``maekit finetune -h``), except
``output_dir`` (``./output``, as MindFormers) and ``download``. A field that the task's command
does not have (``mask_ratio`` for classification, ``mixup`` for pretraining) is ignored with a
warning.

MindFormers / Hugging Face names are accepted as aliases by the constructor:

==================================================  ==================
alias                                               field
==================================================  ==================
num_train_epochs                                    epochs
per_device_train_batch_size, train_batch_size       batch_size
learning_rate                                       lr (absolute)
lr_end                                              min_lr
image_size                                          input_size
num_channels                                        in_chans
gradient_accumulation_steps                         accum_iter
dataloader_num_workers, num_parallel_workers        num_workers
num_labels, num_classes                             nb_classes
drop_path_rate                                      drop_path
label_smoothing                                     smoothing
mixup_alpha / cutmix_alpha                          mixup / cutmix
norm_pixel_loss                                     norm_pix_loss
max_grad_norm                                       clip_grad
dataset_dir                                         data_path
resume_from_checkpoint                              resume
==================================================  ==================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ALIASES: dict[str, str] = {
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "learning_rate": "lr",
    "lr_end": "min_lr",
    "image_size": "input_size",
    "num_channels": "in_chans",
    "gradient_accumulation_steps": "accum_iter",
    "dataloader_num_workers": "num_workers",
    "num_parallel_workers": "num_workers",
    "num_labels": "nb_classes",
    "num_classes": "nb_classes",
    "drop_path_rate": "drop_path",
    "label_smoothing": "smoothing",
    "mixup_alpha": "mixup",
    "cutmix_alpha": "cutmix",
    "norm_pixel_loss": "norm_pix_loss",
    "max_grad_norm": "clip_grad",
    "dataset_dir": "data_path",
    "resume_from_checkpoint": "resume",
}

# Value kinds, checked by __post_init__ (so a wrong type is a ValueError here, not an argparse exit).
_KINDS: dict[str, str] = {
    "output_dir": "str", "log_dir": "str", "device": "str", "seed": "int", "resume": "str",
    "start_epoch": "int",
    "num_workers": "int", "pin_mem": "bool", "amp": "str", "compile": "bool", "save_every": "int",
    "print_freq": "int", "mean": "floats", "std": "floats",
    "epochs": "int", "batch_size": "int", "accum_iter": "int", "weight_decay": "float", "lr": "float",
    "blr": "float", "min_lr": "float", "warmup_epochs": "float", "clip_grad": "float",
    "data_path": "str", "train_split": "str", "val_split": "str", "nb_classes": "int",
    "input_size": "size", "patch_size": "int", "in_chans": "int",
    "mask_ratio": "float", "norm_pix_loss": "bool", "augment": "str",
    "drop_path": "float", "layer_decay": "float", "global_pool": "bool", "dist_eval": "bool",
    "color_jitter": "float", "aa": "str", "smoothing": "float", "reprob": "float", "remode": "str",
    "recount": "int", "mixup": "float", "cutmix": "float", "cutmix_minmax": "floats", "mixup_prob": "float",
    "mixup_switch_prob": "float", "mixup_mode": "str", "download": "bool",
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "amp": ("auto", "bf16", "fp16", "none"),
    "mixup_mode": ("batch", "pair", "elem"),
    "augment": ("reference", "flip", "none"),
}

TRAINER_ONLY = ("download",)
"""Fields the Trainer uses itself (not command-line options)."""


@dataclass
class _Fields:
    # run
    output_dir: str = "./output"
    log_dir: str | None = None
    device: str | None = None
    seed: int | None = None
    resume: str | None = None
    start_epoch: int | None = None
    num_workers: int | None = None
    pin_mem: bool | None = None
    amp: str | None = None
    compile: bool | None = None
    save_every: int | None = None
    print_freq: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    # optimisation
    epochs: int | None = None
    batch_size: int | None = None
    accum_iter: int | None = None
    weight_decay: float | None = None
    lr: float | None = None
    blr: float | None = None
    min_lr: float | None = None
    warmup_epochs: float | None = None
    clip_grad: float | None = None
    # data (the Trainer's train_dataset / eval_dataset take precedence)
    data_path: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    nb_classes: int | None = None
    # model shape (default: the model's own)
    input_size: int | list[int] | None = None
    patch_size: int | None = None
    in_chans: int | None = None
    # masked image modeling
    mask_ratio: float | None = None
    norm_pix_loss: bool | None = None
    augment: str | None = None
    # classification
    drop_path: float | None = None
    layer_decay: float | None = None
    global_pool: bool | None = None
    dist_eval: bool | None = None
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
    # Trainer
    download: bool = True


def _check(name: str, value: Any) -> Any:
    kind = _KINDS.get(name)
    if value is None or kind is None:
        return value
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ValueError(f"TrainingArguments.{name}: choose one of {', '.join(_CHOICES[name])}; "
                         f"got {value!r}")
    bad = ValueError(f"TrainingArguments.{name}: expected {kind}, got {value!r} ({type(value).__name__})")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    elif kind == "str":
        if not isinstance(value, str):
            import os

            if isinstance(value, os.PathLike):
                return os.fspath(value)
            raise bad
    elif kind == "floats":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [float(value)]
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise bad
        return [float(v) for v in value]
    elif kind == "size":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if (not isinstance(value, (list, tuple)) or len(value) not in (1, 2)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise bad
        return list(value) if len(value) == 2 else int(value[0])
    return value


class TrainingArguments(_Fields):
    """Options of a training run (module docstring); keyword arguments only, aliases accepted.

    >>> TrainingArguments(output_dir="out", epochs=1, batch_size=8, image_size=32).input_size
    32
    """

    def __init__(self, **kwargs: Any):
        fields = {f.name for f in dataclasses.fields(_Fields)}
        resolved: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = ALIASES.get(key, key)
            if name not in fields:
                import difflib

                close = difflib.get_close_matches(key, sorted(fields | set(ALIASES)), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ValueError(f"TrainingArguments: unknown argument {key!r}{hint}")
            if name in resolved:
                raise ValueError(f"TrainingArguments: {key!r} given twice (it is an alias of {name!r})")
            resolved[name] = value
        super().__init__(**resolved)
        self.__post_init__()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(_Fields):
            object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name)))
        if not self.output_dir:
            raise ValueError("TrainingArguments.output_dir must be a folder")

    def to_dict(self) -> dict[str, Any]:
        """Every field (``None`` = the command's default)."""
        return dataclasses.asdict(self)

    def given(self) -> dict[str, Any]:
        """The fields that are set (not ``None``)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArguments:
        return cls(**data)

    def replace(self, **changes: Any) -> TrainingArguments:
        """A copy with some fields changed (aliases accepted)."""
        merged = self.to_dict()
        for key, value in changes.items():
            merged[ALIASES.get(key, key)] = value
        return TrainingArguments(**merged)


__all__ = ["ALIASES", "TRAINER_ONLY", "TrainingArguments"]
