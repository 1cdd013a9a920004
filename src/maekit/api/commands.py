"""``maekit predict`` and ``maekit visualize`` (the pipelines; options: :class:`maekit.tasks.config.PredictConfig` /
``VisualizeConfig``). ``maekit run`` (a MindFormers run YAML through the Trainer) is
:mod:`maekit.compat.mindformers_cli`.

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
