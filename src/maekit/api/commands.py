"""``maekit predict`` and ``maekit visualize`` (the pipelines; options: :class:`maekit.tasks.config.PredictConfig` /
``VisualizeConfig``) and ``maekit run`` (a MindFormers run YAML through the Trainer).

Errors are ``ValueError`` / ``FileNotFoundError`` with a readable message; ``maekit.cli`` prints
them without a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.logs import setup_logging
from ..hub import load_model
from ..models import is_pretraining_model
from ..tasks.common import config_overrides
from ..tasks.config import PredictConfig, VisualizeConfig
from .pipelines import expand_inputs, normalize_task, pipeline


def _expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files and URLs as given; a folder stands for the images inside it (sorted)."""
    return expand_inputs(list(inputs))


def _load_model(cfg: Any):
    # What loading says goes to stderr: stdout is the result (--json output, file names).
    setup_logging(stream="stderr")
    return load_model(cfg.model, download=not cfg.no_download, device=cfg.device, **config_overrides(cfg))


def run_predict(args: PredictConfig) -> int:
    """``maekit predict --model X --input img... [--topk 5] [--mask_ratio] [--seed] [--output_dir]
    [--json] [--input_size S --patch_size P ...]``; prints the results, returns the exit code."""
    inputs = _expand_inputs(args.input)
    model = _load_model(args)
    if args.task == "auto":
        task = "masked_image_modeling" if is_pretraining_model(model) else "image_classification"
    else:
        task = normalize_task(args.task)
    if task == "masked_image_modeling":
        out_dir = args.output_dir or "output"
        pipe = pipeline(task, model, batch_size=args.batch_size)
        results = pipe(inputs, mask_ratio=args.mask_ratio, seed=args.seed, output_dir=out_dir)
        rows = [{"input": i, "loss": r["loss"], "mask_ratio": args.mask_ratio, "seed": args.seed,
                 "files": r["files"]} for i, r in zip(inputs, results, strict=True)]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['input']}: loss {row['loss']:.4f} "
                      f"(mask_ratio {args.mask_ratio}, seed {args.seed})")
                for key, path in row["files"].items():
                    print(f"  {key}: {path}")
        return 0
    if task == "image_classification":
        pipe = pipeline(task, model, batch_size=args.batch_size)
        results = pipe(inputs, top_k=args.topk)
        rows = [{"input": i, "predictions": r} for i, r in zip(inputs, results, strict=True)]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(row["input"])
                width = max(len(p["label"]) for p in row["predictions"])
                for rank, p in enumerate(row["predictions"], 1):
                    print(f"  {rank:>2}. {p['label']:<{width}}  {p['score']:.4f}")
        return 0
    pipe = pipeline(task, model, batch_size=args.batch_size)
    feats = pipe(inputs)
    rows: list[dict[str, Any]] = [{"input": i, "shape": list(f.shape)}
                                  for i, f in zip(inputs, feats, strict=True)]
    if args.output_dir:
        import torch

        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, "features.pt")
        torch.save({"inputs": inputs, "features": [f.clone() for f in feats]}, path)
        for row in rows:
            row["file"] = path
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            where = f" -> {row['file']}" if "file" in row else ""
            print(f"{row['input']}: features {tuple(row['shape'])}{where}")
    return 0


def run_visualize(args: VisualizeConfig) -> int:
    """``maekit visualize --model X --image a.jpg [--mask_ratio 0.75] [--seed 2] [--out grid.png]``."""
    model = _load_model(args)
    result = pipeline("masked_image_modeling", model)(args.image, mask_ratio=args.mask_ratio, seed=args.seed)
    stem = Path(args.image.split("?", 1)[0]).stem or "image"
    out = Path(args.out) if args.out else Path(f"{stem}_grid.png")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    result["grid"].save(out)
    print(f"wrote {out} (loss {result['loss']:.4f}, mask_ratio {args.mask_ratio}, seed {args.seed})")
    return 0


def run_mindformers(args: Any) -> int:
    """``maekit run --config X.yaml --run_mode train|finetune|eval|predict [--load_checkpoint P]
    [--train_dataset_dir D] [--eval_dataset_dir D] [--predict_data img ...] [--options k=v ...]``
    (``args`` from :func:`maekit.compat.mindformers_cli.parse_run_args`)."""
    from ..compat.mindformers import load_run_config
    from ..tasks.entry import exit_code_of_run
    from .trainer import Trainer

    rc = load_run_config(args.config, args.options)
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
            inputs = _expand_inputs(args.predict_data)
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
