"""MindSpore / MindFormers ``.ckpt`` files (REFERENCES D.5) without MindSpore.

File format: the protobuf (proto2) message ``Checkpoint { repeated Value value = 1; }`` with
``Value { required string tag = 1; oneof value { TensorProto tensor = 2; MapTensorProto
maptensor = 3; } }`` and ``TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
required bytes tensor_content = 3; }``. Contents are raw little-endian C-order bytes. MindSpore
writes one ``Checkpoint`` message per slice and appends them, so a big tensor may appear as
several values with the same tag whose contents concatenate (the dims are the full tensor's).
Read and written here with a small wire-format codec: no code from the file runs.

Names and layouts (MAE pretraining model and ViT classifier):

========================================  =================================================  ==========
official                                   MindFormers                                         layout
========================================  =================================================  ==========
cls_token / pos_embed                      vit.cls_tokens / vit.pos_embed                      same
patch_embed.proj.*                         vit.patch_embed.proj.*                              same
blocks.i.norm1 / norm2 .weight/.bias       vit.blocks.i.layernorm1 / layernorm2 .gamma/.beta   same
blocks.i.attn.qkv.weight/.bias [3D, D]     vit.blocks.i.attention.dense1/2/3 .weight/.bias     split rows
blocks.i.attn.proj.weight                  vit.blocks.i.attention.projection.weight            transposed
blocks.i.mlp.fc1.weight / fc2.weight       vit.blocks.i.output.mapping / projection .weight     transposed
norm, fc_norm .weight/.bias                vit.norm, vit.fc_norm .gamma/.beta                  same
head.*                                     head.*                                              same
mask_token / decoder_pos_embed             mask_tokens / decoder_pos_embed                     same
decoder_embed.* / decoder_pred.*           decoder_embed.* / decoder_pred.*                    same
decoder_blocks.j.*                         decoder_blocks.j.* (sub-names as the encoder)       as encoder
decoder_norm.weight/.bias                  decoder_norm.gamma/.beta                            same
========================================  =================================================  ==========

Read tolerantly: decoder names with the ``vit.`` prefix the official converter emits
(``vit.decoder_*``, ``vit.mask_tokens``), an encoder table named ``sincos_pos_embedding``, and
absent fixed tables (refilled by the caller). Optimizer moments (``adam_m.``, ``adam_v.``, ...)
and bookkeeping scalars (``global_step``, ``learning_rate``, ...) are skipped.
"""

from __future__ import annotations

import math
import mmap
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from ._util import atomic_write_file, describe_keys, plain_tensors
from .base import Loaded
from .errors import ConversionError

DTYPES: dict[str, torch.dtype] = {
    "Float32": torch.float32,
    "Float16": torch.float16,
    "BFloat16": torch.bfloat16,
    "Float64": torch.float64,
    "Int8": torch.int8,
    "Int16": torch.int16,
    "Int32": torch.int32,
    "Int64": torch.int64,
    "UInt8": torch.uint8,
    "Bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
SLICE_BYTES = 512 * 1024 * 1024  # MindSpore's slice size

OPTIMIZER_PREFIXES = (
    "adam_m.",
    "adam_v.",
    "moment1.",
    "moment2.",
    "moments.",
    "accu_grads.",
    "accum_grads.",
    "global_norm",
    "scale_sense",
    "optimizer.",
)
BOOKKEEPING = {
    "global_step",
    "learning_rate",
    "epoch_num",
    "step_num",
    "loss_scale",
    "current_iterator_step",
    "last_overflow_iterator_step",
    "beta1_power",
    "beta2_power",
    "cur_step",
    "weight_decay",
    "scale_sense",
    "current_epoch",
    "current_step",
}


class _Corrupt(Exception):
    pass


# ------------------------------------------------------------------------ wire format
def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("varint longer than 10 bytes")


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) where LEN values are (start, stop) offsets."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Corrupt("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Corrupt(f"a field of {n} bytes runs past the end of its message")
            yield field, wire, (pos, pos + n)
            pos += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Corrupt("truncated fixed-size field")
            yield field, wire, bytes(buf[pos : pos + size])
            pos += size
        else:
            raise _Corrupt(f"unsupported wire type {wire}")


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _enc_varint(field << 3 | wire)


# ------------------------------------------------------------------------ raw entries
def read_entries(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """All tensor entries of a ``.ckpt`` as {tag: tensor} (slices joined), plus notes."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ConversionError(f"cannot read ({e.strerror or e})", path) from e
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise ConversionError("empty file", path)
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return _parse(buf, size, path)
        except _Corrupt as e:
            raise ConversionError(f"truncated or corrupted MindSpore checkpoint ({e})", path) from None
        finally:
            buf.close()


def _parse(buf, size: int, path) -> tuple[dict[str, torch.Tensor], list[str]]:
    parts: dict[str, dict] = {}
    notes: list[str] = []
    skipped_maps = []
    for field, wire, value in _fields(buf, 0, size):
        if field != 1 or wire != 2:
            raise _Corrupt(f"top-level field {field} (wire type {wire}); a Checkpoint only has field 1")
        tag = tensor = None
        is_map = False
        vs, ve = value  # type: ignore[misc]
        for f2, w2, v2 in _fields(buf, vs, ve):
            if f2 == 1 and w2 == 2:
                try:
                    tag = bytes(buf[v2[0] : v2[1]]).decode("utf-8")
                except UnicodeDecodeError:
                    raise _Corrupt("a tag that is not UTF-8") from None
            elif f2 == 2 and w2 == 2:
                tensor = v2
            elif f2 == 3:
                is_map = True
        if tag is None:
            raise _Corrupt("a value without a tag")
        if is_map and tensor is None:
            skipped_maps.append(tag)
            continue
        if tensor is None:
            raise _Corrupt(f"value {tag!r} holds no tensor")
        dims: list[int] = []
        ttype = None
        content = None
        for f3, w3, v3 in _fields(buf, *tensor):
            if f3 == 1 and w3 == 0:
                dims.append(v3)  # type: ignore[arg-type]
            elif f3 == 1 and w3 == 2:  # packed
                p, e = v3  # type: ignore[misc]
                while p < e:
                    d, p = _varint(buf, p, e)
                    dims.append(d)
            elif f3 == 2 and w3 == 2:
                ttype = bytes(buf[v3[0] : v3[1]]).decode("utf-8", "replace")
            elif f3 == 3 and w3 == 2:
                content = v3
        if ttype is None or content is None:
            raise _Corrupt(f"tensor {tag!r} lacks its type or content")
        dims = [d - (1 << 64) if d >= 1 << 63 else d for d in dims]
        entry = parts.setdefault(tag, {"dims": dims, "type": ttype, "chunks": []})
        if entry["type"] != ttype:
            raise _Corrupt(f"slices of {tag!r} have different types")
        entry["chunks"].append(content)
    if skipped_maps:
        notes.append("skipped map tensors: " + describe_keys(skipped_maps))
    out: dict[str, torch.Tensor] = {}
    other_types = []
    for tag, e in parts.items():
        dtype = DTYPES.get(e["type"])
        if dtype is None:
            other_types.append(f"{tag} ({e['type']})")
            continue
        if any(d < 0 for d in e["dims"]):
            raise _Corrupt(f"tensor {tag!r} has negative dims {e['dims']}")
        data = bytearray().join(bytes(buf[s:t]) for s, t in e["chunks"])
        numel = math.prod(e["dims"])
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(data) != numel * itemsize:
            raise _Corrupt(
                f"tensor {tag!r} has {len(data)} bytes of content for dims {e['dims']} of "
                f"{e['type']} ({numel * itemsize} expected)"
            )
        t = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        out[tag] = t.reshape(e["dims"])
    if other_types:
        notes.append("skipped entries of non-tensor types: " + describe_keys(other_types))
    return out, notes


def write_entries(
    entries: list[tuple[str, torch.Tensor]], dst: str | os.PathLike, slice_bytes: int = SLICE_BYTES
) -> Path:
    """Write ``[(tag, tensor)]`` as MindSpore does: one Checkpoint message per slice."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            for tag, t in entries:
                dtype_name = DTYPE_NAMES.get(t.dtype)
                if dtype_name is None:
                    raise ConversionError(f"{tag}: dtype {t.dtype} has no MindSpore checkpoint type", dst)
                flat = t.detach().cpu().contiguous().reshape(-1)
                raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
                nbytes = raw.numel()
                n_slices = max(1, math.ceil(nbytes / slice_bytes))
                per = math.ceil(flat.numel() / n_slices) * t.element_size() if flat.numel() else 0
                head = b"".join(_key(1, 0) + _enc_varint(d) for d in t.shape)
                head += _key(2, 2) + _enc_varint(len(dtype_name)) + dtype_name.encode()
                tag_b = tag.encode("utf-8")
                for i in range(n_slices):
                    chunk = raw[i * per : (i + 1) * per].numpy() if per else raw.numpy()
                    tensor = head + _key(3, 2) + _enc_varint(chunk.nbytes)
                    tensor_len = len(tensor) + chunk.nbytes
                    value = (
                        _key(1, 2) + _enc_varint(len(tag_b)) + tag_b + _key(2, 2) + _enc_varint(tensor_len)
                    )
                    f.write(_key(1, 2) + _enc_varint(len(value) + tensor_len))
                    f.write(value)
                    f.write(tensor)
                    f.write(memoryview(chunk))

    return atomic_write_file(dst, write)


# ------------------------------------------------------------------------ names
_BLOCK_TO_MF = {
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
_BLOCK_FROM_MF = {v: k for k, v in _BLOCK_TO_MF.items()}
_TRANSPOSED = {"attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"}
_ROOT_TO_MF = {
    "cls_token": "vit.cls_tokens",
    "pos_embed": "vit.pos_embed",
    "patch_embed.proj.weight": "vit.patch_embed.proj.weight",
    "patch_embed.proj.bias": "vit.patch_embed.proj.bias",
    "norm.weight": "vit.norm.gamma",
    "norm.bias": "vit.norm.beta",
    "fc_norm.weight": "vit.fc_norm.gamma",
    "fc_norm.bias": "vit.fc_norm.beta",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
    "mask_token": "mask_tokens",
    "decoder_pos_embed": "decoder_pos_embed",
    "decoder_embed.weight": "decoder_embed.weight",
    "decoder_embed.bias": "decoder_embed.bias",
    "decoder_norm.weight": "decoder_norm.gamma",
    "decoder_norm.bias": "decoder_norm.beta",
    "decoder_pred.weight": "decoder_pred.weight",
    "decoder_pred.bias": "decoder_pred.bias",
}
_ROOT_FROM_MF = {v: k for k, v in _ROOT_TO_MF.items()}
_ROOT_FROM_MF.update({"sincos_pos_embedding": "pos_embed", "vit.sincos_pos_embedding": "pos_embed"})
_BLOCK_RE = re.compile(r"^(vit\.blocks|decoder_blocks)\.(\d+)\.(.+)$")
_OFFICIAL_BLOCK_RE = re.compile(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)$")
_QKV_RE = re.compile(r"^attention\.dense([123])\.(weight|bias)$")


def _is_bookkeeping(name: str) -> bool:
    return name in BOOKKEEPING or name.startswith(OPTIMIZER_PREFIXES)


def from_mindformers(
    entries: Mapping[str, torch.Tensor], path: str | os.PathLike = ""
) -> tuple[dict, list[str]]:
    """MindFormers names / layouts -> official."""
    sd: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    ignored, unknown = [], []
    for name, t in entries.items():
        if _is_bookkeeping(name):
            ignored.append(name)
            continue
        n = name
        if n.startswith("vit.") and n[4:].startswith(("decoder_", "mask_tokens")):
            n = n[4:]  # the official converter prefixes every key, decoder ones too
        m = _BLOCK_RE.match(n)
        if m:
            group, i, sub = m.groups()
            base = f"{'blocks' if group == 'vit.blocks' else 'decoder_blocks'}.{i}"
            q = _QKV_RE.match(sub)
            if q:
                qkv.setdefault((base, q.group(2)), {})[q.group(1)] = t
                continue
            if sub in _BLOCK_FROM_MF:
                off = _BLOCK_FROM_MF[sub]
                sd[f"{base}.{off}"] = t.t().contiguous() if off in _TRANSPOSED and t.ndim == 2 else t
                continue
        elif n in _ROOT_FROM_MF:
            sd[_ROOT_FROM_MF[n]] = t
            continue
        unknown.append(name)
    for (base, kind), parts in qkv.items():
        if sorted(parts) != ["1", "2", "3"]:
            raise ConversionError(
                f"{base}: attention.dense1/2/3.{kind} incomplete (found dense{''.join(sorted(parts))})", path
            )
        sd[f"{base}.attn.qkv.{kind}"] = torch.cat([parts["1"], parts["2"], parts["3"]], dim=0)
    if not sd:
        raise ConversionError(
            "no MindFormers MAE / ViT parameter in this checkpoint; entries: "
            + describe_keys(sorted(entries)),
            path,
        )
    notes = []
    if ignored:
        notes.append(f"skipped {len(ignored)} optimizer / bookkeeping entries ({describe_keys(ignored, 3)})")
    if unknown:
        notes.append(f"skipped {len(unknown)} unrecognised entries: {describe_keys(unknown)}")
    return sd, notes


def to_mindformers(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike = ""
) -> list[tuple[str, torch.Tensor]]:
    """Official names / layouts -> MindFormers (encoder and decoder)."""
    out: list[tuple[str, torch.Tensor]] = []
    bad = []
    for key, t in plain_tensors(sd).items():
        if key in _ROOT_TO_MF:
            out.append((_ROOT_TO_MF[key], t))
            continue
        m = _OFFICIAL_BLOCK_RE.match(key)
        if m:
            group, i, sub = m.groups()
            base = f"{'vit.blocks' if group == 'blocks' else 'decoder_blocks'}.{i}"
            if sub in ("attn.qkv.weight", "attn.qkv.bias"):
                kind = sub.rsplit(".", 1)[1]
                for j, part in enumerate(t.chunk(3, dim=0), start=1):
                    out.append((f"{base}.attention.dense{j}.{kind}", part.contiguous()))
                continue
            if sub in _BLOCK_TO_MF:
                out.append((f"{base}.{_BLOCK_TO_MF[sub]}", t.t().contiguous() if sub in _TRANSPOSED else t))
                continue
        bad.append(key)
    if bad:
        raise ConversionError(
            "the MindFormers format holds MAE / ViT models only; no MindFormers name for: "
            + describe_keys(bad),
            path,
        )
    return out


def read(path: str | os.PathLike) -> Loaded:
    entries, notes = read_entries(path)
    sd, more = from_mindformers(entries, path)
    return Loaded(sd, {}, notes + more)


def write(
    sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None, slice_bytes: int = SLICE_BYTES
) -> Path:
    return write_entries(to_mindformers(sd, dst), dst, slice_bytes)
