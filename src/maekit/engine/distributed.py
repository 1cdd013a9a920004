"""Process-group set-up from torchrun or SLURM variables, and rank helpers (docs/REFERENCE_RECIPES.md C.1).

Launch with ``torchrun`` (single or multi node, ``--nnodes/--rdzv_endpoint``) or with ``srun``
(one task per GPU). Everything here also works without ``torch.distributed`` initialised: the
helpers then describe a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as torch_dist

from ..errors import UsageError, first_line

DEFAULT_MASTER_PORT = "29500"


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes.
        local_rank: rank on this node; selects the GPU.
        distributed: True when a process group is initialised (even for world_size 1 under torchrun,
            as in the reference).
        device: the device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def _launcher_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun or SLURM variables, or None if not launched."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    # A plain `srun python ...` with one task is an ordinary single process.
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", rank % max(torch.cuda.device_count(), 1)))
        # env:// rendezvous needs these; SLURM does not export them.
        env.setdefault("MASTER_ADDR", first_slurm_host(env.get("SLURM_NODELIST", "127.0.0.1")))
        env.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
        env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(rank), str(world), str(local)
        return rank, world, local
    return None


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``'gpu[003-005,9],cpu1'`` -> ``'gpu003'``.

    Handles the common ``prefix[range,...]`` form only; for anything fancier set MASTER_ADDR
    yourself (e.g. ``export MASTER_ADDR=$(scontrol show hostnames | head -n1)``).
    """
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    m = re.fullmatch(r"([^\[]*)\[([^\],-]+)(?:-[^\],]*)?(?:,.*)?\]", first)
    return m.group(1) + m.group(2) if m else first


def _pick_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"--device {device!r} is not a device torch knows: use cpu, cuda, cuda:N, mps or auto "
                         f"({first_line(e)})") from e
    if device.type not in ("cpu", "cuda", "mps", "xpu", "meta") and not hasattr(torch, device.type):
        raise UsageError(f"--device {device.type!r}: no backend for it in this torch build; use cpu, cuda, "
                         "cuda:N, mps or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: this machine has no Apple GPU available to torch; use cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` if the process was started by torchrun or SLURM.

    Args:
        backend: ``'nccl'`` / ``'gloo'``; default NCCL on CUDA, gloo otherwise.
        device: ``'cuda'``, ``'cpu'``, ``'cuda:1'`` ...; default CUDA if available. A bare
            ``'cuda'`` becomes ``cuda:LOCAL_RANK``.

    Returns:
        DistInfo. Without launcher variables: rank 0 of 1, not distributed.
    """
    launched = _launcher_env()
    if launched is None:
        return DistInfo(device=_pick_device(device, 0))
    rank, world, local = launched
    dev = _pick_device(device, local)
    if not torch_dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        torch_dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
    control_group()
    # without device_ids NCCL guesses the GPU from the rank and warns
    nccl = torch_dist.get_backend() == "nccl"
    torch_dist.barrier(device_ids=[torch.cuda.current_device()] if nccl else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local, distributed=True, device=dev)


def is_dist() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def get_rank() -> int:
    return torch_dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return torch_dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor; the input itself when not distributed)."""
    if not is_dist():
        return tensor
    out = tensor.detach().clone()
    torch_dist.all_reduce(out)
    return out


_CONTROL_GROUP: object | None = None


def control_group():
    """A gloo process group for small CPU-side collectives (flags, counters, objects).

    The training loop agrees on "stop", "empty batch" and "non-finite loss" every micro-step; on
    gloo these are CPU round trips that never wait for the GPU queue to drain, unlike NCCL ones.
    Returns None (the default group) when the default backend is already gloo or not distributed.
    Collective on first call: every rank must reach it (init_distributed calls it).
    """
    global _CONTROL_GROUP
    if not is_dist() or torch_dist.get_backend() == "gloo":
        return None
    if _CONTROL_GROUP is None:
        _CONTROL_GROUP = torch_dist.new_group(backend="gloo")
    return _CONTROL_GROUP


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of a short list of numbers over all ranks (CPU, float64); the input if single."""
    if not is_dist():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    torch_dist.all_reduce(t, group=control_group())
    return t.tolist()


def all_gather_objects(obj: object) -> list:
    """``[obj_rank0, obj_rank1, ...]`` (pickled through the CPU control group); ``[obj]`` when single."""
    if not is_dist():
        return [obj]
    out: list = [None] * get_world_size()
    torch_dist.all_gather_object(out, obj, group=control_group())
    return out


def cleanup() -> None:
    """Destroy the process group(s) if any."""
    global _CONTROL_GROUP
    if is_dist():
        torch_dist.destroy_process_group()
    _CONTROL_GROUP = None


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed torch (all devices), numpy and ``random`` with ``seed + rank`` (reference). Returns it."""
    s = int(seed) + int(rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
    return s


# ----------------------------------------------------------------------------- CPU threads
# Values per step (batch x channels x pixels) up to which one intra-op thread is as fast as several:
# the per-op work is too small to split, and extra threads only spin against the loader workers and
# other jobs (measured: 17.6 vs 62.5 img/s, default threads vs one, on 2 busy cores; benchmarks/RESULTS.md).
SMALL_STEP_VALUES = 16 * 3 * 64 * 64


def main_threads(*, cores: int, workers: int, step_values: int | None, local_procs: int = 1) -> int:
    """Intra-op threads for a training process: 1 for small steps; else the cores this process may
    use (its share of the machine's, less one per loader worker), at least 1."""
    if step_values is not None and step_values <= SMALL_STEP_VALUES:
        return 1
    return max(1, cores // max(1, local_procs) - max(0, workers))


def apply_thread_policy(model: torch.nn.Module, loader, device: torch.device | str) -> int | None:
    """Set torch's intra-op threads by :func:`main_threads` for CPU training; returns the number set.

    Left alone (None) on accelerators and when the user chose (``OMP_NUM_THREADS`` or
    ``MAEKIT_NUM_THREADS``, which sets it)."""
    chosen = os.environ.get("MAEKIT_NUM_THREADS")
    if chosen:
        torch.set_num_threads(max(1, int(chosen)))
        return torch.get_num_threads()
    if torch.device(device).type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    # sched_getaffinity: the cores this process may use (Linux only)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(getattr(getattr(loader, "loader", loader), "num_workers", 0) or 0)
    batch = getattr(loader, "batch_size", None) or getattr(getattr(loader, "loader", None), "batch_size", None)
    size, chans = getattr(model, "img_size", None), getattr(model, "in_chans", None)
    step = None
    if batch and size is not None and chans:
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        step = int(batch) * int(chans) * int(h) * int(w)
    threads = main_threads(cores=cores, workers=workers, step_values=step,
                           local_procs=int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    torch.set_num_threads(threads)
    return threads
