"""What a registered model looks like: its ``architecture()`` and state-dict shapes.

``arch_spec(name, args)`` builds the model on PyTorch's ``meta`` device (no memory, no init
cost) and records what it says about itself (``model.architecture()``: family and
architecture numbers) and the shape of every state-dict entry. The format writers (HF ``config.json``) and the model inference / fit checks use it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import torch

from ..models.base import PRETRAINING_FAMILIES, default_preprocessing
from .errors import ConversionError

# Architecture numbers of one kind of model only (a decoder's, a classifier's): None for the others.
_PARTS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "norm_pix_loss", "num_classes", "global_pool")


@dataclass(frozen=True)
class ArchSpec:
    """Architecture of a registered model (what a converter needs to know about it).

    The architecture numbers are attributes read from ``architecture`` (what the model states
    about itself, ``model.architecture()``; None for what it has not): ``family`` ('mae' | 'vit' |
    'convmae' | 'convvit'), ``img_size`` (H, W), ``patch_size`` (int, or ConvMAE's 3 stage strides),
    ``in_chans``, ``embed_dim`` / ``depth`` / ``mlp_ratio`` (int / float, or tuples of 3),
    ``num_heads``, ``layer_norm_eps``, ``decoder_embed_dim`` / ``decoder_depth`` /
    ``decoder_num_heads``, ``norm_pix_loss`` (pretraining models), ``num_classes`` and
    ``global_pool`` ('avg' | 'token'; classifiers).
    """

    name: str
    args: dict[str, Any]
    # Everything the model states about itself (``model.architecture()``: every resolved constructor
    # argument), also for the API's config view (``maekit.MAEConfig``).
    architecture: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)
    # Not architecture, but what the writers put next to it: the label of each classifier output (HF
    # id2label, timm label_names, maekit class_names) and the normalisation / crop (HF
    # preprocessor_config.json, timm pretrained_cfg), when the source records them.
    class_names: tuple[str, ...] | None = field(default=None, compare=False)
    preprocessing: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def __getattr__(self, key: str) -> Any:
        """An architecture number (``spec.embed_dim``...); None for a part the model has not."""
        arch = self.__dict__.get("architecture", {})
        if key not in arch and key not in _PARTS:
            raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
        return arch.get(key)

    def with_metadata(self, class_names: Any = None, preprocessing: dict[str, Any] | None = None) -> ArchSpec:
        """This spec with labels (kept only when they fit ``num_classes``) and ``preprocessing``
        (``image_mean`` / ``image_std`` / ``crop_pct``; kept when the mean fits ``in_chans``)."""
        changes: dict[str, Any] = {}
        if class_names and self.num_classes is not None and len(class_names) == self.num_classes:
            changes["class_names"] = tuple(str(n) for n in class_names)
        if preprocessing and len(preprocessing.get("image_mean") or ()) == self.in_chans:
            changes["preprocessing"] = {k: preprocessing[k] for k in ("image_mean", "image_std", "crop_pct")
                                        if preprocessing.get(k) is not None}
        return replace(self, **changes) if changes else self

    def preprocessor(self) -> dict[str, Any]:
        """The model's preprocessing (``maekit.models.base.default_preprocessing``) with this spec's."""
        pre = default_preprocessing(self.img_size, self.in_chans, self.family in PRETRAINING_FAMILIES)
        return {**pre, **(self.preprocessing or {})}

    @property
    def stride(self) -> int:
        """Pixels per token side: the patch size (the product of the three stage strides for ConvMAE)."""
        return stride_of(self.patch_size)

    @property
    def width(self) -> int:
        """Width of the attention blocks (stage 3 for ConvMAE)."""
        return self.embed_dim[-1] if isinstance(self.embed_dim, tuple) else self.embed_dim


def stride_of(patch_size: Any) -> int:
    """Pixels per token side of a patch size (an int, or ConvMAE's three stage strides)."""
    return math.prod(patch_size) if isinstance(patch_size, tuple) else patch_size


@lru_cache(maxsize=256)
def _describe(name: str, args_json: str) -> ArchSpec:
    from ..models import create_model

    args = json.loads(args_json)
    try:
        with torch.device("meta"):
            model = create_model(name, **args)
    except ValueError as e:
        raise ConversionError(f"cannot build model {name!r} with {args}: {e}") from e
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # the model says what it is (maekit.models.base.MaekitModel)
    return ArchSpec(name=name, args=args, architecture=model.architecture(), shapes=shapes)


def arch_spec(name: str, args: dict[str, Any] | None = None) -> ArchSpec:
    """The :class:`ArchSpec` of ``create_model(name, **args)`` (built on the meta device, cached)."""
    return _describe(name, json.dumps(dict(args or {}), sort_keys=True, default=str))


@lru_cache(maxsize=1)
def _presets() -> tuple[tuple[str, ArchSpec], ...]:
    from ..models import canonical_name, list_models

    names = set(list_models())
    out = []
    for canonical in list_models(include_aliases=False):
        short = canonical.replace("_dec512d8b", "")
        friendly = short if short in names and canonical_name(short) == canonical else canonical
        try:
            out.append((friendly, arch_spec(friendly)))
        except ConversionError:  # a model kind this module does not know: not a candidate
            continue
    return tuple(out)


def presets(family: str) -> list[tuple[str, ArchSpec]]:
    """Registered models of one family as (name, spec), official names preferred over aliases."""
    return [(n, s) for n, s in _presets() if s.family == family]
