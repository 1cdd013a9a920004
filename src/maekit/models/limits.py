"""Range checks on model constructor arguments, before anything is allocated.

A config.json (or YAML, or ``model_args``) with ``depth: 1e9`` used to allocate for minutes,
``img_size: -32`` or ``patch_size: 0`` ended in a torch RuntimeError / ZeroDivisionError.
:func:`check_model_args` refuses such values with a message naming the key and the bound. The
bounds are far beyond any published MAE / ConvMAE / ViT (ViT-22B: depth 48, width 6144) and only
catch nonsense. ConvMAE's per-stage arguments are lists; each entry is checked.

Values each in range can still be absurd together (``depth 1024, embed_dim 4096``):
:func:`check_param_memory` estimates the parameters' memory from the resolved constructor
arguments (every model checks itself before allocating, ``MaekitModel.__new__``) and refuses an
architecture whose float32 weights alone exceed the machine's memory.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..errors import ConfigError

# key -> (smallest, largest) allowed value of each entry; int bounds: the value must be a whole number
BOUNDS: dict[str, tuple[float, float]] = {
    "depth": (1, 1024), "decoder_depth": (1, 1024),
    "embed_dim": (1, 65536), "decoder_embed_dim": (1, 65536),
    "num_heads": (1, 4096), "decoder_num_heads": (1, 4096),
    "img_size": (1, 65536), "patch_size": (1, 65536),
    "in_chans": (1, 4096), "num_classes": (0, 10_000_000),
    "mlp_ratio": (1e-3, 256.0), "drop_rate": (0.0, 1.0), "drop_path_rate": (0.0, 1.0),
    "layer_norm_eps": (0.0, 1.0),
}


def _entries(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check(name: str, key: str, v: Any) -> Any:
    lo, hi = BOUNDS[key]
    whole = isinstance(lo, int)
    if whole and isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)  # JSON / YAML write 1e3 as a float; its value is what counts
    if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)) or (
            isinstance(v, float) and not math.isfinite(v)):
        raise ConfigError(f"{name}: {key} must be {'a whole number' if whole else 'a number'}, got {v!r}")
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
        if key in BOUNDS:
            fixed = [_check(name, key, v) for v in _entries(value)]
            out[key] = type(value)(fixed) if isinstance(value, (list, tuple)) else fixed[0]
    if "img_size" in out and "patch_size" in out:
        size = min(int(s) for s in _entries(out["img_size"]))
        patch = math.prod(int(p) for p in _entries(out["patch_size"]))  # ConvMAE: stages multiply
        if patch > size:
            raise ConfigError(f"{name}: patch_size {out['patch_size']} is larger than img_size "
                              f"{out['img_size']}")
    return out


def estimate_params(arch: dict[str, Any]) -> int:
    """About how many parameters the transformer blocks of ``arch`` (resolved constructor arguments:
    ``embed_dim``, ``depth``, ``mlp_ratio``, ``decoder_*``) hold: ``depth * (4 + 2 * mlp_ratio) * D^2``
    per stage (attention 4 D^2, MLP 2 r D^2), plus the decoder's."""
    dims, depths = _entries(arch.get("embed_dim") or 0), _entries(arch.get("depth") or 0)
    ratios = _entries(arch.get("mlp_ratio") or 4.0)
    ratios = ratios * len(dims) if len(ratios) == 1 else ratios
    total = sum(int(n) * (4 + 2 * float(r)) * int(d) ** 2 for d, n, r in zip(dims, depths, ratios))
    dec = arch.get("decoder_embed_dim")
    if dec:
        total += int(arch.get("decoder_depth") or 0) * (4 + 2 * float(ratios[-1])) * int(dec) ** 2
    return int(total)


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no estimate
        return None


def check_param_memory(name: str, arch: dict[str, Any]) -> None:
    """Refuse ``arch`` when its float32 parameters alone would not fit in this machine's memory.

    Raises:
        ConfigError: naming the estimate, the memory and the arguments that make it.
    """
    need, have = estimate_params(arch) * 4, _machine_memory()
    if have and need > have:
        shown = ", ".join(f"{k}={arch[k]}" for k in ("depth", "embed_dim", "decoder_depth", "decoder_embed_dim")
                          if arch.get(k) is not None)
        raise ConfigError(f"{name}: {shown} makes about {need / 4e9:.0f} billion parameters ({need / 1e9:.0f} GB "
                          f"in float32), more than this machine's {have / 1e9:.0f} GB of memory")
