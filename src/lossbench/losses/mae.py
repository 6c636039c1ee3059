"""Mean absolute error on the softmax output (Ghosh, Kumar & Sastry, "Robust Loss Functions under Label
Noise for Deep Neural Networks", AAAI 2017: the L1 distance between the one-hot label and p, a symmetric
loss, hence tolerant to uniform label noise below (C - 1) / C).

    p = softmax(x)
    l(x, t) = sum_c |t_c - p_c|            (= 2 - 2 p_y for a class y)

The paper's L1 form. The Active-Passive-Losses code (HanxunH, ``loss.py`` MeanAbsoluteError) uses the
"reduced" ``1 - p_y``, half of it: with SGD that is the same loss at half the learning rate. ``1 - p_c`` is
computed as ``-expm1(log_softmax(x)_c)`` where ``t_c = 1`` (no cancellation when p_c is close to 1).
Slow to fit clean data (its gradient vanishes when p_y is small, Zhang & Sabuncu 2018).
Head: softmax. Tasks: single-label. One value per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss, target_rows


@register_loss
class MAE(Loss):
    name = "mae"
    heads = ("softmax",)
    tasks = ("multiclass",)
    target_form = "distribution"
    per_class = False

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target_rows(logits, target)
        log_p = F.log_softmax(logits, dim=1)
        distance = torch.where(t >= 1.0, -torch.expm1(log_p), (t - log_p.exp()).abs())
        return self.reduce(distance.sum(dim=1))
