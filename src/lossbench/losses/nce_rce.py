"""Normalized cross-entropy + reverse cross-entropy, NCE+RCE (Ma et al., "Normalized Loss Functions for Deep
Learning with Noisy Labels", ICML 2020: an "active-passive loss", APL = alpha * active + beta * passive).

    p = softmax(x),   t the target distribution (one-hot for a class y)
    NCE = (-sum_k t_k log p_k) / (-sum_j log p_j)         (one-hot: log p_y / sum_j log p_j, in (0, 1])
    RCE = -sum_k p_k log t_k,   log 0 := A = -4            (as in SCE, lossbench/losses/sce.py)
    l(x, t) = alpha * NCE + beta * RCE

Normalising CE by its sum over all labels makes it robust (the normalised loss sums to 1 over the classes)
but underfits alone; the passive RCE term restores fitting. Checked against the authors' code
(HanxunH/Active-Passive-Losses ``loss.py``: NormalizedCrossEntropy, ReverseCrossEntropy, NCEandRCE), whose
RCE clips t at 1e-4 (A = ln 1e-4 = -9.21) and p at 1e-7; here A is ``log_zero`` and p is exact. Defaults
``alpha = 1``, ``beta = 10``: the code's MNIST setting (``configs/mnist/sym/nce+rce.yaml``; CIFAR-10 uses
``alpha = beta = 1``).
Head: softmax. Tasks: single-label. One value per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss, target_rows
from lossbench.losses.sce import check_log_zero, reverse_cross_entropy


@register_loss
class NCERCE(Loss):
    name = "nce_rce"
    heads = ("softmax",)
    tasks = ("multiclass",)
    target_form = "distribution"
    per_class = False

    def __init__(self, reduction: str = "mean", alpha: float = 1.0, beta: float = 10.0, log_zero: float = -4.0) -> None:
        super().__init__(reduction)
        for key, value in (("alpha", alpha), ("beta", beta)):
            if not value >= 0.0:
                raise ValueError(f"loss.{key} must be >= 0, got {value}")
        check_log_zero(log_zero)
        self.alpha, self.beta, self.log_zero = alpha, beta, log_zero

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target_rows(logits, target)
        log_p = F.log_softmax(logits, dim=1)
        nce = (t * log_p).sum(dim=1) / log_p.sum(dim=1)
        return self.reduce(self.alpha * nce + self.beta * reverse_cross_entropy(logits, t, self.log_zero))

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, alpha={self.alpha}, beta={self.beta}, log_zero={self.log_zero}"
