"""PASSL / PaddlePaddle files (docs/REFERENCE_RECIPES.md D.4) written here the way ``paddle.save`` writes them.

The writers below use ``pickle`` and NumPy only (no maekit code): a plain ``.pdparams`` state
dict with ``StructuredToParameterName@@``, PASSL training checkpoints whose tensors pickle as
``(name, ndarray)`` tuples through ``builtins.tuple`` (Paddle's ``reduce_varbase``), LoDTensors
through ``eval('data', {'data': a})``, and NumPy 1.x files whose globals say ``numpy.core``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import pickletools

import numpy as np
import pytest
import torch

import maekit
from maekit.convert import ConversionError, convert, detect_format, load_state_dict, save_state_dict

TINY = dict(img_size=32, patch_size=8, depth=2)


def _sd():
    torch.manual_seed(0)
    return maekit.create_model("mae_vit_tiny_patch16", **TINY).state_dict()


def _paddle_arrays(sd: dict) -> dict:
    """Official -> Paddle layout, written independently of maekit: 2-D transposed, BN renamed."""
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = k.replace(".running_mean", "._mean").replace(".running_var", "._variance")
        a = v.numpy()
        out[k] = np.ascontiguousarray(a.T) if a.ndim == 2 else a.copy()
    return out


class _PaddleTensor:
    """Pickles like a Paddle eager tensor in a nested object: ``tuple((name, ndarray))``."""

    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, array

    def __reduce__(self):
        return (tuple, ((self.name, self.array),))


class _LoDTensor:
    """Pickles like a Paddle LoDTensor: ``eval('data', {'data': ndarray})``."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        return (eval, ("data", {"data": self.array}))


class _NumPy1Pickler(pickle._Pickler):
    """Writes the globals a NumPy 1.x interpreter writes (``numpy.core.*``), framing intact."""

    def save_global(self, obj, name=None):
        name = name or getattr(obj, "__qualname__", None) or obj.__name__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.save(module)
        self.save(name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def _numpy1_dumps(obj) -> bytes:
    import io

    buf = io.BytesIO()
    _NumPy1Pickler(buf, protocol=4).dump(obj)
    return buf.getvalue()


def _globals(data: bytes) -> set[str]:
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            out.add(arg.replace(" ", "."))
    return out


def _same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_plain_pdparams(tmp_path):
    sd = _sd()
    arrays = _paddle_arrays(sd)
    obj = {**arrays, "StructuredToParameterName@@": {k: f"param_{i}" for i, k in enumerate(arrays)}}
    (tmp_path / "m.pdparams").write_bytes(pickle.dumps(obj, protocol=4))
    assert detect_format(tmp_path / "m.pdparams") == "passl"
    _same(load_state_dict(tmp_path / "m.pdparams"), sd)


def test_training_checkpoint_with_tuple_tensors(tmp_path):
    sd = _sd()
    arrays = _paddle_arrays(sd)
    model = {k: _PaddleTensor(f"create_parameter_{i}.w_0", a) for i, (k, a) in enumerate(arrays.items())}
    optimizer = {
        "state": {
            k: {"step": 10, "exp_avg": _PaddleTensor(f"m_{k}", np.zeros_like(a))}
            for k, a in list(arrays.items())[:3]
        },
        "param_groups": [{"lr": 1e-3, "params": list(arrays)}],
    }
    ckpt = {
        "model": model,
        "optimizer": optimizer,
        "epoch": 1599,
        "scaler": {"scale": 1024.0},
        "args": argparse.Namespace(model="mae_vit_tiny_patch16", norm_pix_loss=True, input_size=32),
    }
    data = pickle.dumps(ckpt, protocol=4)
    assert "builtins.tuple" in _globals(data)
    (tmp_path / "checkpoint-1599.pd").write_bytes(data)
    _same(load_state_dict(tmp_path / "checkpoint-1599.pd"), sd)
    report = convert(tmp_path / "checkpoint-1599.pd", tmp_path / "out")
    assert report.model_args["norm_pix_loss"] is True  # from the checkpoint's args


def test_numpy1_globals_load_under_numpy2(tmp_path):
    sd = _sd()
    data = _numpy1_dumps({"model": _paddle_arrays(sd)})
    names = _globals(data)
    assert "numpy.core.multiarray._reconstruct" in names
    assert not any(n.startswith("numpy._core") for n in names)
    (tmp_path / "old.pd").write_bytes(data)
    _same(load_state_dict(tmp_path / "old.pd"), sd)


def test_lodtensor_reduction(tmp_path):
    sd = _sd()
    arrays = _paddle_arrays(sd)
    data = pickle.dumps({"model": {k: _LoDTensor(a) for k, a in arrays.items()}, "epoch": 3}, protocol=4)
    assert "builtins.eval" in _globals(data)
    (tmp_path / "lod.pd").write_bytes(data)
    _same(load_state_dict(tmp_path / "lod.pd"), sd)


def test_linprobe_batchnorm_names(tmp_path):
    torch.manual_seed(0)
    vit = maekit.create_model("vit_tiny_patch16", num_classes=4, global_pool=False, **TINY)
    sd = {k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}
    d = vit.embed_dim
    sd.update(
        {
            "head.0.running_mean": torch.randn(d),
            "head.0.running_var": torch.rand(d),
            "head.0.num_batches_tracked": torch.tensor(0),
            "head.1.weight": torch.randn(4, d),
            "head.1.bias": torch.randn(4),
        }
    )
    arrays = _paddle_arrays(sd)
    arrays["head.0.weight"] = np.ones(d, np.float32)  # BatchNorm1D(weight_attr=False) still stores them
    arrays["head.0.bias"] = np.zeros(d, np.float32)
    (tmp_path / "lin.pdparams").write_bytes(pickle.dumps(arrays, protocol=4))
    _same(load_state_dict(tmp_path / "lin.pdparams"), sd)


def test_our_writer_matches_paddle_layout(tmp_path):
    sd = _sd()
    path = save_state_dict(sd, tmp_path / "m.pdparams", "passl")
    data = path.read_bytes()
    assert data[:2] == b"\x80\x04"  # protocol 4, as paddle.save
    obj = pickle.loads(data)
    structured = obj.pop("StructuredToParameterName@@")
    assert sorted(structured) == sorted(obj)
    expected = _paddle_arrays(sd)
    assert sorted(obj) == sorted(expected)
    for k in obj:
        assert isinstance(obj[k], np.ndarray) and obj[k].dtype == expected[k].dtype
        assert np.array_equal(obj[k], expected[k]), k
    assert obj["blocks.0.attn.qkv.weight"].shape == (192, 576)  # [in, out]
    pd = pickle.loads(save_state_dict(sd, tmp_path / "m.pd", "passl").read_bytes())
    assert list(pd) == ["model"] and sorted(pd["model"]) == sorted(expected)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"
    arrays = _paddle_arrays(_sd())
    (tmp_path / "evil.pd").write_bytes(pickle.dumps({"model": arrays, "x": _Evil(marker)}, protocol=4))
    with pytest.raises(ConversionError, match="not allowed"):
        load_state_dict(tmp_path / "evil.pd")
    assert not marker.exists()
    bad_eval = pickle.dumps(
        {"model": arrays, "x": type("E", (), {"__reduce__": lambda s: (eval, ("1+1",))})()}, protocol=4
    )
    (tmp_path / "eval.pd").write_bytes(bad_eval)
    with pytest.raises(ConversionError, match="eval"):
        load_state_dict(tmp_path / "eval.pd")


def test_bad_passl_files(tmp_path):
    data = pickle.dumps(_paddle_arrays(_sd()), protocol=4)
    (tmp_path / "cut.pdparams").write_bytes(data[: len(data) // 3])
    with pytest.raises(ConversionError, match="cut.pdparams.*(truncated|corrupted)"):
        load_state_dict(tmp_path / "cut.pdparams")
    (tmp_path / "list.pd").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(ConversionError, match="no state dict"):
        load_state_dict(tmp_path / "list.pd")
    (tmp_path / "str.pd").write_bytes(pickle.dumps({"model": {"a": "text"}}, protocol=4))
    with pytest.raises(ConversionError, match="not an array"):
        load_state_dict(tmp_path / "str.pd")
