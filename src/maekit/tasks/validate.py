"""Validation of the task configs (:mod:`maekit.tasks.config`): types named by key, choices, bounds.

Done once, when a config is built (``__post_init__``), whichever entry point built it. No torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import typing
from typing import Any, ClassVar

from ..errors import ConfigError
from .aliases import ALIASES


class ConfigMixin:
    """Construction from dicts (aliases resolved), validation, and a plain-dict view.

    Class attributes a config may set: ``file_options`` (``--config FILE`` and the alias
    spellings of :data:`ALIASES` are accepted; the tool commands turn it off) and ``ignored``
    (``{option: takes a value}``: official flags and keys accepted for compatibility, which nothing
    reads, so they are dropped instead of recorded in config.yaml and checkpoints).
    """

    file_options: ClassVar[bool] = True
    ignored: ClassVar[dict[str, bool]] = {}

    def __post_init__(self) -> None:  # every field through check_value, once per config
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_value(type(self), f, getattr(self, f.name)))

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
        """A validated copy with some options changed (aliases accepted); what was typed stays typed."""
        new = type(self).from_dict({**self.to_dict(), **resolve_keys(type(self), changes, source="replace")})
        new.typed = self.typed
        return new

    # The options typed on the command line (set by maekit.tasks.flags.config_from_argv); empty otherwise.
    typed: frozenset[str] = frozenset()  # a class attribute, not a dataclass field (no annotation scan)

    def is_given(self, name: str) -> bool:
        """Whether the user chose option ``name``: typed as a flag (even at its default value), or set
        to a value other than the default (a config file, the Python API)."""
        return name in self.typed or getattr(self, name) != type(self).default(name)


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type hint}`` of a config class."""
    return typing.get_type_hints(cls)


def _kind(hint: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed)."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def to_type(hint: Any, key: str, value: Any) -> Any:
    """``value`` as ``hint`` (``bool``, ``int``, ``float``, ``str``, ``dict``, ``list[X]``, ``X | None``);
    the one type check of every entry point. A list also takes one value or ``"a,b"``."""
    hint, optional = _kind(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: a value is required (null is not a {getattr(hint, '__name__', hint)})")
    if hint is dict or typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r} ({type(value).__name__})")
        return dict(value)
    if typing.get_origin(hint) is not list:
        return _scalar(hint, key, value, value)
    item = typing.get_args(hint)[0]
    items = value.replace(",", " ").split() if isinstance(value, str) and item is float else value
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    return [_scalar(item, key, v, value, f"list of {item.__name__}") for v in items]


def _scalar(t: type, key: str, v: Any, whole: Any, name: str | None = None) -> Any:
    """One bool / int / float / str; ``whole`` and ``name`` are for the message."""
    v = os.fspath(v) if isinstance(v, os.PathLike) else v
    if t is bool and isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if t is bool or not isinstance(v, bool):
        if isinstance(v, t):
            return v
        if t is float and isinstance(v, (int, str)):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(v)
            except ValueError:
                pass
        if t is int and isinstance(v, float) and v.is_integer():
            return int(v)
    raise ConfigError(f"{key}: expected {name or t.__name__}, got {whole!r} ({type(whole).__name__})")


def check_value(cls: type, f: dataclasses.Field, value: Any) -> Any:
    """``value`` of field ``f`` of ``cls``: coerced to its type, checked against its choices and bounds."""
    value = to_type(field_types(cls)[f.name], f.name, value)
    meta = f.metadata
    if value is None:
        return None
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{f.name}: choose one of {', '.join(meta['choices'])}; got {value!r}")
    low, below = meta.get("min"), meta.get("below")
    values = value if isinstance(value, list) else [value]
    if below is not None and any(not low <= v < below for v in values):
        raise ConfigError(f"{f.name} must be in [{low}, {below}), got {value!r}")
    if low is not None and any(v < low for v in values):
        raise ConfigError(f"{f.name} must be >= {low}, got {value!r}")
    if f.name == "input_size" and isinstance(value, list) and len(value) not in (1, 2):
        raise ConfigError(f"input_size takes one or two numbers (S or H W), got {value}")
    return value


def resolve_keys(cls: type, data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """``data`` with aliases replaced by field names; unknown keys are a ``ConfigError``."""

    names = {f.name for f in dataclasses.fields(cls)}
    aliases = ALIASES if getattr(cls, "file_options", True) else {}  # TrainingArguments: not a ConfigMixin
    ignored = getattr(cls, "ignored", {})
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name in ignored:  # accepted for compatibility, read by nothing: not recorded
            continue
        if name not in names:
            spellings = names | {a for a, t in aliases.items() if t in names}
            close = difflib.get_close_matches(key, sorted(spellings), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{source}: unknown option {key!r} for {cls.__name__}{hint}")
        if name in out:
            raise ConfigError(f"{source}: {key!r} given twice (it is another name of {name!r})")
        out[name] = value
    return out
