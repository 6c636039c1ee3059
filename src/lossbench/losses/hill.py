"""Hill loss (Zhang et al., "Simple and Robust Loss Design for Multi-Label Learning with Missing Labels",
arXiv:2112.07368, 2021, §4: the Hill loss for negatives with the focal margin loss for positives).

    p = sigma(x),   p_m = sigma(x - m)                       (margin m shifts the positives' logits)
    L+ = -(1 - p_m)^gamma * log(p_m)                         (focal margin loss)
    L- = (lambda - p) * p^2                                  (Hill: a hill-shaped weight on -log(1 - p))
    l(x, y) = y * L+ + (1 - y) * L-

L- rises like p^2 for small p but bends over as p -> 1, so a confident "negative" -- most likely a missing
positive -- is pushed down far less than by BCE. Defaults ``lamb = 1.5``, ``margin = 1``, ``gamma = 2``:
the paper's and its code's (xinyu1205/robust-loss-mlml ``src/loss_functions/losses.py`` class Hill, whose
docstring and forward give the same two terms; it sums over the batch, ``reduction="sum"`` here).
``(1 - p_m)^gamma log p_m`` is ``sigma(m - x)^gamma * logsigmoid(x - m)``: finite for every finite logit.
Head: sigmoid. Tasks: multi-label (its purpose: missing labels), and single-label on one-hot targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss


@register_loss
class Hill(Loss):
    name = "hill"
    heads = ("sigmoid",)

    def __init__(self, reduction: str = "mean", lamb: float = 1.5, margin: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__(reduction)
        if not lamb >= 1.0:
            raise ValueError(f"loss.lamb must be >= 1 (below, the negative term rewards p near 1), got {lamb}")
        if not margin >= 0.0:
            raise ValueError(f"loss.margin must be >= 0, got {margin}")
        if not gamma >= 0.0:
            raise ValueError(f"loss.gamma must be >= 0, got {gamma}")
        self.lamb, self.margin, self.gamma = lamb, margin, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        shifted = logits - self.margin
        positive = -torch.sigmoid(-shifted) ** self.gamma * F.logsigmoid(shifted)
        p = torch.sigmoid(logits)
        negative = (self.lamb - p) * p**2
        return self.reduce(target * positive + (1.0 - target) * negative)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, lamb={self.lamb}, margin={self.margin}, gamma={self.gamma}"
