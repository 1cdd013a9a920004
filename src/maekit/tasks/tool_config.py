"""The options of the tool commands (convert, push, shard, download, app, list-models, run), written
as the task configs are (:mod:`maekit.tasks.config`: one field per option, its default and help
once); :mod:`maekit.tasks.flags` generates their parsers. SRC / DST style arguments are fields
with ``positional=True``. These take no ``--config`` file and no alias spellings
(``file_options = False``). No torch here: ``maekit convert -h`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..compat.run_yaml import DEFAULT_CONFIG, RUN_MODES
from .config import opt
from .validate import ConfigMixin

# maekit.convert.formats.FORMATS (importing it imports torch; a test keeps the two equal)
CONVERT_FORMATS = ("maekit", "hf", "official", "timm", "passl", "mindformers")
_LOAD_SOURCE = ("what maekit.load_model reads: a checkpoint (runs/ft/checkpoint-best.pth), a model folder, a "
                "registered name (+ .tag for published weights, e.g. mae_vit_base_patch16.visualize) or a URL")


@dataclass
class _ToolOptions(ConfigMixin):
    file_options: ClassVar[bool] = False


@dataclass
class ConvertConfig(_ToolOptions):
    """maekit convert: convert weights between official, PASSL, MindFormers, HF, timm and maekit formats.
    The input format is detected from the content and the model shape from the weights; what the
    weights cannot tell (head counts, norm_pix_loss) comes from the matching preset or the flags, and
    is printed."""

    src: str = opt("", "input file or folder; also hf-hub:org/name, an http(s) URL, timm:name.tag or a published "
                   "weights name (mae_vit_base_patch16.full)", positional=True, metavar="SRC")
    dst: str = opt("", "output file or folder", positional=True, metavar="DST")
    from_format: str | None = opt(None, "input format (default: detected from the content)", flags=("--from",),
                                  choices=CONVERT_FORMATS)
    to_format: str | None = opt(None, "output format (default: from DST: .pth official, .pd/.pdparams passl, .ckpt "
                                "mindformers, .safetensors timm, a folder maekit)", flags=("--to",),
                                choices=CONVERT_FORMATS)
    model: str | None = opt(None, "registered model name (default: inferred from the weights)")
    num_heads: int | None = opt(None, "attention heads of the encoder", min=1)
    decoder_num_heads: int | None = opt(None, "attention heads of the MAE decoder", min=1)
    norm_pix_loss: bool | None = opt(None, "the model was trained on normalised-pixel targets",
                                     off=("--no_norm_pix_loss", "--no-norm_pix_loss"), off_help="it was not")
    layer_norm_eps: float | None = opt(None, "LayerNorm epsilon (MAE: 1e-6)", min=0)
    img_size: list[int] | None = opt(None, "input size, when the position table does not tell it (a non-square "
                                     "grid): H or H W", min=1, metavar="S")
    quiet: bool = opt(False, "print nothing on success", flags=("-q", "--quiet"))


@dataclass
class PushConfig(_ToolOptions):
    """maekit push: upload a model (+ a model card from its training run) to the Hugging Face Hub. The token
    comes from HF_TOKEN or `hf auth login`."""

    source: str = opt("", _LOAD_SOURCE, positional=True, metavar="SOURCE")
    repo_id: str = opt("", "user/name or org/name (created when missing)", positional=True, metavar="REPO_ID")
    run_dir: str | None = opt(None, "training output folder whose config.yaml and log.txt go into the model card "
                              "(default: SOURCE's folder when it is one)")
    private: bool = opt(False, "create the repository private")
    revision: str | None = opt(None, "branch to commit to (created when missing; default main)")
    commit_message: str | None = opt(None, "default 'Upload maekit model'")


@dataclass
class ShardConfig(_ToolOptions):
    """maekit shard: write an image folder into WebDataset tar shards (needs maekit[shards]). SRC: class folders,
    a folder of images (any depth), or a root with train/ and val/; DST gets shard-NNNNNN.tar files and
    shards.json, usable as --data_path DST."""

    src: str = opt("", "image folder to write", positional=True, metavar="SRC_FOLDER")
    dst: str = opt("", "output folder (new or empty)", positional=True, metavar="DST")
    shard_size: int = opt(1000, "samples per shard", min=1)
    labelled: bool | None = opt(None, "write .cls labels from class folders (default: when SRC has class folders)",
                                off=("--no_labelled", "--no-labelled"), off_help="write no labels")
    seed: int = opt(0, "seed of the sample order")


@dataclass
class DownloadConfig(_ToolOptions):
    """maekit download: fetch weights into the caches, for machines without network (names, hf-hub: ids,
    timm: names). Each goes where
    maekit.load_model looks for it (maekit's cache, the Hugging Face cache, timm's), so a later run with
    MAEKIT_OFFLINE=1 / HF_HUB_OFFLINE=1 (a compute node without network) finds it there."""

    sources: list[str] = opt([], "published weights name (mae_vit_base_patch16.full), hf-hub:org/name[@rev] or "
                             "org/name, timm:name.tag, or an http(s) URL", positional=True, metavar="SOURCE")


@dataclass
class ListModelsConfig(_ToolOptions):
    """maekit list-models: list registered model names."""

    pattern: str | None = opt(None, "shell pattern, e.g. 'mae_*'", positional=True, nargs="?")


@dataclass
class AppConfig(_ToolOptions):
    """maekit app: local web page + HTTP API to look at models (needs maekit[app]). Reconstructions with a
    mask-ratio slider, several models side by side, classifier top-5, PCA of patch features."""

    model: list[str] = opt([], _LOAD_SOURCE + "; repeat to compare models", required=True, action="append",
                           metavar="SOURCE")
    host: str = opt("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0 exposes the models "
                    "to the network)")
    port: int = opt(7860, "port (0 picks a free one)", min=0)
    device: str = opt("auto", "auto (a GPU when there is one), cpu, cuda, cuda:N")
    no_download: bool = opt(False, "never download: random weights for a bare name")
    max_upload_mb: float = opt(20.0, "largest request body in MB", min=0)
    max_pixels: float = opt(50e6, "images with more pixels are refused", min=0)
    max_side: int = opt(4096, "a longer side above this is reduced before the model's resize", min=0)
    log_level: str = opt("warning", "server log level (info logs each request)",
                         choices=("critical", "error", "warning", "info", "debug"))


@dataclass
class RunCommandConfig(_ToolOptions):
    """maekit run: run a MindFormers-style YAML (train / finetune / eval / predict). The interface of
    run_mindformer.py, through maekit.Trainer. Each flag sets a key of the YAML (--epochs is runner_config.epochs); see
    maekit.compat.mindformers for the mapping."""

    # yaml_key: the key of the run YAML a flag sets (maekit.compat.mindformers_cli.yaml_options)

    config: str = opt(DEFAULT_CONFIG, "run YAML: a file or a packaged config (also "
                      "vit/run_vit_base_p16_224_100ep.yaml)")
    run_mode: str | None = opt(None, "train, finetune, eval or predict (default: the YAML's run_mode)",
                               choices=RUN_MODES, yaml_key="run_mode")
    load_checkpoint: str | None = opt(None, "train: starting weights; finetune: the pretrained checkpoint "
                                      "(required); eval / predict: the weights to use (file, model folder or name)",
                                      yaml_key="load_checkpoint")
    train_dataset_dir: str | None = opt(None, "training images (folder or builtin:digits)",
                                        yaml_key="train_dataset.data_loader.dataset_dir")
    eval_dataset_dir: str | None = opt(None, "evaluation images (folder or builtin:digits)",
                                       yaml_key="eval_dataset.data_loader.dataset_dir")
    predict_data: list[str] | None = opt(None, "predict: image files, folders or URLs", metavar="IMAGE")
    predict_batch_size: int | None = opt(None, "predict: images per forward pass (default: the YAML's batch)",
                                         min=1)
    output_dir: str | None = opt(None, "checkpoints, logs and results (default: the YAML's output_dir)",
                                 yaml_key="output_dir")
    seed: int | None = opt(None, "base seed (default: the YAML's seed)", yaml_key="seed")
    epochs: int | None = opt(None, "training epochs (runner_config.epochs)", min=0, yaml_key="runner_config.epochs")
    batch_size: int | None = opt(None, "images per process per step (runner_config.batch_size)", min=1,
                                 yaml_key="runner_config.batch_size")
    gradient_accumulation_steps: int | None = opt(None, "micro-batches per optimizer step "
                                                  "(runner_config.gradient_accumulation_steps)", min=1,
                                                  yaml_key="runner_config.gradient_accumulation_steps")
    resume_training: str | None = opt(None, "resume from the latest checkpoint in output_dir (no value, or auto), "
                                      "or from the checkpoint given", nargs="?", const="auto", metavar="CHECKPOINT",
                                      yaml_key="resume_training")
    device: str | None = opt(None, "auto, cpu, cuda, cuda:N (MindFormers' CPU / GPU accepted)",
                             flags=("--device", "--device_target"), yaml_key="device")
    options: list[str] = opt([], "override YAML keys, e.g. runner_config.epochs=1 lr_schedule.learning_rate=1e-4 "
                             "amp=none", action="extend", metavar="KEY=VALUE")
    # MindSpore / Ascend flags of run_mindformer.py: accepted, meaningless here
    ignored: ClassVar[dict[str, bool]] = {name: True for name in (
        "mode", "device_id", "use_parallel", "src_strategy_path_or_dir", "auto_trans_ckpt", "only_save_strategy",
        "strategy_load_checkpoint", "remote_save_url", "profile", "sink_mode", "num_samples", "do_eval")}


__all__ = ["AppConfig", "CONVERT_FORMATS", "ConvertConfig", "DownloadConfig", "ListModelsConfig", "PushConfig",
           "RunCommandConfig", "ShardConfig"]
