"""One config per task: the options of every command, their defaults, types, help and aliases.

Every entry point fills one of these dataclasses and nothing else carries options:
``maekit <command>`` flags and ``--config file.yaml`` (:mod:`maekit.tasks.flags`),
``maekit.TrainingArguments`` / ``Trainer`` (:mod:`maekit.tasks.arguments`) and the MindFormers run
YAML of ``maekit run`` (:mod:`maekit.compat.mindformers`). The task functions
(``run_pretrain(cfg, ...)`` ...) read the config and pass explicit keyword arguments on.

HOW TO ADD AN OPTION (the whole job):
    Add ONE field to the dataclass of every task that uses it (or to a mixin below when several
    share it), written ``name: type = opt(default, "help text")``. ``opt`` keywords:
    ``flags=("--name", "--other-spelling")`` (default: ``--name``), ``choices=(...)``,
    ``off="--no_name"`` (a bool: the flag that sets it False), ``off_help``, ``min=0`` (lower
    bound, checked), ``metavar``, ``required=True``, ``cli=False`` (not a flag: YAML / Trainer
    only), ``hidden=True`` (accepted, not shown in ``-h``). Supported types: ``bool``, ``int``,
    ``float``, ``str``, ``X | None``, ``list[int]``, ``list[float]``, ``dict``. That is all: the
    flag, ``--config`` key, ``TrainingArguments`` field and ``maekit run --options`` key follow.
    Another name for the same option goes into ``ALIASES`` (:mod:`maekit.tasks.aliases`, the one alias
    table), never into a second field. Help text is plain text (no RST backticks) and does not repeat
    the default (``-h`` appends it once).

Defaults are the reference's (docs/REFERENCE_RECIPES.md C.2 pretrain, C.3 fine-tune, C.4 linear
probe). The same option has the same default in every command, except where the reference differs:
``model``, ``batch_size`` (64 / 64 / 512; eval 128, predict 8), ``epochs`` (400 / 50 / 90),
``blr`` (1e-3 / 1e-3 / 0.1), ``min_lr`` (0 / 1e-6 / 0), ``warmup_epochs`` (40 / 5 / 10),
``weight_decay`` (0.05 / 0.05 / 0), ``global_pool`` (fine-tune True, linear probe False: the
reference's cls token), ``save_every`` (pretrain 20, others 1), ``dist_eval`` (``maekit eval``
shards by default; the fine-tune reference does not), ``seed`` (predict / visualize: 2, the
official demo's mask seed), ``output_dir`` (eval / predict: none unless given), ``nb_classes``
(reference 1000; here None = from the data) and the k-NN caps (the pretraining monitor samples its
bank and queries, ``maekit knn`` takes them all). ``DemoConfig`` and ``BenchConfig`` have their
own defaults (a tiny model on digits; a throughput probe). The tool commands' options (convert,
push, shard, download, app, list-models, run) are in :mod:`maekit.tasks.tool_config`.

This module imports no torch: ``maekit <command> -h`` builds its parser from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .validate import ConfigMixin


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field: its default, help text and CLI metadata (module docstring)."""
    meta["help"] = help
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# The one alias table lives in .aliases (validate.py reads it too); add other spellings there.

_AMP = ("auto", "bf16", "fp16", "none")
OUTPUT_DIR = "./output_dir"  # where every command writes unless told (predict's reconstructions too)
MASK_RATIO = 0.75  # the one place of the reference mask ratio (docs/REFERENCE_RECIPES.md C.2)
# The official scripts' distributed flags: torchrun / the environment set what they said, so they
# are accepted and dropped (ConfigMixin.ignored), never recorded.
_DIST_FLAGS = {"world_size": True, "local_rank": True, "dist_on_itp": False, "dist_url": True}


def default_num_workers() -> int:
    """Worker processes per training process: the CPUs this process may use, shared by the
    processes of this node (``LOCAL_WORLD_SIZE``), one left for the main process, at most 10 (the
    references'). 0 on a single-CPU machine. Public as ``maekit.data.default_num_workers``; it lives
    here because this module stays torch-free."""
    # torchrun sets LOCAL_WORLD_SIZE before the process starts, so it is known here.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(0, min(10, cpus // local - 1))


# Options that change what a resumed run computes (and what the task adds to its resolved config:
# eff_batch_size, task); a resume with other values is refused unless --resume_ignore_args. Epochs
# may grow: extending a run is the usual reason to resume.
RESUME_CHECKED = (
    "model", "input_size", "patch_size", "in_chans", "norm_pix_loss", "mask_ratio", "sparse_stages",
    "model_args", "drop_path", "global_pool", "nb_classes", "batch_size", "accum_iter", "eff_batch_size",
    "lr", "blr", "min_lr", "warmup_epochs", "weight_decay", "layer_decay", "clip_grad", "augment",
    "smoothing", "mixup", "cutmix", "mean", "std", "task",
)


# ----------------------------------------------------------------------------- mixins
@dataclass
class MaskOptions:
    """The masking of a pretraining model's forward (pretrain, demo, bench, predict, visualize)."""

    mask_ratio: float = opt(MASK_RATIO, "fraction of patches removed (pretraining models)", min=0, below=1)

    def masking(self) -> dict[str, float]:
        """The keyword arguments of the masked forward these options set: ``model(imgs, noise=...,
        **cfg.masking())``, :func:`maekit.viz.reconstruct`, the masked-image-modeling pipeline."""
        return {"mask_ratio": self.mask_ratio}


@dataclass
class ModelOptions:
    """Which model and its shape (the constructor arguments the flags name)."""

    model: str | None = opt(None, "registered model name (see maekit list-models)")
    input_size: list[int] | None = opt(None, "image size: S or H W (default: the model's)", min=1,
                                       metavar="S")
    patch_size: int | None = opt(None, "patch size (default: the model's)", min=1)
    in_chans: int | None = opt(None, "image channels (default: the model's, 3)", min=1)
    model_args: dict = opt({}, "other constructor arguments (depth, embed_dim ...)", cli=False)


@dataclass
class DataOptions:
    data_path: str = opt("builtin:digits", "image folder, ImageNet-style root (train/, val/), tar shards "
                         "(folder, data/train-{000000..000127}.tar or URLs), hf:NAME_OR_PATH (Hugging Face "
                         "dataset) or builtin:digits")
    train_split: str | None = opt(None, "train folder (default data_path/train)")
    val_split: str | None = opt(None, "validation folder (default data_path/val)")
    nb_classes: int | None = opt(None, "number of classes (default: from the data)", min=1)
    # Data sources other than folders (maekit.data.shards, maekit.data.hf_datasets).
    image_column: str | None = opt(None, "hf: datasets: the image column (default: the only Image column)")
    label_column: str | None = opt(None, "hf: datasets: the label column (default: the only ClassLabel column)")
    split: str | None = opt(None, "hf: datasets: the split this command reads (default: train for training, "
                            "validation/val/test for evaluation)")
    num_samples: int | None = opt(None, "tar shards: samples per epoch (default: from shards.json or counted "
                                  "in local shards; needed for remote shards without an index)", min=1)


@dataclass
class DeviceOptions:
    device: str = opt("auto", "auto, cpu, cuda, cuda:N (PASSL's gpu means cuda)")
    num_workers: int = opt(default_num_workers(),
                           "data loader worker processes per process (default: this node's CPUs shared by its "
                           "processes, one left for the main process, at most the reference's 10)", min=0)
    pin_mem: bool = opt(True, "pin host memory", off="--no_pin_mem", off_help="do not pin host memory")
    amp: str = opt("auto", "precision: auto = bf16 autocast on GPUs that support it, fp32 on CPU",
                   choices=_AMP)
    mean: list[float] | None = opt(None, "normalisation mean, e.g. 0.5 or 0.485,0.456,0.406")
    std: list[float] | None = opt(None, "normalisation std, one value per channel")


@dataclass
class RunOptions(DeviceOptions):
    output_dir: str = opt(OUTPUT_DIR, "checkpoints, log.txt and config.yaml go here")
    log_dir: str | None = opt(None, "TensorBoard folder (off when not set)")
    seed: int = opt(0, "base seed; each rank uses seed + rank")
    resume: str = opt("", "checkpoint to resume from, or auto for the latest in output_dir")
    overwrite: bool = opt(False, "start a new run in an output_dir that holds an earlier run's checkpoints "
                          "(deletes them and log.txt); without it such a run is refused")
    start_epoch: int = opt(0, "first epoch when not resuming", min=0)
    compile: bool = opt(False, "torch.compile the model")
    grad_checkpointing: bool = opt(False, "activation checkpointing: recompute each block in the backward pass "
                                   "(far less activation memory, about a third more compute, same gradients)")
    save_every: int | None = opt(None, "write checkpoint-{epoch}.pth every N epochs", min=0)
    print_freq: int = opt(20, "plain-text progress line every N steps (no TTY)", min=1)
    report_to: str | None = opt(None, "loggers, comma-separated: tensorboard, csv (output_dir/metrics.csv), wandb "
                                "(pip install wandb), or none; default tensorboard when --log_dir is set")
    resume_ignore_args: bool = opt(False, "resume even though options that change training (model, "
                                   "norm_pix_loss, lr, batch, mask ratio ...) differ from the checkpoint's")
    push_to_hub: bool = opt(False, "after training, upload the final model with a model card of this run (its "
                            "options and metrics) to the Hugging Face Hub repository --hub_model_id")
    hub_model_id: str | None = opt(None, "the Hub repository of --push_to_hub: user/name or org/name, created "
                                   "when missing (token: HF_TOKEN or hf auth login)", metavar="REPO_ID")


@dataclass
class KnnOptions:
    """The weighted k-NN evaluation (maekit knn, and the --knn_data_path monitor of maekit pretrain)."""

    knn_k: int = opt(20, "k-NN neighbours", min=1)
    knn_temperature: float = opt(0.07, "k-NN temperature of the exp(similarity / T) weights", min=0)
    knn_bank_per_class: int | None = opt(100, "k-NN bank: first N images of each class of the train split "
                                         "(0: all)", min=0)
    knn_max_queries: int | None = opt(1000, "k-NN queries: at most N images of the val split, balanced over "
                                      "classes (0: all)", min=0)


@dataclass
class DecodeOptions:
    """The decoding of the training JPEGs (pretrain, linprobe: the tasks whose crops a JPEG decoder can take)."""

    fast_decode: bool = opt(False, "crop-aware reduced JPEG decoding: draw the crop box first, decode at 1/2, 1/4 or "
                            "1/8 scale when the crop stays at least the input size (several times faster on large "
                            "photos; pixels differ slightly from a full decode, PSNR above 35 dB)")
    decode: str = opt("cpu", "where training JPEGs are decoded: cpu (workers), or gpu (workers send file bytes "
                      "and the crop/flip they drew; nvJPEG decodes the batch and crops on the device; "
                      "non-JPEG files fall back to the CPU)", choices=("cpu", "gpu"))


@dataclass
class ScheduleOptions:
    batch_size: int = opt(64, "images per process per step", min=1)
    epochs: int = opt(400, "training epochs", min=0)
    accum_iter: int = opt(1, "gradient accumulation steps", min=1)
    weight_decay: float = opt(0.05, "AdamW weight decay", min=0)
    lr: float | None = opt(None, "absolute learning rate (overrides --blr)", min=0)
    blr: float = opt(1e-3, "base lr: lr = blr * effective batch / 256", min=0)
    min_lr: float = opt(0.0, "floor of the cosine schedule", min=0)
    warmup_epochs: float = opt(40, "linear warm-up epochs", min=0)
    clip_grad: float | None = opt(None, "clip the gradient norm to this value", min=0)


# ----------------------------------------------------------------------------- task configs
@dataclass
class PretrainConfig(ConfigMixin, DecodeOptions, KnnOptions, MaskOptions, ModelOptions, ScheduleOptions,
                     DataOptions, RunOptions):
    """maekit pretrain: MAE / ConvMAE pretraining on unlabelled images (official main_pretrain.py flags). The
    reference recipe is docs/REFERENCE_RECIPES.md C.2."""

    ignored: ClassVar[dict[str, bool]] = _DIST_FLAGS

    model: str = opt("mae_vit_large_patch16", "registered pretraining model (mae_* / convmae_*)")
    input_size: list[int] = opt([224], "image size: S or H W", min=1, metavar="S")
    norm_pix_loss: bool = opt(False, "per-patch normalised pixel targets")
    init: str = opt("", "start from the weights of any source (official _full or encoder-only file, PASSL, "
                    "MindFormers, transformers ViTMAE folder, maekit folder or checkpoint, name.tag, URL): the "
                    "model is the source's, encoder and decoder are loaded when it has them and a report says "
                    "what was not; optimizer and schedule start fresh (--resume continues a run)", metavar="SOURCE")
    sparse_stages: bool = opt(False, "ConvMAE: run stages 1-2 on visible positions only (exact; faster)")
    augment: str = opt("reference", "reference: RandomResizedCrop(scale 0.2-1) + flip; flip: resize + flip; "
                       "none: resize only (for text or some medical images)", choices=("reference", "flip", "none"))
    save_every: int | None = opt(20, "write checkpoint-{epoch}.pth every N epochs", min=0)
    knn_data_path: str | None = opt(None, "labelled images (class folders, train/ + val/ root, builtin:digits) "
                                    "for the weighted k-NN monitor (knn_top1 / knn_top5 in log.txt)")
    knn_every: int = opt(1, "k-NN monitor (and online probe) every N epochs", min=1)
    online_probe: bool = opt(False, "train a detached BatchNorm + linear head on the --knn_data_path features "
                             "alongside (probe_top1 in log.txt; resumable)")
    recon_every: int = opt(1, "reconstruction grid of 8 fixed images every N epochs (output_dir/reconstructions, "
                           "TensorBoard); 0: off", min=0)


@dataclass
class _ClassifyOptions(ConfigMixin, ModelOptions, ScheduleOptions, DataOptions, RunOptions):
    ignored: ClassVar[dict[str, bool]] = _DIST_FLAGS
    model: str = opt("vit_large_patch16", "registered classifier (vit_* / convvit_*)")
    input_size: list[int] = opt([224], "image size: S or H W", min=1, metavar="S")
    finetune: str = opt("", "pretrained weights: file, model folder or name")
    eval: bool = opt(False, "only evaluate --resume on the validation set")
    dist_eval: bool = opt(False, "shard evaluation across processes")
    save_every: int | None = opt(1, "write checkpoint-{epoch}.pth every N epochs", min=0)


@dataclass
class FinetuneConfig(_ClassifyOptions):
    """maekit finetune: fine-tune a pretrained encoder on class folders: layer decay, mixup, RandAugment
    (main_finetune.py flags). The reference recipe is docs/REFERENCE_RECIPES.md C.3."""

    ignored: ClassVar[dict[str, bool]] = {**_DIST_FLAGS, "resplit": False}

    epochs: int = opt(50, "training epochs", min=0)
    min_lr: float = opt(1e-6, "floor of the cosine schedule", min=0)
    warmup_epochs: float = opt(5, "linear warm-up epochs", min=0)
    drop_path: float = opt(0.1, "stochastic depth rate", min=0)
    layer_decay: float = opt(0.75, "layer-wise lr decay", min=0)
    global_pool: bool = opt(True, "mean-pool patch tokens", off="--cls_token", off_help="use the cls token")
    color_jitter: float | None = opt(None, "colour jitter factor (off when not set; reference: off)")
    aa: str = opt("rand-m9-mstd0.5-inc1", "RandAugment policy (none to disable)")
    smoothing: float = opt(0.1, "label smoothing", min=0)
    reprob: float = opt(0.25, "random-erasing probability", min=0)
    remode: str = opt("pixel", "random-erasing mode")
    recount: int = opt(1, "random-erasing count", min=0)
    mixup: float = opt(0.0, "mixup alpha (0 = off)", min=0)
    cutmix: float = opt(0.0, "cutmix alpha (0 = off)", min=0)
    cutmix_minmax: list[float] | None = opt(None, "cutmix min/max ratio (overrides alpha)")
    mixup_prob: float = opt(1.0, "probability of mixup or cutmix per batch", min=0)
    mixup_switch_prob: float = opt(0.5, "probability of cutmix instead of mixup", min=0)
    mixup_mode: str = opt("batch", "per batch, pair or element", choices=("batch", "pair", "elem"))


@dataclass
class LinprobeConfig(DecodeOptions, _ClassifyOptions):
    """maekit linprobe: linear probe of a frozen pretrained encoder: LARS and a BatchNorm head
    (main_linprobe.py flags). The reference recipe is docs/REFERENCE_RECIPES.md C.4."""

    batch_size: int = opt(512, "images per process per step", min=1)
    epochs: int = opt(90, "training epochs", min=0)
    weight_decay: float = opt(0.0, "LARS weight decay", min=0)
    blr: float = opt(0.1, "base lr: lr = blr * effective batch / 256", min=0)
    warmup_epochs: float = opt(10, "linear warm-up epochs", min=0)
    global_pool: bool = opt(False, "mean-pool patch tokens", off="--cls_token", off_help="use the cls token")


@dataclass
class EvalConfig(ConfigMixin, ModelOptions, DataOptions, DeviceOptions):
    """maekit eval: top-1 / top-5 of a classifier checkpoint or saved model on a validation set."""

    # the fine-tune command line's pooling flags: the checkpoint records the pooling
    ignored: ClassVar[dict[str, bool]] = {"global_pool": False, "cls_token": False}

    resume: str = opt("", "classifier checkpoint file or saved model folder", required=True)
    model: str | None = opt(None, "model name (default: read from the checkpoint)")
    batch_size: int = opt(128, "images per process per step", min=1)
    dist_eval: bool = opt(True, "under torchrun, shard the validation set across processes (padding dropped)",
                          off="--no_dist_eval", off_help="every process evaluates the whole set (the reference)")
    output_dir: str | None = opt(None, "eval.json goes here (off when not set)")


@dataclass
class _InferenceOptions(ConfigMixin, MaskOptions, ModelOptions):
    model: str = opt("", "registered name (+ .tag for published weights, e.g. mae_vit_large_patch16.visualize), "
                     "model folder, checkpoint file or URL", required=True)
    seed: int = opt(2, "reconstruction: seed of the mask (the official demo's; same seed = same mask)")
    device: str = opt("auto", "auto (a GPU when there is one), cpu, cuda, cuda:N")
    no_download: bool = opt(False, "never download: random weights for a bare name")


@dataclass
class PredictConfig(_InferenceOptions):
    """maekit predict: classify images or reconstruct them, by model type. Classifiers give their top
    classes, pretraining models (mae_* / convmae_*) their reconstructions."""

    input: list[str] = opt([], "image files, folders of images, or URLs", required=True, metavar="IMAGE")
    task: str = opt("auto", "auto (by model type), image_classification, masked_image_modeling or "
                    "image_feature_extraction")
    topk: int = opt(5, "classes shown per image", min=1)
    output_dir: str | None = opt(None, f"reconstruction: where the PNGs go (default {OUTPUT_DIR}, as training); "
                                 "features: writes features.pt there")
    json: bool = opt(False, "print the results as JSON")
    batch_size: int = opt(8, "images per forward pass", min=1)


@dataclass
class VisualizeConfig(_InferenceOptions):
    """maekit visualize: reconstruction grid of one image. Four panels, as the official demo: original,
    masked, reconstruction, reconstruction + visible patches."""

    image: str = opt("", "image file or URL", required=True)
    out: str | None = opt(None, "PNG to write (default <image name>_grid.png here)")


@dataclass
class DemoConfig(ConfigMixin, MaskOptions):
    """maekit demo: pretrain a small MAE on built-in digits, probe it, write pictures and a report."""

    model: str = opt("mae_vit_tiny_patch16", "pretraining model (mae_* or convmae_*)")
    input_size: int = opt(32, "digit image size (upsampled)", min=8)
    patch_size: int = opt(4, "MAE patch size (ignored for ConvMAE)", min=1)
    epochs: int = opt(25, "pretraining epochs", min=1)
    warmup_epochs: float = opt(3, "pretraining warm-up epochs", min=0)
    blr: float = opt(1.5e-3, "pretraining base lr", min=0)
    batch_size: int = opt(64, "pretraining batch", min=1)
    norm_pix_loss: bool = opt(False, "per-patch normalised pixel targets")
    probe_epochs: int = opt(5, "linear-probe epochs", min=1)
    probe_batch_size: int = opt(128, "linear-probe batch", min=1)
    # LARS moves each weight by about trust_coefficient (0.001) x lr of its norm per step; the paper
    # reaches lr 6.4 through batch 16384 (blr 0.1). With batch 128 and 5 epochs the demo needs blr 40.
    probe_blr: float = opt(40.0, "linear-probe base lr (LARS; large because the batch is small)", min=0)
    output_dir: str = opt("demo_output", "pictures, report and the runs go here")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N")
    num_workers: int = opt(2, "data loader worker processes", min=0)
    seed: int = opt(0, "base seed")


@dataclass
class BenchConfig(ConfigMixin, MaskOptions):
    """maekit bench: measure training throughput. The training steps of a registered model on random
    data, timed."""

    model: str = opt("mae_vit_base_patch16", "registered model name")
    input_size: list[int] = opt([224], "image size: S or H W", min=1, metavar="S")
    batch_size: int = opt(16, "images per step", min=1)
    steps: int = opt(5, "timed steps (after --warmup)", min=1)
    warmup: int = opt(2, "untimed steps first", min=0)
    amp: str = opt("auto", "precision: auto = bf16 autocast on GPUs that support it, fp32 on CPU", choices=_AMP)
    device: str = opt("auto", "auto, cpu, cuda, cuda:N")
    compile: bool = opt(False, "torch.compile the model")
    json: bool = opt(False, "print one JSON object")


@dataclass
class KnnConfig(ConfigMixin, KnnOptions, DeviceOptions):
    """maekit knn: weighted k-NN accuracy of a model's frozen features on labelled images."""

    model: str = opt("", "registered name (+ .tag), model folder, checkpoint file (any supported format) or URL",
                     required=True)
    data_path: str = opt("builtin:digits", "labelled images: class folders, train/ + val/ root, or builtin:digits")
    train_split: str | None = opt(None, "bank folder (default data_path/train)")
    val_split: str | None = opt(None, "query folder (default data_path/val)")
    input_size: list[int] | None = opt(None, "image size: S or H W (default: the model's)", min=1, metavar="S")
    knn_bank_per_class: int | None = opt(None, "bank: first N images of each class (default: all)", min=0)
    knn_max_queries: int | None = opt(None, "queries: at most N, balanced over classes (default: all)", min=0)
    batch_size: int = opt(64, "images per forward pass", min=1)
    output_dir: str | None = opt(None, "knn.json goes here (off when not set)")
    no_download: bool = opt(False, "never download: random weights for a bare name")


TASK_CONFIGS: dict[str, type] = {
    "pretrain": PretrainConfig, "finetune": FinetuneConfig, "linprobe": LinprobeConfig, "eval": EvalConfig,
    "predict": PredictConfig, "visualize": VisualizeConfig, "demo": DemoConfig, "bench": BenchConfig,
    "knn": KnnConfig,
}


__all__ = ["BenchConfig", "DemoConfig", "EvalConfig", "FinetuneConfig", "LinprobeConfig",
           "PredictConfig", "PretrainConfig", "TASK_CONFIGS", "VisualizeConfig", "opt"]
