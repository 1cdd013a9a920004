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

Loading rules (:func:`load_weights_into`, the one way weights go into a built model: ``load_model``,
``--init``, ``--finetune``, ``--resume`` of a model folder, the demo). Pretraining models: an
encoder-only file leaves the decoder random with a :class:`DecoderNotLoadedWarning`; fixed sin-cos
tables of another grid are kept from the model; anything else missing, unexpected or of another
shape is a ``ValueError`` (to start a run, ``--init``, a classifier's encoder is taken, its head
left out). Classifiers: the encoder must be complete; a head for another number of classes (or
none, from a pretraining file) is re-initialised (trunc-normal) with a warning; a position table
of another grid is interpolated (the official ``main_finetune.py``, docs/REFERENCE_RECIPES.md C.3).
:func:`load_model` folds a linear-probe head (BatchNorm1d + Linear, ``head.0`` / ``head.1``) into
the Linear head (the same eval-mode outputs up to rounding); given to a plain-head classifier
directly, such a head is left out and re-initialised.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from timm.layers import trunc_normal_

from ..convert._util import describe_keys
from ..convert.api import LoadedCheckpoint
from ..convert.fit import (DECODER_PREFIXES, FIXED_TABLES, FUSION_PREFIXES, HEAD_PREFIXES, foreign_keys,
                           part_of)
from ..models import canonical_name, classifier_config, create_model, is_model
from ..models.config import ModelConfig
from ..models.pos_embed import resize_pos_embed
from . import cache, remote, table

log = logging.getLogger(__name__)


class DecoderNotLoadedWarning(UserWarning):
    """A pretraining model got encoder weights only: its decoder is random."""


# ---------------------------------------------------------------------------- sources
def _lookup(text: str) -> table.WeightsEntry | None:
    """The published weights of a name (:func:`maekit.hub.table.lookup`), for a source that is no path."""
    try:
        return table.lookup(text)
    except ValueError as e:
        raise ValueError(f"{e}; and there is no file or folder named {text!r}") from None


def local_source(source: str | os.PathLike, *, names: bool = False, progress: bool = True) -> Path | None:
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
    path_like = os.sep in text or "/" in text or text.startswith("~") or text.lower().endswith(
        remote.CHECKPOINT_SUFFIXES)
    if path_like and not is_model(table.split_name(text)[0]):
        raise FileNotFoundError(f"no such file or folder: {text}")
    if not names:
        return None
    entry = _lookup(text)
    if entry is None:
        raise ValueError(f"{text} has no published weights ({', '.join(table.list_pretrained())} have)")
    return cache.fetch_weights(entry, progress=progress)


def resolve(source: str | os.PathLike, *, weights: bool = True, download: bool = True,
            model_name: str | None = None, base_url: str | None = None, progress: bool = True,
            stated: dict[str, Any] | None = None) -> LoadedCheckpoint:
    """Name / folder / file / URL / Hub id / ``timm:`` name -> its :class:`ModelConfig` and, if
    ``weights``, its state dict.

    ``model_name`` picks the registered model for a file whose model cannot be told otherwise;
    ``stated`` gives what a file's weights cannot show (``num_heads``, ``decoder_num_heads``,
    ``norm_pix_loss``, ``layer_norm_eps``; other keys are ignored here).
    """
    text = os.fspath(source)
    entry = table.entry_for_url(text) if cache.is_url(text) else None
    # a published file's model is told without downloading it
    local = None if entry is not None and not weights else local_source(text, progress=progress)
    if local is not None:
        return _read_path(local, text, model_name, stated or {})
    entry = entry or _lookup(text)
    if entry is None:
        if weights and download:
            log.info("%s has no published weights: built with random weights", text)
        return LoadedCheckpoint(ModelConfig(canonical_name(table.split_name(text)[0])), text)
    cfg = ModelConfig(canonical_name(entry.model_name), dict(entry.model_args), weights=entry.name)
    if not (weights and download):
        return LoadedCheckpoint(cfg, text)
    local = cache.fetch_weights(entry, base=base_url, progress=progress)
    from ..convert import load_state_dict

    return LoadedCheckpoint(cfg, f"{entry.name} ({local})", dict(load_state_dict(local)))


def _read_path(path: Path, label: str, model_name: str | None, stated: dict[str, Any]) -> LoadedCheckpoint:
    """A checkpoint file or a folder of any format: weights fitted to the model they record or fit."""
    from ..convert import read_checkpoint
    from ..convert.infer import SOFT_ARGS

    loaded = read_checkpoint(path, model=model_name, **{k: v for k, v in stated.items() if k in SOFT_ARGS})
    cfg, notes = loaded.config, loaded.notes
    cfg.model_name = canonical_name(cfg.model_name)
    # the published pretraining file of this model with this name: its entry fixes norm_pix_loss
    same = [e for e in map(table.lookup, table.list_pretrained())
            if path.is_file() and e.filename == path.name and "norm_pix_loss" in e.model_args
            and canonical_name(e.model_name) == cfg.model_name]
    if same and "norm_pix_loss" not in cfg.model_args:
        entry = same[0]
        cfg.model_args["norm_pix_loss"] = entry.model_args["norm_pix_loss"]
        cfg.weights = entry.name
        notes.append(f"norm_pix_loss={entry.model_args['norm_pix_loss']}: the file is named like the "
                     f"published {entry.name}")
    for note in notes:
        log.info("%s: %s", label, note)
    loaded.label = label
    return loaded


def load_config(source: str | os.PathLike, *, model_name: str | None = None,
                stated: dict[str, Any] | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of a source, nothing downloaded (a file's weights are read to tell
    its model; ``stated`` as :func:`resolve`)."""
    return resolve(source, weights=False, download=False, model_name=model_name, stated=stated).config


# ---------------------------------------------------------------------------- loading
_PRETRAIN_ONLY = DECODER_PREFIXES + FUSION_PREFIXES  # parts a classifier has not


@dataclass
class LoadReport:
    """What :func:`load_weights_into` did to each tensor of the model (state-dict keys)."""

    source: str
    model_name: str
    loaded: list[str] = field(default_factory=list)  # set from the source
    random: list[str] = field(default_factory=list)  # left as the model had them (its initialisation)
    rebuilt: list[str] = field(default_factory=list)  # fixed sin-cos tables kept for this model's grid
    ignored: list[str] = field(default_factory=list)  # source tensors with no place in the model
    pos_embed_resized: tuple[tuple[int, int], tuple[int, int]] | None = None
    head_reinitialised: bool = False

    def lines(self, flag: str = "") -> list[str]:
        """The report, one line per kind; ``flag`` (``--init``) heads each line."""
        head = f"{flag}: " if flag else ""
        out = [f"{flag + ' ' if flag else ''}{self.source}: {self.model_name} initialised from it: "
               f"loaded {len(self.loaded)} tensors ({_groups(self.loaded)})"]
        if self.pos_embed_resized:
            (a, b), (c, d) = self.pos_embed_resized
            out.append(f"{head}position embedding interpolated from {a}x{b} to {c}x{d}")
        if self.random:
            why = " (the source has no decoder)" if any(k.startswith(_PRETRAIN_ONLY) for k in self.random) else ""
            out.append(f"{head}NOT initialised, random{why}: {_groups(self.random)} ({len(self.random)} tensors)")
        if self.rebuilt:
            out.append(f"{head}fixed sin-cos tables built for this input size, not copied: {_groups(self.rebuilt)}")
        if self.ignored:
            out.append(f"{head}source tensors not used: {_groups(self.ignored)}")
        if self.head_reinitialised:
            out.append(f"{head}classifier head re-initialised")
        return out


def _groups(keys: list[str]) -> str:
    """``['blocks.0.x', 'blocks.1.y', 'norm.weight']`` -> ``'blocks (2), norm'``: modules, blocks counted."""
    seen: dict[str, set[str]] = {}
    for key in keys:
        parts = key.split(".")
        seen.setdefault(parts[0], set()).add(parts[1] if len(parts) > 2 and parts[1].isdigit() else "")
    return ", ".join(f"{name} ({len(ids)})" if ids != {""} else name for name, ids in seen.items()) or "nothing"


def _drop_foreign(model: nn.Module, sd: dict, own: dict, report: LoadReport, for_training: bool) -> None:
    """Source tensors the model has no place for (:func:`maekit.convert.fit.foreign_keys`) are left
    out: a classifier's decoder / fusion convs silently (not worth a line), a head part as ignored. A
    pretraining model leaves a classifier's head out only to start a run (``--init``); else it is an
    error (said by the caller)."""
    if model.is_pretraining and not for_training:
        return
    dropped = foreign_keys([k for k in sd if k not in own], model.family)
    report.ignored += sorted(k for k in dropped if part_of(k, model.family) == "head")
    for key in dropped:
        del sd[key]


def _fit_classifier(model: nn.Module, sd: dict, own: dict, report: LoadReport) -> None:
    """A classifier's head of another size is left out, a position table of another grid interpolated."""
    for key in [k for k in sd if k.startswith("head.") and k in own and own[k].shape != sd[k].shape]:
        report.ignored.append(key)
        del sd[key]
    theirs, ours = sd.get("pos_embed"), own.get("pos_embed")
    if theirs is None or ours is None or theirs.shape == ours.shape or theirs.shape[-1] != ours.shape[-1]:
        return  # same grid, or another width (a shape mismatch, said by the caller)
    prefix, grid = int(model.num_prefix_tokens), tuple(model.grid_size)
    side = int(round((theirs.shape[1] - prefix) ** 0.5))
    if side * side != theirs.shape[1] - prefix:
        raise ValueError(f"{report.source}: pos_embed of shape {tuple(theirs.shape)} cannot be resized to "
                         f"{tuple(ours.shape)}")
    sd["pos_embed"] = resize_pos_embed(theirs, grid, num_prefix_tokens=prefix, old_grid=(side, side))
    report.pos_embed_resized = ((side, side), grid)


def _fit_pretraining(model: nn.Module, sd: dict, own: dict, report: LoadReport) -> None:
    """A pretraining model keeps its own fixed tables of another grid; of a classifier's encoder
    (``--init``; its head and ``fc_norm`` already left out) it keeps its own final norm."""
    for key in FIXED_TABLES:
        if key in sd and key in own and sd[key].shape != own[key].shape:
            del sd[key]
    if not report.ignored:  # no classifier head was left out: the source is a pretraining one
        return
    for key in [k for k in own if k.startswith("norm.") and k not in sd]:
        sd[key] = own[key]  # a global-pool classifier has fc_norm instead: the model's own norm stays
        report.random.append(key)


def _account(model: nn.Module, sd: dict, own: dict, result: Any, report: LoadReport) -> None:
    """Sort every tensor into loaded / random / rebuilt / ignored after ``load_state_dict``."""
    report.loaded = [k for k in sd if k in own and k not in report.random]
    fixed = FIXED_TABLES if model.is_pretraining else ()
    report.rebuilt = [k for k in result.missing_keys if k in fixed]
    report.random += [k for k in result.missing_keys
                      if k not in fixed and k not in report.random and not k.endswith("num_batches_tracked")]
    report.ignored += list(result.unexpected_keys)


def _check_encoder(report: LoadReport) -> None:
    """A classifier needs the whole encoder from its source (its head may start fresh)."""
    not_head = [k for k in report.random if not k.startswith(HEAD_PREFIXES)]
    if not report.loaded or not_head:
        raise ValueError(f"{report.source}: the checkpoint does not hold this model's encoder "
                         f"({len(report.loaded)} tensors matched; missing "
                         f"{describe_keys(not_head or report.random)}). Is it a checkpoint of another "
                         "architecture or size?")


def _check_complete(model: nn.Module, sd: dict, result: Any, report: LoadReport, require_decoder: bool) -> None:
    """Anything the model needs and the source has not (beyond its head, or a decoder) is an error."""
    if not model.is_pretraining:
        _check_encoder(report)
        return
    decoder = [k for k in report.random if k.startswith(_PRETRAIN_ONLY)]
    other = [k for k in report.random if k not in decoder and k not in sd]
    missing = other + decoder if require_decoder else other
    if missing or result.unexpected_keys:
        hint = " (an encoder-only file: reconstructions need the decoder)" if decoder and require_decoder else ""
        raise ValueError(f"{report.source}: weights do not fit {model.model_name}{hint}: missing "
                         f"{describe_keys(missing)}; unexpected {describe_keys(result.unexpected_keys)}")


def load_weights_into(model: nn.Module, source: Any, *, label: str | None = None, head_init_std: float = 2e-5,
                      require_decoder: bool = False, for_training: bool = False) -> LoadReport:
    """The one way weights go into a built maekit model (rules in the module docstring).

    Args:
        model: a model built by ``create_model`` (pretraining model or classifier).
        source: a state dict under the official names (also ``{'model': ...}`` or DDP ``module.``
            keys), or any file, folder, URL, Hub id or published weights name that
            :func:`load_model` reads.
        label: the source's name in messages (default: the path).
        head_init_std: trunc-normal std of a classifier head the source has none for (2e-5
            fine-tune, 0.01 linear probe); its bias starts at zero.
        require_decoder: a pretraining model must get its decoder too (reconstruction).
        for_training: the weights start a run (``--init``, ``--finetune``): a random head or decoder
            is what the run trains, so it is reported, not warned about, and a classifier's encoder
            may start a pretraining model.

    Returns:
        A :class:`LoadReport` (``report.lines()`` is what the tasks log).

    Raises:
        ValueError: shapes that do not fit, encoder weights missing, unexpected weights of a
            classifier or pretraining model, or a missing decoder with ``require_decoder``.
    """
    from ..convert import load_state_dict
    from ..convert.torchfile import find_state_dict

    if isinstance(source, Mapping):  # possibly wrapped: {'model': ...}, DDP module.
        sd, label = find_state_dict(source), label or "weights"
    else:
        sd, label = dict(load_state_dict(local_source(source, names=True))), label or os.fspath(source)
    own = model.state_dict()
    report = LoadReport(label, model.model_name)
    _drop_foreign(model, sd, own, report, for_training)
    (_fit_pretraining if model.is_pretraining else _fit_classifier)(model, sd, own, report)
    bad = [f"{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
           if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{label}: weights do not fit {model.model_name}: {describe_keys(bad, 8)}")
    result = model.load_state_dict(sd, strict=False)
    _account(model, sd, own, result, report)
    _check_complete(model, sd, result, report, require_decoder)
    if not model.is_pretraining and any(k.startswith("head.") for k in report.random):
        head = model.head[-1] if isinstance(model.head, nn.Sequential) else model.head
        if isinstance(head, nn.Linear):
            trunc_normal_(head.weight, std=head_init_std)
            nn.init.zeros_(head.bias)
            report.head_reinitialised = True
    if not for_training:
        _warn_random_parts(model, sd, report)
    return report


def _warn_random_parts(model: nn.Module, sd: dict, report: LoadReport) -> None:
    """A model to use as loaded: a random head or decoder is worth a warning; a classifier's own
    weights must fit exactly (a pretraining encoder's final norm is the one thing it ignores)."""
    label, name = report.source, model.model_name
    unexpected = [k for k in report.ignored if not k.startswith("head.")]
    if not model.is_pretraining and unexpected and any(k.startswith("head.") for k in sd):
        raise ValueError(f"{label}: weights do not fit {name}: unexpected {describe_keys(unexpected)}")
    if report.head_reinitialised:
        warnings.warn(f"{label}: no classification head for this model in the weights; the head of {name} is "
                      "randomly initialised (fine-tune it before classifying)", UserWarning, stacklevel=4)
    decoder = [k for k in report.random if k.startswith(_PRETRAIN_ONLY)]
    if decoder:
        warnings.warn(f"{label} holds encoder weights only: the decoder ({len(decoder)} tensors) is randomly "
                      "initialised, so reconstructions are meaningless until it is trained (the "
                      "'.visualize' or '.full' weights have a decoder)", DecoderNotLoadedWarning, stacklevel=4)


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
        return source.to(device)  # device None: it stays where it is
    if num_classes is not None:
        overrides["num_classes"] = int(num_classes)
    src = resolve(source, weights=True, download=download, model_name=model_name, base_url=base_url,
                  progress=progress, stated=overrides)
    cfg = src.config
    if "num_classes" in overrides:  # a classifier: of a pretraining source, its encoder's
        cfg = classifier_config(cfg)
    cfg.model_args.update(ModelConfig(cfg.model_name, dict(overrides)).model_args)
    if "num_classes" in overrides and cfg.class_names is not None and len(cfg.class_names) != num_classes:
        cfg.class_names = None  # a new head: the stored labels no longer apply
    model = create_model(cfg.model_name, **cfg.model_args)
    model.config = cfg
    model.preprocessing = src.preprocessing
    if src.state_dict is not None:
        load_weights_into(model, src.state_dict, label=src.label)
    return model.to(device).eval()
