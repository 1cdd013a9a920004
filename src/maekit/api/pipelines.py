"""``pipeline(task, model=...)``: masked image modeling, classification, feature extraction.

Tasks (MindFormers snake case, Hugging Face hyphens also accepted):

- ``masked_image_modeling``: per image a dict ``{'reconstruction', 'reconstruction_visible',
  'masked', 'grid'}`` (PIL images at the model's input size; ``grid`` is the demo's four panels
  original | masked | reconstruction | reconstruction + visible), ``'mask'`` (a (h, w) float
  tensor on the patch grid, 1 = removed), ``'loss'`` (float, MSE over the removed patches in
  the model's target units) and, with ``output_dir``, ``'files'`` (paths of the PNGs written).
  ``mask_ratio`` (0.75) and ``seed``: the noise that draws the mask is
  ``torch.rand(N, L, generator=torch.Generator().manual_seed(seed))``, so the same seed gives
  the same mask, and ``seed=2`` on one image draws the official demo's mask
  (``torch.manual_seed(2)``). ``seed=None`` draws from torch's global generator.
  Norm-pix models (``norm_pix_loss=True``, e.g. the official pretrain weights) predict
  per-patch normalised pixels; to show them, each patch's mean and std are taken from the
  *original* image, removed patches included (``maekit.viz.reconstruct``; two numbers per
  patch the model never saw, as the reference notebooks do). Pixel-target models
  (``.visualize`` weights) are shown as predicted. Images are resized to the model's size
  (no crop), as in the official demo.
- ``image_classification``: per image a list of ``{'label', 'score', 'index'}``, ``top_k``
  (5) best first, scores from the softmax. Labels: the model's ``class_names`` (saved by
  maekit fine-tuning in ``config.json``), ImageNet-1k names for 1000-class models, else
  ``'LABEL_i'``.
- ``image_feature_extraction``: per image a float tensor, never masked, eval mode. ``pool=True``
  (default): (D,) -- classifiers: their own pooling before the head
  (``forward_head(pre_logits=True)``: mean + fc_norm, or the cls token); MAE pretraining
  models: the cls token of ``forward_features``; ConvMAE pretraining models (no cls token): the
  mean of the tokens. ``pool=False``: all tokens of ``forward_features`` (T, D).

Inputs as :class:`~maekit.api.ImageProcessor` takes them; any size and mode. A single input
gives a single result, a list (or 4-D batch) a list.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..engine.knn import pooled_features
from ..hub.load import load_model
from ..models import is_pretraining_model
from ..tasks.config import MASK_RATIO
from ..viz.reconstruction import panels_grid, reconstruct
from .processor import AutoImageProcessor, ImageProcessor

# besides the task names themselves, with hyphens or underscores
TASK_ALIASES = {"mim": "masked_image_modeling", "reconstruction": "masked_image_modeling",
                "classification": "image_classification", "feature_extraction": "image_feature_extraction"}
PIPELINE_DEFAULTS = {
    "masked_image_modeling": "mae_vit_base_patch16.visualize",
    "image_classification": "vit_base_patch16.finetuned",
    "image_feature_extraction": "mae_vit_base_patch16.pretrain",
}


def normalize_task(task: str) -> str:
    key = task.strip().lower().replace("-", "_")
    key = TASK_ALIASES.get(key, key)
    if key not in PIPELINE_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; choose one of masked_image_modeling, image_classification, "
                         "image_feature_extraction (hyphens accepted)")
    return key


def expand_inputs(inputs: Any) -> Any:
    """Pipeline inputs with every folder replaced by the images inside it (sorted).

    A list (or a folder) gives a list; any other single input (file, URL, PIL image, array) is
    returned as it is, so a pipeline still answers it with a single result.
    """
    from ..data.images import find_images

    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    expanded: list = []
    folder = False
    for item in items:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            found = [str(p) for p in find_images(Path(item))]
            if not found:
                raise ValueError(f"no images found in folder {os.fspath(item)}")
            expanded.extend(found)
            folder = True
        else:
            expanded.append(item)
    return expanded if folder or isinstance(inputs, (list, tuple)) else inputs


def _check_image(image: Any, index: int | None) -> None:
    """Refuse what would give a meaningless result: an empty image, NaN / inf pixels, negative
    intensities (a tensor normalised already: pass the [0, 1] image, the pipeline normalises)."""
    which = "the image" if index is None else f"image {index}"
    size = image.size if hasattr(image, "getbbox") else tuple(image.shape[-2:])
    if min(size) == 0:
        raise ValueError(f"{which} is empty ({size[0]}x{size[1]} pixels)")
    if isinstance(image, torch.Tensor) and image.numel():
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{which} holds NaN or infinite values")
        if float(image.min()) < 0:
            raise ValueError(f"{which} holds negative values (minimum {float(image.min()):.4g}): pass pixels in "
                             "[0, 1] (or uint8); the pipeline normalises them itself")


def _stem(item: Any, index: int) -> str:
    """A file-name stem for input ``item`` (a path's or URL's; else ``image<index>``)."""
    text = os.fspath(item) if isinstance(item, (str, Path)) else ""
    if text.lower().startswith(("http://", "https://")):
        text = text.split("?", 1)[0].rstrip("/")
    return re.sub(r"[^\w.-]+", "_", Path(text).stem) or f"image{index}"


class Pipeline:
    """Base: model + processor + batching. Subclasses define ``_run(pixel_values, items, **kw)``."""

    task = ""
    resize_mode = "crop"  # default processor geometry: the evaluation crop
    call_params: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, image_processor: ImageProcessor | None = None, *, device: Any = None,
                 batch_size: int = 8, **defaults: Any):
        self._refuse_unknown(defaults, ["batch_size", "device", "image_processor"])
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.device = next(self.model.parameters(), torch.empty(0)).device  # a model without parameters: CPU
        self.image_processor = image_processor or ImageProcessor.from_model(model,
                                                                            resize_mode=self.resize_mode)
        self.batch_size = int(batch_size)
        self.defaults = defaults
        self._check_model(self.model)

    def _refuse_unknown(self, given: dict, also: list[str]) -> None:
        if unknown := sorted(set(given) - set(self.call_params) - set(also)):
            raise ValueError(f"{self.task}: unknown argument(s) {unknown}; accepted: "
                             f"{sorted(self.call_params) + also}")

    @staticmethod
    def _check_model(model: nn.Module) -> None:
        """Refuse (ValueError) a model the task cannot run; also what the Trainer checks."""

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        self._refuse_unknown(kwargs, ["batch_size"])
        options = {**self.defaults, **kwargs}
        batch_size = int(options.pop("batch_size", self.batch_size))
        raw = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        loaded, batched = self.image_processor.load(inputs)
        for k, image in enumerate(loaded):
            _check_image(image, k if batched else None)
        items = raw if len(raw) == len(loaded) else [None] * len(loaded)
        outputs: list = []
        state = self._start(len(loaded), **options)
        for start in range(0, len(loaded), batch_size):
            chunk = loaded[start:start + batch_size]
            pixel_values = self.image_processor.transform(chunk).to(self.device)
            with torch.no_grad():
                chunk_items = items[start:start + batch_size]
                outputs.extend(self._run(pixel_values, chunk_items, start, state, **options))
        return outputs if batched else outputs[0]

    def _start(self, count: int, **options: Any) -> Any:
        return None

    def _run(self, pixel_values: torch.Tensor, items: list, offset: int, state: Any, **options: Any) -> list:
        raise NotImplementedError

    def __repr__(self) -> str:
        name = getattr(self.model, "model_name", type(self.model).__name__)
        return f"{type(self).__name__}(task={self.task!r}, model={name!r}, device={str(self.device)!r})"


class MaskedImageModelingPipeline(Pipeline):
    """Reconstructions with the demo's four panels (module docstring)."""

    task = "masked_image_modeling"
    resize_mode = "resize"  # the whole image, as the official demo
    call_params = ("mask_ratio", "seed", "output_dir")

    @staticmethod
    def _check_model(model: nn.Module) -> None:
        if not is_pretraining_model(model):
            name = getattr(model, "model_name", type(model).__name__)
            raise ValueError(f"masked_image_modeling needs a pretraining model (mae_* / convmae_*); {name} "
                             "is a classifier: use the image_classification or image_feature_extraction task")

    def _start(self, count: int, *, mask_ratio: float = MASK_RATIO, seed: int | None = None,
               output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        # the mask ratio is checked by the model (maekit.models.masking); the seed here, where it is used
        if seed is not None and not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {seed}")
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        # One noise table for all images, so a mask does not depend on the batch size.
        return {"noise": torch.rand(count, self.model.num_patches, generator=generator), "names": set()}

    def _run(self, pixel_values, items, offset, state, *, mask_ratio: float = MASK_RATIO, seed: int | None = None,
             output_dir: str | os.PathLike | None = None) -> list:
        n = pixel_values.shape[0]
        panels = reconstruct(self.model, pixel_values, mask_ratio=float(mask_ratio),
                             noise=state["noise"][offset:offset + n].to(pixel_values.device))
        proc = self.image_processor
        gh, gw = self.model.grid_size
        step = pixel_values.shape[-2] // gh, pixel_values.shape[-1] // gw
        results = []
        for i in range(n):
            sl = slice(i, i + 1)
            out = {
                "reconstruction": proc.to_pil(panels.reconstruction[sl])[0],
                "reconstruction_visible": proc.to_pil(panels.pasted[sl])[0],
                "masked": proc.to_pil(panels.masked[sl])[0],
                "grid": panels_grid(_slice_panels(panels, sl), mean=proc.image_mean, std=proc.image_std),
                "mask": panels.mask[i, 0, :: step[0], :: step[1]].detach().cpu().float(),
                "loss": float(panels.loss[i]),
            }
            if output_dir is not None:
                stem = _stem(items[i], offset + i)
                if stem in state["names"]:  # two inputs with the same file name
                    stem = f"{stem}_{offset + i}"
                state["names"].add(stem)
                out["files"] = _save(out, Path(output_dir), stem)
            results.append(out)
        return results


def _slice_panels(panels, sl):
    return dataclasses.replace(panels, **{f.name: getattr(panels, f.name)[sl] for f in dataclasses.fields(panels)})


def _save(out: dict, folder: Path, stem: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {key: str(folder / f"{stem}_{key}.png") for key in ("grid", "reconstruction", "reconstruction_visible")}
    for key, path in files.items():
        out[key].save(path)
    return files


class ImageClassificationPipeline(Pipeline):
    """Top-k labels and softmax scores (module docstring)."""

    task = "image_classification"
    call_params = ("top_k",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.labels = class_names(self.model)  # once: the 1000 ImageNet names take ~0.1 s

    @staticmethod
    def _check_model(model: nn.Module) -> None:
        if is_pretraining_model(model) or int(getattr(model, "num_classes", 0) or 0) <= 0:
            name = getattr(model, "model_name", type(model).__name__)
            raise ValueError(f"image_classification needs a classifier with a head; {name} has none "
                             "(a pretraining model or num_classes=0): use image_feature_extraction, or "
                             "fine-tune it")

    def _run(self, pixel_values, items, offset, state, *, top_k: int = 5) -> list:
        k = int(top_k)
        if k < 1:
            raise ValueError(f"top_k must be at least 1, got {k}")
        probs = self.model(pixel_values).float().softmax(dim=-1).cpu()
        scores, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
        return [[{"label": self.labels[j], "score": float(s), "index": int(j)}
                 for s, j in zip(srow.tolist(), jrow.tolist(), strict=True)]
                for srow, jrow in zip(scores, indices, strict=True)]


def class_names(model: nn.Module) -> list[str]:
    """``model.class_names``, ImageNet-1k names for 1000 classes, else ``LABEL_i``."""
    n = int(getattr(model, "num_classes", 0) or 0)
    names = getattr(model, "class_names", None)
    if names is not None and len(names) == n:
        return [str(x) for x in names]
    if n == 1000:
        from timm.data import ImageNetInfo  # timm >= 0.9 ships the ImageNet-1k names

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    return [f"LABEL_{i}" for i in range(n)]


class ImageFeatureExtractionPipeline(Pipeline):
    """Unmasked, deterministic encoder features (module docstring)."""

    task = "image_feature_extraction"
    call_params = ("pool",)

    def _run(self, pixel_values, items, offset, state, *, pool: bool = True) -> list:
        # pooled: the k-NN monitor's rule (engine.knn.pooled_features), one definition
        feats = pooled_features(self.model, pixel_values) if pool else self.model.forward_features(pixel_values)
        return list(feats.float().cpu())


_PIPELINES = {
    "masked_image_modeling": MaskedImageModelingPipeline,
    "image_classification": ImageClassificationPipeline,
    "image_feature_extraction": ImageFeatureExtractionPipeline,
}


def pipeline(task: str, model: str | os.PathLike | nn.Module | None = None, *,
             image_processor: ImageProcessor | str | os.PathLike | None = None, device: Any = None,
             batch_size: int = 8, download: bool = True, **kwargs: Any) -> Pipeline:
    """Build a pipeline.

    Args:
        task: ``masked_image_modeling``, ``image_classification`` or ``image_feature_extraction``
            (hyphenated names accepted).
        model: a registered name (+ ``.tag``), model folder, checkpoint file, URL, or an
            ``nn.Module``; default: ``PIPELINE_DEFAULTS[task]`` (published weights).
        image_processor: an :class:`ImageProcessor` (used as it is) or where to read one;
            default: the model's own (``model.preprocessor_config()``: its input size and channels,
            the mean / std / crop its source folder records -- maekit or transformers
            ``preprocessor_config.json``, timm ``pretrained_cfg`` --, else the reference ones), with
            the task's geometry ('resize' for masked image modeling, the evaluation crop otherwise).
        device: where to run (default: where the model is; CPU for loaded models).
        batch_size: images per forward pass.
        download: fetch published weights for a name (False: random weights).
        **kwargs: call defaults: ``mask_ratio``, ``seed``, ``output_dir`` (masked image
            modeling), ``top_k`` (classification), ``pool`` (features).
    """
    task = normalize_task(task)
    source = PIPELINE_DEFAULTS[task] if model is None else model
    net = load_model(source, download=download)
    if image_processor is not None and not isinstance(image_processor, ImageProcessor):
        image_processor = AutoImageProcessor.from_pretrained(image_processor)
    return _PIPELINES[task](net, image_processor, device=device, batch_size=batch_size, **kwargs)
