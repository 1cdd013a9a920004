"""``maekit run`` (run_mindformer.py's interface; options: :class:`maekit.tasks.tool_config.RunCommandConfig`):
:func:`run_mindformers` runs a run YAML through the :class:`~maekit.api.Trainer` in the YAML's (or
``--run_mode``'s) mode.

Each flag sets a key of the YAML (``--epochs`` is ``runner_config.epochs``: the field's ``yaml_key``),
which :mod:`maekit.compat.mindformers` maps onto the task config.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .run_yaml import parse_options


def yaml_options(cfg: Any) -> dict[str, Any]:
    """``{dotted YAML key: value}`` of ``--options`` and of the flags (``--epochs 1`` ->
    ``runner_config.epochs: 1``; a flag wins); a bare ``--resume_training`` (or ``auto``) is
    ``resume_training: True``, the newest checkpoint of output_dir."""
    options = parse_options(cfg.options)
    flags = {f.metadata["yaml_key"]: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
             if "yaml_key" in f.metadata and getattr(cfg, f.name) is not None}
    if flags.get("resume_training") == "auto":
        flags["resume_training"] = True
    return {**options, **flags}


def run_mindformers(args: Any) -> int:
    """``maekit run --config X.yaml --run_mode train|finetune|eval|predict [--load_checkpoint P]
    [--train_dataset_dir D] [--eval_dataset_dir D] [--predict_data img ...] [--options k=v ...]``
    (``args``: :class:`maekit.tasks.tool_config.RunCommandConfig`); returns the exit code."""
    from ..api.trainer import Trainer
    from ..cli import exit_code_of_run
    from .mindformers import load_run_config

    rc = load_run_config(args.config, yaml_options(args))
    trainer = Trainer(args=rc)
    modes = {"train": _train, "finetune": _train, "eval": _evaluate, "predict": _predict}
    return exit_code_of_run("run", lambda: modes[rc.run_mode](trainer, rc, args))


def _train(trainer: Any, rc: Any, args: Any) -> None:
    """train / finetune: ``load_checkpoint`` is the starting weights (``--init`` / ``--finetune``)."""
    resume = rc.resume_training or None
    if rc.run_mode == "train":
        last = trainer.train(train_checkpoint=rc.load_checkpoint or False, resume_training=resume)
    elif not rc.load_checkpoint:
        raise ValueError("--run_mode finetune needs --load_checkpoint (the pretrained weights)")
    else:
        last = trainer.finetune(finetune_checkpoint=rc.load_checkpoint, resume_training=resume)
    shown = {k: v for k, v in last.items() if k.startswith(("train_loss", "test_")) or k == "epoch"}
    text = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
    print(f"{trainer.task}: {text}")
    if trainer.checkpoint is not None:
        print(f"checkpoint: {trainer.checkpoint}")


def _evaluate(trainer: Any, rc: Any, args: Any) -> None:
    metrics = trainer.evaluate(eval_checkpoint=rc.load_checkpoint or rc.default_checkpoint)
    if rc.task == "image_classification":
        print(f"Top1 Accuracy = {metrics['test_acc1']:.2f}%  "
              f"Top5 Accuracy = {metrics['test_acc5']:.2f}%  loss = {metrics['test_loss']:.4f}")
    else:
        print(f"Reconstruction loss = {metrics['test_loss']:.4f} over {metrics['test_n']} images")
    print(json.dumps(metrics))


def _predict(trainer: Any, rc: Any, args: Any) -> None:
    from ..api.pipelines import expand_inputs

    if not args.predict_data:
        raise ValueError("--run_mode predict needs --predict_data (image files, folders or URLs)")
    inputs = expand_inputs(list(args.predict_data))
    results = trainer.predict(input_data=inputs, predict_checkpoint=rc.load_checkpoint or rc.default_checkpoint,
                              batch_size=args.predict_batch_size)
    for item, res in zip(inputs, results, strict=True):
        if rc.task == "masked_image_modeling":
            print(f"{item}: loss {res['loss']:.4f} -> {', '.join(res.get('files', {}).values())}")
        else:
            top = ", ".join(f"{p['label']} {p['score']:.4f}" for p in res)
            print(f"{item}: {top}")
    print(f"output result is saved at: {trainer.output_dir / (rc.task + '_result.json')}")
