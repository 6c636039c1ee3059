"""Absolute ("modified") KL divergence between pseudo-distributions, from the Cross Validated thread.

    L(P, Q) = sum_c | (P_c - Q_c) * log(P_c / Q_c) |,   P, Q clipped to [eps, inf)

``P`` is the multi-hot target (a pseudo-distribution: it sums to the label count), ``Q`` the head's
probabilities (sigmoid or softmax). The clip reproduces the thread's Keras code exactly
(``K.clip(y, K.epsilon(), None)``, eps = 1e-7). ``log(P / Q)`` is computed as ``log P - log Q`` (equal;
the ratio itself overflows float16 once P / Q > 65504). Symmetric in P and Q. One value per sample (the
sum over classes, as ``K.sum(..., axis=-1)``).
Heads: sigmoid (natural) or softmax. Tasks: both.
"""

from __future__ import annotations

import torch

from lossbench.losses.base import Loss, check_head, probabilities, register_loss

KERAS_EPSILON = 1e-7


def abs_kl(p: torch.Tensor, q: torch.Tensor, eps: float = KERAS_EPSILON) -> torch.Tensor:
    """Per-sample abs-KL of two non-negative (N, C) matrices."""
    p, q = p.clamp_min(eps), q.clamp_min(eps)
    return ((p - q) * (torch.log(p) - torch.log(q))).abs().sum(dim=1)


@register_loss
class AbsKL(Loss):
    name = "abs_kl"
    heads = ("sigmoid", "softmax")
    per_class = False

    def __init__(self, reduction: str = "mean", head: str = "sigmoid", eps: float = KERAS_EPSILON) -> None:
        super().__init__(reduction)
        check_head(self.name, head, self.heads)
        if not eps > 0.0:
            raise ValueError(f"loss.eps must be > 0 for abs_kl (log of a clipped value), got {eps}")
        self.head, self.eps = head, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.reduce(abs_kl(target, probabilities(logits, self.head), self.eps))
