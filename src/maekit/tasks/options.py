"""Command-line options of the training commands, with the reference names and defaults.

The official flags (REFERENCES C.2-C.4) are accepted unchanged, so the reference command lines
run under ``torchrun ... -m maekit pretrain <same flags>``; the PASSL extras ``--device gpu``
and ``--print_freq`` are accepted too (``--max_train_step``, a debug stop, is not).
``--config file.yaml`` supplies defaults (flat keys named like the flags) and explicit flags win.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import yaml


def _str2floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


class ConfigError(ValueError):
    """A configuration file or value the user must fix."""


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every training / evaluation command."""
    g = p.add_argument_group("run")
    g.add_argument("--config", default=None, help="YAML file of defaults (keys named like the flags); flags win")
    g.add_argument("--output_dir", default="./output_dir", help="checkpoints, log.txt and config.yaml go here")
    g.add_argument("--log_dir", default=None, help="TensorBoard folder (off when not set)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (PASSL's 'gpu' means cuda)")
    g.add_argument("--seed", type=int, default=0, help="base seed; each rank uses seed + rank")
    g.add_argument("--resume", default="", help="checkpoint to resume from, or 'auto' for the latest in output_dir")
    g.add_argument("--start_epoch", type=int, default=0, help="first epoch when not resuming")
    g.add_argument("--num_workers", type=int, default=min(10, os.cpu_count() or 1),
                   help="data loader worker processes (reference: 10; capped at the CPU count)")
    g.add_argument("--pin_mem", action="store_true", default=True, help="pin host memory (default)")
    g.add_argument("--no_pin_mem", action="store_false", dest="pin_mem", help="do not pin host memory")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                   help="precision: auto = bf16 autocast on GPUs that support it, fp32 on CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--save_every", type=int, default=None, help="write checkpoint-{epoch}.pth every N epochs")
    g.add_argument("--print_freq", type=int, default=20, help="plain-text progress line every N steps (no TTY)")
    g.add_argument("--mean", type=_str2floats, default=None, help="normalisation mean, e.g. '0.5' or '0.485,0.456,0.406'")
    g.add_argument("--std", type=_str2floats, default=None, help="normalisation std, one value per channel")
    # Accepted for command-line compatibility with the official scripts; torchrun sets these.
    g.add_argument("--world_size", type=int, default=1, help=argparse.SUPPRESS)
    g.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    g.add_argument("--dist_on_itp", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--dist_url", default="env://", help=argparse.SUPPRESS)


def add_schedule_args(p: argparse.ArgumentParser, *, batch_size: int, epochs: int, blr: float,
                      min_lr: float, warmup_epochs: int, weight_decay: float) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch_size", type=int, default=batch_size, help="images per process per step")
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--accum_iter", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--weight_decay", type=float, default=weight_decay)
    g.add_argument("--lr", type=float, default=None, help="absolute learning rate (overrides --blr)")
    g.add_argument("--blr", type=float, default=blr, help="base lr: lr = blr * effective batch / 256")
    g.add_argument("--min_lr", type=float, default=min_lr, help="floor of the cosine schedule")
    g.add_argument("--warmup_epochs", type=float, default=warmup_epochs)
    g.add_argument("--clip_grad", type=float, default=None, help="clip the gradient norm to this value")


def add_data_args(p: argparse.ArgumentParser, *, labelled: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data_path", default="builtin:digits",
                   help="image folder, ImageNet-style root (train/, val/) or builtin:digits")
    if labelled:
        g.add_argument("--train_split", default=None, help="train class-folder directory (default data_path/train)")
        g.add_argument("--val_split", default=None, help="validation class-folder directory (default data_path/val)")
        g.add_argument("--nb_classes", type=int, default=None, help="number of classes (default: from the data)")


def add_model_shape_args(p: argparse.ArgumentParser, *, model: str, input_size: int) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=model, help="registered model name (see `maekit list-models`)")
    g.add_argument("--input_size", type=int, nargs="+", default=[input_size], help="image size: S or H W")
    g.add_argument("--patch_size", type=int, default=None, help="override the preset's patch size")
    g.add_argument("--in_chans", type=int, default=None, help="image channels (default 3)")


def pretrain_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``maekit pretrain`` (REFERENCES C.2 defaults)."""
    add_model_shape_args(p, model="mae_vit_large_patch16", input_size=224)
    g = p.add_argument_group("masked autoencoding")
    g.add_argument("--mask_ratio", type=float, default=0.75, help="fraction of patches removed")
    g.add_argument("--norm_pix_loss", action="store_true", help="per-patch normalised pixel targets")
    g.add_argument("--sparse_stages", action="store_true",
                   help="ConvMAE: run stages 1-2 on visible positions only (exact; 1.2-1.7x faster on CPU)")
    g.add_argument("--augment", default="reference", choices=["reference", "flip", "none"],
                   help="reference: RandomResizedCrop(scale 0.2-1) + flip; flip: resize + flip; none: resize only "
                        "(for data where crops or mirror images are wrong, e.g. text or some medical images)")
    add_schedule_args(p, batch_size=64, epochs=400, blr=1e-3, min_lr=0.0, warmup_epochs=40, weight_decay=0.05)
    add_data_args(p, labelled=False)
    add_run_args(p)
    p.set_defaults(save_every=20)
    return p


def finetune_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``maekit finetune`` (REFERENCES C.3 defaults)."""
    add_model_shape_args(p, model="vit_large_patch16", input_size=224)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--finetune", default="", help="pretrained checkpoint (file, model folder or name)")
    g.add_argument("--drop_path", type=float, default=0.1, help="stochastic depth rate")
    g.add_argument("--layer_decay", type=float, default=0.75, help="layer-wise lr decay")
    g.add_argument("--global_pool", action="store_true", default=True, help="mean-pool patch tokens (default)")
    g.add_argument("--cls_token", action="store_false", dest="global_pool", help="use the cls token instead")
    g.add_argument("--eval", action="store_true", help="only evaluate --resume on the validation set")
    g.add_argument("--dist_eval", action="store_true", help="shard evaluation across processes")
    a = p.add_argument_group("augmentation")
    a.add_argument("--color_jitter", type=float, default=None)
    a.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="RandAugment policy ('none' to disable)")
    a.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    a.add_argument("--reprob", type=float, default=0.25, help="random-erasing probability")
    a.add_argument("--remode", default="pixel", help="random-erasing mode")
    a.add_argument("--recount", type=int, default=1, help="random-erasing count")
    a.add_argument("--resplit", action="store_true", default=False, help=argparse.SUPPRESS)
    a.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    a.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0 = off)")
    a.add_argument("--cutmix_minmax", type=float, nargs="+", default=None)
    a.add_argument("--mixup_prob", type=float, default=1.0)
    a.add_argument("--mixup_switch_prob", type=float, default=0.5)
    a.add_argument("--mixup_mode", default="batch", choices=["batch", "pair", "elem"])
    add_schedule_args(p, batch_size=64, epochs=50, blr=1e-3, min_lr=1e-6, warmup_epochs=5, weight_decay=0.05)
    add_data_args(p, labelled=True)
    add_run_args(p)
    p.set_defaults(save_every=1)
    return p


def linprobe_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``maekit linprobe`` (REFERENCES C.4 defaults)."""
    add_model_shape_args(p, model="vit_large_patch16", input_size=224)
    g = p.add_argument_group("linear probing")
    g.add_argument("--finetune", default="", help="pretrained checkpoint (file, model folder or name)")
    g.add_argument("--global_pool", action="store_true", default=False, help="mean-pool patch tokens")
    g.add_argument("--cls_token", action="store_false", dest="global_pool", help="use the cls token (default)")
    g.add_argument("--eval", action="store_true", help="only evaluate --resume on the validation set")
    g.add_argument("--dist_eval", action="store_true", help="shard evaluation across processes")
    add_schedule_args(p, batch_size=512, epochs=90, blr=0.1, min_lr=0.0, warmup_epochs=10, weight_decay=0.0)
    add_data_args(p, labelled=True)
    add_run_args(p)
    p.set_defaults(save_every=1)
    return p


def eval_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``maekit eval``: top-1/top-5 of a classifier on a class-folder validation set."""
    p.add_argument("--resume", "--checkpoint", dest="resume", required=True,
                   help="classifier checkpoint file or saved model folder")
    p.add_argument("--model", default=None, help="model name (default: read from the checkpoint)")
    p.add_argument("--input_size", type=int, nargs="+", default=None)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--dist_eval", action="store_true", default=True,
                   help="under torchrun, shard the validation set across processes (default; padding is dropped)")
    p.add_argument("--no_dist_eval", action="store_false", dest="dist_eval",
                   help="every process evaluates the whole set (the reference's default)")
    add_data_args(p, labelled=True)
    for flag, kw in [("--device", dict(default="auto")), ("--num_workers", dict(type=int, default=4)),
                     ("--amp", dict(default="auto", choices=["auto", "bf16", "fp16", "none"])),
                     ("--mean", dict(type=_str2floats, default=None)), ("--std", dict(type=_str2floats, default=None)),
                     ("--output_dir", dict(default=None)), ("--config", dict(default=None))]:
        p.add_argument(flag, **kw)
    p.add_argument("--global_pool", action="store_true", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cls_token", action="store_false", dest="global_pool", help=argparse.SUPPRESS)
    return p


def resolve_config_path(path: str) -> str:
    """A YAML path, or the name of a packaged recipe (``pretrain/mae_vit_base``)."""
    if os.path.isfile(path):
        return path
    packaged = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", path)
    for candidate in (packaged, packaged + ".yaml"):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"config file not found: {path} (neither a file nor a packaged recipe under maekit/configs)")


def load_yaml_defaults(path: str) -> dict[str, Any]:
    """Flat ``key: value`` YAML (nested sections are flattened by their leaf keys)."""
    path = resolve_config_path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults so explicit flags win."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        defaults = load_yaml_defaults(args.config)
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ConfigError(f"{args.config}: unknown option(s) {unknown}")
        for key in ("input_size",):
            if key in defaults and isinstance(defaults[key], int):
                defaults[key] = [defaults[key]]
        for key in ("mean", "std"):
            if isinstance(defaults.get(key), str):
                defaults[key] = _str2floats(defaults[key])
        parser.set_defaults(**defaults)
        args = parser.parse_args(argv)
    return args
