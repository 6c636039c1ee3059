"""Generalized cross-entropy, GCE (Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural
Networks with Noisy Labels", NeurIPS 2018, the L_q loss of §3: a negative Box-Cox transformation of p_y).

    p = softmax(x)
    l(x, y) = (1 - p_y^q) / q                          0 < q <= 1
    l(x, t) = sum_c t_c (1 - p_c^q) / q                for a target distribution t (equal for one-hot t)

``q -> 0`` is cross-entropy, ``q = 1`` is ``1 - p_y`` (half of MAE): ``q`` trades CE's fast fitting for MAE's
robustness to noisy labels. ``p_c^q = exp(q log_softmax(x)_c)`` and ``1 - e^z = -expm1(z)``, so the loss is
finite and accurate for every finite logit; the official implementations (HanxunH/Active-Passive-Losses
``loss.py`` GeneralizedCrossEntropy, YisenWang/symmetric_cross_entropy_for_noisy_labels ``loss.py``) clip
``p`` to [1e-7, 1] first, which is not part of the formula. Default ``q = 0.7``, the paper's and the codes'.
The truncated variant (L_trunc, which drops samples with p_y below a threshold) is not included.
Head: softmax. Tasks: single-label (the paper's setting). One value per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss, target_rows


@register_loss
class GCE(Loss):
    name = "gce"
    heads = ("softmax",)
    tasks = ("multiclass",)
    target_form = "distribution"
    per_class = False

    def __init__(self, reduction: str = "mean", q: float = 0.7) -> None:
        super().__init__(reduction)
        if not 0.0 < q <= 1.0:
            raise ValueError(f"loss.q must be in (0, 1] (q -> 0 is cross_entropy), got {q}")
        self.q = q

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target_rows(logits, target)
        values = (t * -torch.expm1(self.q * F.log_softmax(logits, dim=1))).sum(dim=1) / self.q
        return self.reduce(values)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, q={self.q}"
