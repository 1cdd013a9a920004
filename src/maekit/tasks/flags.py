"""Command-line flags generated from the task configs (:mod:`maekit.tasks.config`), and ``--config``.

The official flags (docs/REFERENCE_RECIPES.md C.2-C.4) are the field names, so the reference
command lines run unchanged under ``torchrun ... -m maekit pretrain <same flags>``; PASSL's
``--device gpu`` and ``--print_freq`` are accepted too. Precedence: the config's defaults, then
``--config file.yaml`` (flat keys named like the flags, or their aliases), then explicit flags.
Imports no torch, so ``maekit <command> -h`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from typing import Any, Sequence

from .aliases import ALIASES
from .validate import ConfigError, _kind, field_types, resolve_keys


def _help(f: dataclasses.Field, default: Any) -> str:
    text = f.metadata.get("help", "")
    if isinstance(default, bool):
        return text + (" (default)" if default else "")
    if default not in (None, "", [], {}) and "(default" not in text:  # a help that explains its default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        return f"{text} (default: {shown})"
    return text


def _value_kwargs(hint: Any) -> dict[str, Any]:
    """How argparse reads a value of type ``hint`` (a bool is a store_true flag). A list of floats is one
    text, ``0.5`` or ``0.485,0.456,0.406`` (the official mean / std spelling), which the config's type
    check (:func:`maekit.tasks.validate.to_type`) splits and converts, as it does a YAML value."""
    base, _ = _kind(hint)
    origin = typing.get_origin(base)
    if base is bool:
        return {"action": "store_true"}
    if origin is list and typing.get_args(base)[0] is float:
        return {}
    if origin is list:
        return {"nargs": "+", "type": typing.get_args(base)[0]}
    return {"type": base}


def _add_field(group: Any, f: dataclasses.Field, hint: Any, default: Any) -> None:
    meta = f.metadata
    hidden = meta.get("hidden", False)
    kw: dict[str, Any] = {"help": argparse.SUPPRESS if hidden else _help(f, default)}
    kw.update(_value_kwargs(hint), **{k: meta[k] for k in ("choices", "metavar", "nargs", "const", "action")
                                      if meta.get(k) is not None})
    if meta.get("action") == "append":  # one value per flag, repeated
        kw.pop("nargs", None)
    if meta.get("positional"):  # SRC DST, SOURCE REPO_ID ...: argparse names the dest
        group.add_argument(f.name, **kw)
        return
    flags = list(meta.get("flags") or [f"--{f.name}"])
    group.add_argument(*flags, dest=f.name, **kw)
    if meta.get("off"):  # a bool's negative flag; further spellings are hidden aliases
        off, *old = [meta["off"]] if isinstance(meta["off"], str) else meta["off"]
        off_help = meta.get("off_help", f"unset {flags[0]}") + ("" if default is not False else " (default)")
        group.add_argument(off, action="store_false", dest=f.name, help=argparse.SUPPRESS if hidden else off_help)
        for flag in old:
            group.add_argument(flag, action="store_false", dest=f.name, help=argparse.SUPPRESS)


DEBUG_HELP = "on an error, show the full traceback as well as the message (also MAEKIT_DEBUG=1)"


def parser_for(cls: type, *, prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag (or positional) per CLI field of ``cls``, ``--debug``, and,
    when ``cls.file_options``, ``--config`` and the aliases as hidden flags.

    Every default is ``SUPPRESS``: the namespace holds only what was typed, so ``--config`` values
    can sit between the config's defaults and the flags.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").split("\n")[0],
                                     argument_default=argparse.SUPPRESS)
    if cls.file_options:
        parser.add_argument("--config", help="YAML file of options (keys named like the flags), or a packaged "
                                             "recipe such as pretrain/mae_vit_base; flags win")
    types, names = field_types(cls), set()
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True):
            _add_field(parser, f, types[f.name], cls.default(f.name))
            names |= {f.name, *(flag.lstrip("-") for flag in f.metadata.get("flags") or ())}
    # read by maekit.errors from the command line (an error's traceback), so it is no option
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    _add_other_spellings(parser, cls, names, types)
    return parser


def _add_other_spellings(parser: argparse.ArgumentParser, cls: type, names: set[str], types: dict) -> None:
    """Hidden flags: the official ones nothing reads (``cls.ignored``: accepted, dropped), and the
    alias table's spellings of the options ``names`` (configs with ``file_options``)."""
    for name, takes_value in cls.ignored.items():
        spellings = {name, name.replace("_", "-")} | {a for a, t in ALIASES.items() if t == name}
        parser.add_argument(*sorted(f"--{s}" for s in spellings), dest=f"ignored {name}", help=argparse.SUPPRESS,
                            **({} if takes_value else {"action": "store_true"}))
    aliases = ALIASES.items() if cls.file_options else ()
    for alias, target in aliases:
        if target in names and alias not in names:
            parser.add_argument(f"--{alias}", dest=target, help=argparse.SUPPRESS, **_value_kwargs(types[target]))


def resolve_config_path(path: str) -> str:
    """A YAML path, or the name of a packaged recipe (``pretrain/mae_vit_base``)."""
    if os.path.isfile(path):
        return path
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
    for candidate in (os.path.join(root, path), os.path.join(root, path) + ".yaml"):
        if os.path.isfile(candidate):
            return candidate
    recipes = sorted(os.path.relpath(os.path.join(d, n), root).removesuffix(".yaml")
                     for d, _, files in os.walk(root) for n in files
                     if n.endswith(".yaml") and not n.startswith("run_"))  # run_*: maekit run's YAMLs
    raise ConfigError(f"config file not found: {path} (neither a file nor a packaged recipe; the packaged "
                      f"recipes are {', '.join(recipes)})")


def read_yaml(path: str, *, expect: str = "a mapping of option: value") -> dict[str, Any]:
    """A YAML mapping (a file or a packaged recipe name); bad YAML is a ``ConfigError``. The one
    YAML reader of both dialects (flat ``--config`` files and MindFormers run files)."""
    import yaml

    path = resolve_config_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expect}, got {type(data).__name__}")
    _refuse_commands(data, path)
    return data


def _refuse_commands(data: Any, path: str, key: str = "") -> None:
    """A file never selects a command to run: a ``pipe:`` value (webdataset runs its text in a
    shell) is refused wherever it sits; the user may type one on the command line."""
    if isinstance(data, dict):
        for k, v in data.items():
            _refuse_commands(v, path, f"{key}.{k}" if key else str(k))
    elif isinstance(data, (list, tuple)):
        for v in data:
            _refuse_commands(v, path, key)
    elif isinstance(data, str) and data.lstrip().lower().startswith("pipe:"):
        raise ConfigError(f"{path}: {key}: {data!r} would run a shell command; a file never selects a "
                          "command: type the pipe: source on the command line instead")


def flat_options(data: dict[str, Any]) -> dict[str, Any]:
    """Flat ``key: value`` options; sections (``optimisation: {blr: ...}``) are flattened by leaf key.
    ``model_args`` stays a mapping (it is one option)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "model_args":
            flat.update(value)
        else:
            flat[key] = value
    return flat


def config_from_argv(cls: type, argv: Sequence[str], parser: argparse.ArgumentParser) -> Any:
    """``argv`` (and its ``--config`` file) -> a validated ``cls`` instance, read by ``parser`` (its
    :func:`parser_for`); ``-h`` prints help and exits."""
    given = {k: v for k, v in vars(parser.parse_args(list(argv))).items()
             if k != "debug" and not k.startswith("ignored ")}
    path = given.pop("config", None) if cls.file_options else None
    values = flat_options(read_yaml(path)) if path else {}
    source = path or parser.prog
    # aliases in the file and flags are resolved by from_dict; flags win over the file
    merged = {**resolve_keys(cls, values, source=source), **given}
    missing = [f.name for f in dataclasses.fields(cls) if f.metadata.get("required") and not merged.get(f.name)]
    if missing:
        raise ConfigError(f"{', '.join('--' + m for m in missing)} {'is' if len(missing) == 1 else 'are'} required")
    cfg = cls.from_dict(merged, source=source)
    cfg.typed = frozenset(given)  # a typed flag is the user's choice even at its default value
    return cfg


__all__ = ["config_from_argv", "flat_options", "parser_for", "read_yaml", "resolve_config_path"]
