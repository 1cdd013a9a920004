"""WebDataset tar shards as a ``--data_path``: local files, brace patterns or http(s) URLs.

Accepted sources (:func:`is_shard_source`):

- a brace pattern or list of shard files/URLs: ``data/train-{000000..000127}.tar``,
  ``https://host/d/train-{0000..0099}.tar``, several patterns joined with ``::``;
- a folder written by ``maekit shard`` (or any folder of ``*.tar`` files); when it holds
  ``train/`` and ``val/`` sub-folders of shards, those are the two splits;
- a shard index ``shards.json`` (local or URL) in webdataset's ``wids`` format:
  ``{"__kind__": "wids-shard-index-v1", "shardlist": [{"url": ..., "nsamples": N}], ...}``,
  with relative URLs resolved against the index. ``maekit shard`` writes one next to the shards,
  plus ``"classes"`` for labelled data.

A sample is the group of tar members sharing a key (webdataset convention): one image member
(``.jpg .jpeg .png .webp`` and the other suffixes of :data:`~maekit.data.images.IMG_EXTENSIONS`)
and an optional ``.cls`` member holding the class index as text. Reading, brace expansion, URL
opening and grouping are webdataset's (``tarfile_samples``, ``expand_urls``, ``gopen``).

The dataset that reads them, with equal steps per rank, is
:class:`maekit.data.shard_dataset.ShardDataset`.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .images import IMG_EXTENSIONS

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
INDEX_NAME = "shards.json"
INDEX_KIND = "wids-shard-index-v1"
IMAGE_MEMBER_EXTS = tuple(e[1:] for e in IMG_EXTENSIONS)
_URL_PREFIXES = ("http://", "https://", "pipe:", "gs://", "s3://")
# Schemes a shard URL read from a file (an index, a YAML) may use: webdataset opens them with a
# program given an argument list (curl, gsutil). ``pipe:`` runs its text in a shell, so only the
# user may type it (on the command line or in Python), never a file.
_FILE_SCHEMES = ("http", "https", "gs")


def webdataset_module():
    """webdataset, imported when first used (the optional ``shards`` extra; when it is missing,
    :mod:`maekit.errors` turns the ImportError into its install command, as for every extra)."""
    import webdataset

    return webdataset


def _is_url(s: str) -> bool:
    return s.startswith(_URL_PREFIXES)


def is_shard_source(data_path: Any) -> bool:
    """True when ``data_path`` names tar shards (see the module docstring), without reading them."""
    if not isinstance(data_path, (str, os.PathLike)):
        return False
    s = os.fspath(data_path)
    if s.startswith(("hf:", "builtin:")):
        return False
    # the first shard, pattern (after its last brace) or index named
    if s.split("::")[0].split("}")[-1].endswith((*SHARD_SUFFIXES, INDEX_NAME)):
        return True
    return Path(s).is_dir() and _is_shard_folder(Path(s))


def _is_shard_folder(path: Path) -> bool:
    """A folder with a shard index, or holding nothing but shards (and train/ val/ folders of
    shards): an image folder with a stray ``backup.tar`` stays an image folder."""
    if (path / INDEX_NAME).is_file() or (path / "train" / INDEX_NAME).is_file():
        return True
    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    shards = [e for e in entries if (e.is_file() and e.name.endswith(SHARD_SUFFIXES))
              or (e.is_dir() and e.name in ("train", "val") and _tars_in(e))]
    return bool(shards) and len(shards) == len(entries)


def _tars_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name.endswith(SHARD_SUFFIXES) and not p.name.startswith("."))


@dataclass
class ShardIndex:
    """Shard URLs with their sample counts (None when unknown) and class names (None when unknown)."""

    urls: list[str]
    counts: list[int] | None
    classes: list[str] | None = None
    epoch_samples: int | None = None
    """Samples per epoch given by the user (``--num_samples``); overrides the counts."""

    @property
    def num_samples(self) -> int | None:
        if self.epoch_samples is not None:
            return self.epoch_samples
        return None if self.counts is None else sum(self.counts)


def read_index(path_or_url: str) -> ShardIndex:
    """A ``wids`` shard index (``shards.json``), URLs resolved against its location."""
    wds = webdataset_module()
    try:
        with wds.gopen(path_or_url, "rb") as f:
            spec = json.load(f)
        entries = spec["shardlist"]
        base = path_or_url.rsplit("/", 1)[0] if "/" in path_or_url else "."
        urls = [_url_from_file(e["url"], base, path_or_url) for e in entries]
        counts = [int(e["nsamples"]) for e in entries]
        if any(c < 0 for c in counts):
            raise ValueError(f"negative nsamples {min(counts)}")
    except UnsafeSource:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path_or_url!r} is not a readable shard index ({type(err).__name__}: {err}); expected JSON "
            '{"shardlist": [{"url": ..., "nsamples": N}, ...]}'
        ) from None
    return ShardIndex(urls, counts, spec.get("classes"))


def _url_from_file(url: str, base: str, index: str) -> str:
    """A shard URL listed in ``index``, resolved against ``base``; a scheme that would run a
    command (``pipe:``) or that webdataset does not open with a fixed program is refused."""
    if not isinstance(url, str):
        raise TypeError(f"a shard url must be a string, got {type(url).__name__}")
    scheme = url.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url) else ""
    if scheme and scheme not in _FILE_SCHEMES and not (os.name == "nt" and len(scheme) == 1):
        raise UnsafeSource(
            f"{index!r} lists the shard {url!r}: a {scheme}: source in a file is refused (a pipe: source "
            f"runs a shell command); list files or {'/'.join(s + '://' for s in _FILE_SCHEMES)} URLs, or "
            "type the pipe: source yourself on the command line"
        )
    return url if scheme or os.path.isabs(url) else f"{base}/{url}"


class UnsafeSource(ValueError):
    """A file (shard index, YAML) names a source that would run a command."""


def write_index(folder: Path, names: list[str], counts: list[int], classes: list[str] | None) -> Path:
    """Write ``folder/shards.json`` (wids format, URLs relative to the folder)."""
    spec: dict[str, Any] = {
        "__kind__": INDEX_KIND,
        "wids_version": 1,
        "name": folder.name,
        "shardlist": [{"url": n, "nsamples": c} for n, c in zip(names, counts)],
    }
    if classes is not None:
        spec["classes"] = classes
    from ..fileio import atomic_write

    return atomic_write(folder / INDEX_NAME, lambda tmp: tmp.write_text(json.dumps(spec, indent=1)))


def _scan_local(paths: list[str]) -> tuple[list[int], list[str] | None]:
    """Samples per local shard (keys with an image member) and the class indices seen, by
    reading the tar headers (and only the small ``.cls`` members)."""
    base_plus_ext = webdataset_module().tariterators.base_plus_ext
    counts, labels = [], set()
    for p in paths:
        keys = set()
        try:
            with tarfile.open(p) as tar:
                for m in tar:
                    key, ext = base_plus_ext(m.name)
                    if key is None or not m.isreg():
                        continue
                    if ext.lower() in IMAGE_MEMBER_EXTS:
                        keys.add(key)
                    elif ext.lower() == "cls":
                        labels.add(int(tar.extractfile(m).read().strip() or -1))
        except (tarfile.TarError, OSError, ValueError) as err:
            raise ValueError(f"cannot read shard {p!r}: {type(err).__name__}: {err}") from None
        counts.append(len(keys))
    classes = [str(i) for i in range(max(labels) + 1)] if labels and min(labels) >= 0 else None
    return counts, classes


def resolve_shards(data_path: str | os.PathLike, split: str = "train", *,
                   num_samples: int | None = None) -> ShardIndex:
    """The shards of one split of ``data_path``, with sample counts.

    Counts come from a ``shards.json`` index when there is one, else from reading the headers of
    local shards; remote shards without an index need ``num_samples`` (the epoch length).

    Raises:
        FileNotFoundError: a local shard or folder is missing. ValueError: no shards, an
            unreadable index or shard, or remote shards without ``num_samples``.
    """
    s = os.fspath(data_path)
    index = _listed_shards(s, split)
    local = [u for u in index.urls if not _is_url(u)]
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(f"shard file(s) not found: {', '.join(missing[:3])}{more} (from {s!r})")
    if num_samples is not None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        index.epoch_samples = num_samples
        return index
    if index.counts is None:
        index = _sibling_index(index)
    if index.counts is None:
        if len(local) < len(index.urls):
            raise ValueError(
                f"cannot count the samples of remote shards {s!r}: pass --num_samples (samples per epoch) "
                f"or point --data_path at a {INDEX_NAME} index that lists them"
            )
        index.counts, scanned = _scan_local(index.urls)
        index.classes = index.classes or scanned
    if not index.num_samples:
        raise ValueError(f"the shards of {s!r} hold no image samples ({'/'.join(IMAGE_MEMBER_EXTS)} members)")
    return index


def _listed_shards(s: str, split: str) -> ShardIndex:
    """The shard URLs ``s`` names for ``split`` (a folder, an index, a pattern), counts when an
    index gives them."""
    folder = Path(s)
    if not _is_url(s) and folder.is_dir():
        folder = _split_folder(folder, split, s)
        if (folder / INDEX_NAME).exists():
            index = read_index(str(folder / INDEX_NAME))
        else:
            index = ShardIndex([str(p) for p in _tars_in(folder)], None)
    elif s.endswith(".json"):
        index = read_index(s)
    else:
        index = ShardIndex(webdataset_module().shardlists.expand_urls(s), None)
    if not index.urls:
        raise ValueError(f"no tar shards ({', '.join(SHARD_SUFFIXES)}) found in {s!r}")
    return index


def _split_folder(folder: Path, split: str, s: str) -> Path:
    """``folder/split`` when it holds shards; ``folder`` itself for the train split."""
    sub = folder / split
    if sub.is_dir() and (_tars_in(sub) or (sub / INDEX_NAME).exists()):
        return sub
    if split != "train":
        raise FileNotFoundError(
            f"shard folder {s!r} has no {split!r} sub-folder of shards; write one with "
            f"`maekit shard SRC {s}` on a source with a {split}/ folder"
        )
    return folder


def _sibling_index(index: ShardIndex) -> ShardIndex:
    """Counts and classes from a ``shards.json`` next to local shards, when it lists all of them."""
    folders = {os.path.dirname(u) for u in index.urls if not _is_url(u)}
    path = os.path.join(folders.pop() or ".", INDEX_NAME) if len(folders) == 1 else ""
    if not os.path.isfile(path):
        return index
    listed = read_index(path)
    by_name = {os.path.basename(u): c for u, c in zip(listed.urls, listed.counts or [])}
    if not all(os.path.basename(u) in by_name for u in index.urls):
        return index
    return ShardIndex(index.urls, [by_name[os.path.basename(u)] for u in index.urls], listed.classes)
