"""TensorFlow's weighted sigmoid cross-entropy on logits.

    l(x, y) = -[ w * y * log sigma(x) + (1 - y) * log(1 - sigma(x)) ]
            = (1 - y) * x + (1 + (w - 1) * y) * (log(1 + exp(-|x|)) + max(-x, 0))

``w`` (``pos_weight``, a number > 0 or one per class) multiplies the positive term only: w > 1 buys
recall with precision. Source: TensorFlow ``tf.nn.weighted_cross_entropy_with_logits``;
the second line is its documented stable form, computed here term by term. The same function as
PyTorch ``BCEWithLogitsLoss(pos_weight=w)``; with ``w = 1`` it is ``bce_with_logits``.
Head: sigmoid. Tasks: multi-label, and single-label on one-hot targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lossbench.losses.base import Loss, positive_weight, register_loss


@register_loss
class WeightedBCE(Loss):
    name = "weighted_bce"
    heads = ("sigmoid",)

    def __init__(self, reduction: str = "mean", pos_weight: float | Sequence[float] = 1.0) -> None:
        super().__init__(reduction)
        if pos_weight is None:
            raise ValueError("loss.pos_weight must be a number > 0 or a list of one number > 0 per class, got None")
        self.register_buffer("pos_weight", positive_weight(pos_weight, "pos_weight"), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self.pos_weight.to(logits.dtype)
        log_one_plus_exp = torch.log1p(torch.exp(-logits.abs())) + (-logits).clamp_min(0)  # softplus(-x)
        values = (1.0 - target) * logits + (1.0 + (w - 1.0) * target) * log_one_plus_exp
        return self.reduce(values)
