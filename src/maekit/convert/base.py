"""What every format reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._util import StateDict


@dataclass
class Loaded:
    """Weights under the official names plus what the file says about its model.

    Attributes:
        state_dict: name -> tensor, official (R1 / R2) parameter names and layouts.
        hints: ``model_name`` / ``model_args`` (exact, maekit folders) or loose facts
            (``num_heads``, ``norm_pix_loss``, ``layer_norm_eps``, ``img_size``...) and ``source``.
        notes: what the reader skipped or assumed.
    """

    state_dict: StateDict
    hints: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
