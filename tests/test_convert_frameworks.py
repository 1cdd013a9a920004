"""Files written / read by the real frameworks (skipped unless paddle / mindspore is installed).

maekit never needs these frameworks; these tests check our readers and writers against them
where they happen to be available.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import maekit
from maekit.convert import load_state_dict, save_state_dict

pytestmark = pytest.mark.framework
TINY = dict(img_size=32, patch_size=8, depth=2)


def _sd():
    torch.manual_seed(0)
    return maekit.create_model("mae_vit_tiny_patch16", **TINY).state_dict()


def _same(a, b):
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_paddle_written_files_read_by_maekit(tmp_path):
    paddle = pytest.importorskip("paddle")
    sd = _sd()
    tensors = {
        k: paddle.to_tensor(np.ascontiguousarray(v.numpy().T) if v.ndim == 2 else v.numpy())
        for k, v in sd.items()
    }
    paddle.save(
        tensors, str(tmp_path / "m.pdparams")
    )  # pure state dict: ndarrays + StructuredToParameterName@@
    _same(load_state_dict(tmp_path / "m.pdparams"), sd)
    ckpt = {"model": tensors, "epoch": 3, "args": argparse.Namespace(model="mae_vit_tiny_patch16")}
    paddle.save(ckpt, str(tmp_path / "checkpoint-3.pd"))  # nested: (name, ndarray) tuples
    _same(load_state_dict(tmp_path / "checkpoint-3.pd"), sd)


def test_maekit_written_files_read_by_paddle(tmp_path):
    paddle = pytest.importorskip("paddle")
    sd = _sd()
    loaded = paddle.load(str(save_state_dict(sd, tmp_path / "m.pdparams", "passl")))
    assert sorted(loaded) == sorted(sd)
    for k, v in sd.items():
        a = np.asarray(loaded[k])
        assert np.array_equal(a.T if a.ndim == 2 else a, v.numpy()), k
    nested = paddle.load(str(save_state_dict(sd, tmp_path / "m.pd", "passl")))
    assert sorted(nested["model"]) == sorted(sd)


def test_mindspore_written_files_read_by_maekit(tmp_path):
    ms = pytest.importorskip("mindspore")
    from maekit.convert.mindformers import to_mindformers

    sd = _sd()
    params = [{"name": n, "data": ms.Tensor(t.numpy())} for n, t in to_mindformers(sd)]
    params.append({"name": "global_step", "data": ms.Tensor(np.array([10], np.int32))})
    ms.save_checkpoint(params, str(tmp_path / "m.ckpt"))
    _same(load_state_dict(tmp_path / "m.ckpt"), sd)


def test_maekit_written_files_read_by_mindspore(tmp_path):
    ms = pytest.importorskip("mindspore")
    from maekit.convert.mindformers import to_mindformers

    sd = _sd()
    loaded = ms.load_checkpoint(str(save_state_dict(sd, tmp_path / "m.ckpt", "mindformers")))
    expected = dict(to_mindformers(sd))
    assert sorted(loaded) == sorted(expected)
    for k, t in expected.items():
        assert np.array_equal(loaded[k].asnumpy(), t.numpy()), k
