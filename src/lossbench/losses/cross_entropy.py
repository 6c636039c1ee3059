"""Softmax cross-entropy.

    l(x, t) = -sum_c t_c * log softmax(x)_c

``t`` is a class index (single-label) or a probability row; on multi-label data the multi-hot row is
divided by its label count (``lossbench.targets``), the "valid probability distribution" that
``tf.nn.softmax_cross_entropy_with_logits`` requires.
Source: PyTorch ``nn.CrossEntropyLoss`` (index and probability targets, ``label_smoothing``).
Head: softmax. Tasks: both. One value per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss


@register_loss
class CrossEntropy(Loss):
    name = "cross_entropy"
    heads = ("softmax",)
    target_form = "distribution"
    per_class = False

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            target = target.to(logits.dtype)
        values = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing, reduction="none")
        return self.reduce(values)
