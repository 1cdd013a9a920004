"""Validation of the task configs (:mod:`maekit.tasks.config`): types named by key, choices, bounds.

Done once, when a config is built (``__post_init__``), whichever entry point built it. No torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration file or value the user must fix."""


class ConfigMixin:
    """Construction from dicts (aliases resolved), validation, and a plain-dict view."""

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> Any:
        """A validated config from ``{option or alias: value}`` (missing keys take the defaults)."""
        return cls(**resolve_keys(cls, dict(data), source=source))

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option ``name`` (so that no other module writes it again)."""
        f = cls.__dataclass_fields__[name]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()

    def to_dict(self) -> dict[str, Any]:
        """Every option (what output_dir/config.yaml and checkpoints store)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Any:
        """A validated copy with some options changed (aliases accepted)."""
        return type(self).from_dict({**self.to_dict(), **resolve_keys(type(self), changes, source="replace")})


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type hint}`` of a config class."""
    return typing.get_type_hints(cls)


def _kind(hint: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed)."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def coerce(cls: type, key: str, value: Any) -> Any:
    """``value`` as the type of field ``key`` of ``cls``; a ``ConfigError`` naming the key otherwise."""
    hint, optional = _kind(field_types(cls)[key])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required (null is not a {getattr(hint, '__name__', hint)})")
    origin = typing.get_origin(hint)
    name = f"list of {typing.get_args(hint)[0].__name__}" if origin is list else getattr(hint, "__name__", str(hint))
    bad = ConfigError(f"{key}: expected {name}, got {value!r} ({type(value).__name__})")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise bad
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if origin is list:
        item = typing.get_args(hint)[0]
        if isinstance(value, str) and item is float:
            value = value.replace(",", " ").split()
        if isinstance(value, (str, int, float, os.PathLike)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        try:
            return [coerce_item(item, v) for v in value]
        except (TypeError, ValueError):
            raise bad from None
    return value


def coerce_item(item: type, v: Any) -> Any:
    if item is str:
        return os.fspath(v) if isinstance(v, os.PathLike) else str(v)
    if isinstance(v, bool):
        raise TypeError(v)
    if item is int and isinstance(v, float) and not v.is_integer():
        raise ValueError(v)
    return item(v)


def check_value(cls: type, f: dataclasses.Field, value: Any) -> Any:
    """``value`` of field ``f`` of ``cls``: coerced to its type, checked against its choices and bounds."""
    value = coerce(cls, f.name, value)
    meta = f.metadata
    if value is None:
        return None
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{f.name}: choose one of {', '.join(meta['choices'])}; got {value!r}")
    low = meta.get("min")
    if low is not None and any(v < low for v in (value if isinstance(value, list) else [value])):
        raise ConfigError(f"{f.name} must be >= {low}, got {value!r}")
    if f.name == "input_size" and isinstance(value, list) and len(value) not in (1, 2):
        raise ConfigError(f"input_size takes one or two numbers (S or H W), got {value}")
    if f.name == "mask_ratio" and not 0 <= value < 1:
        raise ConfigError(f"mask_ratio must be in [0, 1), got {value}")
    return value


def _validate(cfg: Any) -> None:
    """Every field of ``cfg`` through :func:`check_value`; called once per config."""
    for f in dataclasses.fields(cfg):
        object.__setattr__(cfg, f.name, check_value(type(cfg), f, getattr(cfg, f.name)))


def resolve_keys(cls: type, data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """``data`` with aliases replaced by field names; unknown keys are a ``ConfigError``."""
    from .config import ALIASES

    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name not in names:
            close = difflib.get_close_matches(key, sorted(names | {a for a, t in ALIASES.items() if t in names}), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{source}: unknown option {key!r} for {cls.__name__}{hint}")
        if name in out:
            raise ConfigError(f"{source}: {key!r} given twice (it is another name of {name!r})")
        out[name] = value
    return out
