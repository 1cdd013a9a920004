"""Bridge from ``maekit <training command> argv`` to the tasks (the CLI only dispatches here)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from ..engine.loop import NonFiniteLossError, TrainingInterrupted
from . import options

log = logging.getLogger("maekit.tasks")

PARSERS = {
    "pretrain": (options.pretrain_parser, "MAE / ConvMAE pretraining (official main_pretrain.py flags)"),
    "finetune": (options.finetune_parser, "fine-tuning with layer decay, mixup, RandAugment (main_finetune.py flags)"),
    "linprobe": (options.linprobe_parser, "linear probing with LARS and a BatchNorm head (main_linprobe.py flags)"),
    "eval": (options.eval_parser, "top-1 / top-5 of a classifier checkpoint or saved model"),
}


def build_parser(command: str) -> argparse.ArgumentParser:
    make, description = PARSERS[command]
    return make(argparse.ArgumentParser(prog=f"maekit {command}", description=description,
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter))


def parse(command: str, argv: Sequence[str]) -> argparse.Namespace:
    return options.parse_with_config(build_parser(command), argv)


def run_parsed(command: str, args: argparse.Namespace, *, train_dataset=None, val_dataset=None) -> dict:
    """Run a parsed command. ``train_dataset`` / ``val_dataset`` (torch Datasets of transformed
    ``(image, target)`` items) replace the ones ``--data_path`` would give (pretrain: train only)."""
    if command == "pretrain":
        from .pretrain import run_pretrain

        return run_pretrain(args, dataset=train_dataset)
    if command in ("finetune", "linprobe"):
        from .classify import run_classification

        return run_classification(args, linprobe=command == "linprobe", train_dataset=train_dataset,
                                  val_dataset=val_dataset)
    from .evaluate import run_eval

    return run_eval(args)


def exit_code_of_run(command: str, run: Callable[[], object]) -> int:
    """Run a training job and turn the engine's stop conditions into exit codes.

    SIGTERM / SIGINT (state saved): 128 + signal; a non-finite loss: 1; success: 0. The process
    group is torn down in every case.
    """
    try:
        run()
    except TrainingInterrupted as e:
        print(f"maekit {command}: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteLossError as e:
        print(f"maekit {command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        from ..engine.distributed import cleanup

        cleanup()
    return 0


def run_training_command(command: str, argv: Sequence[str]) -> int:
    """``maekit <command> argv``: parse, run, exit code."""
    args = parse(command, argv)
    return exit_code_of_run(command, lambda: run_parsed(command, args))
