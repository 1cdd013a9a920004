"""The architecture a weights source records, as task options (issue 13 item 6; ``pretrain --init``).

A maekit checkpoint or model folder records its model name and constructor arguments (patch size,
input size, depth ...); official / PASSL / MindFormers / HF files tell them through their weights
(:func:`maekit.hub.load_config`). ``finetune`` / ``linprobe`` / ``eval`` and ``pretrain --init``
take them from there when the flags are not given, and say so. Given means typed as a flag (even at
its default value) or set to another value than the default (a ``--config`` file, the Python API);
a packaged recipe's value equal to the default is not given. An explicit value that contradicts the
source is refused with both values named -- except the input size, which a run may change on
purpose (the position table is interpolated or, for MAE's fixed sin-cos table, rebuilt).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .validate import ConfigError

log = logging.getLogger("maekit.tasks")

_SHAPE_ARGS = ("img_size", "patch_size", "in_chans")  # options of their own (--input_size ...)


def pretraining_name(name: str) -> str:
    """The pretraining model whose encoder is classifier ``name`` (``vit_base_patch16`` ->
    ``mae_vit_base_patch16``); pretraining names are returned canonical."""
    from ..models import canonical_name, is_model, is_pretraining_model

    canon = canonical_name(name)
    if is_pretraining_model(canon):
        return canon
    for prefix in ("mae_", "convmae_"):
        if is_model(prefix + canon):
            return canonical_name(prefix + canon)
    raise ConfigError(f"no pretraining model is registered for the classifier {name!r} (looked for mae_{canon} "
                      f"and convmae_{canon}); give --model")


def read_source(read: Any, source: Any, flag: str) -> Any:
    """``read(source)``; a missing or unreadable source is a :class:`ConfigError` naming ``flag``."""
    try:
        return read(source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{flag} {source}: {e}") from e


def source_arch(source: str | os.PathLike, *, pretraining: bool, model_name: str | None = None,
                stated: dict[str, Any] | None = None) -> dict[str, Any]:
    """The architecture ``source`` records (any source :func:`maekit.hub.load_config` reads), for a
    pretraining model (``pretraining=True``) or a classifier. ``model_name`` (the user's ``--model``)
    is used only for a file whose model cannot be told from its weights; ``stated`` (the run's
    ``model_args``) gives what its weights cannot show (``num_heads`` ...)."""
    from ..hub import load_config

    try:
        recorded = load_config(source, stated=stated)
    except ValueError:
        if not model_name:
            raise
        recorded = load_config(source, model_name=model_name, stated=stated)
    return arch_of(recorded, pretraining=pretraining)


def arch_of(recorded: Any, *, pretraining: bool) -> dict[str, Any]:
    """The task options a source's :class:`maekit.models.ModelConfig` (already resolved) sets, for a
    model of the wanted kind: ``model`` (its registered name: ``mae_vit_base_patch16`` ->
    ``vit_base_patch16``), ``input_size`` (``[S]`` or ``[H, W]``), ``patch_size`` (None for ConvMAE,
    whose stage strides travel in ``model_args``), ``in_chans``, ``global_pool`` (a classifier
    source's pooling; None otherwise), ``model_args`` (depth, embed_dim, decoder ...) and
    ``norm_pix_loss`` (the loss target a pretraining source records, a task option: None when it
    records none). A classifier's own arguments (``num_classes``: the data's; ``drop_path_rate``:
    the run's) and ``sparse_stages`` (an execution choice, not part of the weights) are not carried
    over."""
    from ..convert.spec import arch_spec
    from ..models import classifier_name
    from ..models.config import other_kind_args

    spec = arch_spec(recorded.model_name, recorded.model_args)
    args = {k: v for k, v in other_kind_args(recorded.model_args, classifier=True, decoder=not pretraining).items()
            if k not in _SHAPE_ARGS}
    norm_pix = args.pop("norm_pix_loss", None)
    args.pop("sparse_stages", None)
    patch = spec.patch_size if isinstance(spec.patch_size, int) else None
    if patch is None and "patch_size" in recorded.model_args:  # ConvMAE stage strides
        args["patch_size"] = recorded.model_args["patch_size"]
    h, w = spec.img_size
    target = pretraining_name(recorded.model_name) if pretraining else classifier_name(recorded.model_name)
    pool = None if pretraining or spec.global_pool is None else spec.global_pool == "avg"
    return dict(model=target, input_size=[h] if h == w else [h, w], patch_size=patch, in_chans=int(spec.in_chans),
                global_pool=pool, model_args=args, norm_pix_loss=norm_pix)


def _sizes(value: Any) -> list[int]:
    """``S``, ``[S]`` or ``[H, W]`` -> ``[H, W]``."""
    sizes = [int(x) for x in (value if isinstance(value, (list, tuple)) else [value])]
    return sizes * 2 if len(sizes) == 1 else sizes


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _same(name: str, given: Any, value: Any) -> bool:
    from ..models import canonical_name

    if name == "model":
        return canonical_name(given) == value
    return _sizes(given) == _sizes(value) if name == "input_size" else given == value


def _take(cfg: Any, name: str, value: Any, *, source: str, flag: str) -> Any:
    """The value option ``name`` takes from the source (None: keep the config's). An explicit
    contradicting value is a :class:`ConfigError`, except the input size and the pooling, which a
    run may change on purpose (logged)."""
    given = getattr(cfg, name)
    if value is None or (name == "in_chans" and given is None and value == 3):  # 3: every preset's
        return None
    same = given is not None and _same(name, given, value)
    if given is None or not cfg.is_given(name):  # neither typed nor set to another value
        return None if same else value
    if not same and name in ("input_size", "global_pool"):
        log.info("--%s %s differs from the %s recorded in %s (%s): %s", name, _show(given), _show(value), source,
                 flag, "the position table is resized" if name == "input_size" else "the run's pooling is used")
    elif not same:
        raise ConfigError(f"--{name} {_show(given)} contradicts {flag} {source}, which records {name} "
                          f"{_show(value)}: its weights do not fit a model with {name} {_show(given)}. Leave "
                          f"--{name} out to use the recorded value, or give {flag} weights of such a model.")
    return None


def _check_width(cfg: Any, arch: dict[str, Any], *, source: str, flag: str) -> None:
    """An explicit ``--model`` means its preset's width: a source of another width is refused with
    both named (not taken silently through ``model_args``; issue 21 item 2)."""
    from ..convert.spec import arch_spec
    from ..models.config import jsonable

    theirs = arch["model_args"].get("embed_dim")
    if theirs is None or not cfg.is_given("model") or "embed_dim" in cfg.model_args:
        return
    preset = jsonable(arch_spec(cfg.model).embed_dim)
    if preset != jsonable(theirs):
        raise ConfigError(f"--model {cfg.model} is a model of width {_show(preset)}, but {flag} {source} holds one "
                          f"of width {_show(theirs)} ({arch['model']} with embed_dim={_show(theirs)}). Leave --model "
                          f"out to use the source's architecture, or give {flag} weights of a {cfg.model}.")


def apply_source_arch(cfg: Any, arch: dict[str, Any], *, source: str, flag: str) -> Any:
    """``cfg`` with the model name, shape flags, pooling and ``model_args`` of ``arch``
    (:func:`arch_of`) where ``cfg`` does not set them; logs what was taken. An explicit contradicting ``--model`` (also one of
    another width) / ``--patch_size`` / ``--in_chans`` (or ``model_args`` entry) is a
    :class:`ConfigError` naming both values; another ``--input_size`` is logged (the run changes the
    resolution)."""
    _check_width(cfg, arch, source=source, flag=flag)
    changes, taken = {}, []
    for name in ("model", "input_size", "patch_size", "in_chans", "global_pool"):
        value = _take(cfg, name, arch[name], source=source, flag=flag) if hasattr(cfg, name) else None
        if value is not None:
            changes[name] = value
            taken.append(f"--{name} {_show(value)}")
    merged = dict(cfg.model_args)
    for key, value in arch["model_args"].items():
        if key in merged and merged[key] != value:
            raise ConfigError(f"model_args {key}={merged[key]!r} contradicts {flag} {source}, which records "
                              f"{key}={value!r}")
        if key not in merged:
            merged[key] = value
            taken.append(f"{key}={_show(value)}")
    if merged != cfg.model_args:
        changes["model_args"] = merged
    if taken:
        log.info("architecture from %s (%s): %s", flag, source, ", ".join(taken))
    return cfg.replace(**changes) if changes else cfg


def arch_source(cfg: Any) -> tuple[str, str] | None:
    """(source, flag) whose architecture a classification task takes: an existing ``--resume``
    (``auto``: the latest checkpoint in ``output_dir``), else ``--finetune``; None when neither."""
    resume = getattr(cfg, "resume", "") or ""
    if resume == "auto":
        from ..engine.checkpoint import find_latest_checkpoint

        latest = find_latest_checkpoint(cfg.output_dir) if getattr(cfg, "output_dir", None) else None
        resume = os.fspath(latest) if latest is not None else ""
    if resume and os.path.exists(os.path.expanduser(resume)):
        return resume, "--resume"
    finetune = getattr(cfg, "finetune", "") or ""
    return (finetune, "--finetune") if finetune else None


def with_source_arch(cfg: Any) -> Any:
    """``cfg`` (finetune / linprobe / eval) with the architecture of its weights source where the
    flags do not give one (:func:`apply_source_arch`); ``cfg`` itself when there is no source."""
    found = arch_source(cfg)
    if found is None:
        return cfg
    source, flag = found
    given = cfg.model if cfg.model and cfg.is_given("model") else None
    arch = read_source(lambda s: source_arch(s, pretraining=False, model_name=given, stated=cfg.model_args),
                       source, flag)
    return apply_source_arch(cfg, arch, source=source, flag=flag)
