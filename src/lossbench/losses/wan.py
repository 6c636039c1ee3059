"""Weak assume-negative loss, WAN (Cole et al., "Multi-Label Learning from Single Positive Labels", CVPR 2021,
§3: "assume negative" with the negatives down-weighted by gamma = 1 / (C - 1)).

    p = sigma(x)
    l(x, y) = -[ y * log p + gamma * (1 - y) * log(1 - p) ],    gamma = 1 / (C - 1)

An unobserved label is treated as negative, as BCE does, but with weight gamma, the expected share of true
negatives among the C - 1 unobserved labels when each sample has one observed positive. Checked against
the authors' code (elijahcole/single-positive-multi-label ``losses.py`` ``loss_wan``: the negative term
divided by ``num_classes - 1``, every element averaged over N * C, which is ``reduction="mean"`` here). The
code adds 1e-5 inside each log; here ``log p`` and ``log(1 - p)`` are ``logsigmoid(x)`` and
``logsigmoid(-x)``, finite for every finite logit. ``negative_weight`` overrides gamma (null: 1 / (C - 1),
C read from the logits). ``negative_weight = 1`` is ``bce_with_logits``.
Head: sigmoid. Tasks: multi-label (its purpose: missing and single-positive labels), and single-label on
one-hot targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss


@register_loss
class WAN(Loss):
    name = "wan"
    heads = ("sigmoid",)

    def __init__(self, reduction: str = "mean", negative_weight: float | None = None) -> None:
        super().__init__(reduction)
        if negative_weight is not None and not negative_weight >= 0.0:
            raise ValueError(f"loss.negative_weight must be >= 0 or null (1 / (C - 1)), got {negative_weight}")
        self.negative_weight = negative_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        gamma = self.negative_weight if self.negative_weight is not None else 1.0 / max(logits.shape[1] - 1, 1)
        values = -(target * F.logsigmoid(logits) + gamma * (1.0 - target) * F.logsigmoid(-logits))
        return self.reduce(values)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, negative_weight={self.negative_weight}"
