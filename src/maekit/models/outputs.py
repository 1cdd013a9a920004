"""Typed model outputs. The engine only relies on ``.loss``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MAEOutput:
    """Output of a masked-autoencoder forward pass.

    Attributes:
        loss: scalar reconstruction loss (mean over removed patches).
        pred: (N, L, p*p*C) predicted patch vectors for every patch (visible ones too).
        mask: (N, L) float, 0 = kept/visible, 1 = removed.
        ids_restore: (N, L) long, the permutation that un-shuffles the tokens.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor

    def to_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The reference's return value ``(loss, pred, mask)``."""
        return self.loss, self.pred, self.mask

    def __iter__(self):
        # `loss, pred, mask = model(x)` keeps working as with the official code.
        return iter(self.to_tuple())
