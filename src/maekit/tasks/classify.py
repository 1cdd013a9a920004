"""``maekit finetune``, ``maekit linprobe`` and ``maekit eval`` (docs/REFERENCE_RECIPES.md C.3, C.4, C.6).

Both training tasks build a classifier (``vit_*`` or ``convvit_*``), load a pretrained encoder
(:func:`maekit.hub.load.load_weights_into`), and train it with the engine's Runner, evaluating
every epoch. Linear probing follows the reference exactly: a ``BatchNorm1d(affine=False, eps=1e-6)``
in front of the linear head, everything but the head frozen, LARS, and the WHOLE model in train
mode while training. Train mode matters only for that BatchNorm, which then normalises with batch
statistics and updates its running statistics (used at evaluation); the frozen encoder has no
dropout or drop-path, so its output is the same in either mode.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from ..data import build_finetune_transform, build_linprobe_transform, resolve_mean_std
from ..engine.optim import LARS, build_adamw, check_lars_budget, param_groups_layer_decay
from ..models import create_model, is_pretraining_model
from .arch_from_source import read_source, with_source_arch
from .common import config_overrides, count_parameters, learning_rate, start_run, task_loader, train_task
from .config import FinetuneConfig, LinprobeConfig
from .labelled import labelled_datasets, make_eval_fn

log = logging.getLogger("maekit.tasks")


# ----------------------------------------------------------------------------- model
def load_encoder(model: nn.Module, source: Any, head_init_std: float) -> None:
    """The encoder of ``source`` (a state dict, or any source ``maekit.load_model`` reads: file, folder,
    URL, Hub id, ``timm:`` name, published weights name) into the classifier ``model``; logs the report."""
    if source is None or (isinstance(source, str) and not source):
        log.warning("no --finetune checkpoint given: training from a random initialisation")
        return
    from ..hub.load import load_weights_into

    report = read_source(lambda s: load_weights_into(model, s, head_init_std=head_init_std, for_training=True),
                         source, "--finetune")
    for line in report.lines("--finetune"):
        log.info("%s", line)


def add_linear_probe_head(model: nn.Module) -> nn.Module:
    """Reference linear probe: head = BatchNorm1d(affine=False) + Linear; all else frozen."""
    dim = model.head.in_features
    model.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), model.head)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head.")
    return model


# ----------------------------------------------------------------------------- steps
def classification_criterion(*, mixup_fn, smoothing: float) -> nn.Module:
    if mixup_fn is not None:
        return SoftTargetCrossEntropy()  # smoothing is folded into the mixed targets
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()


def build_mixup(args, num_classes: int):
    active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    if not active:
        return None
    if args.batch_size % 2:
        raise ValueError(f"mixup/cutmix needs an even --batch_size, got {args.batch_size}")
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                 prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                 label_smoothing=args.smoothing, num_classes=num_classes)


def make_step_fn(criterion: nn.Module, mixup_fn=None):
    def step_fn(net, batch):
        images, targets = batch[0], batch[1]
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        return criterion(net(images), targets), images.shape[0]

    return step_fn


# ----------------------------------------------------------------------------- tasks
def train_transform(cfg: FinetuneConfig | LinprobeConfig, img_size, *, in_chans: int, mean, std, linprobe: bool):
    """The reference training augmentation of the task."""
    if linprobe:
        return build_linprobe_transform(img_size, in_chans=in_chans, mean=mean, std=std, uint8=True,
                                        fast_decode=cfg.fast_decode, gpu_decode=cfg.decode == "gpu")
    return build_finetune_transform(
        img_size, in_chans=in_chans, mean=mean, std=std, color_jitter=cfg.color_jitter,
        auto_augment=None if str(cfg.aa).lower() == "none" else cfg.aa, re_prob=cfg.reprob,
        re_mode=cfg.remode, re_count=cfg.recount)


def classifier_for(cfg, *, num_classes: int, linprobe: bool) -> nn.Module:
    """The registered classifier (``vit_*`` / ``convvit_*``) ``cfg`` describes (name, shape flags,
    ``model_args``, pooling, drop path)."""
    if is_pretraining_model(cfg.model):
        raise ValueError(f"{cfg.model!r} is not a classifier; use a vit_* or convvit_* name "
                         "(mae_* / convmae_* names are pretraining models)")
    return create_model(cfg.model, num_classes=num_classes, global_pool=cfg.global_pool,
                        drop_path_rate=0.0 if linprobe else cfg.drop_path, **config_overrides(cfg))


def optimizer_and_loss(cfg, model: nn.Module, *, lr: float, linprobe: bool, num_classes: int):
    """(optimizer, criterion, mixup or None): LARS on the head (linear probe) or AdamW with layer decay."""
    if linprobe:
        return LARS(model.head.parameters(), lr=lr, weight_decay=cfg.weight_decay), nn.CrossEntropyLoss(), None
    groups = param_groups_layer_decay(model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                                      no_weight_decay=model.no_weight_decay())
    mixup_fn = build_mixup(cfg, num_classes)
    # default betas (0.9, 0.999), as the reference
    return build_adamw(groups, lr=lr), classification_criterion(mixup_fn=mixup_fn, smoothing=cfg.smoothing), mixup_fn


def run_classification(cfg, *, linprobe: bool, model: nn.Module | None = None, train_dataset=None,
                       eval_dataset=None) -> dict[str, Any]:
    """Fine-tune (``linprobe=False``) or linear-probe as ``cfg`` says; the last epoch's log record.

    ``model`` (a pretraining model or classifier) replaces ``cfg.finetune``: its encoder starts the
    classifier, whose head is re-initialised. ``train_dataset`` / ``eval_dataset`` replace the
    ``cfg.data_path`` ones (:func:`labelled_datasets`).
    """
    if cfg.eval:  # the reference's --eval: only evaluate the classifier --resume names
        return _evaluate_only(cfg, eval_dataset)
    task = "linprobe" if linprobe else "finetune"
    ctx = start_run(device=cfg.device, seed=cfg.seed, amp=cfg.amp, run=cfg)
    if model is None:  # the architecture --resume / --finetune records, where the flags give none
        cfg = with_source_arch(cfg)
    probe = classifier_for(cfg, num_classes=cfg.nb_classes or 1, linprobe=True)
    in_chans, img_size = probe.in_chans, probe.img_size
    mean, std = resolve_mean_std(in_chans, cfg.mean, cfg.std)
    train_tf = train_transform(cfg, img_size, in_chans=in_chans, mean=mean, std=std, linprobe=linprobe)
    train_set, val_set, classes = labelled_datasets(
        cfg, in_chans=in_chans, img_size=img_size, train_transform=train_tf, train_dataset=train_dataset,
        val_dataset=eval_dataset, dist=ctx.dist)
    net = classifier_for(cfg, num_classes=len(classes), linprobe=linprobe)
    net.class_names = list(classes)  # the model knows its labels (save_pretrained, push, pipelines)
    if cfg.grad_checkpointing:
        net.set_grad_checkpointing(True)
    source = cfg.finetune if model is None else model.state_dict() if isinstance(model, nn.Module) else model
    load_encoder(net, source, head_init_std=0.01 if linprobe else 2e-5)
    if linprobe:
        add_linear_probe_head(net)
    eval_fn = make_eval_fn(task_loader(cfg, ctx, val_set, train=False, mean=mean, std=std), ctx)
    train_loader = task_loader(cfg, ctx, train_set, train=True, mean=mean, std=std)
    eff_batch, lr = learning_rate(cfg, ctx)
    optimizer, criterion, mixup_fn = optimizer_and_loss(cfg, net, lr=lr, linprobe=linprobe, num_classes=len(classes))
    if linprobe:  # warn when LARS at this lr cannot move the head in the whole run (issue 12)
        check_lars_budget(lr=lr, blr=None if cfg.lr else cfg.blr, eff_batch_size=eff_batch,
                          steps=cfg.epochs * len(train_loader) // cfg.accum_iter)
    log.info("%s %s: %d classes, %d train / %d val images, %.2fM trainable parameters", task, cfg.model,
             len(classes), len(train_set), len(val_set), count_parameters(net) / 1e6)
    resolved = dict(cfg.to_dict(), lr=lr, eff_batch_size=eff_batch, mean=list(mean), std=list(std),
                    nb_classes=len(classes), task=task)
    return train_task(cfg, ctx, model=net, optimizer=optimizer, train_loader=train_loader,
                      step_fn=make_step_fn(criterion, mixup_fn), lr=lr, config=resolved, eval_fn=eval_fn,
                      best_metric="acc1", extra_state={"class_names": classes, "task": task})


def _evaluate_only(cfg, eval_dataset) -> dict[str, Any]:
    """``--eval --resume X``: ``maekit eval`` with this command's options."""
    from .config import EvalConfig
    from .evaluate import run_eval

    if not cfg.resume:
        raise ValueError("--eval needs --resume <checkpoint> (the classifier to evaluate)")
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    return run_eval(EvalConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k in names}),
                    eval_dataset=eval_dataset)


def run_finetune(cfg: FinetuneConfig, *, model: nn.Module | None = None, train_dataset=None,
                 eval_dataset=None) -> dict[str, Any]:
    """maekit finetune (docs/REFERENCE_RECIPES.md C.3); arguments as :func:`run_classification`."""
    return run_classification(cfg, linprobe=False, model=model, train_dataset=train_dataset,
                              eval_dataset=eval_dataset)


def run_linprobe(cfg: LinprobeConfig, *, model: nn.Module | None = None, train_dataset=None,
                 eval_dataset=None) -> dict[str, Any]:
    """maekit linprobe (docs/REFERENCE_RECIPES.md C.4); arguments as :func:`run_classification`."""
    return run_classification(cfg, linprobe=True, model=model, train_dataset=train_dataset,
                              eval_dataset=eval_dataset)
