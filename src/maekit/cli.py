"""``maekit`` command line: one table of commands, parsers generated from their config dataclasses.

Usage: ``maekit <command> [options]`` or ``torchrun --nproc_per_node N -m maekit <command> ...``.

:data:`COMMANDS` maps each command to its config class (:mod:`maekit.tasks.config`,
:mod:`maekit.tasks.tool_config`: the options, defaults and help, once; its docstring is the
command's description, its first sentence the summary ``maekit -h`` lists) and its runner
(``"module:function"``, imported only to run, so parsing and ``-h`` import no torch).
``build_parser(command)`` is the command's argparse parser (``--debug`` included); the docs'
CLI reference is generated from the two.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from .tasks import config as task_config
from .tasks import tool_config


class Command(NamedTuple):
    """A row of :data:`COMMANDS`."""

    config: type  # the options: a ConfigMixin dataclass, its docstring "maekit <command>: <summary>. <more>"
    runner: str  # "module:function"; the function takes the config
    trains: bool = False  # a training job: returns its last record; signals and divergence become exit codes

    @property
    def description(self) -> str:
        """The config's docstring after ``maekit <command>:`` (``maekit <command> -h``, the CLI reference)."""
        return " ".join(self.config.__doc__.split()).split(": ", 1)[1]

    @property
    def summary(self) -> str:
        """The description's first sentence (the command list of ``maekit -h``)."""
        return self.description.split(". ")[0].removesuffix(".")


COMMANDS: dict[str, Command] = {
    "pretrain": Command(task_config.PretrainConfig, "maekit.tasks.pretrain:run_pretrain", trains=True),
    "finetune": Command(task_config.FinetuneConfig, "maekit.tasks.classify:run_finetune", trains=True),
    "linprobe": Command(task_config.LinprobeConfig, "maekit.tasks.classify:run_linprobe", trains=True),
    "eval": Command(task_config.EvalConfig, "maekit.tasks.evaluate:run_eval", trains=True),
    "predict": Command(task_config.PredictConfig, "maekit.tasks.predict:run_predict"),
    "visualize": Command(task_config.VisualizeConfig, "maekit.tasks.predict:run_visualize"),
    "convert": Command(tool_config.ConvertConfig, "maekit.convert.cli:run_convert"),
    "run": Command(tool_config.RunCommandConfig, "maekit.compat.mindformers_cli:run_mindformers"),
    "demo": Command(task_config.DemoConfig, "maekit.tasks.demo:run_demo", trains=True),
    "bench": Command(task_config.BenchConfig, "maekit.tasks.bench:run_bench"),
    "knn": Command(task_config.KnnConfig, "maekit.tasks.knn:run_knn"),
    "list-models": Command(tool_config.ListModelsConfig, "maekit.cli:run_list_models"),
    "shard": Command(tool_config.ShardConfig, "maekit.cli:run_shard"),
    "app": Command(tool_config.AppConfig, "maekit.app.cli:run_app"),
    "push": Command(tool_config.PushConfig, "maekit.hub.push:run_push"),
    "download": Command(tool_config.DownloadConfig, "maekit.cli:run_download"),
}

def build_parser(command: str) -> argparse.ArgumentParser:
    """The argparse parser of ``maekit <command>``, generated from its config class (no torch)."""
    from .tasks.flags import parser_for

    cmd = COMMANDS[command]
    return parser_for(cmd.config, prog=f"maekit {command}", description=cmd.description)


def parse(command: str, argv: Sequence[str]) -> Any:
    """``argv`` of ``maekit <command>`` -> its validated config (``-h``: help, SystemExit 0)."""
    from .tasks.flags import config_from_argv

    return config_from_argv(COMMANDS[command].config, argv, build_parser(command))


def task_function(command: str) -> Callable[..., Any]:
    """The runner of ``command`` (imports its module, and torch, now)."""
    module, name = COMMANDS[command].runner.split(":")
    return getattr(importlib.import_module(module), name)


def run_task(command: str, cfg: Any, **objects: Any) -> Any:
    """Run a task config in Python; ``objects``: ``model`` / ``train_dataset`` / ``eval_dataset`` (the
    training and evaluation tasks take them). Returns what the task returns (a training job: its
    last epoch's record)."""
    return task_function(command)(cfg, **objects)


def exit_code_of_run(command: str, job: Callable[[], object]) -> int:
    """Run a training job and turn the engine's stop conditions into exit codes.

    SIGTERM / SIGINT (state saved): 128 + signal; success: 0. A divergence (non-finite loss) and the
    other expected failures are the one error boundary's (:func:`maekit.errors.handle_cli_error`:
    exit 1 with its message). The process group is torn down in every case.
    """
    from .engine.distributed import cleanup
    from .engine.loop import TrainingInterrupted

    try:
        job()
    except TrainingInterrupted as e:
        print(f"maekit {command}: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        cleanup()
    return 0


def run_command(command: str, argv: Sequence[str]) -> int:
    """``maekit <command> argv``: parse, run, exit code."""
    cfg = parse(command, argv)
    if COMMANDS[command].trains:
        return exit_code_of_run(command, lambda: run_task(command, cfg))
    return int(run_task(command, cfg) or 0)


# ----------------------------------------------------------------------------- the small commands
def run_list_models(cfg: tool_config.ListModelsConfig) -> int:
    """``maekit list-models [PATTERN]``: one registered name a line (aliases included)."""
    names = preset_names()
    print("\n".join(n for n in names if cfg.pattern is None or fnmatch.fnmatch(n, cfg.pattern)))
    return 0


def preset_names() -> list[str]:
    """The names maekit's presets register (``@register_model`` and its ``aliases``), sorted, read from
    the preset modules' source without importing them (torch): a fresh process knows only these,
    and ``maekit list-models`` answers at once. A test keeps it equal to :func:`maekit.models.list_models`."""
    names = []
    for module in ("vit", "mae_presets", "convmae_presets"):
        tree = ast.parse((Path(__file__).parent / "models" / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            for dec in getattr(node, "decorator_list", ()):
                call = dec if isinstance(dec, ast.Call) else None
                target = call.func if call is not None else dec
                if isinstance(target, ast.Name) and target.id == "register_model":
                    names.append(node.name)
                    names += [n for kw in (call.keywords if call is not None else ()) if kw.arg == "aliases"
                              for n in ast.literal_eval(kw.value)]
    return sorted(names)


def run_shard(cfg: tool_config.ShardConfig) -> int:
    """``maekit shard SRC DST``: write the tar shards and shards.json; one line per split."""
    from .data.shard_writer import write_shards

    def progress(done: int, total: int) -> None:
        if done == total or done % 1000 == 0:
            print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)

    for split in write_shards(cfg.src, cfg.dst, shard_size=cfg.shard_size, labelled=cfg.labelled, seed=cfg.seed,
                              progress=progress):
        classes = f", {len(split['classes'])} classes" if split["classes"] else ", unlabelled"
        print(f"{split['dst']}: {split['samples']} images in {split['shards']} shards{classes}")
        if split["corrupt"]:
            shown = ", ".join(split["corrupt"][:3]) + (" ..." if len(split["corrupt"]) > 3 else "")
            print(f"maekit shard: skipped {len(split['corrupt'])} corrupt image file(s): {shown}", file=sys.stderr)
    return 0


def run_download(cfg: tool_config.DownloadConfig) -> int:
    """``maekit download SOURCE...``: each into its cache; prints where it went."""
    from .hub.load import local_source

    for source in cfg.sources:
        print(f"{source}: {local_source(source, names=True)}", flush=True)
    return 0


# ----------------------------------------------------------------------------- main
def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: maekit <command> [options]   (maekit <command> -h for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maekit`` script and ``python -m maekit``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"maekit {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(f"maekit: unknown command {command!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    from .console import CurrentStreamHandler

    logging.basicConfig(level=os.environ.get("MAEKIT_LOG_LEVEL", "WARNING"),
                        handlers=[CurrentStreamHandler("stderr")],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return run_command(command, rest)
    except KeyboardInterrupt:
        print(f"maekit {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # One error boundary: an expected failure is a message (exit 2 usage, 1 runtime); a bug re-raises.
        from .errors import handle_cli_error

        code = handle_cli_error(command, e, rest)
        if code is None:
            raise
        return code
