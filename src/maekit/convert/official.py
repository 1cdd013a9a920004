"""Official PyTorch files (R1 MAE, R2 ConvMAE; docs/REFERENCE_RECIPES.md D.1-D.3).

Every kind the references publish or write: ``{'model': state_dict}`` (encoder-only pretrain,
``_full``, ``visualize``, fine-tuned, linear-probed), training checkpoints with ``optimizer``,
``epoch``, ``scaler`` and ``args`` (an ``argparse.Namespace``), a bare state dict, and
``state_dict`` / DDP ``module.`` variants. Loaded with ``torch.load(weights_only=True)``: only
tensors, plain containers and ``argparse.Namespace`` are unpickled, never code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..fileio import atomic_write, plain_tensors
from .base import Format, Loaded
from .hf_names import from_hf, looks_hf
from .torchfile import checkpoint_facts, find_state_dict, is_torch_head, torch_load


def read(path: str | os.PathLike) -> Loaded:
    obj = torch_load(path)
    sd, (hints, notes) = find_state_dict(obj, path), checkpoint_facts(obj)
    if looks_hf(sd):  # a transformers state dict saved with torch.save
        sd, more = from_hf(sd, path)
        notes += ["Hugging Face parameter names, mapped to the official ones"] + more
    return Loaded(sd, hints, notes)


def write(sd: Mapping[str, torch.Tensor], dst: str | os.PathLike, spec=None) -> tuple[Path, list[str]]:
    """``{'model': state_dict}`` with ``torch.save``, as the official scripts publish weights."""
    tensors = plain_tensors(sd)
    return atomic_write(dst, lambda tmp: torch.save({"model": tensors}, tmp)), []


FORMAT = Format("official", (".pth", ".pt", ".bin", ".tar"), folder=False, sniff=lambda p, head: is_torch_head(head),
                read=read, write=write, aliases=("pytorch", "torch"))
