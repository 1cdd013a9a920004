"""``Trainer``: MindFormers-style training, evaluation and prediction (docs/REFERENCE_RECIPES.md G.2).

>>> from maekit.api import Trainer, TrainingArguments
>>> args = TrainingArguments(output_dir="out", epochs=1, batch_size=8)            # doctest: +SKIP
>>> trainer = Trainer(task="masked_image_modeling", model="mae_vit_base_p16",
...                   train_dataset="images/", eval_dataset="images_val/", args=args)  # doctest: +SKIP
>>> trainer.train()                      # maekit pretrain (same code path)       # doctest: +SKIP
>>> trainer.evaluate()                   # {'test_loss': ..., 'test_n': ...}      # doctest: +SKIP
>>> trainer.predict(input_data="cat.jpg")  # the masked_image_modeling pipeline     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..compat.mindformers import DEFAULT_MODELS, MindFormersRun, load_run_config
from ..data.factory import is_builtin
from ..engine.checkpoint import BEST_NAME, LAST_NAME
from ..models import canonical_name, classifier_name, is_model, is_pretraining_model
from ..tasks.arguments import TRAINER_ONLY, TrainingArguments
from ..tasks.config import EvalConfig, FinetuneConfig, PredictConfig, PretrainConfig
from ..tasks.validate import ConfigMixin
from .config import MAEConfig
from .pipelines import _PIPELINES, normalize_task

TASKS = ("masked_image_modeling", "image_classification")


class Trainer:
    """Train, fine-tune, evaluate and predict with the task commands.

    ``train()`` / ``finetune()`` build the task config of ``maekit pretrain`` (masked image modeling) or
    ``maekit finetune`` (image classification) and call the task function the CLI calls, with the CLI's
    files in ``args.output_dir``. The constructor's ``model`` becomes the task options the CLI's flags
    would give: a bare registered name is ``--model`` (random weights); a tagged name, folder, file, URL
    or Hub id is the weights source, ``--init`` (``--finetune`` for classification), which also gives
    the architecture; a config (:class:`~maekit.api.MAEConfig`) gives the architecture; an ``nn.Module``
    built by maekit is handed to the task function (its architecture recorded in the config). For image
    classification a pretraining model stands for its encoder.

    After training, ``evaluate()`` (masked image modeling too, where MindFormers raises
    NotImplementedError), ``predict()``, ``model`` and ``save_pretrained()`` use ``checkpoint-last.pth``;
    before, the model as given (a bare name: its published weights, as in MindFormers, unless
    ``args.download`` is False).

    Args:
        args: :class:`TrainingArguments`, a dict of its fields, a task config (``PretrainConfig``
            ...: the options it sets), or a run YAML (path or packaged name such as
            ``mae/run_mae_vit_base_p16_224_800ep.yaml``, or its
            :class:`~maekit.compat.mindformers.MindFormersRun`).
        task: ``masked_image_modeling`` / ``image_classification`` (hyphens accepted).
        model: name, tagged name, folder, checkpoint file, URL, Hub id, config or ``nn.Module``.
        model_name: MindFormers' spelling of ``model`` for a name (used when ``model`` is None).
        train_dataset, eval_dataset: folder, ``builtin:digits`` or a torch Dataset.
    """

    def __init__(self, args: TrainingArguments | Mapping[str, Any] | str | os.PathLike | None = None,
                 task: str | None = None, model: Any = None, model_name: str | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None):
        if isinstance(args, (str, os.PathLike)):
            args = load_run_config(args)
        if isinstance(args, MindFormersRun):  # the YAML's task config, task, model and datasets
            task = task or args.task
            if model is None and model_name is None:
                model = args.model
            train_dataset = args.train_dataset if train_dataset is None else train_dataset
            eval_dataset = args.eval_dataset if eval_dataset is None else eval_dataset
            args = args.args
        elif args is None or isinstance(args, Mapping):
            args = TrainingArguments(**dict(args or {}))
        elif not isinstance(args, (TrainingArguments, ConfigMixin)):
            raise ValueError(f"args must be TrainingArguments, a dict, a task config or a YAML path; got "
                             f"{type(args).__name__}")
        self.args = args
        model = model if model is not None else model_name  # None: the task's default
        self.model_source = MAEConfig.from_dict(dict(model)) if isinstance(model, Mapping) else model
        self.task = self._infer_task(task, self.model_source)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.checkpoint: Path | None = None  # checkpoint-last.pth of the last train() / finetune()
        self._model: nn.Module | None = None

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _infer_task(task: str | None, model: Any) -> str:
        """``task`` normalised, or the model's (a pretraining model's: masked image modeling)."""
        if task is None and isinstance(model, MAEConfig):
            task = model.task
        elif task is None and (isinstance(model, nn.Module) or isinstance(model, str) and not Path(model).exists()):
            from ..hub import split_name

            pretraining = is_pretraining_model(model if isinstance(model, nn.Module) else split_name(model)[0])
            task = TASKS[0] if pretraining else TASKS[1]
        elif task is None:
            raise ValueError("give task= (masked_image_modeling or image_classification)")
        if normalize_task(task) not in TASKS:
            raise ValueError(f"the Trainer trains masked_image_modeling or image_classification, not {task!r}")
        return normalize_task(task)

    @property
    def mim(self) -> bool:
        return self.task == "masked_image_modeling"

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def best_checkpoint(self) -> Path | None:
        """``checkpoint-best.pth`` of the last classification run (highest validation top-1)."""
        p = self.output_dir / BEST_NAME
        return p if self.checkpoint is not None and p.is_file() else None

    def _options(self) -> dict[str, Any]:
        """The task options ``args`` sets (a TrainingArguments' fields that are not None; a task
        config's given ones)."""
        a = self.args
        given = a.given() if isinstance(a, TrainingArguments) else {
            f.name: getattr(a, f.name) for f in dataclasses.fields(a) if a.is_given(f.name)}
        return {k: v for k, v in given.items() if k not in TRAINER_ONLY}

    def _checkpoint_arg(self, value: Any) -> Any:
        """``True`` -> this output_dir's ``checkpoint-last.pth`` (MindFormers' meaning)."""
        if value is True:
            path = self.output_dir / LAST_NAME
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint=True means {path}, which does not exist (train first)")
            return str(path)
        if value is False or value == "":
            return None
        return value

    # ------------------------------------------------------------------ options
    def _task_config(self, cls: type, *, train: bool, arch: Any = None, **values: Any) -> tuple[Any, Any, Any]:
        """(the task config ``cls`` of ``args`` + ``values`` + the data, train Dataset, eval Dataset).

        ``values`` (the model's options) win over ``args``; ``arch`` (a module's or MAEConfig's
        config) fills the architecture options ``args`` does not set. A set option the task does not
        have is ignored with a warning (evaluation ignores the training-only ones silently).
        """
        opts = {**self._options(), **values}
        train_ds, eval_ds = self._data(opts, train=train)
        names = set(cls.__dataclass_fields__)
        unknown = sorted(k for k in opts if k not in names)
        if unknown and train:
            warnings.warn(f"TrainingArguments {unknown} do not apply to {self.task} "
                          f"({cls.__name__}); ignored", UserWarning, stacklevel=4)
        cfg = cls.from_dict({k: v for k, v in opts.items() if k in names}, source="TrainingArguments")
        cfg.typed = frozenset(opts) & names  # what the user set wins over what a model records
        return (cfg if arch is None else self._with_arch(cfg, arch)), train_ds, eval_ds

    def _data(self, opts: dict[str, Any], *, train: bool) -> tuple[Any, Any]:
        """(train set, evaluation set) for the task function: ``train_dataset`` / ``eval_dataset`` as
        given (folder, ``builtin:...`` or torch Dataset; :func:`maekit.tasks.common.task_dataset`
        reads them), None where not needed. ``opts['data_path']`` becomes the training set (a folder's
        ``val/`` or ``builtin:``'s test split is the evaluation set when none is given). ``train``: for
        training (masked image modeling then needs no evaluation set); else for evaluation only."""
        tr, ev = self.train_dataset, self.eval_dataset
        if train and tr is None:
            raise ValueError("give train_dataset (a folder, 'builtin:digits' or a torch Dataset) to train")
        if isinstance(tr, (str, os.PathLike)):
            opts["data_path"] = os.fspath(tr)
        elif train:
            opts["data_path"] = f"<{type(tr).__name__} of {len(tr)} items>"
        root, needs_eval = opts.get("data_path"), not train or not self.mim
        has_val = root is not None and (is_builtin(root) or (Path(root) / "val").is_dir())
        if needs_eval and ev is None and not (opts.get("val_split") or has_val):
            what = "evaluates after every epoch" if train else "evaluates"
            raise ValueError(f"{self.task} {what}: give eval_dataset (a folder, 'builtin:digits' "
                             "or a torch Dataset), or a train folder with train/ and val/")
        return (tr if train else None), (ev if needs_eval else None)

    def _with_arch(self, cfg: Any, config: Any) -> Any:
        """``cfg`` with the model name, shape and ``model_args`` of ``config`` where it sets none
        (:func:`maekit.tasks.arch_from_source.apply_source_arch`: a contradiction is an error)."""
        from ..tasks.arch_from_source import apply_source_arch, arch_of

        arch = arch_of(config, pretraining=self.mim)
        if arch["norm_pix_loss"] is not None and not cfg.is_given("norm_pix_loss"):
            cfg = cfg.replace(norm_pix_loss=bool(arch["norm_pix_loss"]))
        return apply_source_arch(cfg, arch, source=config.model_name, flag="Trainer(model=...)")

    def _model_options(self, weights: Any) -> tuple[dict[str, Any], nn.Module | None, Any]:
        """(task options of the model, the module to hand over, the config whose architecture the
        task config takes): ``weights`` (the checkpoint given to train() / finetune()) starts the
        run in the Trainer's architecture; without it the model's own weights do."""
        src, key = self.model_source, "init" if self.mim else "finetune"
        opts: dict[str, Any] = {} if weights is None else {key: os.fspath(weights)}
        if isinstance(src, nn.Module):
            return opts, (src if weights is None else None), src.config
        if isinstance(src, MAEConfig):
            return opts, None, src
        if src is None:
            if not ({"model", "init", "finetune"} & set(self._options()) or weights is not None):
                opts["model"] = DEFAULT_MODELS[self.task]  # args name no model, nor weights that give one
            return opts, None, None
        text = os.fspath(src)
        if not Path(text).expanduser().exists() and is_model(text):  # a bare name: architecture only
            name = canonical_name(text)
            return {**opts, "model": name if self.mim else classifier_name(name)}, None, None
        if weights is None:  # a weights source: --init / --finetune, which also gives the architecture
            return {key: text}, None, None
        from ..hub import load_config

        return opts, None, load_config(text)

    # ------------------------------------------------------------------ training
    def _train(self, weights: Any, resume: Any) -> dict[str, Any]:
        from .. import cli as entry  # the command table: run_task(command, cfg, ...)

        opts, module, arch = self._model_options(weights)
        if resume:
            opts["resume"] = "auto" if resume is True else os.fspath(resume)
        cls = PretrainConfig if self.mim else FinetuneConfig
        cfg, train_ds, eval_ds = self._task_config(cls, train=True, arch=arch, **opts)
        last = entry.run_task("pretrain" if self.mim else "finetune", cfg, model=module, train_dataset=train_ds,
                         eval_dataset=eval_ds)
        ckpt = self.output_dir / LAST_NAME
        self.checkpoint = ckpt if ckpt.is_file() else None
        self._model = None
        return last

    def train(self, train_checkpoint: Any = False, resume_training: Any = None) -> dict[str, Any]:
        """Masked image modeling: pretrain (``maekit pretrain``); image classification: fine-tune
        (``maekit finetune``) from the model's weights or from scratch.

        Args:
            train_checkpoint: weights to start from (path, tagged name, or True: this output_dir's
                ``checkpoint-last.pth``), as ``--init`` / ``--finetune``; default: the model's own.
            resume_training: True resumes the full training state from the latest checkpoint in
                ``output_dir`` (``--resume auto``); a path resumes from that file.

        Returns:
            The last epoch's log record (``train_loss``, ``test_acc1``...).
        """
        return self._train(self._checkpoint_arg(train_checkpoint), resume_training)

    def finetune(self, finetune_checkpoint: Any = None, resume_training: Any = None) -> dict[str, Any]:
        """Fine-tune from ``finetune_checkpoint`` (a pretraining or classifier checkpoint file,
        model folder, tagged name, or True: this output_dir's ``checkpoint-last.pth``). Image
        classification loads its encoder (head re-initialised); masked image modeling continues
        pretraining from it. Default: the model's weights (a bare name: its published weights).
        The architecture is the Trainer's model when one was given, else the checkpoint's.
        """
        checkpoint = self._checkpoint_arg(finetune_checkpoint)
        src = self.model_source if self.model_source is not None else DEFAULT_MODELS[self.task]
        if checkpoint is None and isinstance(src, MAEConfig):
            raise ValueError("finetune() needs finetune_checkpoint: the Trainer's model is a config (no weights)")
        if checkpoint is None and isinstance(src, str) and is_model(src):  # its published weights
            from ..hub import lookup

            if lookup(src) is None:
                raise ValueError(f"finetune() needs finetune_checkpoint: {src} has no published weights")
            checkpoint = src
        return self._train(checkpoint, resume_training)

    # ------------------------------------------------------------------ models
    def _inference_model(self, checkpoint: Any = None) -> nn.Module:
        """The model to evaluate / predict with: ``checkpoint``'s, the trained one, or the one given."""
        checkpoint = self._checkpoint_arg(checkpoint)
        if checkpoint is None and self._model is None:
            src = self.checkpoint if self.checkpoint is not None else self.model_source
            if isinstance(src, MAEConfig):
                from .modeling import AutoModel

                warnings.warn("the Trainer's model is a config: random weights (train it first)",
                              UserWarning, stacklevel=3)
                self._model = AutoModel.from_config(src)
            else:  # a module as it is (load_model returns it)
                self._model = self._load(DEFAULT_MODELS[self.task] if src is None else src)
        model = self._model if checkpoint is None else self._load(checkpoint)
        _PIPELINES[self.task]._check_model(model)
        return model

    def _load(self, source: Any) -> nn.Module:
        from ..hub import load_model

        download = self.args.download if isinstance(self.args, TrainingArguments) else True
        return load_model(source, download=download)

    @property
    def model(self) -> nn.Module:
        """The current model: trained (``checkpoint-last.pth``) or as given (module docstring)."""
        return self._inference_model(None)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the current model as a model folder (``config.json`` + ``model.safetensors``)."""
        from .modeling import save_pretrained

        return save_pretrained(self.model, save_directory)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, eval_checkpoint: Any = None) -> dict[str, Any]:
        """Evaluate the current model (or ``eval_checkpoint``) on ``eval_dataset``.

        Returns:
            image classification: ``{'test_acc1', 'test_acc5', 'test_loss'}``; masked image
            modeling: ``{'test_loss', 'test_n'}`` (fixed masks from ``args.seed``).
        """
        from .. import cli as entry  # the command table: run_task(command, cfg, ...)

        model = self._inference_model(eval_checkpoint)
        if self.mim:
            from ..tasks.reconstruction import run_reconstruction_eval

            cfg, _, eval_ds = self._task_config(PretrainConfig, train=False, resume="")
            return run_reconstruction_eval(cfg, model=model, eval_dataset=eval_ds)
        nb = self._options().get("nb_classes")
        if nb not in (None, int(model.num_classes)):
            raise ValueError(f"nb_classes is {nb} but {model.model_name} predicts {model.num_classes} classes")
        cfg, _, eval_ds = self._task_config(EvalConfig, train=False, nb_classes=int(model.num_classes))
        return entry.run_task("eval", cfg, model=model, eval_dataset=eval_ds)

    # ------------------------------------------------------------------ prediction
    def predict(self, input_data: Any = None, predict_checkpoint: Any = None, batch_size: int | None = None,
                **kwargs: Any) -> Any:
        """Run the task's pipeline on ``input_data`` (path, URL, folder, PIL image, array, tensor or a
        list of them; default: the images of an ``eval_dataset`` folder) with the current model or
        ``predict_checkpoint``. ``kwargs`` go to the pipeline (its call options, :mod:`maekit.api.pipelines`;
        masked image modeling: the run's mask ratio, seed 2 (the official demo's) and ``output_dir``
        unless given). The results are also written to ``output_dir/<task>_result.json``.

        Returns:
            The pipeline's result (:mod:`maekit.api.pipelines`): masked image modeling, per image a
            dict with ``reconstruction`` / ``masked`` / ``grid`` (PIL), ``mask``, ``loss``, ``files``;
            image classification, per image a list of ``{'label', 'score', 'index'}``.
        """
        from ..tasks.common import inference_device
        from .pipelines import expand_inputs, pipeline

        if input_data is None and not (isinstance(self.eval_dataset, (str, os.PathLike))
                                       and Path(self.eval_dataset).is_dir()):
            raise ValueError("predict() needs input_data (image paths, a folder, PIL images, arrays or tensors)")
        inputs = expand_inputs(self.eval_dataset if input_data is None else input_data)
        model = self._inference_model(predict_checkpoint)
        opts = self._options()
        pipe = pipeline(self.task, model, device=inference_device(opts.get("device")),
                        batch_size=batch_size or opts.get("batch_size", PredictConfig.default("batch_size")))
        if self.mim:  # the run's options the pipeline takes; the mask seed of `maekit predict`, not the run's
            run = {k: opts[k] for k in pipe.call_params if k in opts}
            kwargs = {**run, "seed": PredictConfig.default("seed"), "output_dir": str(self.output_dir),
                      **kwargs}
        results = pipe(inputs, **kwargs)
        self._write_predictions(inputs, results)
        return results

    def _write_predictions(self, inputs: Any, results: Any) -> None:
        """``output_dir/<task>_result.json`` (rank 0): per input its name and loss + files or predictions."""
        from ..engine.distributed import get_rank
        from ..tasks.common import write_json

        items, outs = (inputs, results) if isinstance(inputs, list) else ([inputs], [results])
        rows = [{"input": os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"input{i}",
                 **({"loss": res["loss"], "files": res.get("files", {})} if self.mim else
                    {"predictions": res})} for i, (item, res) in enumerate(zip(items, outs, strict=False))]
        path = write_json(str(self.output_dir), f"{self.task}_result.json", rows, rank=get_rank())
        if path:
            logging.getLogger("maekit.api").info("output result is saved at: %s", path)

    def __repr__(self) -> str:
        model = getattr(self.model_source, "model_name", self.model_source)
        if not isinstance(model, str):
            model = type(model).__name__
        return f"Trainer(task={self.task!r}, model={model!r}, output_dir={str(self.output_dir)!r})"


__all__ = ["TASKS", "Trainer"]
