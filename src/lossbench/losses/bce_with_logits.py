"""Fused sigmoid + binary cross-entropy on logits.

    l(x, y) = -[ w_pos * y * log sigma(x) + (1 - y) * log(1 - sigma(x)) ]
            = (1 - y) * x + (1 + (w_pos - 1) * y) * softplus(-x)        (stable form)

Source: PyTorch ``nn.BCEWithLogitsLoss``; TensorFlow ``tf.nn.sigmoid_cross_entropy_with_logits``
(what the forum threads recommend for multi-label data). Never forms ``sigma(x)`` explicitly, so it is
finite for every finite logit. Optional ``pos_weight`` (a number > 0 or one per class; PyTorch's semantics: it multiplies the
positive term) and ``label_smoothing`` (Keras ``binary_crossentropy`` style: ``y <- y * (1 - s) + s / 2``).
Head: sigmoid. Tasks: multi-label, and single-label on one-hot targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, positive_weight, register_loss


@register_loss
class BCEWithLogits(Loss):
    name = "bce_with_logits"
    heads = ("sigmoid",)

    def __init__(
        self,
        reduction: str = "mean",
        pos_weight: float | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", positive_weight(pos_weight, "pos_weight"), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
        values = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
        return self.reduce(values)
