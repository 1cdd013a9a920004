"""Image files: which files count as images, decoding, and conversion to the model's channels.

Every image that enters maekit goes through :func:`convert_image`, so a grayscale scan, a
palette PNG, a CMYK JPEG and a 16-bit TIFF all reach the transforms as 8-bit PIL images
with exactly ``in_chans`` channels.

Channel rules (``in_chans`` -> PIL mode):

- 1 -> ``'L'``; colour images use PIL's ITU-R 601 luma, alpha is dropped.
- 2 -> ``'LA'`` (luma + alpha; opaque alpha 255 for images without one).
- 3 -> ``'RGB'``; grayscale is replicated, CMYK/YCbCr/HSV are converted, **alpha is dropped**
  (RGBA -> RGB keeps the colour under transparent pixels), exactly like the references'
  ``ImageFolder`` loader, so ImageNet results are unchanged.
- 4 -> ``'RGBA'`` (opaque alpha 255 for images without one).
- anything else is rejected: image files hold at most 4 channels.

Before that, modes PIL cannot convert to 8 bits sensibly are rescaled:

- ``'I;16*'`` and ``'I'`` (16-bit PNG/TIFF) are taken as 16-bit data: value / 257, so that
  65535 -> 255 (PIL's own ``convert('L')`` clips everything above 255 to white).
- ``'F'`` (float TIFF): values all inside [0, 1] are intensities (x 255); any other range is
  min-max stretched per image (floats have no standard range). NaN/inf become 0.
- ``'P'`` with a ``transparency`` entry goes through ``'RGBA'`` (the palette's colours, then
  the alpha rule above); ``'1'`` -> ``'L'``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Lower-case suffixes recognised as images (matched case-insensitively)."""

_MODE_FOR_CHANS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# 8-bit modes PIL converts as they are (see _to_8bit)
_8BIT_MODE = {"PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "1": "L", "La": "LA"}


class UndecodableImageWarning(UserWarning):
    """A file with an image extension could not be decoded and was skipped."""


def _format_warning(message, category, filename, lineno, line=None):  # noqa: ANN001 - warnings' signature
    """maekit's data warnings as one line ``warning: <message>``: the user's file is in the message;
    maekit's own source file and line (what Python prints by default) mean nothing to them."""
    if isinstance(category, type) and issubclass(category, UndecodableImageWarning):
        return f"warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning
warnings.formatwarning = _format_warning


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has an image suffix (any case) and is not a hidden file."""
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def mode_for_chans(in_chans: int) -> str:
    """PIL mode holding ``in_chans`` 8-bit channels: 1 'L', 2 'LA', 3 'RGB', 4 'RGBA'."""
    try:
        return _MODE_FOR_CHANS[int(in_chans)]
    except KeyError:
        raise ValueError(
            f"in_chans={in_chans} is not supported for image files (1 L, 2 LA, 3 RGB or 4 RGBA); "
            "image files hold at most 4 channels"
        ) from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """Bring high-bit-depth, float, palette and bilevel images to an 8-bit mode."""
    mode = img.mode
    if mode == "P":
        # Going through RGBA keeps the transparent index explicit (and avoids PIL's warning).
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode not in ("F", "I") and not mode.startswith("I;16"):
        return img.convert(_8BIT_MODE[mode]) if mode in _8BIT_MODE else img
    arr = np.asarray(img).astype(np.float64)
    if mode != "F":  # 16-bit data
        arr = np.clip(arr, 0, 65535) / 257.0
    else:
        arr = np.where(np.isfinite(arr), arr, 0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif hi > lo:
            arr = (arr - lo) * (255.0 / (hi - lo))
        else:
            arr = np.zeros_like(arr)
    return Image.fromarray(np.rint(np.clip(arr, 0, 255)).astype(np.uint8))


def convert_image(img: Image.Image, in_chans: int = 3) -> Image.Image:
    """Convert any PIL image to the 8-bit mode with ``in_chans`` channels (module docstring).

    Args:
        img: a PIL image in any mode.
        in_chans: 1, 2, 3 or 4.

    Returns:
        PIL image in mode ``'L'``, ``'LA'``, ``'RGB'`` or ``'RGBA'``; ``img`` itself when it
        already has that mode.

    Raises:
        ValueError: unsupported ``in_chans``, or a mode PIL cannot convert (e.g. ``'LAB'``).
    """
    target = mode_for_chans(in_chans)
    if img.mode == target:
        return img
    img = _to_8bit(img)
    return img if img.mode == target else img.convert(target)


def load_image(path: str | os.PathLike, in_chans: int = 3) -> Image.Image:
    """Open, fully decode and convert one image file (see :func:`convert_image`).

    The pixels are decoded here (not lazily), so a truncated or corrupt file raises now.

    Raises:
        OSError / ValueError / PIL.UnidentifiedImageError: the file cannot be decoded.
    """
    with Image.open(path) as img:
        img.load()
        out = convert_image(img, in_chans)
        # Detach from the file handle that the ``with`` block closes.
        return out.copy() if out is img else out


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def load_transformed(path, in_chans: int = 3, transform=None, name: str | None = None):
    """``transform(load_image(path, in_chans))``, or None for an undecodable file, after an
    :class:`UndecodableImageWarning` naming it, so a bad file never ends a run.

    ``path`` is a file path or a file-like object (encoded bytes), which ``name`` then names in
    the warning. A transform with ``lazy_decode = True`` (crop-aware reduced decoding) receives
    the image from ``Image.open`` before anything is decoded and decodes it itself; its decoding
    errors are caught the same way.
    """
    try:
        if getattr(transform, "lazy_decode", False):
            with Image.open(path) as img:
                return transform(img)
        img = load_image(path, in_chans)
    except _DECODE_ERRORS as err:
        # OSError covers UnidentifiedImageError and truncated data; ValueError unsupported
        # modes; SyntaxError/EOFError come from some PIL plugins on malformed headers.
        said = str(err).replace(repr(path), name) if name else str(err)  # PIL names a buffer by its repr
        warnings.warn(f"skipping undecodable image {name or os.fspath(path)}: {type(err).__name__}: {said}",
                      UndecodableImageWarning, stacklevel=2)
        return None
    return img if transform is None else transform(img)


class SymlinkLoopWarning(UserWarning):
    """A data folder holds symbolic links back to folders already listed (each file is listed once)."""


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root``, recursively, in a deterministic sorted order.

    Hidden files and folders (name starting with ``'.'``, e.g. ``.ipynb_checkpoints``) are
    ignored; symbolic links to folders are followed. Each real folder and each real file is
    listed once: a link back to a folder already listed (a loop, or a second link to the same
    folder) is skipped, and all such links are reported in one :class:`SymlinkLoopWarning`.
    Paths are sorted by their path relative to ``root`` (folder by folder), independent of the
    file system's listing order.
    """
    root = Path(root)
    found: dict[str, Path] = {}  # real path -> the first path listed for it
    seen_dirs = {os.path.realpath(root)}
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen_dirs:  # without this a link loop never ends (os.walk has no visited set)
                skipped.append(f"{os.path.join(dirpath, d)} -> {real}")
            else:
                seen_dirs.add(real)
                keep.append(d)
        dirnames[:] = keep
        for f in filter(is_image_file, filenames):
            found.setdefault(os.path.realpath(os.path.join(dirpath, f)), Path(dirpath) / f)
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(
            f"{len(skipped)} symbolic link(s) under {os.fspath(root)} lead to folders already listed "
            f"(loops or duplicates) and were skipped, so each image is read once: {shown}",
            SymlinkLoopWarning,
            stacklevel=2,
        )
    return sorted(found.values(), key=lambda p: p.relative_to(root).parts)
