"""``maekit predict`` and ``maekit visualize``: the pipelines on the command line (options:
:class:`maekit.tasks.config.PredictConfig` / ``VisualizeConfig``).

Results go to stdout (``--json`` for one JSON document); what loading says goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..api.pipelines import expand_inputs, normalize_task, pipeline
from ..engine.logs import setup_logging
from ..hub import load_model
from ..models import is_pretraining_model
from .common import config_overrides, inference_device
from .config import OUTPUT_DIR, PredictConfig, VisualizeConfig


def _load_model(cfg: Any):
    setup_logging(stream="stderr")  # stdout is the result (--json output, file names)
    return load_model(cfg.model, download=not cfg.no_download, device=inference_device(cfg.device),
                      **config_overrides(cfg))


def _reconstructions(cfg: PredictConfig, pipe, inputs: list[str]) -> tuple[list[dict], list[str]]:
    """(rows, text lines) of reconstructed images, PNGs in ``cfg.output_dir`` (default ``output_dir``)."""
    out_dir = cfg.output_dir or OUTPUT_DIR
    results = pipe(inputs, mask_ratio=cfg.mask_ratio, seed=cfg.seed, output_dir=out_dir)
    rows = [{"input": i, "loss": r["loss"], "mask_ratio": cfg.mask_ratio, "seed": cfg.seed, "files": r["files"]}
            for i, r in zip(inputs, results, strict=True)]
    lines = []
    for row in rows:
        lines.append(f"{row['input']}: loss {row['loss']:.4f} (mask_ratio {cfg.mask_ratio}, seed {cfg.seed})")
        lines += [f"  {key}: {path}" for key, path in row["files"].items()]
    return rows, lines


def _classes(cfg: PredictConfig, pipe, inputs: list[str]) -> tuple[list[dict], list[str]]:
    """(rows, text lines) of the top ``cfg.topk`` classes of each image."""
    rows = [{"input": i, "predictions": r} for i, r in zip(inputs, pipe(inputs, top_k=cfg.topk), strict=True)]
    lines = []
    for row in rows:
        width = max(len(p["label"]) for p in row["predictions"])
        lines.append(row["input"])
        lines += [f"  {rank:>2}. {p['label']:<{width}}  {p['score']:.4f}"
                  for rank, p in enumerate(row["predictions"], 1)]
    return rows, lines


def _features(cfg: PredictConfig, pipe, inputs: list[str]) -> tuple[list[dict], list[str]]:
    """(rows, text lines) of feature shapes; with ``cfg.output_dir`` the features go to features.pt."""
    feats = pipe(inputs)
    rows: list[dict[str, Any]] = [{"input": i, "shape": list(f.shape)} for i, f in zip(inputs, feats, strict=True)]
    if cfg.output_dir:
        import torch

        os.makedirs(cfg.output_dir, exist_ok=True)
        path = os.path.join(cfg.output_dir, "features.pt")
        torch.save({"inputs": inputs, "features": [f.clone() for f in feats]}, path)
        for row in rows:
            row["file"] = path
    lines = [f"{row['input']}: features {tuple(row['shape'])}" + (f" -> {row['file']}" if "file" in row else "")
             for row in rows]
    return rows, lines


_TASKS = {"masked_image_modeling": _reconstructions, "image_classification": _classes,
          "image_feature_extraction": _features}


def run_predict(cfg: PredictConfig) -> int:
    """``maekit predict --model X --input img... [--task] [--topk 5] [--mask_ratio] [--seed] [--output_dir]
    [--json] [--input_size S --patch_size P ...]``; prints the results, returns the exit code."""
    inputs, skipped = _readable(expand_inputs(list(cfg.input)))
    model = _load_model(cfg)
    if cfg.task == "auto":
        task = "masked_image_modeling" if is_pretraining_model(model) else "image_classification"
    else:
        task = normalize_task(cfg.task)
    rows, lines = _TASKS[task](cfg, pipeline(task, model, batch_size=cfg.batch_size), inputs)
    print(json.dumps(rows, indent=2) if cfg.json else "\n".join(lines))
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"maekit predict: skipped {len(skipped)} unreadable image file(s) of {len(inputs) + len(skipped)}: "
              f"{shown}", file=sys.stderr)
    return 0


def _readable(inputs: list[str]) -> tuple[list[str], list[str]]:
    """(inputs that can be read, local files that cannot: skipped as training skips them). A single
    input is left to the pipeline, whose message says what is wrong with it."""
    if len(inputs) < 2:
        return inputs, []
    from ..data.shard_writer import _decodes  # the one "does this image file decode" test (maekit shard's)

    good, bad = [], []
    for item in inputs:
        (bad if os.path.isfile(item) and not _decodes(Path(item).read_bytes()) else good).append(item)
    if not good:
        raise ValueError(f"none of the {len(inputs)} input files is a readable image ({', '.join(bad[:3])} ...)")
    return good, bad


def run_visualize(cfg: VisualizeConfig) -> int:
    """``maekit visualize --model X --image a.jpg [--mask_ratio 0.75] [--seed 2] [--out grid.png]``."""
    model = _load_model(cfg)
    result = pipeline("masked_image_modeling", model)(cfg.image, mask_ratio=cfg.mask_ratio, seed=cfg.seed)
    stem = Path(cfg.image.split("?", 1)[0]).stem or "image"
    out = Path(cfg.out) if cfg.out else Path(f"{stem}_grid.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    result["grid"].save(out)
    print(f"wrote {out} (loss {result['loss']:.4f}, mask_ratio {cfg.mask_ratio}, seed {cfg.seed})")
    return 0
