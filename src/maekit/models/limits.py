"""Range checks on model constructor arguments, before anything is allocated.

A config.json (or YAML, or ``model_args``) with ``depth: 1e9`` used to allocate for minutes,
``img_size: -32`` or ``patch_size: 0`` ended in a torch RuntimeError / ZeroDivisionError.
:func:`check_model_args` refuses such values with a message naming the key and the bound. The
bounds are far beyond any published MAE / ConvMAE / ViT (ViT-22B: depth 48, width 6144) and only
catch nonsense. ConvMAE's per-stage arguments are lists; each entry is checked.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError

# key -> (smallest, largest) allowed value of each entry
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "depth": (1, 1024), "decoder_depth": (1, 1024),
    "embed_dim": (1, 65536), "decoder_embed_dim": (1, 65536),
    "num_heads": (1, 4096), "decoder_num_heads": (1, 4096),
    "img_size": (1, 65536), "patch_size": (1, 65536),
    "in_chans": (1, 4096), "num_classes": (0, 10_000_000),
}
FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "mlp_ratio": (1e-3, 256.0), "drop_rate": (0.0, 1.0), "drop_path_rate": (0.0, 1.0),
    "layer_norm_eps": (0.0, 1.0), "mask_ratio": (0.0, 1.0),
}


def _entries(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_int(name: str, key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)  # JSON / YAML write 1e3 as a float; its value is what counts
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name}: {key} must be a whole number, got {v!r}")
    if not lo <= v <= hi:
        raise ConfigError(f"{name}: {key} = {v} is out of range; it must be between {lo} and {hi}")
    return v


def check_model_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Check constructor arguments; returns them with whole-number floats (``2.0``) made ints.

    Args:
        name: the model name (for the message).
        args: constructor arguments (``img_size`` may be S or (H, W); ConvMAE stage lists allowed).

    Raises:
        ConfigError: a value out of range or of the wrong type; the message names the key and the bound.
    """
    out = dict(args)
    for key, value in args.items():
        if key in INT_BOUNDS:
            lo, hi = INT_BOUNDS[key]
            fixed = [_check_int(name, key, v, lo, hi) for v in _entries(value)]
            out[key] = type(value)(fixed) if isinstance(value, (list, tuple)) else fixed[0]
        elif key in FLOAT_BOUNDS:
            lo, hi = FLOAT_BOUNDS[key]
            for v in _entries(value):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ConfigError(f"{name}: {key} must be a number, got {v!r}")
                if not lo <= v <= hi:
                    raise ConfigError(f"{name}: {key} = {v} is out of range; it must be between {lo} and {hi}")
    _check_patch_fits(name, out)
    return out


def _check_patch_fits(name: str, args: dict[str, Any]) -> None:
    if "img_size" not in args or "patch_size" not in args:
        return
    size = min(int(s) for s in _entries(args["img_size"]))
    patch = math.prod(int(p) for p in _entries(args["patch_size"]))  # ConvMAE: stages multiply
    if patch > size:
        raise ConfigError(f"{name}: patch_size {args['patch_size']} is larger than img_size {args['img_size']}")
