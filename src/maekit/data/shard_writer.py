"""``maekit shard``: write an image folder into WebDataset tar shards (webdataset's ``ShardWriter``).

Layouts of ``SRC`` (the ones ``--data_path`` reads as a folder):

- ``SRC/train/...`` and ``SRC/val/...``: each split is written to ``DST/train`` / ``DST/val``;
- class folders ``SRC/<class>/**/<image>``: samples get a ``.cls`` member (the class index, in
  sorted class-name order, as torchvision's ``ImageFolder`` numbers them);
- anything else (flat or nested folders without a class layout, or ``labelled=False``):
  unlabelled samples, image member only.

Each sample is the original file bytes under a sequential key (no re-encoding, so the pixels are
exactly the folder's), with the suffix lower-cased (``.JPEG`` -> ``.jpeg``). The sample order is
shuffled with ``seed`` before writing: class folders are sorted, and shards of one class each
would defeat the shuffle buffer. Next to the shards, ``shards.json`` (webdataset's ``wids``
index) lists every shard with its sample count and the class names, so a reader knows the epoch
length without scanning the shards.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path

from .datasets import ImageClassFolder, check_dir
from .images import find_images, is_image_file
from .shards import INDEX_NAME, webdataset_module, write_index

SHARD_PATTERN = "shard-%06d.tar"


def _layout(src: Path, labelled: bool | None) -> tuple[list[tuple[Path, int | None]], list[str] | None]:
    """([(image file, class index or None)], class names or None) of one folder."""
    classes = sorted(e.name for e in os.scandir(src) if e.is_dir() and not e.name.startswith("."))
    loose = any(p.is_file() and is_image_file(p.name) for p in src.iterdir())  # images beside the folders
    class_layout = bool(classes) and not loose
    if labelled and not class_layout:
        raise ValueError(f"{str(src)!r} is not a class-folder layout ({src}/<class>/<images>); "
                         "shard it unlabelled (drop --labelled)")
    if labelled is False or not class_layout:
        return [(p, None) for p in find_images(src)], None
    samples = ImageClassFolder.make_dataset(src, {c: i for i, c in enumerate(classes)}, allow_empty=True)
    return [(Path(p), i) for p, i in samples], classes


def write_split(src: Path, dst: Path, *, shard_size: int, labelled: bool | None = None, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the images under ``src`` into ``dst/shard-NNNNNN.tar`` + ``dst/shards.json``.

    Files PIL cannot parse are left out and listed in ``corrupt``. A failure (a full disk) removes
    the shards this call wrote, so no truncated shard is left without its ``shards.json``.

    Returns:
        ``{"dst", "shards", "samples", "classes", "corrupt"}``.
    """
    samples, classes = _layout(src, labelled)
    if not samples:
        raise FileNotFoundError(f"no image files found under {str(src)!r}")
    random.Random(seed).shuffle(samples)
    dst.mkdir(parents=True, exist_ok=True)
    names, counts, corrupt = [], [], []  # shard names, their sample counts, files PIL cannot parse
    wds = webdataset_module()
    try:
        with wds.ShardWriter(str(dst / SHARD_PATTERN), maxcount=shard_size, maxsize=float("inf"), verbose=0,
                             post=lambda fname: names.append(os.path.basename(fname))) as sink:
            for done, (path, target) in enumerate(samples, 1):
                data = path.read_bytes()
                if not _decodes(data):  # stored, it would only be skipped at every epoch
                    corrupt.append(str(path))
                    continue
                sample = {"__key__": f"{done - 1:09d}", path.suffix[1:].lower(): data}
                if target is not None:
                    sample["cls"] = str(target).encode()
                sink.write(sample)
                if sink.count == 1:  # a new shard began
                    counts.append(0)
                counts[-1] += 1
                if progress is not None:
                    progress(done, len(samples))
        if not counts:
            raise FileNotFoundError(f"no decodable image under {str(src)!r} ({len(corrupt)} corrupt files)")
        write_index(dst, names, counts, classes)
    except BaseException as e:  # no truncated shard without an index: remove what this call wrote
        for name in [*names, *(SHARD_PATTERN % k for k in range(len(counts) + 1))]:
            (dst / name).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, FileNotFoundError):
            from ..errors import write_failure

            raise write_failure(dst / (SHARD_PATTERN % max(len(counts) - 1, 0)), e) from e
        raise
    return {"dst": str(dst), "shards": len(names), "samples": sum(counts), "classes": classes,
            "corrupt": corrupt}


def _decodes(data: bytes) -> bool:
    """True when PIL can parse the image's header and structure (``verify``: no full decode)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many types for bad data
        return False


def write_shards(src: str | os.PathLike, dst: str | os.PathLike, *, shard_size: int = 1000,
                 labelled: bool | None = None, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Write ``src`` (module docstring layouts) into shards under ``dst``; one summary per split.

    Raises:
        FileNotFoundError: ``src`` missing or without images. ValueError: ``shard_size`` < 1,
            ``dst`` already holds shards, or ``labelled=True`` on a folder without classes.
    """
    src, dst = Path(src), Path(dst)
    if shard_size < 1:
        raise ValueError(f"--shard_size must be >= 1, got {shard_size}")
    check_dir(src, "source folder")
    if dst.exists() and any(p.name.endswith(".tar") or p.name == INDEX_NAME for p in dst.rglob("*")):
        raise ValueError(f"{str(dst)!r} already holds shards; choose an empty or new folder")
    pairs = [(src / s, dst / s) for s in ("train", "val") if (src / s).is_dir()] or [(src, dst)]
    return [write_split(a, b, shard_size=shard_size, labelled=labelled, seed=seed, progress=progress)
            for a, b in pairs]
