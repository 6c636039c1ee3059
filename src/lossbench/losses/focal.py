"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5).

    p = sigma(x),   p_t = y * p + (1 - y) * (1 - p),   a_t = y * alpha + (1 - y) * (1 - alpha)
    l(x, y) = a_t * (1 - p_t)^gamma * bce(x, y)          (bce(x, y) = -log p_t for 0/1 targets)

As ``torchvision.ops.sigmoid_focal_loss``, with ``1 - p_t`` computed as ``y * sigma(-x) + (1 - y) *
sigma(x)`` (no cancellation) and ``bce`` by the fused, stable ``binary_cross_entropy_with_logits``.
Defaults are the paper's: ``gamma=2``, ``alpha=0.25``; ``alpha=None`` disables the weighting
(torchvision's ``alpha < 0``). ``gamma=0, alpha=None`` is ``bce_with_logits``.
Head: sigmoid. Tasks: multi-label, and single-label on one-hot targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, one_minus_pt, register_loss


@register_loss
class Focal(Loss):
    name = "focal"
    heads = ("sigmoid",)

    def __init__(self, reduction: str = "mean", gamma: float = 2.0, alpha: float | None = 0.25) -> None:
        super().__init__(reduction)
        if not gamma >= 0.0:
            raise ValueError(f"loss.gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"loss.alpha must be in [0, 1] or null (no weighting), got {alpha}")
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.gamma:
            values = one_minus_pt(logits, target) ** self.gamma * values
        if self.alpha is not None:
            values = (target * self.alpha + (1.0 - target) * (1.0 - self.alpha)) * values
        return self.reduce(values)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, gamma={self.gamma}, alpha={self.alpha}"
