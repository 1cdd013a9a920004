"""What the :class:`~maekit.api.Trainer` puts into a task config besides its options and model: the
data (:func:`data_options`); and the result file of ``Trainer.predict``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..data.factory import is_builtin


def is_dataset(obj: Any) -> bool:
    """A torch Dataset (or anything indexable with a length), as opposed to a folder name."""
    return (not isinstance(obj, (str, os.PathLike, bytes)) and hasattr(obj, "__getitem__")
            and hasattr(obj, "__len__"))


def data_options(*, task: str, train_dataset: Any, eval_dataset: Any, data_path: str | None,
                 val_split: str | None, train: bool) -> tuple[dict[str, Any], Any, Any]:
    """Options (``data_path``, ``train_split``, ``val_split``) and the datasets handed over as objects.

    Args:
        task: ``masked_image_modeling`` or ``image_classification``.
        train_dataset, eval_dataset: the Trainer's (folder, ``builtin:...`` or torch Dataset).
        data_path, val_split: the options ``args`` sets (used when no dataset is given).
        train: for training (masked image modeling then needs no evaluation set); else for
            evaluation only.

    Returns:
        (options, train Dataset or None, evaluation Dataset or None).
    """
    opts: dict[str, Any] = {}
    train_ds, root, class_dir = _train_data(train_dataset, data_path, opts, task=task, train=train)
    if train and root is None:
        raise ValueError("give train_dataset (a folder, 'builtin:digits' or a torch Dataset) to train")
    eval_ds = None
    if not train or task != "masked_image_modeling":  # the evaluation set
        mixed = train and train_ds is None and root is not None
        root, eval_ds = _eval_data(eval_dataset, root, opts, mixed=mixed)
        if eval_dataset is None and not (val_split or _has_val(root, train_ds is None and not class_dir)):
            what = "evaluates after every epoch" if train else "evaluates"
            raise ValueError(f"{task} {what}: give eval_dataset (a folder, 'builtin:digits' "
                             "or a torch Dataset), or a train folder with train/ and val/")
    if root is not None:
        opts["data_path"] = root
    return opts, train_ds, eval_ds


def _train_data(tr: Any, data_path: str | None, opts: dict[str, Any], *, task: str,
                train: bool) -> tuple[Any, str | None, bool]:
    """(train Dataset or None, data root, whether ``tr`` is a folder of class folders) for
    ``train_dataset`` ``tr``; such a folder sets ``opts['train_split']``."""
    if is_dataset(tr):
        return (tr, f"<{type(tr).__name__} of {len(tr)} items>", False) if train else (None, data_path, False)
    if tr is None:
        return None, data_path, False
    root = os.fspath(tr)
    # classification from a folder of class folders (not a root with train/ and val/)
    class_dir = task != "masked_image_modeling" and not is_builtin(root) and not (Path(root) / "train").is_dir()
    if class_dir and train:
        opts["train_split"] = os.path.abspath(root)
    return None, root, class_dir


def _has_val(root: str | None, folder: bool) -> bool:
    """Whether the training root has a validation split (``builtin:``, or a ``val/`` folder)."""
    return root is not None and folder and (is_builtin(root) or (Path(root) / "val").is_dir())


def _eval_data(ev: Any, root: str | None, opts: dict[str, Any], *, mixed: bool) -> tuple[str | None, Any]:
    """(the data root, the evaluation Dataset or None) for ``eval_dataset`` ``ev``; a folder sets
    ``opts['val_split']``. ``mixed``: training from the folder ``root`` (it must be the same kind)."""
    if ev is None:
        return root, None
    if is_dataset(ev):
        return root, ev
    ev = os.fspath(ev)
    mixed = mixed and root != ev
    if is_builtin(ev):
        if mixed:
            raise ValueError(f"train_dataset {root!r} is a folder but eval_dataset is {ev!r}; "
                             "give the evaluation set as a folder or a torch Dataset")
        return ev, None
    if mixed and is_builtin(root):
        raise ValueError(f"train_dataset is {root!r} but eval_dataset is a folder; give "
                         "both as folders, or the training set as a torch Dataset")
    sub = Path(ev) / "val"
    opts["val_split"] = os.path.abspath(sub if sub.is_dir() else ev)
    return (root if mixed else ev), None


def write_predictions(output_dir: Path, task: str, inputs: Any, results: Any) -> Path | None:
    """``output_dir/<task>_result.json`` (rank 0): per input its name and loss + files or predictions."""
    from ..engine.distributed import get_rank

    if get_rank() != 0:
        return None
    items, outs = (inputs, results) if isinstance(inputs, list) else ([inputs], [results])
    mim = task == "masked_image_modeling"
    rows = [{"input": os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"input{i}",
             **({"loss": res["loss"], "files": res.get("files", {})} if mim else {"predictions": res})}
            for i, (item, res) in enumerate(zip(items, outs, strict=False))]
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{task}_result.json"
    path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    logging.getLogger("maekit.api").info("output result is saved at: %s", path)
    return path


__all__ = ["data_options", "is_dataset", "write_predictions"]
