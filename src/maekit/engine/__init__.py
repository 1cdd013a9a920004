"""Generic training engine: loop, optimiser groups, LR schedule, LARS, precision, checkpoints,
distributed set-up, evaluation and logging. Never imports a concrete model; a task supplies
``step_fn(model, batch) -> (loss, n_samples)``.
"""

from .checkpoint import (CheckpointError, capture_rng_state, find_latest_checkpoint, load_checkpoint,
                         restore_rng_state, save_checkpoint)
from .distributed import DistInfo, all_reduce_sum, cleanup, init_distributed, seed_everything
from .loop import EpochStats, NonFiniteLossError, TrainingInterrupted, train_one_epoch
from .metrics import evaluate
from .optim import (LARS, build_adamw, effective_batch_and_lr, layer_decay_group_names, layer_ids,
                    param_groups_layer_decay, param_groups_weight_decay)
from .precision import resolve_amp
from .runner import Runner
from .schedule import LRSchedule, adjust_learning_rate, lr_at

__all__ = [
    "CheckpointError", "DistInfo", "EpochStats", "LARS", "LRSchedule", "NonFiniteLossError", "Runner",
    "TrainingInterrupted", "adjust_learning_rate", "all_reduce_sum", "build_adamw", "capture_rng_state",
    "cleanup", "effective_batch_and_lr", "evaluate", "find_latest_checkpoint", "init_distributed",
    "layer_decay_group_names", "layer_ids", "load_checkpoint", "lr_at", "param_groups_layer_decay",
    "param_groups_weight_decay", "resolve_amp", "restore_rng_state", "save_checkpoint", "seed_everything",
    "train_one_epoch",
]
