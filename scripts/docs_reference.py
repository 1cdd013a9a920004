"""Generated reference pages of the documentation site, and the mkdocs hook that inserts them.

A page holding the line ``<!-- generated: cli -->`` gets the command-line reference there, one
holding ``<!-- generated: models -->`` the model table: both are built from the code at every
``mkdocs build`` (``make docs``), so nothing generated is committed and nothing can go stale.

- The command-line reference comes from ``maekit.cli.COMMANDS`` and ``maekit.cli.build_parser``,
  the parsers the commands use, generated from their config dataclasses (``maekit.tasks.config``,
  ``maekit.tasks.tool_config``): every command, every flag with its type, default, help and
  alias names.
- The model table comes from the registry: every registered name, its aliases and its parameter
  counts (models built on the ``meta`` device: no memory, no weights).

``python scripts/docs_reference.py cli|models`` prints one of them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))


def command_parser(command: str) -> argparse.ArgumentParser:
    """The argparse parser of ``maekit <command>``: the one its ``-h`` prints."""
    from maekit.cli import build_parser

    return build_parser(command)


def _defaults(command: str) -> Any:
    """The command's config dataclass instance: the defaults (the parsers hold SUPPRESS)."""
    from maekit.cli import COMMANDS

    return COMMANDS[command].config()


def _type_name(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return "flag"
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    name = getattr(action.type, "__name__", "str") if action.type else "str"
    name = {"_floats": "floats"}.get(name, name)
    return f"{name} ..." if action.nargs in ("+", "*") else name


def _default(action: argparse.Action, defaults: Any) -> str:
    if isinstance(action, argparse._StoreFalseAction):
        return ""
    value = getattr(defaults, action.dest, action.default)
    if value is argparse.SUPPRESS or value in (None, "", [], {}) or value is False:
        return ""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _help_and_default(text: str, default: str) -> tuple[str, str]:
    """The help without its "(default: X)" (the default has its own column); a help that states
    its default in words (a machine-dependent one) keeps it, and the column stays empty."""
    if default and text.endswith(f" (default: {default})"):
        return text[: -len(f" (default: {default})")], default
    return text, "" if "(default" in text else default


def flag_rows(command: str) -> list[dict[str, str]]:
    """One row per documented option of ``maekit <command>``: flags (all spellings ``-h`` shows),
    aliases (hidden spellings of the same option), type, default, help."""
    parser = command_parser(command)
    defaults = _defaults(command)
    visible = [a for a in parser._actions if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
    hidden: dict[str, list[str]] = {}
    for a in parser._actions:
        if a.help is argparse.SUPPRESS:
            hidden.setdefault(a.dest, []).extend(a.option_strings)
    rows = []
    for a in visible:
        names = a.option_strings or [a.metavar or a.dest.upper()]
        # The first visible flag of an option lists its aliases; an --off flag stands alone.
        first = next(b for b in visible if b.dest == a.dest) is a
        text, default = _help_and_default(a.help or "", _default(a, defaults) if first else "")
        rows.append({"flags": ", ".join(names), "aliases": ", ".join(hidden.get(a.dest, [])) if first else "",
                     "type": _type_name(a), "default": default, "help": text})
    return rows


def cli_markdown() -> str:
    from maekit.cli import COMMANDS

    out = []
    for command, row in COMMANDS.items():
        description = row.description  # the summary, then what more the command's -h says
        out += [f"## maekit {command}", "", _cell(description[0].upper() + description[1:]), ""]
        out += ["| flag | aliases | type | default | help |", "|---|---|---|---|---|"]
        for row in flag_rows(command):
            flags = ", ".join(f"`{f}`" for f in row["flags"].split(", "))
            aliases = ", ".join(f"`{f}`" for f in row["aliases"].split(", ")) if row["aliases"] else ""
            default = f"`{_cell(row['default'])}`" if row["default"] else ""
            out.append(f"| {flags} | {aliases} | {_cell(row['type'])} | {default} | {_cell(row['help'])} |")
        out.append("")
    return "\n".join(out)


def models_markdown() -> str:
    import torch

    import maekit
    from maekit.models.registry import canonical_name

    names = maekit.list_models()
    out = ["| name | aliases | kind | parameters | trainable |", "|---|---|---|---|---|"]
    for name in maekit.list_models(include_aliases=False):
        with torch.device("meta"):  # shapes only: the huge presets cost no memory or time
            model = maekit.create_model(name)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        aliases = ", ".join(f"`{n}`" for n in names if n != name and canonical_name(n) == name)
        kind = "pretraining" if getattr(model, "is_pretraining", False) else "classifier"
        out.append(f"| `{name}` | {aliases} | {kind} | {total:,} | {trainable:,} |")
    return "\n".join(out)


GENERATORS = {"cli": cli_markdown, "models": models_markdown}
_MARK = re.compile(r"^<!-- generated: (\w+) -->$", re.M)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """mkdocs hook: replace each ``<!-- generated: NAME -->`` line by its generated Markdown."""
    return _MARK.sub(lambda m: GENERATORS[m.group(1)](), markdown)


if __name__ == "__main__":
    print(GENERATORS[sys.argv[1]]())
