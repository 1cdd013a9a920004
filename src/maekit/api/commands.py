"""``maekit predict``, ``maekit visualize`` and ``maekit run`` (MindFormers-style YAML through the Trainer).

Errors are ``ValueError`` / ``FileNotFoundError`` with a readable message; ``maekit.cli`` prints
them without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models import is_pretraining_model
from .modeling import AutoModel
from .pipelines import expand_inputs, normalize_task, pipeline

_MODEL_HELP = ("registered name (+ .tag for published weights, e.g. mae_vit_large_patch16.visualize, "
               "vit_base_patch16.finetuned), model folder, checkpoint file or URL")


def _expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files and URLs as given; a folder stands for the images inside it (sorted)."""
    return expand_inputs(list(inputs))


def _load_model(args: argparse.Namespace):
    return AutoModel.from_pretrained(args.model, download=not args.no_download, device=args.device)


def _predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maekit predict",
        description="Classify images (classifier models) or reconstruct them "
                    "(MAE / ConvMAE pretraining models).")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--input", required=True, nargs="+", metavar="IMAGE",
                   help="image files, folders of images, or URLs")
    p.add_argument("--task", default="auto",
                   help="auto (by model type), image_classification, masked_image_modeling or "
                        "image_feature_extraction")
    p.add_argument("--topk", "--top_k", dest="topk", type=int, default=5, help="classes shown per image (5)")
    p.add_argument("--mask_ratio", type=float, default=0.75,
                   help="reconstruction: fraction of patches removed (0.75)")
    p.add_argument("--seed", type=int, default=2,
                   help="reconstruction: seed of the mask (2, the official demo's; same seed = same mask)")
    p.add_argument("--output_dir", default=None,
                   help="reconstruction: where the PNGs go (default ./output); features: writes features.pt")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--no_download", action="store_true",
                   help="never download: random weights for a bare name")
    return p


def predict_main(argv: Sequence[str]) -> int:
    """``maekit predict --model X --input img... [--topk 5] [--mask_ratio] [--seed] [--output_dir]
    [--json]``."""
    args = _predict_parser().parse_args(list(argv))
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


def _visualize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maekit visualize",
        description="Four-panel reconstruction of one image (original | masked | reconstruction | "
                    "reconstruction + visible), as the official demo.")
    p.add_argument("--model", required=True, help=_MODEL_HELP + "; a pretraining model")
    p.add_argument("--image", required=True, help="image file or URL")
    p.add_argument("--mask_ratio", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=2, help="seed of the mask (2, the official demo's)")
    p.add_argument("--out", default=None, help="PNG to write (default <image name>_grid.png here)")
    p.add_argument("--device", default=None)
    p.add_argument("--no_download", action="store_true",
                   help="never download: random weights for a bare name")
    return p


def visualize_main(argv: Sequence[str]) -> int:
    """``maekit visualize --model X --image a.jpg [--mask_ratio 0.75] [--seed 2] [--out grid.png]``."""
    args = _visualize_parser().parse_args(list(argv))
    model = _load_model(args)
    result = pipeline("masked_image_modeling", model)(args.image, mask_ratio=args.mask_ratio, seed=args.seed)
    stem = Path(args.image.split("?", 1)[0]).stem or "image"
    out = Path(args.out) if args.out else Path(f"{stem}_grid.png")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    result["grid"].save(out)
    print(f"wrote {out} (loss {result['loss']:.4f}, mask_ratio {args.mask_ratio}, seed {args.seed})")
    return 0


def _run_parser() -> argparse.ArgumentParser:
    from .run_config import DEFAULT_CONFIG, RUN_MODES

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
    from ..tasks.entry import exit_code_of_run
    from .run_config import load_run_config
    from .trainer import Trainer

    args = _run_parser().parse_args(list(argv))
    options = list(args.options)
    for key, value in (("output_dir", args.output_dir), ("seed", args.seed),
                       ("runner_config.epochs", args.epochs), ("runner_config.batch_size", args.batch_size),
                       ("runner_config.gradient_accumulation_steps", args.gradient_accumulation_steps),
                       ("device", args.device), ("run_mode", args.run_mode),
                       ("train_dataset.data_loader.dataset_dir", args.train_dataset_dir),
                       ("eval_dataset.data_loader.dataset_dir", args.eval_dataset_dir),
                       ("load_checkpoint", args.load_checkpoint), ("resume_training", args.resume_training)):
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
