"""``MaekitModel``: what every maekit model says about itself, and its own save / load.

Every registered class (``MaskedAutoencoderViT``, ``MaskedAutoencoderConvViT``, the ViT
classifier, ``ConvViT``) mixes this in. ``create_model`` records the :class:`ModelConfig`, so a
model knows its registered name and arguments (``model.config``), its ``family``, whether it is
a pretraining model, the classifier its encoder goes into, and can write itself as a model
folder (``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``) that
``Class.from_pretrained(folder)`` and ``maekit.load_model(folder)`` read back.

Why our own mixin and not ``huggingface_hub.PyTorchModelHubMixin``: that mixin rebuilds a model
by passing ``config.json`` to the class constructor (``cls(**config)``) and records the
constructor's arguments when an instance is made. Our models are built by *registered
functions* over a few classes (``mae_vit_base_patch16`` = ``MaskedAutoencoderViT`` with a
preset), and our ``config.json`` is ``{"model_name", "model_args"}`` so that existing folders
keep loading; the timm classifier's constructor also takes a ``norm_layer`` callable that is not
JSON. Its ``save_pretrained`` would also write a ``README.md`` into every folder and import
huggingface_hub with the models. What the Hub mixin adds is done with huggingface_hub's own
functions on top of this layout: downloads by repo id in :mod:`maekit.hub`, and
:meth:`MaekitModel.push_to_hub` here (the folder plus a model card, :mod:`.card`; huggingface_hub
imported only when pushing).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import CONFIG_NAME, ModelConfig
from .limits import check_param_memory

WEIGHTS_NAME = "model.safetensors"
PROCESSOR_NAME = "preprocessor_config.json"
PRETRAINING_FAMILIES = ("mae", "convmae")

# ImageNet statistics for RGB; their channel means for any other channel count. The same rule as
# maekit.data.transforms.resolve_mean_std (the data package may not be imported by the models).
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_preprocessing(img_size: tuple[int, int], in_chans: int, pretraining: bool) -> dict[str, Any]:
    """The ``preprocessor_config.json`` of a model: its input size and channels, the reference
    normalisation, ``'resize'`` (whole image) for reconstruction models and the evaluation
    centre crop (0.875 up to 224 px, else 1) for classifiers (docs/REFERENCE_RECIPES.md C.3)."""
    h, w = img_size
    mean = _MEAN if in_chans == 3 else (round(sum(_MEAN) / 3, 3),) * in_chans
    std = _STD if in_chans == 3 else (round(sum(_STD) / 3, 3),) * in_chans
    return {
        "image_processor_type": "ImageProcessor",
        "size": {"height": int(h), "width": int(w)},
        "num_channels": int(in_chans),
        "resize_mode": "resize" if pretraining else "crop",
        "crop_pct": 0.875 if max(h, w) <= 224 else 1.0,
        "resample": "bicubic",
        "image_mean": list(mean),
        "image_std": list(std),
    }


class MaekitModel:
    """Mixin of every maekit model (module docstring). Subclasses set ``family``."""

    family: str = ""

    def __new__(cls, *args: Any, **kwargs: Any):
        # Record the resolved constructor arguments (defaults applied): they are the model's
        # architecture, so nothing has to be read back from module attributes (architecture()).
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:
            return self  # __init__ raises its own, clearer error
        bound.apply_defaults()
        self.__dict__["_init_args"] = dict(list(bound.arguments.items())[1:])
        check_param_memory(cls.__name__, self.__dict__["_init_args"])  # before anything is allocated
        return self

    def architecture(self) -> dict[str, Any]:
        """``family`` plus the resolved constructor arguments (``embed_dim``, ``depth``,
        ``num_heads``...), ``img_size`` as (H, W) and ``global_pool`` as ``'avg'`` / ``'token'``."""
        arch = {"family": self.family, **self.__dict__.get("_init_args", {})}
        arch.update(img_size=tuple(self.img_size), in_chans=int(self.in_chans))
        if "global_pool" in arch:
            arch["global_pool"] = self.global_pool
        return arch

    # ------------------------------------------------------------------ identity
    @property
    def config(self) -> ModelConfig:
        """The :class:`ModelConfig` that rebuilds this model (set by ``create_model``)."""
        cfg = self.__dict__.get("_maekit_config")
        if cfg is None:
            raise AttributeError(f"this {type(self).__name__} was built directly, not by maekit.create_model, "
                                 "so it has no config; build it with maekit.create_model(name, ...)")
        return cfg

    @config.setter
    def config(self, value: ModelConfig) -> None:
        if not isinstance(value, ModelConfig):
            raise TypeError(f"model.config must be a ModelConfig, got {type(value).__name__}")
        self.__dict__["_maekit_config"] = value

    @property
    def model_name(self) -> str:
        """The canonical registered name (``config.model_name``)."""
        return self.config.model_name

    @property
    def model_args(self) -> dict[str, Any]:
        """The ``create_model`` arguments (``config.model_args``)."""
        return self.config.model_args

    @property
    def class_names(self) -> list[str] | None:
        """Labels of a classifier's outputs, when known (``config.class_names``)."""
        cfg = self.__dict__.get("_maekit_config")
        return None if cfg is None else cfg.class_names

    @class_names.setter
    def class_names(self, names: list[str] | None) -> None:
        self.config.class_names = None if names is None else [str(n) for n in names]

    @property
    def is_pretraining(self) -> bool:
        """True for MAE / ConvMAE pretraining models, False for classifiers."""
        return self.family in PRETRAINING_FAMILIES

    @property
    def classifier_name(self) -> str:
        """The registered classifier that this model's encoder goes into (itself for classifiers)."""
        from .registry import classifier_name

        return classifier_name(self.model_name)

    # Normalisation (and crop) the model was loaded with: ``image_mean`` / ``image_std`` / ``crop_pct``
    # from its source folder's preprocessing file (maekit.load_model sets it); None: the defaults.
    preprocessing: dict[str, Any] | None = None

    def preprocessor_config(self) -> dict[str, Any]:
        """This model's ``preprocessor_config.json``: :func:`default_preprocessing` for its input size
        and channels, with the ``preprocessing`` it was loaded with (a mean / std for another number
        of channels is not used)."""
        pre = default_preprocessing(self.img_size, self.in_chans, self.is_pretraining)
        saved = self.preprocessing or {}
        if len(saved.get("image_mean") or ()) == self.in_chans == len(saved.get("image_std") or ()):
            pre.update(image_mean=list(saved["image_mean"]), image_std=list(saved["image_std"]))
        if saved.get("crop_pct") is not None:
            pre["crop_pct"] = float(saved["crop_pct"])
        return pre

    # ------------------------------------------------------------------ files
    def save_pretrained(self, save_directory: str | os.PathLike, processor: Any = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``.

        Args:
            save_directory: the folder (created; an existing one keeps its other files). The
                folder appears complete or not at all (written next to it, then renamed).
            processor: an image processor with ``to_dict()`` to save instead of the default.

        Returns:
            The folder.
        """
        # the one writer of the layout (maekit convert --to maekit too)
        from ..convert.maekit_format import write_model_folder

        pre = processor.to_dict() if processor is not None else self.preprocessor_config()
        return write_model_folder(self.state_dict(), save_directory, self.config, pre)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: Any = None) -> Any:
        """Rebuild a model from a folder written by :meth:`save_pretrained` (weights loaded strictly).

        Other sources (names, hub ids, checkpoint files of other formats, URLs) go through
        ``maekit.load_model``, which adapts weights where needed.

        Returns:
            The model, in eval mode.
        """
        from ..convert.maekit_format import read  # the one reader of the layout (load_model too)
        from .registry import create_model

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{folder} is not a maekit model folder (it needs {CONFIG_NAME} and "
                                    f"{WEIGHTS_NAME}); maekit.load_model reads other layouts")
        loaded = read(folder)
        hints = loaded.hints
        cfg = ModelConfig(hints["model_name"], hints["model_args"], hints["class_names"], hints["weights"])
        model = create_model(cfg.model_name, **cfg.model_args)
        if cls is not MaekitModel and not isinstance(model, cls):
            raise ValueError(f"{folder} holds a {type(model).__name__} ({cfg.model_name}), not a {cls.__name__}")
        model.load_state_dict(loaded.state_dict, strict=True)
        model.config = cfg
        model.preprocessing = hints.get("preprocessing")
        if device is not None:
            model.to(device)
        return model.eval()

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                    token: str | None = None, commit_message: str | None = None,
                    training_config: str | None = None, metrics: Mapping[str, Any] | None = None,
                    card_extra: Mapping[str, str] | None = None) -> Any:
        """Upload this model to the Hugging Face Hub: the :meth:`save_pretrained` folder plus a
        model card (``README.md``: architecture, input, labels, how to load it). Needs
        ``huggingface_hub``; ``maekit.load_model("hf-hub:REPO_ID")`` reads the repository back.

        Args:
            repo_id: ``"user/name"`` or ``"org/name"``; created when missing (``private`` then applies).
            revision: the branch to commit to (created from ``main`` when missing); default ``main``.
            token: a write token; default huggingface_hub's (``HF_TOKEN``, ``hf auth login``).
            training_config, metrics, card_extra: more card sections (the run's YAML, ``name ->
                value`` rows, ``title -> Markdown``); ``maekit.hub.push_to_hub(model, repo_id,
                run_dir=...)`` fills the first two from a training run folder.

        Returns:
            huggingface_hub's ``CommitInfo`` (``commit_url``, ``oid``).
        """
        from ..hub.push import push_to_hub  # the one module that pushes (card, upload, failures)

        return push_to_hub(self, repo_id, private=private, revision=revision, token=token,
                          commit_message=commit_message, training_config=training_config, metrics=metrics,
                          card_extra=card_extra)


def layer_groups(stem: str, blocks: str):
    """A timm ``group_matcher(self, coarse=False)`` method for a model class: its dict sends the
    parameters matching ``stem`` to layer 0, block ``k`` of ``blocks`` to k + 1 and every other one
    to the last layer (the reference layer ids, docs/REFERENCE_RECIPES.md C.3/C.6; timm's own ViT
    matcher puts ``norm`` with the last block, which the reference does not)."""

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=stem, blocks=blocks if coarse else [(blocks, None)])

    return group_matcher


# ViT and MAE: cls_token, pos_embed, patch_embed -> 0, blocks.k -> k + 1, norm / fc_norm / head (the
# decoder) -> last.
VIT_GROUPS = layer_groups(r"^cls_token|^pos_embed|^patch_embed", r"^blocks\.(\d+)")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / ``torch.compile`` wrappers."""
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module) and not isinstance(model, MaekitModel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model
