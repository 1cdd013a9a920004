"""``Trainer``: MindFormers-style training, evaluation and prediction (docs/REFERENCE_RECIPES.md G.2).

>>> from maekit.api import Trainer, TrainingArguments
>>> args = TrainingArguments(output_dir="out", epochs=1, batch_size=8)            # doctest: +SKIP
>>> trainer = Trainer(task="masked_image_modeling", model="mae_vit_base_p16",
...                   train_dataset="images/", eval_dataset="images_val/", args=args)  # doctest: +SKIP
>>> trainer.train()                      # maekit pretrain (same code path)       # doctest: +SKIP
>>> trainer.evaluate()                   # {'test_loss': ..., 'test_n': ...}      # doctest: +SKIP
>>> trainer.predict(input_data="cat.jpg")  # the masked_image_modeling pipeline     # doctest: +SKIP

Nothing here trains by itself: ``train()`` / ``finetune()`` build the task config of ``maekit
pretrain`` (masked image modeling) or ``maekit finetune`` (image classification) from ``args`` and
call the task function the CLI calls (``run_pretrain(cfg, model=..., train_dataset=...)``); the
files are the CLI's (``checkpoint-last.pth``, ``log.txt``, ``config.yaml`` in ``args.output_dir``).

The constructor's arguments (class docstring): ``model`` gives the architecture and the starting
weights (a bare name: random; a tagged name, folder, file or module: its weights; a classifier
gets the encoder, head re-initialised); for image classification a pretraining model stands for
its encoder. Datasets are folders, ``builtin:digits`` or torch Datasets; classification evaluates
after every epoch, so it needs an evaluation set. ``args`` may be a MindFormers run YAML
(:mod:`maekit.compat.mindformers`), which also gives the task, model and dataset folders.

After ``train()`` / ``finetune()`` the Trainer's model is the one in ``checkpoint-last.pth``:
``evaluate()``, ``predict()``, ``model`` and ``save_pretrained()`` use it. Before any training they
use the model as given; a bare name then means its published weights, as in MindFormers
(downloaded unless ``args.download`` is False; random weights with a warning when none exist).

``evaluate()``: classification -> ``{'test_acc1', 'test_acc5', 'test_loss'}`` (percent, and the
cross-entropy), as ``maekit finetune --eval``; masked image modeling -> ``{'test_loss', 'test_n'}``,
the mean reconstruction loss with fixed masks (``args.seed``, default 0;
:mod:`maekit.tasks.reconstruction`), where MindFormers raises NotImplementedError.

``predict(input_data=...)`` runs :func:`maekit.api.pipeline` for the task and returns its result
(one input -> one result, a list or folder -> a list); masked image modeling also writes the
pictures to ``output_dir`` (mask seed 2, the official demo's, unless ``seed=`` is given), and
both write ``<task>_result.json`` there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..compat.mindformers import DEFAULT_MODELS, RunConfig, load_run_config
from ..engine.checkpoint import BEST_NAME, LAST_NAME, find_latest_checkpoint
from ..models import canonical_name, is_pretraining_model
from ..models import is_pretraining_model as is_pretraining_module
from ..tasks.arguments import TRAINER_ONLY, TrainingArguments
from ..tasks.config import EvalConfig, FinetuneConfig, PredictConfig, PretrainConfig
from .config import MAEConfig
from .pipelines import normalize_task
from .trainer_models import ModelSpec, resolve_spec
from .trainer_options import data_options, model_options, predict_inputs, write_predictions

log = logging.getLogger("maekit.api")

TASKS = ("masked_image_modeling", "image_classification")


class Trainer:
    """Train, fine-tune, evaluate and predict with the task commands (module docstring).

    Args:
        args: :class:`TrainingArguments`, a dict of its fields, or a run YAML (path or packaged
            name such as ``mae/run_mae_vit_base_p16_224_800ep.yaml``, or its
            :class:`~maekit.compat.mindformers.RunConfig`).
        task: ``masked_image_modeling`` / ``image_classification`` (hyphens accepted).
        model: name, tagged name, folder, checkpoint file, config or ``nn.Module``.
        model_name: MindFormers' spelling of ``model`` for a name (used when ``model`` is None).
        train_dataset, eval_dataset: folder, ``builtin:digits`` or a torch Dataset.
    """

    def __init__(self, args: TrainingArguments | Mapping[str, Any] | str | os.PathLike | None = None,
                 task: str | None = None, model: Any = None, model_name: str | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None):
        self.run_config = None
        self._yaml_overrides: dict[str, Any] = {}
        if isinstance(args, (str, os.PathLike, RunConfig)):
            self.run_config = args if isinstance(args, RunConfig) else load_run_config(args)
            rc = self.run_config
            args = rc.args
            self._yaml_overrides = dict(rc.model_overrides)
            task = task or rc.task
            if model is None and model_name is None:
                model = rc.model
            train_dataset = train_dataset if train_dataset is not None else rc.train_dataset
            eval_dataset = eval_dataset if eval_dataset is not None else rc.eval_dataset
        elif args is None or isinstance(args, Mapping):
            args = TrainingArguments(**dict(args or {}))
        elif not isinstance(args, TrainingArguments):
            raise ValueError(f"args must be TrainingArguments, a dict or a YAML path; got "
                             f"{type(args).__name__}")
        self.args: TrainingArguments = args
        if model is None:
            model = model_name
        self.task = self._infer_task(task, model)
        self._default_model = model is None  # finetune(checkpoint) then takes the checkpoint's architecture
        if model is None:  # pretraining with args.init: that source is the architecture (tasks/init_weights.py)
            init = getattr(args, "init", None) if self.task == "masked_image_modeling" else None
            model = init or DEFAULT_MODELS[self.task]
        self.model_source = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.checkpoint: Path | None = None  # checkpoint-last.pth of the last train() / finetune()
        self.last_log: dict[str, Any] | None = None
        self._model: nn.Module | None = None

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _infer_task(task: str | None, model: Any) -> str:
        if task is not None:
            name = normalize_task(task)
            if name not in TASKS:
                raise ValueError(f"the Trainer trains masked_image_modeling or image_classification, "
                                 f"not {task!r}")
            return name
        pretraining = None
        if isinstance(model, nn.Module):
            pretraining = is_pretraining_module(model)
        elif isinstance(model, MAEConfig):
            pretraining = model.task == "masked_image_modeling"
        elif isinstance(model, str) and not Path(model).exists():
            from ..hub import table as zoo

            pretraining = is_pretraining_model(zoo.split_name(model)[0])
        if pretraining is None:
            raise ValueError("give task= (masked_image_modeling or image_classification)")
        return "masked_image_modeling" if pretraining else "image_classification"

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
    def _task_config(self, cls: type, spec: ModelSpec, *, train: bool, **values: Any) -> tuple[Any, Any, Any]:
        """(the task config ``cls`` built from ``args`` + the model + the data, train Dataset, eval Dataset).

        ``values`` set options directly (they win); a set ``args`` field the task does not have is
        ignored with a warning (evaluation ignores the training-only ones silently).
        """
        opts = {k: v for k, v in self.args.given().items() if k not in TRAINER_ONLY}
        model_opts, overrides = model_options(spec, mim=self.mim, given=opts, yaml_overrides=self._yaml_overrides)
        data_opts, train_ds, eval_ds = data_options(
            task=self.task, train_dataset=self.train_dataset, eval_dataset=self.eval_dataset,
            data_path=self.args.data_path, val_split=self.args.val_split, train=train)
        # constructor arguments: the model's own, then the YAML's, then TrainingArguments(model_args=...)
        opts.update(model_opts, model_args={**overrides, **opts.get("model_args", {})}, **data_opts, **values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in opts if k not in names)
        if unknown and train:
            warnings.warn(f"TrainingArguments {unknown} do not apply to {self.task} "
                          f"({cls.__name__}); ignored", UserWarning, stacklevel=4)
        cfg = cls.from_dict({k: v for k, v in opts.items() if k in names}, source="TrainingArguments")
        return cfg, train_ds, eval_ds

    # ------------------------------------------------------------------ training
    def _train(self, spec: ModelSpec, *, resume: Any) -> dict[str, Any]:
        from ..tasks import entry

        command = "pretrain" if self.mim else "finetune"
        values: dict[str, Any] = {}
        if resume:
            values["resume"] = "auto" if resume is True else os.fspath(resume)
        if spec.weights_path is not None and not self.mim:
            values["finetune"] = spec.weights_path  # recorded in config.yaml
        cfg, train_ds, eval_ds = self._task_config(PretrainConfig if self.mim else FinetuneConfig, spec,
                                                   train=True, **values)
        start = None
        if spec.has_weights:
            resuming = bool(cfg.resume) and not (
                cfg.resume == "auto" and find_latest_checkpoint(self.output_dir) is None)
            if self.mim and not resuming and not cfg.init:  # with init the task loads (and reports) it
                start = self._starting_model(cfg, spec)  # weights only; a resume's state wins in the task
            elif not self.mim and spec.weights_path is None:
                start = spec.state_dict
            log.info("starting from the weights of %s", spec.label)
        last = entry.run(command, cfg, model=start, train_dataset=train_ds, eval_dataset=eval_ds)
        self.last_log = last
        ckpt = self.output_dir / LAST_NAME
        self.checkpoint = ckpt if ckpt.is_file() else None
        self._model = None
        return last

    @staticmethod
    def _starting_model(cfg: PretrainConfig, spec: ModelSpec) -> nn.Module:
        """Pretraining: exactly the model the task would build, with ``spec``'s weights (fixed tables
        for its size, random decoder for an encoder-only source)."""
        from ..hub import load_weights_into
        from ..tasks.pretrain import pretrain_model

        model = pretrain_model(cfg)
        load_weights_into(model, spec.weights, label=spec.label)
        return model

    def _training_spec(self, checkpoint: Any) -> ModelSpec:
        """The architecture of the Trainer's model (the checkpoint's when no model was given),
        starting from ``checkpoint``'s weights when given, else from the model's own."""
        dl = self.args.download
        if checkpoint is None:
            return resolve_spec(self.model_source, load_weights=True, published=False, download=dl)
        weights = resolve_spec(checkpoint, load_weights=True, published=True, download=dl)
        if not weights.has_weights:
            raise ValueError(f"{checkpoint!r} has no weights to start from")
        if self._default_model:
            return weights
        arch = resolve_spec(self.model_source, load_weights=False, published=False, download=dl)
        return ModelSpec(arch.name, arch.model_args, weights.weights_path, weights.state_dict,
                         weights.label)

    def train(self, train_checkpoint: Any = False, resume_training: Any = None,
              **kwargs: Any) -> dict[str, Any]:
        """Masked image modeling: pretrain (``maekit pretrain``); image classification: fine-tune
        (``maekit finetune``) from the model's weights or from scratch.

        Args:
            train_checkpoint: weights to start from (path, tagged name, or True: this output_dir's
                ``checkpoint-last.pth``); default: the model's own.
            resume_training: True resumes the full training state from the latest checkpoint in
                ``output_dir`` (``--resume auto``); a path resumes from that file.

        Returns:
            The last epoch's log record (``train_loss``, ``test_acc1``...).
        """
        if kwargs:
            raise TypeError(f"train() got unexpected arguments {sorted(kwargs)}")
        spec = self._training_spec(self._checkpoint_arg(train_checkpoint))
        return self._train(spec, resume=resume_training)

    def finetune(self, finetune_checkpoint: Any = None, resume_training: Any = None, **kwargs: Any
                 ) -> dict[str, Any]:
        """Fine-tune from ``finetune_checkpoint`` (a pretraining or classifier checkpoint file,
        model folder, tagged name, or True: this output_dir's ``checkpoint-last.pth``). Image
        classification loads its encoder (head re-initialised); masked image modeling continues
        pretraining from it. Default: the model's weights (a bare name: its published weights).
        The architecture is the Trainer's model when one was given, else the checkpoint's.
        """
        if kwargs:
            raise TypeError(f"finetune() got unexpected arguments {sorted(kwargs)}")
        checkpoint = self._checkpoint_arg(finetune_checkpoint)
        if checkpoint is None:
            spec = resolve_spec(self.model_source, load_weights=True, published=True,
                                 download=self.args.download)
            if not spec.has_weights:
                raise ValueError(f"finetune() needs finetune_checkpoint: {spec.label} has no published "
                                 "weights")
        else:
            spec = self._training_spec(checkpoint)
        return self._train(spec, resume=resume_training)

    # ------------------------------------------------------------------ models
    def _inference_model(self, checkpoint: Any = None) -> nn.Module:
        """The model to evaluate / predict with: ``checkpoint``'s, the trained one, or the one given."""
        checkpoint = self._checkpoint_arg(checkpoint)
        if checkpoint is not None:
            model = self._load(checkpoint)
        else:
            if self._model is None:
                src = self.checkpoint if self.checkpoint is not None else self.model_source
                if isinstance(src, nn.Module):
                    self._model = src
                elif isinstance(src, (MAEConfig, Mapping)):
                    from .modeling import AutoModel

                    warnings.warn("the Trainer's model is a config: random weights (train it first)",
                                  UserWarning, stacklevel=3)
                    self._model = AutoModel.from_config(src)
                else:
                    self._model = self._load(src)
            model = self._model
        pretraining = is_pretraining_module(model)
        if self.mim and not pretraining:
            raise ValueError(f"masked_image_modeling needs a pretraining model; {model.model_name} is a "
                             "classifier")
        if not self.mim and pretraining:
            raise ValueError(f"image_classification needs a classifier; {model.model_name} is a pretraining "
                             "model (fine-tune it first: trainer.finetune(finetune_checkpoint=...))")
        return model

    def _load(self, source: Any) -> nn.Module:
        from ..hub import load_model

        return load_model(source, download=self.args.download)

    @property
    def model(self) -> nn.Module:
        """The current model: trained (``checkpoint-last.pth``) or as given (module docstring)."""
        return self._inference_model(None)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write the current model as a model folder (``config.json`` + ``model.safetensors``)."""
        from .modeling import save_pretrained

        return save_pretrained(self.model, save_directory)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, eval_checkpoint: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Evaluate the current model (or ``eval_checkpoint``) on ``eval_dataset``.

        Returns:
            image classification: ``{'test_acc1', 'test_acc5', 'test_loss'}``; masked image
            modeling: ``{'test_loss', 'test_n'}`` (fixed masks from ``args.seed``).
        """
        if kwargs:
            raise TypeError(f"evaluate() got unexpected arguments {sorted(kwargs)}")
        from ..tasks import entry

        model = self._inference_model(eval_checkpoint)
        spec = ModelSpec(canonical_name(model.model_name), dict(model.model_args))
        if self.mim:
            from ..tasks.reconstruction import run_reconstruction_eval

            cfg, _, eval_ds = self._task_config(PretrainConfig, spec, train=False, resume="")
            return run_reconstruction_eval(cfg, model=model, eval_dataset=eval_ds)
        nb = self.args.nb_classes
        if nb not in (None, int(model.num_classes)):
            raise ValueError(f"nb_classes is {nb} but {model.model_name} predicts {model.num_classes} classes")
        cfg, _, eval_ds = self._task_config(EvalConfig, spec, train=False, nb_classes=int(model.num_classes))
        return entry.run("eval", cfg, model=model, eval_dataset=eval_ds)

    # ------------------------------------------------------------------ prediction
    def predict(self, input_data: Any = None, predict_checkpoint: Any = None, batch_size: int | None = None,
                **kwargs: Any) -> Any:
        """Run the task's pipeline on ``input_data`` (path, URL, folder, PIL image, array, tensor or a
        list of them; default: the images of an ``eval_dataset`` folder) with the current model or
        ``predict_checkpoint``. ``kwargs`` go to the pipeline (``mask_ratio``, ``seed``, ``output_dir``;
        ``top_k``).

        Returns:
            The pipeline's result (:mod:`maekit.api.pipelines`): masked image modeling, per image a
            dict with ``reconstruction`` / ``masked`` / ``grid`` (PIL), ``mask``, ``loss``, ``files``;
            image classification, per image a list of ``{'label', 'score', 'index'}``.
        """
        from .pipelines import pipeline

        inputs = predict_inputs(input_data, self.eval_dataset)
        model = self._inference_model(predict_checkpoint)
        from ..tasks.common import device_name

        device = device_name(self.args.device) or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = pipeline(self.task, model, device=device, batch_size=batch_size or self.args.batch_size or 8)
        if self.mim:
            given = self.args.mask_ratio
            kwargs.setdefault("mask_ratio", PredictConfig.default("mask_ratio") if given is None else given)
            kwargs.setdefault("seed", PredictConfig.default("seed"))
            kwargs.setdefault("output_dir", str(self.output_dir))
        results = pipe(inputs, **kwargs)
        write_predictions(self.output_dir, self.task, inputs, results)
        return results

    def __repr__(self) -> str:
        model = getattr(self.model_source, "model_name", self.model_source)
        if not isinstance(model, str):
            model = type(model).__name__
        return f"Trainer(task={self.task!r}, model={model!r}, output_dir={str(self.output_dir)!r})"


__all__ = ["DEFAULT_MODELS", "TASKS", "Trainer", "TrainingArguments"]
