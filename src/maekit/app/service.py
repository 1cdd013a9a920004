"""What the web app computes, without any web code: loaded models, upload checks, and the three
views (reconstruction grid, top-k classes, PCA of patch features).

Everything model-related goes through :func:`maekit.api.pipeline`, built once per model from the
loaded module exactly as ``maekit visualize`` / ``maekit predict`` build theirs, so the page and
the API show the same pixels and scores as those commands for the same model, mask ratio and seed.

Errors a user can cause raise :class:`AppError` (an HTTP status and a one-paragraph message); the
server turns them into JSON.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError

from ..api.pipelines import Pipeline, pipeline
from ..data.images import _DECODE_ERRORS, convert_image, mode_for_chans
from ..hub import load_model


class AppError(ValueError):
    """A mistake in a request: ``status`` (4xx) and a message for the user (a ``ValueError``: maekit's
    user mistake, answered as one by the server, with its own status)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message


@dataclass
class Limits:
    """Upload limits (``maekit app --max_upload_mb / --max_pixels / --max_side``)."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # refused above this (decoding it would take ~150 MB and more)
    max_side: int = 4096  # longer side reduced to this before the model's own resize
    max_decodes: int = 2  # uploads decoded at the same time (the rest wait): bounds the memory
    decodes: threading.BoundedSemaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.decodes = threading.BoundedSemaphore(max(1, int(self.max_decodes)))


_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")


def split_model_arg(text: str) -> tuple[str | None, str]:
    """``--model NAME=SOURCE`` -> ``(NAME, SOURCE)``; a plain source (or an existing path holding
    '=') -> ``(None, text)``."""
    name, sep, source = text.partition("=")
    if sep and _ID.match(name) and source and not os.path.exists(text):
        return name, source
    return None, text


def _model_id(source: str, taken: set[str]) -> str:
    """An id for a model the user did not name: the file's stem (``checkpoint-best`` under its
    folder's name: ``ft/checkpoint-best``), a folder's or a Hub repository's name."""
    path = os.path.normpath(source) if os.sep in source or "/" in source else source
    base, parent = os.path.basename(path), os.path.basename(os.path.dirname(path))
    stem, ext = os.path.splitext(base)
    if ext.lower() in (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pdparams", ".pd", ".npz"):
        base = f"{parent}/{stem}" if stem.startswith("checkpoint") and parent else stem
    base = base or "model"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


@dataclass
class ModelSlot:
    """One loaded model, its pipelines (built once) and the lock that lets one forward run at a time."""

    id: str
    source: str
    model: nn.Module
    lock: threading.Lock = field(default_factory=threading.Lock)
    pipes: dict[str, Pipeline] = field(default_factory=dict)

    @property
    def pretraining(self) -> bool:
        return bool(self.model.is_pretraining)

    @property
    def in_chans(self) -> int:
        return int(self.model.in_chans)

    def __post_init__(self) -> None:
        # Built once, from the module, as the commands build theirs (maekit.tasks.predict), so the
        # outputs are equal to `maekit visualize` / `maekit predict`. Which tasks the model can do is
        # the pipelines' own check (a ValueError: reconstruction needs a pretraining model,
        # classification a head); every maekit model has a patch grid, so features always.
        for task in _VIEW_OF_TASK:
            with contextlib.suppress(ValueError):
                self.pipes[task] = pipeline(task, self.model)

    def info(self) -> dict[str, Any]:
        """What ``GET /api/models`` shows for this model."""
        m = self.model
        num_classes = int(getattr(m, "num_classes", 0) or 0)
        patch = m.patch_size
        return {
            "id": self.id,
            "source": self.source,
            "model_name": m.model_name,
            "task": "masked_image_modeling" if self.pretraining else "image_classification",
            "family": m.family,
            "img_size": list(m.img_size),
            "patch_size": list(patch) if isinstance(patch, (tuple, list)) else int(patch),
            "in_chans": int(m.in_chans),
            "grid_size": [int(g) for g in m.grid_size],
            "norm_pix_loss": bool(getattr(self.model, "norm_pix_loss", False)) if self.pretraining else None,
            "num_classes": None if self.pretraining else num_classes,
            "views": [_VIEW_OF_TASK[t] for t in self.pipes],
            "config": m.config.to_dict(),
        }


class ModelRegistry:
    """The models a server was started with, by id (sources are never taken from requests)."""

    def __init__(self, slots: list[ModelSlot]):
        if not slots:
            raise ValueError("maekit app needs at least one --model")
        self.slots = {s.id: s for s in slots}

    @classmethod
    def load(cls, sources: list[str], *, download: bool = True, device: str | None = None) -> ModelRegistry:
        slots: list[ModelSlot] = []
        for text in sources:
            name, source = split_model_arg(text)
            taken = {s.id for s in slots}
            if name in taken:
                raise ValueError(f"--model {text}: the name {name!r} is already used by another --model")
            model = load_model(source, download=download, device=device)
            slots.append(ModelSlot(name or _model_id(source, taken), source, model))
        return cls(slots)

    def get(self, model_id: str | None, view: str) -> ModelSlot:
        """The slot named ``model_id``; without one, the first model offering ``view``."""
        if model_id:
            if model_id not in self.slots:
                raise AppError(404, f"no model {model_id!r} on this server; loaded: {', '.join(self.slots)}")
            slot = self.slots[model_id]
            if view not in slot.info()["views"]:
                raise AppError(400, _wrong_view(slot, view))
            return slot
        for slot in self.slots.values():
            if view in slot.info()["views"]:
                return slot
        raise AppError(400, f"none of the loaded models offers {view}: {_VIEW_NEEDS[view]}")


_VIEW_OF_TASK = {
    "masked_image_modeling": "reconstruct",
    "image_classification": "classify",
    "image_feature_extraction": "features",
}
_VIEW_NEEDS = {
    "reconstruct": "it needs a pretraining model (mae_* / convmae_*)",
    "classify": "it needs a classifier with a head",
    "features": "it needs a model with a patch grid",
}


def _wrong_view(slot: ModelSlot, view: str) -> str:
    kind = "a pretraining model" if slot.pretraining else "a classifier"
    return f"model {slot.id!r} is {kind}: {view} is not available ({_VIEW_NEEDS[view]})"


# ---------------------------------------------------------------------------- uploads
def decode_image(data: bytes, limits: Limits) -> tuple[Image.Image, list[str]]:
    """Upload bytes -> a fully decoded PIL image in its own mode, and notes for the user.

    Mirrors ``maekit.data.images.load_image`` (open, load; channels are converted per model
    later), with two limits: more than ``limits.max_pixels`` is refused (413) before decoding;
    a longer side above ``limits.max_side`` is reduced to it (noted).
    """
    if not data:
        raise AppError(400, "the upload is empty: choose an image file (PNG, JPEG, WebP, BMP, TIFF, GIF)")
    # A decoded image takes up to ~3 bytes a pixel (150 MB at the pixel limit): at most
    # limits.max_decodes at a time, the others wait, so concurrent large uploads cannot pile up.
    with limits.decodes:
        return _decode(data, limits)


def _decode(data: bytes, limits: Limits) -> tuple[Image.Image, list[str]]:
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise AppError(413, f"the image is too large to decode safely ({e})") from e
    except _DECODE_ERRORS as e:
        why = "not a known image format" if isinstance(e, UnidentifiedImageError) else str(e)
        raise AppError(400, f"cannot read the upload as an image ({len(data)} bytes, {why}): send a PNG, "
                            "JPEG, WebP, BMP, TIFF or GIF file") from e
    w, h = img.size
    if w * h > limits.max_pixels:
        raise AppError(413, f"the image is {w}x{h} = {w * h / 1e6:.1f} megapixels; this server accepts at "
                            f"most {limits.max_pixels / 1e6:g} megapixels (maekit app --max_pixels)")
    notes: list[str] = []
    try:
        if max(w, h) > limits.max_side:
            img.draft(img.mode, (limits.max_side, limits.max_side))  # JPEG: decode at a reduced scale
            img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BICUBIC)
            notes.append(f"resized from {w}x{h} to {img.size[0]}x{img.size[1]} before the model's own resize "
                         f"(limit {limits.max_side} px on the longer side, maekit app --max_side)")
        img.load()
    except _DECODE_ERRORS as e:
        raise AppError(400, f"the image is truncated or corrupt and cannot be decoded: {e}") from e
    return img, notes


def for_model(img: Image.Image, slot: ModelSlot) -> tuple[Image.Image, list[str]]:
    """The image in the model's channels (``maekit.data.convert_image``), with a note when converted."""
    target = mode_for_chans(slot.in_chans)
    try:
        out = convert_image(img, slot.in_chans)
    except ValueError as e:
        raise AppError(400, f"cannot convert an image of mode {img.mode} ({len(img.getbands())} channels) to "
                            f"the {slot.in_chans} channels model {slot.id!r} takes: {e}") from e
    if img.mode == target:
        return out, []
    bands = len(img.getbands())
    return out, [f"converted from mode {img.mode} ({bands} channel{'s' if bands != 1 else ''}) to {target} "
                 f"for {slot.id} ({slot.in_chans} channel{'s' if slot.in_chans != 1 else ''})"]


# ---------------------------------------------------------------------------- views
def run_view(slot: ModelSlot, img: Image.Image, task: str,
             **options: Any) -> tuple[Any, dict[str, Any], Image.Image]:
    """``task``'s pipeline on ``img`` under the model's lock, ``options`` its call's (checked by the
    pipeline): (its output, ``{seconds, notes}``, the image as the model took it)."""
    image, notes = for_model(img, slot)
    with slot.lock:
        t0 = time.perf_counter()
        out = slot.pipes[task](image, **options)
        seconds = time.perf_counter() - t0
    return out, {"seconds": seconds, "notes": notes}, image


def feature_pca(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens -> their first three principal components as colours.

    Args:
        tokens: (T, D) features of one image; leading tokens beyond the grid (cls) are dropped.
        grid: (h, w) patch grid, h * w <= T.

    Returns:
        (3, h, w) in [0, 1]; each component min-max scaled, its sign fixed so that the largest
        loading is positive (so the colours do not flip between runs).
    """
    h, w = grid
    x = tokens[-h * w :].double()
    x = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:3]
    idx = comps.abs().argmax(dim=1)
    comps = comps * comps.gather(1, idx[:, None]).sign()
    proj = x @ comps.T  # (h*w, k)
    lo, hi = proj.min(0).values, proj.max(0).values
    proj = (proj - lo) / (hi - lo).clamp_min(1e-12)
    if proj.shape[1] < 3:  # fewer than three directions (tiny embed dims): pad with grey
        proj = torch.cat([proj, proj.new_full((proj.shape[0], 3 - proj.shape[1]), 0.5)], dim=1)
    return proj.T.reshape(3, h, w).float()


def features_view(slot: ModelSlot, img: Image.Image) -> dict[str, Any]:
    """The model's input (its feature-extraction crop) beside the PCA colours of its patch tokens."""
    tokens, timing, image = run_view(slot, img, "image_feature_extraction", pool=False)
    pipe = slot.pipes["image_feature_extraction"]
    pixel_values = pipe.image_processor.preprocess(image)
    shown = pipe.image_processor.to_pil(pixel_values)[0].convert("RGB")
    grid = tuple(slot.model.grid_size)
    colours = feature_pca(tokens, grid)
    pca = Image.fromarray((colours.permute(1, 2, 0) * 255).round().byte().numpy(), mode="RGB")
    pca = pca.resize(shown.size, Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (shown.width * 2 + 2, shown.height), "white")
    canvas.paste(shown, (0, 0))
    canvas.paste(pca, (shown.width + 2, 0))
    return {"image": canvas, **timing, "grid": grid}
