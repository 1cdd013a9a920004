"""``AutoModel`` / ``from_pretrained`` / ``save_pretrained``.

``from_pretrained(x)`` accepts:

- a registered name, optionally with a weights tag (``'mae_vit_base_patch16'``,
  ``'mae_vit_large_patch16.visualize'``, ``'vit_base_p16'``; see :mod:`maekit.api.zoo`): the
  model is built and, when the name has published weights, they are downloaded into the cache
  (:mod:`maekit.api.hub`) and loaded. ``download=False`` builds without weights. A name without
  published weights (``'mae_vit_tiny_patch16'``) gives a randomly initialised model;
- a model folder (``config.json`` + ``model.safetensors``, written by :func:`save_pretrained`),
  or another folder ``maekit.convert`` reads (Hugging Face);
- a checkpoint file in any format ``maekit.convert`` reads (official ``.pth``, PASSL,
  MindFormers, timm, safetensors); the model is inferred from the weights
  (``maekit.convert.infer_model``). A file named like a published one
  (``mae_visualize_vit_large.pth``) also takes that entry's ``norm_pix_loss``;
- an http(s) URL of such a file (downloaded into the cache first).

Loading rules. Pretraining models: an encoder-only file leaves the decoder random with a
:class:`DecoderNotLoadedWarning`; the fixed sin-cos tables are rebuilt when the image size
differs; anything else missing, unexpected or of another shape is a ``ValueError``.
Classifiers: a file with the same head loads strictly; a pretraining file, or a head for
another number of classes, goes through :func:`maekit.weights.load_pretrained_encoder` (head
re-initialised, position table interpolated), with a warning.

Models come back in eval mode, with ``model.save_pretrained(dir)`` attached (and
``model.class_names`` when the config has them).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models import canonical_name, create_model, is_model
from ..weights import load_pretrained_encoder, load_pretraining_weights
from . import hub, zoo
from .config import CONFIG_NAME, MAEConfig, is_pretraining_model

log = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pdparams", ".pd", ".pdmodel", ".safetensors",
                        ".npz", ".tar")
_DECODER_PREFIXES = ("decoder_", "mask_token")


class DecoderNotLoadedWarning(UserWarning):
    """A pretraining model got encoder weights only: its decoder is random."""


# ---------------------------------------------------------------------------- folders and files
def write_model_folder(model: nn.Module, save_directory: str | os.PathLike, config: MAEConfig) -> Path:
    """``config.json`` + ``model.safetensors``, written atomically by ``maekit.convert``."""
    from ..convert import maekit_format

    extra = {k: v for k, v in config.to_dict().items() if k not in ("model_name", "model_args")}
    return maekit_format.write(model.state_dict(), save_directory, config.model_name, config.model_args,
                               extra)


def is_model_folder(path: Path) -> bool:
    """A folder with a maekit ``config.json`` (one that names ``model_name``)."""
    from ..convert import ConversionError, maekit_format

    try:
        maekit_format.read_config(path)
        return True
    except ConversionError:
        return False


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights under the official names from any file or folder ``maekit.convert`` reads."""
    from ..convert import load_state_dict

    return dict(load_state_dict(path))


def _entry_for_filename(path: str | os.PathLike, model_name: str) -> zoo.WeightsEntry | None:
    """The pretraining-model entry (it fixes ``norm_pix_loss``) of the same model whose
    published file has this name."""
    name = Path(path).name
    for entry_name in zoo.list_pretrained():
        entry = zoo.lookup(entry_name)
        if (entry is not None and entry.filename == name and "norm_pix_loss" in entry.model_args
                and canonical_name(entry.model_name) == canonical_name(model_name)):
            return entry
    return None


# ---------------------------------------------------------------------------- sources
@dataclass
class Source:
    """What ``from_pretrained`` resolved its argument to."""

    config: MAEConfig
    kind: str  # 'name' | 'folder' | 'file' | 'url'
    label: str  # for messages
    entry: zoo.WeightsEntry | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)


def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.startswith("~")
            or text.lower().endswith(_CHECKPOINT_SUFFIXES))


def resolve_source(name_or_path: str | os.PathLike, *, load_weights: bool = True, download: bool = True,
                   base_url: str | None = None, progress: bool = True) -> Source:
    """Resolve a name / folder / file / URL to a config and (if asked) its weights."""
    text = os.fspath(name_or_path)
    if hub.is_url(text):
        entry = zoo.entry_for_url(text)
        if not load_weights and entry is not None:
            cfg = MAEConfig(entry.model_name, entry.model_args, weights=entry.name)
            return Source(cfg, "url", text, entry)
        path = hub.fetch_url(text, progress=progress)
        src = _file_source(path, text)
        src.kind = "url"
        return src
    path = Path(text).expanduser()
    if path.is_dir() and not load_weights and is_model_folder(path):
        return Source(MAEConfig.from_json_file(path / CONFIG_NAME), "folder", text, folder=path)
    if path.exists():
        return _file_source(path, text)
    if _looks_like_path(text) and not is_model(zoo.split_name(text)[0]):
        raise FileNotFoundError(f"no such file or folder: {text}")
    try:
        entry = zoo.lookup(text)
    except ValueError as e:
        raise ValueError(f"{e}; and there is no file or folder named {text!r}") from None
    arch, _ = zoo.split_name(text)
    if entry is None:
        cfg = MAEConfig(arch)
        if load_weights and download:
            log.info("%s has no published weights: built with random weights", text)
        return Source(cfg, "name", text)
    cfg = MAEConfig(entry.model_name, entry.model_args, weights=entry.name)
    src = Source(cfg, "name", text, entry)
    if load_weights and download:
        local = hub.fetch_weights(entry, base=base_url, progress=progress)
        src.state_dict = read_checkpoint(local)
        src.label = f"{entry.name} ({local})"
    return src


def _file_source(path: Path, label: str) -> Source:
    """A checkpoint file or a folder of any format: weights fitted to the inferred model."""
    from ..convert import load_checkpoint

    loaded = load_checkpoint(path)
    notes = list(loaded.notes)
    cfg = MAEConfig(loaded.model_name, loaded.model_args)
    if loaded.class_names:
        cfg.class_names = list(loaded.class_names)
    entry = _entry_for_filename(path, loaded.model_name) if path.is_file() else None
    if entry is not None and "norm_pix_loss" not in loaded.model_args:
        cfg.norm_pix_loss = entry.model_args["norm_pix_loss"]
        cfg.weights = entry.name
        notes.append(f"norm_pix_loss={cfg.norm_pix_loss}: the file is named like the published {entry.name}")
    if path.is_dir():  # a maekit folder: its extras (class_names...) too
        data = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8")) if is_model_folder(path) else {}
        for key in ("class_names", "weights"):
            if key in data:
                setattr(cfg, key, data[key])
    for note in notes:
        log.info("%s: %s", label, note)
    kind = "folder" if path.is_dir() else "file"
    return Source(cfg, kind, label, state_dict=loaded.state_dict, notes=notes)


# ---------------------------------------------------------------------------- loading
def _summ(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], label: str = "weights") -> None:
    """Load official-name weights into a maekit model with the rules of the module docstring."""
    sd = dict(state_dict)
    own = model.state_dict()
    name = getattr(model, "model_name", type(model).__name__)
    if not is_pretraining_model(model):
        head_ok = all(k in sd and sd[k].shape == own[k].shape for k in own if k.startswith("head."))
        from_pretraining = any(k.startswith(_DECODER_PREFIXES) for k in sd)
        if from_pretraining or not head_ok or not any(k.startswith("head.") for k in sd):
            report = load_pretrained_encoder(model, sd)
            if report.head_reinitialised:
                warnings.warn(f"{label}: no classification head for this model in the weights; the head of "
                              f"{name} is randomly initialised (fine-tune it before classifying)",
                              UserWarning, stacklevel=3)
            return
        result = model.load_state_dict(sd, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{label}: weights do not fit {name}: "
                             f"missing {_summ(result.missing_keys) or 'none'}; "
                             f"unexpected {_summ(result.unexpected_keys) or 'none'}")
        return
    decoder = load_pretraining_weights(model, sd, label=label, allow_missing_decoder=True)
    if decoder:
        warnings.warn(f"{label} holds encoder weights only: the decoder ({len(decoder)} tensors) is randomly "
                      "initialised, so reconstructions are meaningless until it is trained (the "
                      "'.visualize' or '.full' weights have a decoder)",
                      DecoderNotLoadedWarning, stacklevel=3)


class _SavePretrained:
    """``model.save_pretrained(dir, processor=None)``: a callable attribute bound to one model
    (pickles and deep-copies with it)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, save_directory: str | os.PathLike, processor: Any = None) -> Path:
        return save_pretrained(self.model, save_directory, processor=processor)

    def __reduce__(self):
        return (_SavePretrained, (self.model,))


def _finish(model: nn.Module, config: MAEConfig, device: Any) -> nn.Module:
    if config.class_names is not None:
        model.class_names = list(config.class_names)
    if config.extra.get("weights"):
        model.weights_name = config.extra["weights"]
    model.save_pretrained = _SavePretrained(model)
    if device is not None:
        model.to(device)
    return model.eval()


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and not hasattr(model, "model_name"):
            model = inner  # DDP
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        else:
            return model


# ---------------------------------------------------------------------------- public
def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, processor: Any = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``.

    Args:
        model: a model built by ``create_model`` / ``AutoModel`` (DDP / compiled wrappers are
            unwrapped); ``model.class_names`` is saved when set.
        save_directory: created if needed.
        processor: the :class:`~maekit.api.ImageProcessor` to save; default: the model's default one.

    Returns:
        The folder.
    """
    from .processor import ImageProcessor

    model = _unwrap(model)
    config = MAEConfig.from_model(model)
    out = write_model_folder(model, save_directory, config)
    (processor or ImageProcessor.from_model(model)).save_pretrained(out)
    return out


class AutoModel:
    """Build maekit models by name, folder, file or URL (see the module docstring)."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | nn.Module, *, download: bool = True,
                        base_url: str | None = None, progress: bool = True, device: Any = None,
                        **overrides: Any) -> nn.Module:
        """Build a model and load its weights.

        Args:
            name_or_path: registered name (+ ``.tag``), model folder, checkpoint file or URL; an
                ``nn.Module`` is returned as it is.
            download: False builds a named model without fetching its weights.
            base_url: replaces the weights table's base URL (default ``$MAEKIT_WEIGHTS_URL`` or
                the official server).
            progress: show a download progress bar.
            device: move the model there.
            **overrides: constructor arguments (aliases accepted: ``image_size=448``,
                ``num_labels=10``); weights are adapted where the rules allow (new head,
                interpolated position table).

        Returns:
            The model in eval mode.
        """
        if isinstance(name_or_path, nn.Module):
            return name_or_path
        src = resolve_source(name_or_path, load_weights=True, download=download, base_url=base_url,
                             progress=progress)
        config = src.config
        for k, v in overrides.items():
            setattr(config, k, v)
        model = create_model(config.model_name, **config.model_args)
        if src.state_dict is not None:
            load_weights(model, src.state_dict, src.label)
        return _finish(model, config, device)

    @classmethod
    def from_config(cls, config: MAEConfig | Mapping[str, Any], *, device: Any = None,
                    **overrides: Any) -> nn.Module:
        """A randomly initialised model of ``config`` (a :class:`MAEConfig` or its dict)."""
        config = MAEConfig.from_dict(dict(config)) if isinstance(config, Mapping) else MAEConfig.from_dict(
            config.to_dict())
        for k, v in overrides.items():
            setattr(config, k, v)
        model = create_model(config.model_name, **config.model_args)
        return _finish(model, config, device)

    @staticmethod
    def show_support_list() -> list[str]:
        """Names with published weights (MindFormers' method name)."""
        return zoo.list_pretrained()


def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """:meth:`AutoModel.from_pretrained`."""
    return AutoModel.from_pretrained(name_or_path, **kwargs)


__all__ = ["AutoModel", "DecoderNotLoadedWarning", "Source", "from_pretrained", "load_weights",
           "resolve_source", "save_pretrained"]
