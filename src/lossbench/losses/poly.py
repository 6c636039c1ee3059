"""Poly-1 loss on binary cross-entropy (Leng et al., "PolyLoss: A Polynomial Expansion Perspective of
Classification Loss Functions", ICLR 2022, eq. 3 applied per class to the sigmoid BCE).

    p_t = y * sigma(x) + (1 - y) * (1 - sigma(x))
    l(x, y) = bce(x, y) + epsilon * (1 - p_t)

``bce`` is the fused ``binary_cross_entropy_with_logits``; ``1 - p_t = y * sigma(-x) + (1 - y) * sigma(x)``.
``epsilon`` (default 1, the paper's Poly-1 default) adds weight to the leading polynomial term;
``epsilon >= -1`` keeps the loss decreasing in ``p_t``; ``epsilon=0`` is ``bce_with_logits``.
Head: sigmoid. Tasks: multi-label, and single-label on one-hot targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, one_minus_pt, register_loss


@register_loss
class Poly(Loss):
    name = "poly"
    heads = ("sigmoid",)

    def __init__(self, reduction: str = "mean", epsilon: float = 1.0) -> None:
        super().__init__(reduction)
        if not epsilon >= -1.0:
            raise ValueError(f"loss.epsilon must be >= -1 (below, the loss rewards wrong answers), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return self.reduce(values + self.epsilon * one_minus_pt(logits, target))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, epsilon={self.epsilon}"
