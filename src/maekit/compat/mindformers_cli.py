"""``maekit run``: a MindFormers-style run YAML (run_mindformer.py's interface) through the Trainer.

The flags are MindFormers' own; each one sets a key of the YAML (``--epochs`` is
``runner_config.epochs``), which :mod:`maekit.compat.mindformers` maps onto the task config.
Parsing imports no torch (``maekit run -h`` is instant).
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
                    "predict through maekit.Trainer. See maekit.api.run_config for the YAML mapping.")
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


def run_main(argv: Sequence[str]) -> int:
    """``maekit run --config X.yaml --run_mode train|finetune|eval|predict [--load_checkpoint P]
    [--train_dataset_dir D] [--eval_dataset_dir D] [--predict_data img ...] [--options k=v ...]``."""
    args = _run_parser().parse_args(list(argv))  # before the imports below: -h needs no torch
    from ..api.commands import expand_inputs
    from ..api.trainer import Trainer
    from ..tasks.entry import exit_code_of_run
    from .mindformers import load_run_config

    options = list(args.options)
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            options.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    rc = load_run_config(args.config, options)
    mode = rc.run_mode
    trainer = Trainer(args=rc)
    checkpoint = rc.load_checkpoint
    weights = checkpoint or _named_weights(rc.default_checkpoint)
    resume = rc.resume_training or None

    def run_mode() -> None:
        if mode == "train":
            last = trainer.train(train_checkpoint=checkpoint or False, resume_training=resume)
            _print_training(trainer, last)
        elif mode == "finetune":
            if not checkpoint:
                raise ValueError("--run_mode finetune needs --load_checkpoint (the pretrained weights)")
            last = trainer.finetune(finetune_checkpoint=checkpoint, resume_training=resume)
            _print_training(trainer, last)
        elif mode == "eval":
            metrics = trainer.evaluate(eval_checkpoint=weights)
            if rc.task == "image_classification":
                print(f"Top1 Accuracy = {metrics['test_acc1']:.2f}%  "
                      f"Top5 Accuracy = {metrics['test_acc5']:.2f}%  loss = {metrics['test_loss']:.4f}")
            else:
                print(f"Reconstruction loss = {metrics['test_loss']:.4f} over {metrics['test_n']} images")
            print(json.dumps(metrics))
        else:
            if not args.predict_data:
                raise ValueError("--run_mode predict needs --predict_data (image files, folders or URLs)")
            inputs = expand_inputs(list(args.predict_data))
            results = trainer.predict(input_data=inputs, predict_checkpoint=weights,
                                      batch_size=args.predict_batch_size)
            for item, res in zip(inputs, results, strict=True):
                if rc.task == "masked_image_modeling":
                    files = ", ".join(res.get("files", {}).values())
                    print(f"{item}: loss {res['loss']:.4f} -> {files}")
                else:
                    top = ", ".join(f"{p['label']} {p['score']:.4f}" for p in res)
                    print(f"{item}: {top}")
            print(f"output result is saved at: {trainer.output_dir / (rc.task + '_result.json')}")

    return exit_code_of_run("run", run_mode)


def _named_weights(name: str | None) -> str | None:
    """``model_config.checkpoint_name_or_path`` for eval / predict: a path or a tagged name; a bare
    model name means the model's published weights, which the Trainer uses anyway (and stays
    right when ``trainer.model_name`` was changed)."""
    from ..models import is_model

    if not name or is_model(name):
        return None
    return name


def _print_training(trainer, last: dict) -> None:
    shown = {k: v for k, v in last.items() if k.startswith(("train_loss", "test_")) or k == "epoch"}
    text = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
    print(f"{trainer.task}: {text}")
    if trainer.checkpoint is not None:
        print(f"checkpoint: {trainer.checkpoint}")
