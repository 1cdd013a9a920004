"""PaddlePaddle / PASSL files (``.pd``, ``.pdparams``; docs/REFERENCE_RECIPES.md D.4) without Paddle.

A ``paddle.save`` file is a protocol-4 pickle of Python containers and NumPy arrays. It is read
with a restricted unpickler that admits only NumPy arrays / dtypes / scalars (the NumPy 1.x
``numpy.core`` and NumPy 2 ``numpy._core`` spellings), ``collections.OrderedDict``,
``argparse.Namespace`` and plain containers; any other global is refused, so no code from the
file ever runs. Paddle's ``eval('data', {'data': array})`` reduction of LoDTensors is served by a
stand-in that only returns that array.

Layouts read: a plain state dict ``{name: ndarray, 'StructuredToParameterName@@': {...}}``
(``.pdparams``), ``{'model': {name: ndarray}}`` (the R3' converter, PASSL ``--finetune`` input),
and PASSL training checkpoints where every tensor is a ``(paddle_name, ndarray)`` tuple and
``args`` is a Namespace. Layout rules: names are the official ones; 2-D arrays (all Linear
weights) are stored [in, out] and transposed; BatchNorm ``_mean`` / ``_variance`` are
``running_mean`` / ``running_var``; Paddle's frozen BatchNorm weight / bias (1 / 0) of the
linear-probe head have no PyTorch counterpart (``affine=False``).

Written: ``.pdparams`` -> the plain layout with ``StructuredToParameterName@@`` (what
``paddle.save(layer.state_dict())`` writes); ``.pd`` -> ``{'model': {...}}`` (what PASSL's
fine-tuning / linear-probing scripts read with ``checkpoint['model']``).
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write, plain_tensors
from ._util import describe_keys
from .base import Format, Loaded
from .errors import ConversionError
from .torchfile import checkpoint_facts

STRUCTURED_KEY = "StructuredToParameterName@@"


def _numpy_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    try:
        from numpy._core.numeric import _frombuffer  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.numeric import _frombuffer
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return table


def _paddle_eval(expr: Any, scope: Any = None, *_: Any) -> Any:
    """Stand-in for ``builtins.eval`` in Paddle's LoDTensor reduction ``(eval, ('data', {'data': a}))``:
    returns that array and refuses anything else (nothing is evaluated)."""
    if expr == "data" and isinstance(scope, dict) and isinstance(scope.get("data"), np.ndarray):
        return scope["data"]
    raise pickle.UnpicklingError(
        "the pickle calls builtins.eval with something other than Paddle's ('data', {'data': ndarray}) tensor reduction"
    )


_ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    **{("builtins", t.__name__): t for t in (tuple, list, dict, set, frozenset)},
    ("builtins", "eval"): _paddle_eval,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed (is this a PyTorch file? use --from official)")


def safe_unpickle(data: bytes, path: str | os.PathLike) -> Any:
    """Unpickle ``data`` admitting only NumPy arrays, containers and Namespace."""
    if not data:
        raise ConversionError("empty file", path)
    if data[:1] != b"\x80":
        raise ConversionError("not a pickle (PaddlePaddle .pd / .pdparams files are pickles)", path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "not allowed" in msg or "eval" in msg:
            raise ConversionError(f"refused to load: {msg}; a PASSL file holds only NumPy arrays and "
                                  "containers, and maekit never runs code from a file", path) from e
        raise ConversionError(f"truncated or corrupted pickle ({msg})", path) from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise ConversionError(f"truncated or corrupted pickle ({type(e).__name__}: {e})", path) from e


def _to_array(name: str, value: Any, path: str | os.PathLike) -> np.ndarray:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], np.ndarray):
        value = value[1]  # a Paddle tensor pickled as (internal_name, ndarray)
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise ConversionError(f"entry {name!r} is a {type(value).__name__}, not an array", path)
    if value.dtype.kind not in "biufc":  # object / string arrays hold no weights
        raise ConversionError(f"entry {name!r} is an array of {value.dtype} (not numbers): not a weights file", path)
    return value


_BN = {".running_mean": "._mean", ".running_var": "._variance"}  # BatchNorm statistics: official -> Paddle
_BN_BACK = {v: k for k, v in _BN.items()}


def _resuffix(key: str, table: dict[str, str]) -> str:
    """``key`` with the first suffix of ``table`` it ends with replaced."""
    return next((key[: -len(a)] + b for a, b in table.items() if key.endswith(a)), key)


def from_paddle(arrays: Mapping[str, Any], path: str | os.PathLike = "") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Paddle names / layouts -> official names / layouts."""
    sd: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for name, value in arrays.items():
        if name == STRUCTURED_KEY:
            continue
        a = _to_array(str(name), value, path)
        a = np.array(a.T if a.ndim == 2 else a, copy=True, order="C")
        # Paddle keeps bfloat16 as uint16 bits
        t = torch.from_numpy(a.view(np.int16) if a.dtype == np.uint16 else a)
        sd[_resuffix(str(name), _BN_BACK)] = t.view(torch.bfloat16) if a.dtype == np.uint16 else t
    for mean_key in [k for k in sd if k.endswith(".running_mean")]:
        bn = mean_key[: -len(".running_mean")]
        w, b = sd.get(f"{bn}.weight"), sd.get(f"{bn}.bias")
        if w is not None and b is not None and w.ndim == 1 and bool((w == 1).all()) and bool((b == 0).all()):
            del sd[f"{bn}.weight"], sd[f"{bn}.bias"]
            notes.append(f"{bn}: Paddle's frozen BatchNorm weight/bias (1/0) dropped (PyTorch: affine=False)")
        sd.setdefault(f"{bn}.num_batches_tracked", torch.tensor(0, dtype=torch.int64))
    return sd, notes


def to_paddle(sd: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Official names / layouts -> Paddle's."""
    out: dict[str, np.ndarray] = {}
    bns = {k[: -len(".running_mean")] for k in sd if k.endswith(".running_mean")}
    for key, t in plain_tensors(sd).items():
        if key.endswith(".num_batches_tracked"):
            continue
        key = _resuffix(key, _BN)
        a = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
        out[key] = np.ascontiguousarray(a.T) if a.ndim == 2 else a
    for bn in sorted(bns):  # Paddle BatchNorm1D(weight_attr=False, bias_attr=False) still stores them
        n = out[f"{bn}._mean"].shape[0]
        out.setdefault(f"{bn}.weight", np.ones(n, np.float32))
        out.setdefault(f"{bn}.bias", np.zeros(n, np.float32))
    return out


def read(path: str | os.PathLike) -> Loaded:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConversionError(f"cannot read ({e.strerror or e})", path) from e
    obj = safe_unpickle(data, path)
    hints, notes = checkpoint_facts(obj)
    arrays = obj["model"] if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(arrays, Mapping) or not [k for k in arrays if k != STRUCTURED_KEY]:
        raise ConversionError("no state dict found (expected a dict of arrays, or one under 'model')", path)
    bad = [str(k) for k in arrays if not isinstance(k, str)]
    if bad:
        raise ConversionError("not a state dict: non-string keys " + describe_keys(bad), path)
    sd, more = from_paddle(arrays, path)
    return Loaded(sd, hints, notes + more)


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None) -> tuple[Path, list[str]]:
    """``.pdparams``: plain state dict + ``StructuredToParameterName@@``; ``.pd``: ``{'model': ...}``."""
    arrays = to_paddle(sd)
    pd = Path(dst).suffix == ".pd"
    obj = {"model": arrays} if pd else {**arrays, STRUCTURED_KEY: {k: k for k in arrays}}
    return atomic_write(dst, lambda tmp: tmp.write_bytes(pickle.dumps(obj, protocol=4))), []


def sniff(path: Path, head: bytes) -> bool:
    """A plain pickle, protocol 2-5 (``paddle.save``; torch files were recognised before)."""
    return head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5


FORMAT = Format("passl", (".pdparams", ".pd"), folder=False, sniff=sniff, read=read, write=write, aliases=("paddle",))
