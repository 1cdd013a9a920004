"""``maekit predict`` and ``maekit visualize`` (``maekit run`` arrives with the Trainer).

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

from ..data.images import find_images
from .config import is_pretraining_model
from .modeling import AutoModel
from .pipelines import normalize_task, pipeline

_MODEL_HELP = ("registered name (+ .tag for published weights, e.g. mae_vit_large_patch16.visualize, "
               "vit_base_patch16.finetuned), model folder, checkpoint file or URL")


def _expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files and URLs as given; a folder stands for the images inside it (sorted)."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [str(p) for p in find_images(path)]
            if not found:
                raise ValueError(f"no images found in folder {item}")
            out.extend(found)
        else:
            out.append(item)
    return out


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


def run_main(argv: Sequence[str]) -> int:
    raise NotImplementedError("maekit run arrives with the Trainer")
