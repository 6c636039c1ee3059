"""Symmetric cross-entropy, SCE (Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy
Labels", ICCV 2019, §3: SL = alpha * CE + beta * RCE).

    p = softmax(x),   t the target distribution (one-hot for a class y)
    CE  = -sum_k t_k log p_k
    RCE = -sum_k p_k log t_k,   log 0 := A                  (reverse cross-entropy)
    l(x, t) = alpha * CE + beta * RCE                        (one-hot t: RCE = -A (1 - p_y))

``A = log_zero = -4`` as in the paper; ``log t_k`` is ``log max(t_k, e^A)``, which is the paper's rule for
0/1 targets and continuous for soft ones. The authors' code (YisenWang/symmetric_cross_entropy_for_noisy_labels
``loss.py``, Keras; HanxunH/SCELoss-Reproduce) clips t to [1e-4, 1] and takes the natural log, so its
effective A is ln 1e-4 = -9.21, and clips p to [1e-7, 1] inside CE; here CE is the exact ``log_softmax``
form. Defaults ``alpha = 0.01``, ``beta = 1.0``: the authors' MNIST setting (``train_models.py``; CIFAR-10
uses 0.1 / 1.0, CIFAR-100 6.0 / 0.1).
Head: softmax. Tasks: single-label. One value per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss, target_rows


def reverse_cross_entropy(logits: torch.Tensor, t: torch.Tensor, log_zero: float) -> torch.Tensor:
    """``-sum_k p_k log max(t_k, e^A)`` per sample (Wang et al. 2019; Ma et al. 2020 use the same RCE)."""
    log_t = torch.log(t.clamp_min(math.exp(log_zero)))
    return -(torch.softmax(logits, dim=1) * log_t).sum(dim=1)


def check_log_zero(log_zero: float) -> None:
    if not log_zero < 0.0:
        raise ValueError(f"loss.log_zero must be < 0 (the value taken for log 0, the papers' A = -4), got {log_zero}")


@register_loss
class SCE(Loss):
    name = "sce"
    heads = ("softmax",)
    tasks = ("multiclass",)
    target_form = "distribution"
    per_class = False

    def __init__(self, reduction: str = "mean", alpha: float = 0.01, beta: float = 1.0, log_zero: float = -4.0) -> None:
        super().__init__(reduction)
        for key, value in (("alpha", alpha), ("beta", beta)):
            if not value >= 0.0:
                raise ValueError(f"loss.{key} must be >= 0, got {value}")
        check_log_zero(log_zero)
        self.alpha, self.beta, self.log_zero = alpha, beta, log_zero

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target_rows(logits, target)
        ce = -(t * F.log_softmax(logits, dim=1)).sum(dim=1)
        return self.reduce(self.alpha * ce + self.beta * reverse_cross_entropy(logits, t, self.log_zero))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, alpha={self.alpha}, beta={self.beta}, log_zero={self.log_zero}"
