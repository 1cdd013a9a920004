"""Reading a MindFormers-shaped run YAML: the file (path or packaged name), ``--options`` overrides,
and typed access to its sections that remembers which keys were read (so that the rest can be
reported). The mapping onto maekit is :mod:`maekit.compat.mindformers`.
"""

from __future__ import annotations

import copy
import os
import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

DEFAULT_CONFIG = "mae/run_mae_vit_base_p16_224_800ep.yaml"
RUN_MODES = ("train", "finetune", "eval", "predict")


class RunConfigWarning(UserWarning):
    """A key of a run YAML that maekit ignores or cannot honour exactly."""


def config_warning(message: str) -> None:
    warnings.warn(message, RunConfigWarning, stacklevel=4)


# ----------------------------------------------------------------------------- reading
def resolve_run_config_path(path: str | os.PathLike) -> str:
    """A YAML file, or a packaged run config (``mae/run_mae_vit_base_p16_224_800ep.yaml``)."""
    from ..tasks.flags import resolve_config_path
    from ..tasks.validate import ConfigError

    text = os.fspath(path)
    for candidate in (text, text.replace("\\", "/").removeprefix("configs/")):  # MindFormers' spelling
        try:
            return resolve_config_path(candidate)
        except ConfigError:
            continue
    raise ValueError(f"run config not found: {text} (neither a file nor a packaged config such as "
                     f"{DEFAULT_CONFIG})")


def read_run_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(the YAML as a dict, its resolved path)."""
    from ..tasks.flags import read_yaml

    resolved = resolve_run_config_path(path)
    return read_yaml(resolved, expect="a run config: a mapping of sections"), resolved


def parse_options(options: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``--options`` items (``runner_config.epochs=1``; values read as YAML) -> ``{dotted key: value}``;
    a mapping is taken as it is."""
    if isinstance(options, Mapping):
        return dict(options)
    out: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise ValueError(f"--options takes key=value pairs, got {item!r}")
        key, text = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def apply_options(data: dict[str, Any], options: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``runner_config.epochs=1``, list items by index) in a copy of ``data``."""
    data = copy.deepcopy(data)
    for key, value in parse_options(options).items():
        parts = str(key).split(".")
        if not key or not all(parts):
            raise ValueError(f"bad option key {key!r} (expected dotted names such as runner_config.epochs)")
        node: Any = data
        for i in range(len(parts) - 1):
            node = _section_of(node, parts, i, key)
        if isinstance(node, list):
            node[_index(parts[-1], node, key)] = value
        else:
            node[parts[-1]] = value
    return data


def _section_of(node: Any, parts: list[str], i: int, key: str) -> Any:
    """The section ``parts[i]`` of ``node`` (created when missing) on the way to option ``key``."""
    where = ".".join(parts[:i + 1])
    if isinstance(node, list):
        child = node[_index(parts[i], node, where)]
    elif isinstance(node, dict):
        if node.get(parts[i]) is None:
            node[parts[i]] = {}
        child = node[parts[i]]
    else:
        raise ValueError(f"option {key}: {'.'.join(parts[:i]) or 'the config'} is not a section")
    if not isinstance(child, (dict, list)):
        raise ValueError(f"option {key}: {where} is a value ({child!r}), not a section")
    return child


def check_options_take_effect(options: Mapping[str, Any], read: set[str]) -> None:
    """A ``--options`` key that nothing reads (a typo, or a MindSpore-only key) is a ``ValueError``."""
    for key in options:
        parts = str(key).split(".")
        if not any(".".join(parts[:i]) in read for i in range(1, len(parts) + 1)):
            raise ValueError(f"--options {key}: this key does not take effect in maekit (unknown, or a "
                             "MindSpore / Ascend setting maekit has no counterpart for); see "
                             "maekit.compat.mindformers for the keys that are read")


def _index(part: str, node: list, where: str) -> int:
    try:
        i = int(part)
    except ValueError:
        raise ValueError(f"option {where}: a list is indexed by a number, got {part!r}") from None
    if not -len(node) <= i < len(node):
        raise ValueError(f"option {where}: index {i} out of range (the list has {len(node)} items)")
    return i


# ----------------------------------------------------------------------------- typed access
class Section:
    """Typed reads of one YAML mapping, remembering which keys were used. ``ignored``: ``{section name:
    keys read by nothing and never warned about}``, shared by the whole tree."""

    def __init__(self, data: Any, where: str, read: set[str] | None = None,
                 ignored: Mapping[str, set[str]] | None = None):
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a mapping (a YAML section), got {type(data).__name__}: "
                             f"{data!r}")
        self.ignored = ignored if ignored is not None else {}
        self.data, self.where = dict(data), where
        self.used = set(self.ignored.get(where.rpartition(".")[2], ()))
        # dotted paths whose value was read (shared by the whole tree): what takes effect
        self.read = read if read is not None else set()

    def __contains__(self, key: str) -> bool:
        return self.data.get(key) is not None

    def section(self, key: str) -> Section:
        self.used.add(key)
        return Section(self.data.get(key), self._path(key), self.read, self.ignored)

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: Any, default: Any = None) -> Any:
        self.used.add(key)
        self.read.add(self._path(key))
        value = self.data.get(key)
        if value is None:
            return default
        return convert_value(value, kind, self._path(key))

    def warn_unknown(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self.used)
        if unknown:
            config_warning(f"{self.where or 'run config'}: unknown key(s) {unknown} ignored")


def option_type(option: str) -> Any:
    """The type of task option ``option`` (pretraining's, else fine-tuning's): what a YAML key that
    sets it is read as, so that each option's type is written once, in :mod:`maekit.tasks.config`."""
    from ..tasks.config import FinetuneConfig, PretrainConfig
    from ..tasks.validate import field_types

    return field_types(PretrainConfig if option in PretrainConfig.__dataclass_fields__ else FinetuneConfig)[option]


def convert_value(value: Any, kind: Any, where: str) -> Any:
    """``value`` of the run YAML as ``kind``: a type (:func:`option_type`, ``str``, ``list[float]`` ...:
    the task configs' type check, :func:`maekit.tasks.validate.to_type`); also ``any`` and ``size``
    (S, [S], [H, W]: one number when square)."""
    from ..tasks.validate import to_type

    if kind == "any":
        return value
    if kind == "size":
        sizes = to_type(list[int], where, value)
        if len(sizes) not in (1, 2):
            raise ValueError(f"{where}: expected one or two sizes, got {value!r}")
        return sizes[0] if len(sizes) == 1 or sizes[0] == sizes[1] else sizes
    if str in (kind, *typing.get_args(kind)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a name or path that YAML read as a number
    return to_type(kind, where, value)


__all__ = ["DEFAULT_CONFIG", "RunConfigWarning", "Section", "apply_options", "check_options_take_effect",
           "config_warning", "option_type", "parse_options",
           "convert_value", "read_run_yaml", "resolve_run_config_path"]
