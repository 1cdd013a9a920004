"""What the :class:`~maekit.api.Trainer` puts into a task config besides its ``TrainingArguments``
(the model's name and shape: :func:`model_options`; the data: :func:`data_options`), and the
inputs and result file of ``Trainer.predict``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..models import classifier_name, is_pretraining_model
from .trainer_models import ModelSpec

# model_args that map to command options rather than constructor overrides
_NOT_OVERRIDES = {"img_size", "patch_size", "in_chans", "norm_pix_loss", "num_classes", "global_pool",
                  "drop_path_rate"}


def is_dataset(obj: Any) -> bool:
    """A torch Dataset (or anything indexable with a length), as opposed to a folder name."""
    return (not isinstance(obj, (str, os.PathLike, bytes)) and hasattr(obj, "__getitem__")
            and hasattr(obj, "__len__"))


def _builtin(path: str) -> bool:
    return str(path).lower().startswith("builtin:")


def _describe_dataset(ds: Any) -> str:
    return f"<{type(ds).__name__} of {len(ds)} items>"


def model_options(spec: ModelSpec, *, mim: bool, given: dict[str, Any],
                  yaml_overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(command options, constructor overrides) for ``spec`` adapted to the task.

    Args:
        mim: masked image modeling (else image classification: a pretraining model stands for
            its classifier).
        given: the TrainingArguments that are set; they win over the model's own shape.
        yaml_overrides: architecture overrides from a run YAML's ``model_config``.
    """
    name = spec.name if mim else classifier_name(spec.name)
    if mim and not is_pretraining_model(name):
        raise ValueError(f"masked_image_modeling trains a pretraining model (mae_* / convmae_*); "
                         f"{spec.name} is a classifier (use task='image_classification')")
    opts: dict[str, Any] = {"model": name}
    margs = spec.model_args
    if "input_size" not in given and "img_size" in margs:
        size = margs["img_size"]
        opts["input_size"] = list(size) if isinstance(size, (list, tuple)) else [size]
    for key in ("patch_size", "in_chans"):
        if key not in given and margs.get(key) is not None:
            opts[key] = margs[key]
    if mim and "norm_pix_loss" not in given and "norm_pix_loss" in margs:
        opts["norm_pix_loss"] = bool(margs["norm_pix_loss"])
    if not mim and "global_pool" not in given and isinstance(margs.get("global_pool"), bool):
        opts["global_pool"] = margs["global_pool"]
    overrides = {k: v for k, v in margs.items() if k not in _NOT_OVERRIDES}
    overrides.update(yaml_overrides)
    if not mim:  # a classifier has no decoder
        overrides = {k: v for k, v in overrides.items() if not k.startswith("decoder_")}
    return opts, overrides


def data_options(*, task: str, train_dataset: Any, eval_dataset: Any, data_path: str | None,
                 val_split: str | None, train: bool) -> tuple[dict[str, Any], Any, Any]:
    """Options (``data_path``, ``train_split``, ``val_split``) and the datasets handed over as objects.

    Args:
        task: ``masked_image_modeling`` or ``image_classification``.
        train_dataset, eval_dataset: the Trainer's (folder, ``builtin:...`` or torch Dataset).
        data_path, val_split: the TrainingArguments' values (used when no dataset is given).
        train: for training (masked image modeling then needs no evaluation set); else for
            evaluation only.

    Returns:
        (options, train Dataset or None, evaluation Dataset or None).
    """
    mim = task == "masked_image_modeling"
    opts: dict[str, Any] = {}
    train_ds = eval_ds = None
    tr, ev = train_dataset, eval_dataset
    root = data_path
    class_dir = False
    if tr is not None and is_dataset(tr):
        if train:
            train_ds, root = tr, _describe_dataset(tr)
    elif tr is not None:
        root = os.fspath(tr)
        if not mim and not _builtin(root) and not (Path(root) / "train").is_dir():
            class_dir = True  # a folder of class folders, not a root with train/ and val/
            if train:
                opts["train_split"] = os.path.abspath(root)
    if train and root is None:
        raise ValueError("give train_dataset (a folder, 'builtin:digits' or a torch Dataset) to train")
    if not (train and mim):  # the evaluation set
        if ev is not None and is_dataset(ev):
            eval_ds = ev
        elif ev is not None:
            ev = os.fspath(ev)
            mixed = train and train_ds is None and root is not None and root != ev
            if _builtin(ev):
                if mixed:
                    raise ValueError(f"train_dataset {root!r} is a folder but eval_dataset is {ev!r}; "
                                     "give the evaluation set as a folder or a torch Dataset")
                root = ev
            else:
                if mixed and _builtin(root):
                    raise ValueError(f"train_dataset is {root!r} but eval_dataset is a folder; give "
                                     "both as folders, or the training set as a torch Dataset")
                sub = Path(ev) / "val"
                opts["val_split"] = os.path.abspath(sub if sub.is_dir() else ev)
                if not mixed:
                    root = ev
        else:
            has_val = (root is not None and train_ds is None and not class_dir
                       and (_builtin(root) or (Path(root) / "val").is_dir()))
            if not has_val and not val_split:
                what = "evaluates after every epoch" if train else "evaluates"
                raise ValueError(f"{task} {what}: give eval_dataset (a folder, 'builtin:digits' "
                                 "or a torch Dataset), or a train folder with train/ and val/")
    if root is not None:
        opts["data_path"] = root
    return opts, train_ds, eval_ds


def predict_inputs(input_data: Any, eval_dataset: Any) -> Any:
    """``input_data`` with folders expanded; default: the ``eval_dataset`` folder's images."""
    from .pipelines import expand_inputs

    if input_data is None:
        if not (isinstance(eval_dataset, (str, os.PathLike)) and Path(eval_dataset).is_dir()):
            raise ValueError("predict() needs input_data (image paths, a folder, PIL images, arrays or tensors)")
        input_data = eval_dataset
    return expand_inputs(input_data)


def write_predictions(output_dir: Path, task: str, inputs: Any, results: Any) -> Path | None:
    """``output_dir/<task>_result.json`` (rank 0): per input its name and loss + files or predictions."""
    from ..engine.distributed import get_rank

    if get_rank() != 0:
        return None
    items = inputs if isinstance(inputs, list) else [inputs]
    outs = results if isinstance(inputs, list) else [results]
    rows = []
    for i, (item, res) in enumerate(zip(items, outs, strict=False)):
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"input{i}"
        if task == "masked_image_modeling":
            rows.append({"input": name, "loss": res["loss"], "files": res.get("files", {})})
        else:
            rows.append({"input": name, "predictions": res})
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{task}_result.json"
    path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    logging.getLogger("maekit.api").info("output result is saved at: %s", path)
    return path


__all__ = ["data_options", "is_dataset", "model_options", "predict_inputs", "write_predictions"]
