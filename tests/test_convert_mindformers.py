"""MindFormers / MindSpore ``.ckpt`` files (docs/REFERENCE_RECIPES.md D.5).

The test writer and reader use the ``protobuf`` package with a descriptor built here from the
``checkpoint.proto`` schema, and a name table written here from D.5 -- independent of
maekit's own wire codec and mapping. Files are laid out as MindSpore writes them: one
serialized ``Checkpoint`` message per slice, appended.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import maekit
from maekit.convert import ConversionError, convert, detect_format, load_state_dict, save_state_dict

pb = pytest.importorskip("google.protobuf")
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

TINY = dict(img_size=32, patch_size=8, depth=2)
NP_TYPES = {"Float32": np.float32, "Float16": np.float16, "Int32": np.int32, "Int64": np.int64}


def _checkpoint_class():
    f = descriptor_pb2.FileDescriptorProto(name="ms_checkpoint_test.proto", package="mstest", syntax="proto2")
    t = f.message_type.add(name="TensorProto")
    lab, typ = descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto
    t.field.add(name="dims", number=1, label=lab.LABEL_REPEATED, type=typ.TYPE_INT64)
    t.field.add(name="tensor_type", number=2, label=lab.LABEL_REQUIRED, type=typ.TYPE_STRING)
    t.field.add(name="tensor_content", number=3, label=lab.LABEL_REQUIRED, type=typ.TYPE_BYTES)
    m = f.message_type.add(name="MapTensorProto")
    m.field.add(
        name="tensor",
        number=1,
        label=lab.LABEL_REPEATED,
        type=typ.TYPE_MESSAGE,
        type_name=".mstest.TensorProto",
    )
    c = f.message_type.add(name="Checkpoint")
    v = c.nested_type.add(name="Value")
    v.oneof_decl.add(name="value")
    v.field.add(name="tag", number=1, label=lab.LABEL_REQUIRED, type=typ.TYPE_STRING)
    v.field.add(
        name="tensor",
        number=2,
        label=lab.LABEL_OPTIONAL,
        type=typ.TYPE_MESSAGE,
        type_name=".mstest.TensorProto",
        oneof_index=0,
    )
    v.field.add(
        name="maptensor",
        number=3,
        label=lab.LABEL_OPTIONAL,
        type=typ.TYPE_MESSAGE,
        type_name=".mstest.MapTensorProto",
        oneof_index=0,
    )
    c.field.add(
        name="value",
        number=1,
        label=lab.LABEL_REPEATED,
        type=typ.TYPE_MESSAGE,
        type_name=".mstest.Checkpoint.Value",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mstest.Checkpoint"))


Checkpoint = _checkpoint_class()


def _mf_entries(sd: dict) -> list[tuple[str, np.ndarray]]:
    """Official -> MindFormers names and layouts, straight from the D.5 table."""
    out = []
    root = {
        "cls_token": "vit.cls_tokens",
        "pos_embed": "vit.pos_embed",
        "mask_token": "mask_tokens",
        "norm.weight": "vit.norm.gamma",
        "norm.bias": "vit.norm.beta",
        "fc_norm.weight": "vit.fc_norm.gamma",
        "fc_norm.bias": "vit.fc_norm.beta",
        "decoder_norm.weight": "decoder_norm.gamma",
        "decoder_norm.bias": "decoder_norm.beta",
    }
    sub = {
        "norm1.weight": "layernorm1.gamma",
        "norm1.bias": "layernorm1.beta",
        "norm2.weight": "layernorm2.gamma",
        "norm2.bias": "layernorm2.beta",
        "attn.proj.weight": "attention.projection.weight",
        "attn.proj.bias": "attention.projection.bias",
        "mlp.fc1.weight": "output.mapping.weight",
        "mlp.fc1.bias": "output.mapping.bias",
        "mlp.fc2.weight": "output.projection.weight",
        "mlp.fc2.bias": "output.projection.bias",
    }
    for k, v in sd.items():
        a = v.numpy()
        if k in root:
            out.append((root[k], a))
        elif k.startswith(("patch_embed.",)):
            out.append(("vit." + k, a))
        elif k.startswith(("blocks.", "decoder_blocks.")):
            group, i, rest = k.split(".", 2)
            base = f"vit.blocks.{i}" if group == "blocks" else f"decoder_blocks.{i}"
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for j, part in enumerate(np.split(a, 3, axis=0), 1):
                    out.append((f"{base}.attention.dense{j}.{kind}", part))
            else:
                out.append(
                    (
                        f"{base}.{sub[rest]}",
                        a.T if rest.endswith(("proj.weight", "fc1.weight", "fc2.weight")) else a,
                    )
                )
        else:  # decoder_pos_embed, decoder_embed.*, decoder_pred.*, head.*
            out.append((k, a))
    return out


def _type_name(a: np.ndarray) -> str:
    return {np.float32: "Float32", np.float16: "Float16", np.int32: "Int32", np.int64: "Int64"}[a.dtype.type]


def _write_ckpt(path, entries, slices: dict | None = None, bf16: set | None = None) -> None:
    """One Checkpoint message per slice (MindSpore's layout); ``slices[name]`` splits a tensor."""
    with open(path, "wb") as f:
        for name, a in entries:
            a = np.ascontiguousarray(a)
            if bf16 and name in bf16:
                content = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
                ttype, pieces = "BFloat16", [content]
            else:
                ttype = _type_name(a)
                flat = a.reshape(-1)
                pieces = [p.tobytes() for p in np.array_split(flat, (slices or {}).get(name, 1))]
            for piece in pieces:
                msg = Checkpoint()
                value = msg.value.add()
                value.tag = name
                value.tensor.dims.extend(a.shape)
                value.tensor.tensor_type = ttype
                value.tensor.tensor_content = piece
                f.write(msg.SerializeToString())


def _read_ckpt(path) -> dict[str, tuple[list, str, bytes, int]]:
    msg = Checkpoint()
    msg.ParseFromString(open(path, "rb").read())
    out: dict = {}
    for v in msg.value:
        if v.tag in out:
            dims, ttype, content, n = out[v.tag]
            out[v.tag] = (dims, ttype, content + v.tensor.tensor_content, n + 1)
        else:
            out[v.tag] = (list(v.tensor.dims), v.tensor.tensor_type, v.tensor.tensor_content, 1)
    return out


def _mae():
    torch.manual_seed(0)
    m = maekit.create_model("mae_vit_tiny_patch16", **TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def _same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_read_mindformers_file_with_optimizer_and_slices(tmp_path):
    sd = _mae().state_dict()
    entries = _mf_entries(sd)
    names = [n for n, _ in entries]
    extra = (
        [(f"adam_m.{n}", np.zeros_like(a)) for n, a in entries[:4]]
        + [(f"adam_v.{n}", np.ones_like(a)) for n, a in entries[:4]]
        + [
            ("global_step", np.array([1000], np.int32)),
            ("learning_rate", np.array([1e-4], np.float32)),
            ("epoch_num", np.array([800], np.int32)),
            ("step_num", np.array([5], np.int64)),
            ("loss_scale", np.array([1024.0], np.float32)),
        ]
    )
    path = tmp_path / "mindformers_rank_0-800_5.ckpt"
    _write_ckpt(
        path, entries + extra, slices={"vit.blocks.0.output.mapping.weight": 3, "decoder_pred.weight": 2}
    )
    assert len(names) == len(set(names))
    assert detect_format(path) == "mindformers"
    _same(load_state_dict(path), sd)
    report = convert(path, tmp_path / "out")
    assert any("optimizer" in n for n in report.notes)


def test_read_dtypes(tmp_path):
    sd = {k: v.half() if k.startswith("blocks.0.") else v for k, v in _mae().state_dict().items()}
    entries = _mf_entries(sd)
    bf16 = {
        "vit.blocks.1.attention.dense1.weight",
        "vit.blocks.1.attention.dense2.weight",
        "vit.blocks.1.attention.dense3.weight",
    }
    _write_ckpt(tmp_path / "m.ckpt", entries, bf16=bf16)
    back = load_state_dict(tmp_path / "m.ckpt")
    assert back["blocks.0.attn.qkv.weight"].dtype == torch.float16
    assert torch.equal(back["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])
    assert back["blocks.1.attn.qkv.weight"].dtype == torch.bfloat16
    assert torch.equal(back["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"].bfloat16())


def test_official_converter_quirks(tmp_path):
    """The official converter prefixes every key with ``vit.``; the pos table may be named
    ``sincos_pos_embedding`` or missing (it is fixed and recomputed)."""
    model = maekit.create_model("mae_vit_tiny_patch16", **TINY)
    sd = model.state_dict()
    entries = []
    for name, a in _mf_entries(sd):
        if name == "decoder_pos_embed":
            continue
        if name == "vit.pos_embed":
            name = "sincos_pos_embedding"
        elif not name.startswith("vit."):
            name = "vit." + name if name != "head.weight" else name
        entries.append((name, a))
    _write_ckpt(tmp_path / "q.ckpt", entries)
    back = load_state_dict(tmp_path / "q.ckpt")
    assert "decoder_pos_embed" not in back and torch.equal(back["pos_embed"], sd["pos_embed"])
    report = convert(tmp_path / "q.ckpt", tmp_path / "out")
    assert any("decoder_pos_embed" in n for n in report.notes)
    _same(load_state_dict(tmp_path / "out"), sd)


def test_our_writer_follows_the_format(tmp_path):
    sd = _mae().state_dict()
    path = save_state_dict(sd, tmp_path / "m.ckpt", "mindformers")
    got = _read_ckpt(path)
    expected = _mf_entries(sd)
    assert list(got) == [n for n, _ in expected]
    for name, a in expected:
        dims, ttype, content, _ = got[name]
        assert dims == list(a.shape) and ttype == "Float32"
        assert np.array_equal(np.frombuffer(content, np.float32).reshape(a.shape), a), name


def test_our_writer_splits_large_tensors(tmp_path):
    from maekit.convert import mindformers

    sd = _mae().state_dict()
    path = mindformers.write(sd, tmp_path / "s.ckpt", slice_bytes=10_000)
    got = _read_ckpt(path)
    dims, _, content, n = got["vit.blocks.0.output.mapping.weight"]
    assert n == math.ceil(192 * 768 * 4 / 10_000) and dims == [192, 768]
    _same(load_state_dict(path), sd)


def test_classifier_names(tmp_path):
    torch.manual_seed(0)
    vit = maekit.create_model("vit_tiny_patch16", num_classes=6, **TINY)
    entries = _mf_entries(vit.state_dict())
    assert ("vit.fc_norm.gamma" in [n for n, _ in entries]) and ("head.weight" in [n for n, _ in entries])
    _write_ckpt(tmp_path / "vit_base_p16.ckpt", entries)
    report = convert(tmp_path / "vit_base_p16.ckpt", tmp_path / "out")
    assert report.model_name == "vit_tiny_patch16" and report.model_args["num_classes"] == 6
    _same(load_state_dict(tmp_path / "out"), vit.state_dict())


def test_bad_mindformers_files(tmp_path):
    sd = _mae().state_dict()
    _write_ckpt(tmp_path / "m.ckpt", _mf_entries(sd))
    data = (tmp_path / "m.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ConversionError, match="cut.ckpt.*(truncated|corrupted)"):
        load_state_dict(tmp_path / "cut.ckpt")
    # a dims / content disagreement
    msg = Checkpoint()
    v = msg.value.add()
    v.tag, v.tensor.tensor_type, v.tensor.tensor_content = "vit.cls_tokens", "Float32", b"\0" * 12
    v.tensor.dims.extend([1, 1, 4])
    (tmp_path / "bad.ckpt").write_bytes(msg.SerializeToString())
    with pytest.raises(ConversionError, match="bytes of content"):
        load_state_dict(tmp_path / "bad.ckpt")
    # a valid checkpoint of something else
    _write_ckpt(tmp_path / "other.ckpt", [("conv1.weight", np.zeros((2, 2), np.float32))])
    with pytest.raises(ConversionError, match="no MindFormers MAE"):
        load_state_dict(tmp_path / "other.ckpt")
