"""``maekit`` command line: parses arguments and dispatches; all work lives in ``tasks``/``api``.

Usage: ``maekit <command> [options]`` or ``torchrun --nproc_per_node N -m maekit <command> ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

COMMANDS: dict[str, str] = {
    "pretrain": "MAE / ConvMAE pretraining on unlabelled images",
    "finetune": "fine-tune a pretrained encoder on class folders",
    "linprobe": "linear probe of a frozen pretrained encoder",
    "eval": "top-1 / top-5 of a classifier on a validation set",
    "predict": "classify images or reconstruct them, by model type",
    "visualize": "reconstruction grid of one image",
    "convert": "convert weights between official, PASSL, MindFormers, HF, timm and maekit formats",
    "run": "run a MindFormers-style YAML (train / finetune / eval / predict)",
    "demo": "pretrain a small MAE on built-in digits, probe it, write pictures and a report",
    "bench": "measure training throughput",
    "knn": "weighted k-NN accuracy of a model's frozen features on labelled images",
    "list-models": "list registered model names",
    "shard": "write an image folder into WebDataset tar shards (needs maekit[shards])",
    "app": "local web page + HTTP API to look at models (needs maekit[app])",
    "push": "upload a model (+ a model card from its training run) to the Hugging Face Hub",
    "download": "fetch weights into the caches, for machines without network (names, hf-hub: ids, timm: names)",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: maekit <command> [options]   (maekit <command> -h for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _dispatch(command: str) -> Callable[[Sequence[str]], int]:
    # Imported lazily so `maekit -h` and small commands start fast; the task commands parse their
    # config (tasks/config.py) without torch and import the task only to run it.
    if command in ("pretrain", "finetune", "linprobe", "eval", "demo", "bench", "knn"):
        from .tasks import entry

        return lambda argv: entry.run_command(command, argv)
    if command in ("predict", "visualize"):
        from .tasks import entry

        def run_pipeline(argv: Sequence[str]) -> int:
            cfg = entry.parse(command, argv)  # tasks/config.py: no torch until the options are valid
            from .api import commands

            return getattr(commands, f"run_{command}")(cfg)

        return run_pipeline
    if command == "convert":
        from .convert import cli as convert_cli

        def run_convert(argv: Sequence[str]) -> int:
            parser = argparse.ArgumentParser(prog="maekit convert", description=COMMANDS["convert"])
            convert_cli.add_arguments(parser)
            args = parser.parse_args(argv)
            if not os.path.exists(args.src):  # a Hub id, URL, timm: name or published weights name
                from .hub.load import local_source

                try:
                    args.src = os.fspath(local_source(args.src, names=True))
                except (OSError, ValueError) as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
            return convert_cli.run(args)

        return run_convert
    if command == "run":
        def run_yaml(argv: Sequence[str]) -> int:
            from .compat.mindformers_cli import parse_run_args, run_mindformers

            return run_mindformers(parse_run_args(argv))  # no torch until the flags are valid

        return run_yaml
    if command == "list-models":
        return _list_models
    if command == "shard":
        return _shard
    if command == "app":
        from .app import cli as app_cli

        return app_cli.main
    if command == "download":
        return _download
    if command == "push":
        from .hub import push_cli

        return push_cli.main
    raise KeyError(command)


def _list_models(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="maekit list-models")
    parser.add_argument("pattern", nargs="?", default=None, help="shell pattern, e.g. 'mae_*'")
    args = parser.parse_args(argv)
    from .models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _shard(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="maekit shard", description=COMMANDS["shard"] + ". SRC: class folders, a folder of images "
        "(any depth), or a root with train/ and val/; DST gets shard-NNNNNN.tar files and shards.json, "
        "usable as --data_path DST.")
    parser.add_argument("src", metavar="SRC_FOLDER", help="image folder to write")
    parser.add_argument("dst", metavar="DST", help="output folder (new or empty)")
    parser.add_argument("--shard_size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--labelled", action=argparse.BooleanOptionalAction, default=None,
                        help="write .cls labels from class folders (default: when SRC has class folders)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order (default 0)")
    args = parser.parse_args(argv)
    from .data.shard_writer import write_shards

    def progress(done: int, total: int) -> None:
        if done == total or done % 1000 == 0:
            print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)

    for split in write_shards(args.src, args.dst, shard_size=args.shard_size, labelled=args.labelled,
                              seed=args.seed, progress=progress):
        classes = f", {len(split['classes'])} classes" if split["classes"] else ", unlabelled"
        print(f"{split['dst']}: {split['samples']} images in {split['shards']} shards{classes}")
    return 0


def _download(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="maekit download", description=COMMANDS["download"] + ". Each goes where maekit.load_model "
        "looks for it (maekit's cache, the Hugging Face cache, timm's), so a later run with MAEKIT_OFFLINE=1 / "
        "HF_HUB_OFFLINE=1 (a compute node without network) finds it there.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="published weights name (mae_vit_base_patch16.full), hf-hub:org/name[@rev] or "
                             "org/name, timm:name.tag, or an http(s) URL")
    args = parser.parse_args(argv)
    from .hub.load import local_source

    for source in args.sources:  # errors go through the CLI's error boundary (maekit.errors)
        print(f"{source}: {local_source(source, names=True)}", flush=True)
    return 0


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
        return int(_dispatch(command)(rest) or 0)
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
