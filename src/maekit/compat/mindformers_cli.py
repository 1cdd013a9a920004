"""The flags of ``maekit run`` (run_mindformer.py's interface); :func:`maekit.api.commands.run_mindformers`
runs them through the Trainer.

Each flag sets a key of the YAML (``--epochs`` is ``runner_config.epochs``), which
:mod:`maekit.compat.mindformers` maps onto the task config. No torch here (``maekit run -h``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .run_yaml import DEFAULT_CONFIG, RUN_MODES

# flag -> the YAML key it sets
_FLAG_KEYS = {
    "output_dir": "output_dir", "seed": "seed", "epochs": "runner_config.epochs",
    "batch_size": "runner_config.batch_size",
    "gradient_accumulation_steps": "runner_config.gradient_accumulation_steps", "device": "device",
    "run_mode": "run_mode", "train_dataset_dir": "train_dataset.data_loader.dataset_dir",
    "eval_dataset_dir": "eval_dataset.data_loader.dataset_dir", "load_checkpoint": "load_checkpoint",
    "resume_training": "resume_training",
}
def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maekit run",
        description="Run a MindFormers-style YAML (run_mindformer.py's interface): train, finetune, eval or "
                    "predict through maekit.Trainer. See maekit.compat.mindformers for the YAML mapping.")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"run YAML: a file or a packaged config (default {DEFAULT_CONFIG}; also "
                        "vit/run_vit_base_p16_224_100ep.yaml)")
    p.add_argument("--run_mode", choices=RUN_MODES, default=None, help="default: the YAML's run_mode")
    p.add_argument("--load_checkpoint", default=None,
                   help="train: starting weights; finetune: the pretrained checkpoint (required); "
                        "eval / predict: the weights to use (file, model folder or name)")
    p.add_argument("--train_dataset_dir", default=None, help="training images (folder or builtin:digits)")
    p.add_argument("--eval_dataset_dir", default=None, help="evaluation images (folder or builtin:digits)")
    p.add_argument("--predict_data", nargs="+", default=None, metavar="IMAGE",
                   help="predict: image files, folders or URLs")
    p.add_argument("--predict_batch_size", type=int, default=None)
    p.add_argument("--output_dir", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--gradient_accumulation_steps", type=int, default=None)
    p.add_argument("--resume_training", nargs="?", const=True, default=None,
                   help="resume from the latest checkpoint in output_dir, or from the file given")
    p.add_argument("--device", "--device_target", dest="device", default=None,
                   help="auto, cpu, cuda, cuda:N (MindFormers' CPU / GPU accepted)")
    p.add_argument("--options", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override YAML keys, e.g. runner_config.epochs=1 lr_schedule.learning_rate=1e-4 "
                        "amp=none")
    for flag in ("--mode", "--device_id", "--use_parallel", "--src_strategy_path_or_dir", "--auto_trans_ckpt",
                 "--only_save_strategy", "--strategy_load_checkpoint", "--remote_save_url", "--profile",
                 "--sink_mode", "--num_samples", "--do_eval"):
        p.add_argument(flag, default=None, help=argparse.SUPPRESS)  # MindSpore / Ascend: accepted, ignored
    return p


def parse_run_args(argv: Sequence[str]) -> argparse.Namespace:
    """``maekit run`` argv -> its namespace; ``args.options`` then also holds the YAML keys the
    flags set (``--epochs 1`` -> ``runner_config.epochs=1``). No torch: ``-h`` is instant."""
    args = _run_parser().parse_args(list(argv))
    options = list(args.options)
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            options.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    args.options = options
    return args
