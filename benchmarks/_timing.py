"""The timed training step shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable

import torch


def time_steps(model: torch.nn.Module, step: Callable[[torch.nn.Module], torch.Tensor], iters: int, warmup: int,
               opt: torch.optim.Optimizer) -> list[float]:
    """Seconds of each of ``iters`` steps (``loss = step(model)``, backward, optimizer update) after
    ``warmup`` untimed ones; waits for the GPU when there is one."""
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        loss = step(model)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times
