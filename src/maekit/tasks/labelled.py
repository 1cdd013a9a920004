"""Labelled data and evaluation shared by ``maekit finetune`` / ``linprobe`` / ``eval``."""

from __future__ import annotations

import logging

from ..data import as_dataset, build_eval_transform, resolve_dataset, resolve_mean_std
from ..data.factory import source_options
from ..engine.metrics import evaluate
from .common import RunContext


def labelled_datasets(args, *, in_chans: int, img_size, train_transform,
                      train_dataset=None, val_dataset=None, world_size: int = 1, rank: int = 0):
    """Train and validation datasets, and the class names; checks ``--nb_classes``.

    ``train_dataset`` / ``val_dataset`` (any dataset object, :func:`maekit.data.as_dataset`; maekit
    applies the transforms; ``world_size`` / ``rank`` split an iterable train set)
    replace the ones from ``--data_path``; the train set is only built when ``train_transform`` is
    given (not for ``--eval``). Class names come from a dataset's ``classes`` attribute, else
    from ``--nb_classes`` (``'0'``, ``'1'``, ...).
    """
    mean, std = resolve_mean_std(in_chans, args.mean, args.std)
    common = dict(labelled=True, in_chans=in_chans, train_split=getattr(args, "train_split", None),
                  val_split=getattr(args, "val_split", None))
    eval_tf = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std, uint8=True)
    adapt = dict(in_chans=in_chans, input_size=img_size)
    train = None
    if train_transform is not None:
        train = as_dataset(train_dataset, transform=train_transform, seed=args.seed, world_size=world_size,
                           rank=rank, **adapt) if train_dataset is not None else resolve_dataset(
            args.data_path, "train", transform=train_transform, **common, **source_options(args))
    val = as_dataset(val_dataset, transform=eval_tf, **adapt) if val_dataset is not None else resolve_dataset(
        args.data_path, "val", **common, **source_options(args, "val"), transform=eval_tf)
    train_classes = getattr(train, "classes", None) if train is not None else None
    val_classes = getattr(val, "classes", None)
    if train_classes is not None and val_classes is not None and list(val_classes) != list(train_classes):
        raise ValueError(f"train and validation class folders differ: {list(train_classes)} vs "
                         f"{list(val_classes)}")
    found = train_classes if train_classes is not None else val_classes
    if found is None:
        if args.nb_classes is None:
            raise ValueError("the datasets have no 'classes' attribute: give the number of classes "
                             "(--nb_classes, or TrainingArguments(nb_classes=...))")
        return train, val, [str(i) for i in range(args.nb_classes)]
    classes = list(found)
    if args.nb_classes is not None and args.nb_classes != len(classes):
        raise ValueError(f"--nb_classes {args.nb_classes} but the data has {len(classes)} classes "
                         f"({', '.join(classes[:10])}{'...' if len(classes) > 10 else ''})")
    if train is not None and len(classes) == 1:
        logging.getLogger("maekit").warning(
            "the training data has one class (%s): a one-class classifier learns nothing (its loss is 0 from the "
            "first step); give a folder per class", classes[0])
    return train, val, classes


def make_eval_fn(loader, ctx: RunContext):
    def eval_fn(net):
        stats = evaluate(net, loader, device=ctx.device, autocast_dtype=ctx.autocast_dtype)
        return {k: stats[k] for k in ("acc1", "acc5", "loss")}

    return eval_fn
