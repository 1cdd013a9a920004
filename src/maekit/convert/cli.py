"""``maekit convert SRC DST``: the command line of :func:`maekit.convert.convert`.

``add_arguments(parser)`` / ``run(args)`` are what ``maekit.cli`` wires as the ``convert``
subcommand; ``python -m maekit.convert.cli`` runs it alone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .api import convert
from .errors import ConversionError
from .formats import FORMATS

DESCRIPTION = """Convert MAE / ConvMAE / ViT weights between formats: maekit (model folder),
official (PyTorch .pth), passl (Paddle .pd/.pdparams), mindformers (MindSpore .ckpt), hf
(transformers folder), timm (.safetensors). The input format is detected from the content and
the model shape from the weights; what the weights cannot tell (head counts, norm_pix_loss)
comes from the matching preset or the flags below, and is printed."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("src", metavar="SRC", help="input file or folder; also hf-hub:org/name, an http(s) URL, "
                        "timm:name.tag or a published weights name (mae_vit_base_patch16.full)")
    parser.add_argument("dst", metavar="DST", help="output file or folder")
    parser.add_argument(
        "--from",
        dest="from_format",
        choices=FORMATS,
        default=None,
        help="input format (default: detected from the content)",
    )
    parser.add_argument(
        "--to",
        dest="to_format",
        choices=FORMATS,
        default=None,
        help="output format (default: from DST: .pth official, .pd/.pdparams passl, .ckpt "
        "mindformers, .safetensors timm, a folder maekit)",
    )
    parser.add_argument("--model", default=None, help="registered model name (default: inferred from the weights)")
    parser.add_argument("--num_heads", type=int, default=None, help="attention heads of the encoder")
    parser.add_argument("--decoder_num_heads", type=int, default=None, help="attention heads of the MAE decoder")
    parser.add_argument(
        "--norm_pix_loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the model was trained on normalised-pixel targets",
    )
    parser.add_argument("--layer_norm_eps", type=float, default=None, help="LayerNorm epsilon (MAE: 1e-6)")
    parser.add_argument(
        "--img_size",
        type=int,
        nargs="+",
        default=None,
        metavar="H [W]",
        help="input size, when the position table does not tell it (a non-square grid)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("num_heads", "decoder_num_heads", "norm_pix_loss", "layer_norm_eps"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    if getattr(args, "img_size", None):
        sizes = args.img_size
        if len(sizes) > 2:
            raise ConversionError("--img_size takes H or H W")
        out["img_size"] = sizes[0] if len(sizes) == 1 else list(sizes)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the conversion; print the report. Returns 0, or 2 with an ``error:`` line on stderr."""
    try:
        report = convert(
            args.src,
            args.dst,
            from_format=args.from_format,
            to_format=args.to_format,
            model=args.model,
            **overrides_from_args(args),
        )
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="maekit convert", description=DESCRIPTION))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
