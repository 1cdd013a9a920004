"""``load_model``: the one way from a source to a maekit model with its weights.

A source is one of:

- a registered name, optionally with a weights tag (``'mae_vit_base_patch16'``,
  ``'mae_vit_large_patch16.visualize'``, ``'vit_base_p16'``; :mod:`maekit.hub.table`): the model
  is built and, when the name has published weights, they are downloaded into the cache
  (:mod:`maekit.hub.cache`) and loaded. ``download=False`` builds without weights; a name
  without published weights (``'mae_vit_tiny_patch16'``) gives a randomly initialised model;
- a model folder: maekit (``config.json`` with ``model_name`` + ``model.safetensors``, from
  ``model.save_pretrained``), Hugging Face transformers (ViTMAE / ViT), timm (``config.json``
  with ``architecture``, from ``timm.models.save_for_hf`` or a timm Hub repository);
- a checkpoint file of any format ``maekit.convert`` reads (official ``.pth``, maekit training
  checkpoints ``checkpoint-*.pth`` -- their ``extra`` names the model and its labels --, PASSL,
  MindFormers, timm / HF safetensors); the model is the one the file records, else the one its
  weights fit (``maekit.convert.infer_model``). A file named like a published one
  (``mae_visualize_vit_large.pth``) also takes that entry's ``norm_pix_loss``;
- an http(s) URL of such a file (downloaded into the cache first);
- a Hugging Face Hub repository, ``hf-hub:org/name[@revision]`` (or ``org/name`` when no such
  local path exists) holding a maekit, transformers or timm folder (:mod:`.remote`);
- ``timm:name[.tag]``: the weights timm publishes under that name, from timm's own cache;
- an ``nn.Module`` (returned as it is).

Loading rules (:func:`load_weights_into`). Pretraining models: an encoder-only file leaves the
decoder random with a :class:`DecoderNotLoadedWarning`; fixed sin-cos tables of another grid
are kept from the model; anything else missing, unexpected or of another shape is a
``ValueError``. Classifiers: the encoder must be complete; a head for another number of classes
(or none, from a pretraining file) is re-initialised with a warning; a position table of
another grid is interpolated. A linear-probe head (BatchNorm1d + Linear, ``head.0`` /
``head.1``) is folded into the Linear head (the same eval-mode outputs up to rounding).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models import canonical_name, classifier_config, create_model, is_model
from ..models.config import CONFIG_NAME, ModelConfig
from ..weights import load_pretrained_encoder, load_pretraining_weights
from . import cache, remote, table

log = logging.getLogger(__name__)


class DecoderNotLoadedWarning(UserWarning):
    """A pretraining model got encoder weights only: its decoder is random."""


@dataclass
class Resolved:
    """A source resolved to the config of its model and (when asked) its weights."""

    config: ModelConfig
    label: str  # for messages
    state_dict: dict[str, torch.Tensor] | None = None
    preprocessing: dict[str, Any] | None = None  # what the source folder's preprocessing file says


# ---------------------------------------------------------------------------- sources
def _looks_like_path(text: str) -> bool:
    return (os.sep in text or "/" in text or text.startswith("~")
            or text.lower().endswith(remote.CHECKPOINT_SUFFIXES))


def local_source(source: str | os.PathLike, *, names: bool = False, base_url: str | None = None,
                 progress: bool = True) -> Path | None:
    """The local file or folder a source names, fetched into its cache when it is remote: a path,
    an http(s) URL, a Hub repository, a ``timm:`` name. A registered name gives None, or with
    ``names=True`` the file of its published weights (``mae_vit_base_patch16.visualize``).

    Raises:
        FileNotFoundError: no such path (or Hub repository, or not in the cache when offline).
        ValueError: an unknown name, tag or timm name, or a name without published weights.
    """
    text = os.fspath(source)
    if cache.is_url(text):
        return cache.fetch_url(text, progress=progress)
    if text.startswith(remote.TIMM_PREFIX):
        return remote.timm_weights(text)
    path = Path(text).expanduser()
    repo = remote.hub_id(text, exists_locally=path.exists())
    if repo is not None:
        try:
            return remote.snapshot(*repo)
        except FileNotFoundError as e:
            if text.startswith(remote.PREFIX):
                raise
            raise FileNotFoundError(f"no such file or folder: {text} (and as a Hub id: {e})") from e
    if path.exists():
        return path
    if _looks_like_path(text) and not is_model(table.split_name(text)[0]):
        raise FileNotFoundError(f"no such file or folder: {text}")
    if not names:
        return None
    try:
        entry = table.lookup(text)
    except ValueError as e:
        raise ValueError(f"{e}; and there is no file or folder named {text!r}") from None
    if entry is None:
        raise ValueError(f"{text} has no published weights ({', '.join(table.list_pretrained())} have)")
    return cache.fetch_weights(entry, base=base_url, progress=progress)


def resolve(source: str | os.PathLike, *, weights: bool = True, download: bool = True,
            model_name: str | None = None, base_url: str | None = None, progress: bool = True) -> Resolved:
    """Name / folder / file / URL / Hub id / ``timm:`` name -> its :class:`ModelConfig` and, if
    ``weights``, its state dict.

    ``model_name`` picks the registered model for a file whose model cannot be told otherwise.
    """
    text = os.fspath(source)
    entry = table.entry_for_url(text) if cache.is_url(text) else None
    if entry is not None and not weights:  # a published file: its model without downloading it
        return Resolved(ModelConfig(entry.model_name, dict(entry.model_args), weights=entry.name), text)
    local = local_source(text, progress=progress)
    if local is not None:
        return _read_path(local, text, model_name)
    try:
        entry = table.lookup(text)
    except ValueError as e:
        raise ValueError(f"{e}; and there is no file or folder named {text!r}") from None
    if entry is None:
        if weights and download:
            log.info("%s has no published weights: built with random weights", text)
        return Resolved(ModelConfig(canonical_name(table.split_name(text)[0])), text)
    cfg = ModelConfig(canonical_name(entry.model_name), dict(entry.model_args), weights=entry.name)
    if not (weights and download):
        return Resolved(cfg, text)
    local = cache.fetch_weights(entry, base=base_url, progress=progress)
    from ..convert import load_state_dict

    return Resolved(cfg, f"{entry.name} ({local})", dict(load_state_dict(local)))


def _entry_for_filename(path: Path, model_name: str) -> table.WeightsEntry | None:
    """The pretraining-model entry (it fixes ``norm_pix_loss``) of the same model whose
    published file has this name."""
    for entry_name in table.list_pretrained():
        entry = table.lookup(entry_name)
        if (entry is not None and entry.filename == path.name and "norm_pix_loss" in entry.model_args
                and canonical_name(entry.model_name) == canonical_name(model_name)):
            return entry
    return None


def _read_path(path: Path, label: str, model_name: str | None) -> Resolved:
    """A checkpoint file or a folder of any format: weights fitted to the model they record or fit."""
    from ..convert import read_checkpoint

    loaded = read_checkpoint(path, model=model_name)
    cfg = ModelConfig(canonical_name(loaded.model_name), dict(loaded.model_args), loaded.class_names)
    notes = list(loaded.notes)
    entry = _entry_for_filename(path, loaded.model_name) if path.is_file() else None
    if entry is not None and "norm_pix_loss" not in loaded.model_args:
        cfg.model_args["norm_pix_loss"] = entry.model_args["norm_pix_loss"]
        cfg.weights = entry.name
        notes.append(f"norm_pix_loss={entry.model_args['norm_pix_loss']}: the file is named like the "
                     f"published {entry.name}")
    if path.is_dir() and loaded.format == "maekit":  # the name of the weights it was made from
        cfg.weights = ModelConfig.from_json_file(path / CONFIG_NAME).weights or cfg.weights
    for note in notes:
        log.info("%s: %s", label, note)
    return Resolved(cfg, label, loaded.state_dict, loaded.preprocessing)


def load_config(source: str | os.PathLike, *, model_name: str | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of a source, nothing downloaded (a file's weights are read to tell
    its model)."""
    return resolve(source, weights=False, download=False, model_name=model_name).config


# ---------------------------------------------------------------------------- loading
def _summ(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights_into(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                      label: str | None = None, require_decoder: bool = False) -> None:
    """Load weights (a state dict under the official names, or any file / folder ``maekit.convert``
    reads) into a built maekit model with the rules of the module docstring.

    Args:
        require_decoder: a pretraining model must get its decoder too (reconstruction); an
            encoder-only source is then a ``ValueError`` instead of a warning.
    """
    if isinstance(source, Mapping):
        sd, label = dict(source), label or "weights"
    else:
        from ..convert import load_state_dict

        sd, label = dict(load_state_dict(source)), label or os.fspath(source)
    if not model.is_pretraining:
        report = load_pretrained_encoder(model, sd)
        # A pretraining encoder's final norm has no place in an fc_norm classifier (the reference
        # ignores it); a classifier's weights must fit exactly.
        if report.unexpected and any(k.startswith("head.") for k in sd):
            raise ValueError(f"{label}: weights do not fit {model.model_name}: unexpected {_summ(report.unexpected)}")
        if report.head_reinitialised:
            warnings.warn(f"{label}: no classification head for this model in the weights; the head of "
                          f"{model.model_name} is randomly initialised (fine-tune it before classifying)",
                          UserWarning, stacklevel=3)
        return
    decoder = load_pretraining_weights(model, sd, label=label, allow_missing_decoder=not require_decoder)
    if decoder:
        warnings.warn(f"{label} holds encoder weights only: the decoder ({len(decoder)} tensors) is randomly "
                      "initialised, so reconstructions are meaningless until it is trained (the "
                      "'.visualize' or '.full' weights have a decoder)", DecoderNotLoadedWarning, stacklevel=3)


def load_model(source: str | os.PathLike | nn.Module, *, num_classes: int | None = None, download: bool = True,
               device: Any = None, model_name: str | None = None, base_url: str | None = None,
               progress: bool = True, **overrides: Any) -> nn.Module:
    """Build a model from any source and load its weights (module docstring).

    Args:
        source: registered name (+ ``.tag``), model folder, checkpoint file, URL, Hub id
            (``hf-hub:org/name``), ``timm:name.tag`` or ``nn.Module``.
        num_classes: a classifier with this many outputs (a head of another size is re-initialised).
        download: False builds a named model without fetching its published weights.
        device: move the model there.
        model_name: the registered model for a file that does not record one (else inferred).
        base_url: replaces the weights table's base URL (default ``$MAEKIT_WEIGHTS_URL`` or the
            official server).
        progress: show a download progress bar.
        **overrides: constructor arguments (``img_size=448``, ``drop_path_rate=0.1``...); weights
            are adapted where the rules allow (new head, interpolated position table).

    Returns:
        The model in eval mode; ``model.config`` records its name, arguments, labels and weights.
    """
    if isinstance(source, nn.Module):
        return source if device is None else source.to(device)
    if num_classes is not None:
        overrides["num_classes"] = int(num_classes)
    src = resolve(source, weights=True, download=download, model_name=model_name, base_url=base_url,
                  progress=progress)
    cfg = src.config
    if "num_classes" in overrides:  # a classifier: of a pretraining source, its encoder's
        cfg = classifier_config(cfg)
    cfg.model_args.update(ModelConfig(cfg.model_name, dict(overrides)).model_args)
    if "num_classes" in overrides and cfg.class_names is not None and len(cfg.class_names) != num_classes:
        cfg.class_names = None  # a new head: the stored labels no longer apply
    model = create_model(cfg.model_name, **cfg.model_args)
    model.config = cfg
    if src.preprocessing is not None:
        model.preprocessing = src.preprocessing
    if src.state_dict is not None:
        load_weights_into(model, src.state_dict, label=src.label)
    if device is not None:
        model.to(device)
    return model.eval()
