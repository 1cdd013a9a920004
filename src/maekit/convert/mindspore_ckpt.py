"""MindSpore ``.ckpt`` files: a small protobuf wire-format codec (docs/REFERENCE_RECIPES.md D.5), no MindSpore.

File format: the protobuf (proto2) message ``Checkpoint { repeated Value value = 1; }`` with
``Value { required string tag = 1; oneof value { TensorProto tensor = 2; MapTensorProto
maptensor = 3; } }`` and ``TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
required bytes tensor_content = 3; }``. Contents are raw little-endian C-order bytes. MindSpore
writes one ``Checkpoint`` message per slice and appends them, so a big tensor may appear as
several values with the same tag whose contents concatenate (the dims are the full tensor's).
Read and written here with a small wire-format codec: no code from the file runs.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..fileio import atomic_write
from ._util import describe_keys
from .errors import ConversionError

DTYPES: dict[str, torch.dtype] = {n: getattr(torch, n.lower()) for n in (  # Float32 -> torch.float32...
    "Float32", "Float16", "BFloat16", "Float64", "Int8", "Int16", "Int32", "Int64", "UInt8", "Bool")}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
SLICE_BYTES = 512 * 1024 * 1024  # MindSpore's slice size


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
    """(field number, wire type, value) where LEN and fixed-size values are (start, stop) offsets."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Corrupt("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
            continue
        if wire not in (1, 2, 5):
            raise _Corrupt(f"unsupported wire type {wire}")
        n, pos = _varint(buf, pos, end) if wire == 2 else (8 if wire == 1 else 4, pos)
        if pos + n > end:
            raise _Corrupt(f"a field of {n} bytes runs past the end of its message")
        yield field, wire, (pos, pos + n)
        pos += n


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _key(field: int, wire: int) -> bytes:
    return _enc_varint(field << 3 | wire)


def looks_like_ckpt(head: bytes) -> bool:
    """Whether the first bytes of a file read as ``0x0a len (0x0a taglen tag ...)``: a Checkpoint
    whose first value has a UTF-8 ``tag`` (how ``detect_format`` recognises MindSpore files)."""
    try:
        _, i = _varint(head, 1, len(head))
        n, j = _varint(head, i + 1, len(head))
        tag = head[j : j + n]
        return head[0] == head[i] == 0x0A and 0 < n <= 1024 and (len(tag) < n or bool(tag.decode("utf-8")))
    except (IndexError, UnicodeDecodeError, _Corrupt):
        return False


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


def _message(buf, span: tuple[int, int]) -> dict[tuple[int, int], list]:
    """A message's values by (field number, wire type), in order."""
    out: dict[tuple[int, int], list] = {}
    for field, wire, value in _fields(buf, *span):
        out.setdefault((field, wire), []).append(value)
    return out


def _value(buf, value) -> tuple[str, tuple[int, int] | None, bool]:
    """One ``Checkpoint.value``: (tag, tensor span or None, is a map tensor)."""
    m = _message(buf, value)
    if (1, 2) not in m:
        raise _Corrupt("a value without a tag")
    try:
        tag = bytes(buf[slice(*m[(1, 2)][-1])]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt("a tag that is not UTF-8") from None
    return tag, m.get((2, 2), [None])[-1], any(f == 3 for f, _ in m)


def _tensor_fields(buf, tensor: tuple[int, int], tag: str) -> tuple[list[int], str, tuple[int, int]]:
    """A ``TensorProto``: (dims, tensor_type, content span)."""
    m = _message(buf, tensor)
    dims = list(m.get((1, 0), []))
    for p, e in m.get((1, 2), []):  # packed
        while p < e:
            d, p = _varint(buf, p, e)
            dims.append(d)
    if (2, 2) not in m or (3, 2) not in m:
        raise _Corrupt(f"tensor {tag!r} lacks its type or content")
    ttype = bytes(buf[slice(*m[(2, 2)][-1])]).decode("utf-8", "replace")
    return [d - (1 << 64) if d >= 1 << 63 else d for d in dims], ttype, m[(3, 2)][-1]


def _assemble(buf, tag: str, e: dict, dtype: torch.dtype) -> torch.Tensor:
    """The slices of one tensor joined and shaped (their byte count checked against the dims)."""
    if any(d < 0 for d in e["dims"]):
        raise _Corrupt(f"tensor {tag!r} has negative dims {e['dims']}")
    data = bytearray().join(bytes(buf[s:t]) for s, t in e["chunks"])
    nbytes = math.prod(e["dims"]) * dtype.itemsize
    if len(data) != nbytes:
        raise _Corrupt(f"tensor {tag!r} has {len(data)} bytes of content for dims {e['dims']} of "
                       f"{e['type']} ({nbytes} expected)")
    t = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
    return t.reshape(e["dims"])


def _parse(buf, size: int, path) -> tuple[dict[str, torch.Tensor], list[str]]:
    parts: dict[str, dict] = {}
    notes: list[str] = []
    skipped_maps = []
    for field, wire, value in _fields(buf, 0, size):
        if field != 1 or wire != 2:
            raise _Corrupt(f"top-level field {field} (wire type {wire}); a Checkpoint only has field 1")
        tag, tensor, is_map = _value(buf, value)
        if is_map and tensor is None:
            skipped_maps.append(tag)
            continue
        if tensor is None:
            raise _Corrupt(f"value {tag!r} holds no tensor")
        dims, ttype, content = _tensor_fields(buf, tensor, tag)
        entry = parts.setdefault(tag, {"dims": dims, "type": ttype, "chunks": []})
        if entry["type"] != ttype:
            raise _Corrupt(f"slices of {tag!r} have different types")
        entry["chunks"].append(content)
    if skipped_maps:
        notes.append("skipped map tensors: " + describe_keys(skipped_maps))
    out = {tag: _assemble(buf, tag, e, DTYPES[e["type"]]) for tag, e in parts.items() if e["type"] in DTYPES}
    other = [f"{tag} ({e['type']})" for tag, e in parts.items() if e["type"] not in DTYPES]
    if other:
        notes.append("skipped entries of non-tensor types: " + describe_keys(other))
    return out, notes


def write_entries(entries: list[tuple[str, torch.Tensor]], dst: str | os.PathLike,
                  slice_bytes: int = SLICE_BYTES) -> Path:
    """Write ``[(tag, tensor)]`` as MindSpore does: one Checkpoint message per slice."""

    def field(number: int, size: int) -> bytes:  # the key and length of a LEN field
        return _key(number, 2) + _enc_varint(size)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            for tag, t in entries:
                dtype_name = DTYPE_NAMES.get(t.dtype)
                if dtype_name is None:
                    raise ConversionError(f"{tag}: dtype {t.dtype} has no MindSpore checkpoint type", dst)
                flat = t.detach().cpu().contiguous().reshape(-1)
                raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
                n_slices = max(1, math.ceil(raw.numel() / slice_bytes))
                per = math.ceil(flat.numel() / n_slices) * t.element_size() if flat.numel() else 0
                head = b"".join(_key(1, 0) + _enc_varint(d) for d in t.shape)
                head += field(2, len(dtype_name)) + dtype_name.encode()
                tag_b = tag.encode("utf-8")
                for i in range(n_slices):
                    chunk = raw[i * per : (i + 1) * per].numpy() if per else raw.numpy()
                    tensor = head + field(3, chunk.nbytes)
                    value = field(1, len(tag_b)) + tag_b + field(2, len(tensor) + chunk.nbytes)
                    f.write(field(1, len(value) + len(tensor) + chunk.nbytes) + value + tensor)
                    f.write(memoryview(chunk))

    return atomic_write(dst, write)
