"""``ModelConfig``: which registered model, built with which arguments, labelled how.

It is exactly what a model folder's ``config.json`` holds::

    {"model_name": "mae_vit_base_patch16_dec512d8b", "model_args": {"norm_pix_loss": true},
     "class_names": [...],          # classifiers trained by maekit (optional)
     "weights": "mae_vit_base_patch16.pretrain"}   # the published weights it came from (optional)

``create_model(config.model_name, **config.model_args)`` rebuilds the model; every model built
by ``create_model`` or a loader carries its config as ``model.config``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CONFIG_NAME = "config.json"
# Constructor arguments of one kind of model that the other kind does not take.
PRETRAINING_ONLY_ARGS = ("norm_pix_loss", "sparse_stages")  # and every decoder_*
CLASSIFIER_ONLY_ARGS = ("num_classes", "global_pool", "drop_path_rate", "drop_rate")


def other_kind_args(args: dict[str, Any], *, classifier: bool = False, decoder: bool = False) -> dict[str, Any]:
    """``args`` without a classifier's own arguments (``classifier``) and / or a pretraining
    model's (``decoder``: ``decoder_*``, ``norm_pix_loss``, ``sparse_stages``): the one filter
    between the two kinds of a model (a classifier of a pretraining model's encoder, the
    architecture a source gives to a run)."""
    return {k: v for k, v in args.items()
            if not (classifier and k in CLASSIFIER_ONLY_ARGS)
            and not (decoder and (k in PRETRAINING_ONLY_ARGS or k.startswith("decoder_")))}


def jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively (what JSON gives back), so configs compare equal after a round trip."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


@dataclass
class ModelConfig:
    """A registered model name, its constructor arguments and two optional labels.

    Attributes:
        model_name: canonical registered name (``maekit.list_models()``).
        model_args: keyword arguments of ``create_model`` (only those that differ from the preset).
        class_names: the label of each output of a classifier, when known.
        weights: the published weights name (``'<model>.<tag>'``) the model was loaded from.
    """

    model_name: str
    model_args: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"model_name must be a registered model name, got {self.model_name!r}")
        if not isinstance(self.model_args, dict):
            raise ValueError(f"model_args must be a dict of constructor arguments, got {type(self.model_args).__name__}")
        self.model_args = jsonable(self.model_args)
        if self.class_names is not None:
            self.class_names = [str(c) for c in self.class_names]

    def to_dict(self) -> dict[str, Any]:
        """``{"model_name", "model_args"}`` plus ``class_names`` / ``weights`` when set."""
        out: dict[str, Any] = {"model_name": self.model_name, "model_args": dict(self.model_args)}
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.weights:
            out["weights"] = self.weights
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """From a ``config.json`` dict; unknown top-level keys are ignored (other tools may add some)."""
        if not isinstance(data, dict) or not isinstance(data.get("model_name"), str):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"a maekit config needs a 'model_name' string; got {keys}")
        return cls(data["model_name"], data.get("model_args") or {}, data.get("class_names"), data.get("weights"))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
