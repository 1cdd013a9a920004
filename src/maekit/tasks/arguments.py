"""``TrainingArguments``: the options of ``maekit pretrain`` / ``finetune`` for the :class:`~maekit.api.Trainer`.

Its fields are the options of ``PretrainConfig`` and ``FinetuneConfig`` (the official ``main_pretrain.py``
/ ``main_finetune.py`` names), taken from those classes, not written again here: a new task option is a
``TrainingArguments`` field at once. Each is ``None`` by default: "the task's default" (``maekit
pretrain -h`` / ``maekit finetune -h``); the defaults, bounds, choices and help are written once, in
:mod:`maekit.tasks.config`, and a set field is checked against them here. Only ``output_dir``
(``./output``, as MindFormers) and ``download`` (the Trainer's own) have defaults of their own.
Other spellings (``num_train_epochs``, ``learning_rate``, ``image_size``, ``num_labels``,
``drop_path_rate`` ...) are the alias table's (``maekit.tasks.aliases.ALIASES``).

The Trainer builds the task config from the fields that are set (``PretrainConfig.from_dict(args.given()
| ...)``); a field the task does not have (a pretraining option for classification, ``mixup`` for
pretraining) is ignored with a warning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .aliases import ALIASES
from .config import FinetuneConfig, PretrainConfig
from .validate import ConfigError, check_value, field_types, resolve_keys

TRAINER_ONLY = ("download",)
"""Fields the Trainer uses itself (not task options)."""
_TASKS = (PretrainConfig, FinetuneConfig)


def _with_task_options(cls: type) -> type:
    """``cls`` as a dataclass with, after its own fields, one field per option of the training configs
    (its type or ``None``, default ``None``), in their order."""
    for config in _TASKS:
        for f in dataclasses.fields(config):
            if f.name not in cls.__annotations__:
                cls.__annotations__[f.name] = field_types(config)[f.name] | None
                setattr(cls, f.name, None)
    return dataclass(init=False)(cls)


@_with_task_options
class TrainingArguments:
    """Options of a training run (module docstring); keyword arguments only, aliases accepted.

    >>> TrainingArguments(output_dir="out", epochs=1, batch_size=8, image_size=32).input_size
    32
    """

    output_dir: str = "./output"
    download: bool = True  # a bare model name without a checkpoint: fetch its published weights

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

    def replace(self, **changes: Any) -> TrainingArguments:
        """A copy with some fields changed (aliases accepted)."""
        return type(self)(**{**self.to_dict(), **{ALIASES.get(k, k): v for k, v in changes.items()}})


def _checked(name: str, value: Any) -> Any:
    """``value`` of option ``name`` checked by the first training config that has it (type, choices,
    bounds); ``input_size`` keeps the one-number spelling as given."""
    cls = next(c for c in _TASKS if name in c.__dataclass_fields__)
    try:
        value = check_value(cls, cls.__dataclass_fields__[name], value)
    except ConfigError as e:
        raise ValueError(f"TrainingArguments.{e}") from None
    return value[0] if name == "input_size" and len(value) == 1 else value


__all__ = ["TRAINER_ONLY", "TrainingArguments"]
