"""``maekit <task command> argv``: flags -> task config -> task function, and the exit codes.

Parsing imports no torch (``-h`` is instant); the task module is imported only to run it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Sequence

from . import flags
from .config import TASK_CONFIGS

# command -> (module, function); the training / evaluation ones take
# (cfg, *, model=None, train_dataset=None, eval_dataset=None)
RUNNERS: dict[str, tuple[str, str]] = {
    "pretrain": ("maekit.tasks.pretrain", "run_pretrain"),
    "finetune": ("maekit.tasks.classify", "run_finetune"),
    "linprobe": ("maekit.tasks.classify", "run_linprobe"),
    "eval": ("maekit.tasks.evaluate", "run_eval"),
    "demo": ("maekit.tasks.demo", "run_demo"),
    "bench": ("maekit.tasks.bench", "run_bench"),
    "knn": ("maekit.tasks.knn", "run_knn"),
}
_NO_TRAINING = ("bench", "knn")  # no engine stop conditions to turn into exit codes

DESCRIPTIONS = {
    "pretrain": "MAE / ConvMAE pretraining (official main_pretrain.py flags)",
    "finetune": "fine-tuning with layer decay, mixup, RandAugment (main_finetune.py flags)",
    "linprobe": "linear probing with LARS and a BatchNorm head (main_linprobe.py flags)",
    "eval": "top-1 / top-5 of a classifier checkpoint or saved model",
}


def parse(command: str, argv: Sequence[str]) -> Any:
    """``argv`` of ``maekit <command>`` -> its validated task config (``-h``: help, SystemExit 0)."""
    return flags.parse(TASK_CONFIGS[command], argv, prog=f"maekit {command}",
                       description=DESCRIPTIONS.get(command))


def runner(command: str) -> Callable[..., Any]:
    """The task function of ``command`` (imports the task module, and torch, now)."""
    module, name = RUNNERS[command]
    return getattr(importlib.import_module(module), name)


def run(command: str, cfg: Any, **objects: Any) -> Any:
    """Run a task config; ``objects``: ``model`` / ``train_dataset`` / ``eval_dataset``."""
    return runner(command)(cfg, **objects)


def exit_code_of_run(command: str, job: Callable[[], object]) -> int:
    """Run a training job and turn the engine's stop conditions into exit codes.

    SIGTERM / SIGINT (state saved): 128 + signal; a non-finite loss: 1; success: 0. The process
    group is torn down in every case.
    """
    from ..engine.distributed import cleanup
    from ..engine.loop import NonFiniteLossError, TrainingInterrupted

    try:
        job()
    except TrainingInterrupted as e:
        print(f"maekit {command}: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteLossError as e:
        print(f"maekit {command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0


def run_command(command: str, argv: Sequence[str]) -> int:
    """``maekit <command> argv``: parse, run, exit code."""
    cfg = parse(command, argv)
    if command in _NO_TRAINING:
        return int(run(command, cfg) or 0)
    return exit_code_of_run(command, lambda: run(command, cfg))
