"""Image-folder datasets: unlabelled (pretraining) and class folders (fine-tune, probe, eval).

Both return ``(image, target)`` per item, or ``None`` when the file cannot be decoded (after a
:class:`~maekit.data.images.UndecodableImageWarning` naming it); the collate function of
:mod:`maekit.data.loader` drops the Nones and counts them. Targets of unlabelled data are
``-1`` (:data:`UNLABELLED_TARGET`), which a classification loss rejects loudly instead of
silently training on class 0.

All checks (folder exists, has images, every class folder has images, ``in_chans`` valid)
happen in the constructor, before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import DatasetFolder

from .images import IMG_EXTENSIONS, find_images, is_image_file, load_transformed, mode_for_chans

UNLABELLED_TARGET = -1
"""Target returned by unlabelled datasets."""

_EXT_LIST = "/".join(e[1:] for e in IMG_EXTENSIONS)


def check_dir(path: Path, what: str) -> Path:
    """``path``, checked to be an existing folder (FileNotFoundError naming it as ``what`` otherwise)."""
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        # FileNotFoundError (not NotADirectoryError) so callers catch one type for "no data here".
        raise FileNotFoundError(f"{what} {str(path)!r} is a file, not a folder")
    return path


class UnlabeledImageFolder(Dataset):
    """Every image under ``root``, recursively, without labels.

    Accepts a flat folder of images, nested folders (any depth), and the reference layout:
    when ``root/<split>`` (default ``root/train``) is a folder it is used instead of ``root``,
    so ``--data_path imagenet/`` reads ``imagenet/train/<class>/*.JPEG`` as in the
    references, and never mixes in ``imagenet/val``. Pass ``split=None`` to always scan
    ``root`` itself.

    Args:
        root: folder of images.
        transform: applied to the converted PIL image (e.g. the pretrain transform).
        in_chans: channels of the images handed to ``transform`` (see ``images.py``).
        split: sub-folder preferred when present (``'train'``), or None.

    Items: ``(transform(image), -1)``, or ``None`` for an undecodable file.

    Raises:
        FileNotFoundError: ``root`` is missing, or holds no image file
            (extensions jpg/jpeg/png/bmp/webp/tif/tiff, any case).
    """

    def __init__(self, root: str | os.PathLike, *, transform: Callable[[Any], Any] | None = None,
                 in_chans: int = 3, split: str | None = "train") -> None:
        mode_for_chans(in_chans)  # validate now, not once per file
        root = check_dir(Path(root), "image folder")
        if split and (root / split).is_dir():
            root = root / split
        self.root = root
        self.transform = transform
        self.in_chans = in_chans
        self.files: list[Path] = find_images(root)
        if not self.files:
            raise FileNotFoundError(f"no image files ({_EXT_LIST}, any case) found under {str(root)!r}")
        self.samples: list[tuple[str, int]] = [(str(p), UNLABELLED_TARGET) for p in self.files]
        self.targets = [UNLABELLED_TARGET] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        img = load_transformed(path, self.in_chans, self.transform)
        return None if img is None else (img, target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, in_chans={self.in_chans})"


class ImageClassFolder(DatasetFolder):
    """``root/<class>/**/<image>`` with classes = sorted sub-folder names (torchvision
    ``ImageFolder`` semantics, so class indices match the references).

    Differences from ``ImageFolder``: images are converted to ``in_chans`` channels
    (``images.py``); an undecodable file yields ``None`` with a warning instead of raising;
    hidden class folders and hidden files are ignored; errors name the folder.

    Attributes:
        classes: sorted class names; ``class_to_idx``: name -> index; ``samples``:
        ``[(path, class_index)]``; ``targets``: class indices.

    Items: ``(transform(image), class_index)``, or ``None`` for an undecodable file.

    Raises:
        FileNotFoundError: ``root`` missing, without class sub-folders, or some class folder
            without any image file (all such classes are named).
    """

    def __init__(self, root: str | os.PathLike, *, transform: Callable[[Any], Any] | None = None,
                 in_chans: int = 3) -> None:
        mode_for_chans(in_chans)
        root = check_dir(Path(root), "class folder root")
        self.in_chans = in_chans
        try:
            # no loader: __getitem__ loads the images itself (load_transformed)
            super().__init__(str(root), loader=None, transform=transform, is_valid_file=is_image_file)
        except FileNotFoundError as err:
            # torchvision's messages omit the root; ours name it and the expected layout.
            raise FileNotFoundError(
                f"{str(root)!r} is not a usable class-folder dataset "
                f"(expected {root!s}/<class>/<images>): {err}"
            ) from None

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"no class sub-folders in {str(directory)!r}")
        return classes, {c: i for i, c in enumerate(classes)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """``[(path, class_index)]`` through :func:`find_images` (torchvision's own listing follows
        symbolic links without a visited set and never ends on a link loop)."""
        samples, empty = [], []
        for name, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
            files = find_images(Path(directory) / name)
            if not files:
                empty.append(name)
            samples.extend((str(p), idx) for p in files)
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(sorted(empty))}. "
                                    f"Supported extensions are: {', '.join(IMG_EXTENSIONS)}")
        return samples

    __getitem__ = UnlabeledImageFolder.__getitem__  # the same loading (None for an undecodable file)


def check_split(split: str) -> str:
    """``'train'`` or ``'val'`` (``'test'`` is accepted as ``'val'``); ValueError otherwise."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return "val" if split == "test" else split


def resolve_split_dir(data_path: str | os.PathLike, split: str = "train", *,
                      train_split: str | os.PathLike | None = None,
                      val_split: str | os.PathLike | None = None) -> Path:
    """Folder of one split: ``data_path/train`` or ``data_path/val`` (the reference layout),
    or the explicit ``train_split`` / ``val_split`` (a name under ``data_path`` or an
    absolute path).

    Args:
        data_path: dataset root.
        split: ``'train'`` or ``'val'`` (``'test'`` is accepted as ``'val'``).

    Returns:
        The split folder (checked to exist).

    Raises:
        ValueError: unknown ``split``. FileNotFoundError: the split folder is missing.
    """
    split = check_split(split)
    explicit = train_split if split == "train" else val_split
    path = Path(data_path) / (explicit if explicit is not None else split)
    if not path.is_dir():
        how = f"--{split}_split {explicit}" if explicit is not None else f"the {split!r} split"
        raise FileNotFoundError(
            f"folder {str(path)!r} for {how} does not exist "
            f"(expected {Path(data_path)!s}/{split}/<class>/<images>, or give --{split}_split FOLDER)"
        )
    return path
