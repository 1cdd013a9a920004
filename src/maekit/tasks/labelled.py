"""Labelled data and evaluation shared by ``maekit finetune`` / ``linprobe`` / ``eval``."""

from __future__ import annotations

import logging

from ..data import build_eval_transform, resolve_mean_std
from ..engine.metrics import evaluate
from .common import RunContext, task_dataset


def labelled_datasets(args, *, in_chans: int, img_size, train_transform,
                      train_dataset=None, val_dataset=None, dist=None):
    """Train and validation datasets, and the class names; checks ``--nb_classes``.

    ``train_dataset`` / ``val_dataset`` (any dataset object, :func:`maekit.data.as_dataset`; maekit
    applies the transforms; ``dist`` (a :class:`~maekit.engine.distributed.DistInfo`) splits an
    iterable train set) replace the ones from ``--data_path``; the train set is only built when
    ``train_transform`` is given (not for ``--eval``). Class names come from a dataset's
    ``classes`` attribute, else from ``--nb_classes`` (``'0'``, ``'1'``, ...).
    """
    mean, std = resolve_mean_std(in_chans, args.mean, args.std)
    eval_tf = build_eval_transform(img_size, in_chans=in_chans, mean=mean, std=std, uint8=True)
    shape = dict(in_chans=in_chans, img_size=img_size, labelled=True)
    train = None if train_transform is None else task_dataset(
        args, "train", train_dataset, transform=train_transform, dist=dist, **shape)
    val = task_dataset(args, "val", val_dataset, transform=eval_tf, **shape)
    train_classes, val_classes = getattr(train, "classes", None), getattr(val, "classes", None)
    if train_classes is not None and val_classes is not None and list(val_classes) != list(train_classes):
        raise ValueError(f"train and validation class folders differ: {list(train_classes)} vs "
                         f"{list(val_classes)}")
    classes = _class_names(args.nb_classes, train_classes if train_classes is not None else val_classes)
    if train is not None and len(classes) == 1:
        logging.getLogger("maekit").warning(
            "the training data has one class (%s): a one-class classifier learns nothing (its loss is 0 from the "
            "first step); give a folder per class", classes[0])
    return train, val, classes


def _class_names(nb_classes: int | None, found) -> list[str]:
    """The data's class names (``found``), checked against ``--nb_classes``; ``'0'``, ``'1'``, ...
    when the data names none."""
    if found is None:
        if nb_classes is None:
            raise ValueError("the datasets have no 'classes' attribute: give the number of classes "
                             "(--nb_classes, or TrainingArguments(nb_classes=...))")
        return [str(i) for i in range(nb_classes)]
    classes = list(found)
    if nb_classes is not None and nb_classes != len(classes):
        raise ValueError(f"--nb_classes {nb_classes} but the data has {len(classes)} classes "
                         f"({', '.join(classes[:10])}{'...' if len(classes) > 10 else ''})")
    return classes


def make_eval_fn(loader, ctx: RunContext):
    def eval_fn(net):
        stats = evaluate(net, loader, device=ctx.device, autocast_dtype=ctx.autocast_dtype)
        return {k: stats[k] for k in ("acc1", "acc5", "loss")}

    return eval_fn
