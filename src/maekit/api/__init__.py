"""High-level API (MindFormers / Hugging Face style): Auto classes, weights by name,
``save_pretrained`` / ``from_pretrained``, pipelines, ``Trainer`` / ``TrainingArguments``, and the
``predict`` / ``visualize`` / ``run`` commands.

>>> from maekit.api import AutoModel, pipeline
>>> model = AutoModel.from_pretrained("mae_vit_large_patch16.visualize")  # doctest: +SKIP
>>> pipe = pipeline("masked_image_modeling", model=model)                # doctest: +SKIP
>>> out = pipe("cat.jpg", seed=2)  # the official demo's mask                  # doctest: +SKIP
>>> out["grid"].save("cat_grid.png")                                      # doctest: +SKIP
"""

from ..compat.mindformers import MindFormersRun, RunConfigWarning, load_run_config  # run YAML: Trainer args
from .config import AutoConfig, MAEConfig
from .modeling import AutoModel, DecoderNotLoadedWarning, from_pretrained, save_pretrained
from .pipelines import (ImageClassificationPipeline, ImageFeatureExtractionPipeline,
                        MaskedImageModelingPipeline, Pipeline, pipeline)
from .processor import AutoImageProcessor, ImageProcessor
from .trainer import Trainer
from ..tasks.arguments import TrainingArguments
from ..hub.table import list_pretrained  # maekit.list_pretrained

__all__ = [
    "AutoConfig", "AutoImageProcessor", "AutoModel", "DecoderNotLoadedWarning",
    "ImageClassificationPipeline", "ImageFeatureExtractionPipeline", "ImageProcessor", "MAEConfig",
    "MaskedImageModelingPipeline", "MindFormersRun", "Pipeline", "RunConfigWarning", "Trainer", "TrainingArguments",
    "from_pretrained", "list_pretrained", "load_run_config", "pipeline", "save_pretrained",
]
