"""``TrainingArguments``: the task configs' options for the :class:`~maekit.api.Trainer`.

A thin view of :mod:`maekit.tasks.config`: one field per option of ``PretrainConfig`` and
``FinetuneConfig`` (the official ``main_pretrain.py`` / ``main_finetune.py`` names), each ``None``
by default, meaning "the task's default" (``maekit pretrain -h`` / ``maekit finetune -h``), except
``output_dir`` (``./output``, as MindFormers) and ``download``. Types, bounds and the alias table
(``num_train_epochs``, ``learning_rate``, ``image_size``, ``num_labels``, ``drop_path_rate`` ...:
``maekit.tasks.config.ALIASES``) are the task configs' own, so a new task option appears here
without an edit. The Trainer turns the fields that are set into the task config
(``PretrainConfig.from_dict(args.given() | ...)``); a field the task does not have (``mask_ratio``
for classification, ``mixup`` for pretraining) is ignored with a warning.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from .config import ALIASES, FinetuneConfig, PretrainConfig
from .validate import ConfigError, check_value, field_types, resolve_keys

TRAINER_ONLY = ("download",)
"""Fields the Trainer uses itself (not task options)."""

_TASKS = (PretrainConfig, FinetuneConfig)


def _option_fields() -> list[tuple[str, Any, Any]]:
    """(name, Optional[type], None) for every visible option of the training task configs, in order."""
    out: dict[str, tuple[str, Any, Any]] = {}
    for cls in _TASKS:
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            if f.name not in out and not f.metadata.get("hidden"):
                default = "./output" if f.name == "output_dir" else None
                out[f.name] = (f.name, Optional[types[f.name]], dataclasses.field(default=default))
    return list(out.values()) + [("download", bool, dataclasses.field(default=True))]


def _owner(name: str) -> tuple[type, dataclasses.Field]:
    """(the first training config that has option ``name``, its field)."""
    for cls in _TASKS:
        for f in dataclasses.fields(cls):
            if f.name == name:
                return cls, f
    raise KeyError(name)


class _Methods:
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in TRAINER_ONLY:
                continue
            try:
                value = check_value(*_owner(f.name), value)
            except ConfigError as e:
                raise ValueError(f"TrainingArguments.{e}") from None
            if f.name == "input_size" and len(value) == 1:
                value = value[0]  # the one-number spelling, as given
            object.__setattr__(self, f.name, value)
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
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**data)

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (aliases accepted)."""
        return type(self)(**{**self.to_dict(), **{ALIASES.get(k, k): v for k, v in changes.items()}})


_Fields = dataclasses.make_dataclass("_Fields", _option_fields(), bases=(_Methods,))


class TrainingArguments(_Fields):  # type: ignore[misc, valid-type]
    """Options of a training run (module docstring); keyword arguments only, aliases accepted.

    >>> TrainingArguments(output_dir="out", epochs=1, batch_size=8, image_size=32).input_size
    32
    """

    def __init__(self, **kwargs: Any):
        names = {f.name for f in dataclasses.fields(_Fields)}
        try:
            resolved = resolve_keys(_Fields, kwargs, source="TrainingArguments")
        except ConfigError as e:
            raise ValueError(str(e).replace(" for _Fields", "")) from None
        super().__init__(**{k: v for k, v in resolved.items() if k in names})


__all__ = ["ALIASES", "TRAINER_ONLY", "TrainingArguments"]
