"""Mixed-precision choice for ``--amp {auto,bf16,fp16,none}`` (DESIGN: bf16 where supported).

The references hard-code fp16 autocast + GradScaler on CUDA. Here:

======  ==========================================  =====================================
amp     CUDA                                        CPU / other devices
======  ==========================================  =====================================
auto    bf16 if the GPU has native bf16 (Ampere+),  fp32 (CPU bf16 autocast is often slower
        else fp16 + GradScaler (V100: reference)    than fp32 and changes numerics)
bf16    bf16                                        bf16 (explicitly asked for)
fp16    fp16 + GradScaler                           ValueError on CPU (fp16 CPU kernels are slow
                                                    and scaling is pointless); fp16 on others
none    fp32                                        fp32
======  ==========================================  =====================================
"""

from __future__ import annotations

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "none")


def resolve_amp(amp: str, device: str | torch.device) -> tuple[torch.dtype | None, bool]:
    """Map an ``--amp`` value to what the training loop needs.

    Returns:
        (autocast dtype or None for fp32, whether to use a GradScaler). Only fp16 uses a scaler:
        bf16 has fp32's exponent range, so gradients do not underflow.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_CHOICES)}")
    dev = torch.device(device)
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        if dev.type == "cpu":
            raise ValueError("--amp fp16 needs a GPU; use --amp bf16 or --amp none on the CPU")
        return torch.float16, True
    # auto
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16, False
        return torch.float16, True
    return None, False
