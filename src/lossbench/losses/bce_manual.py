"""Hand-rolled binary cross-entropy on probabilities, the "explicit" form of the Cross Validated thread.

    p = clip(h(x), eps, 1 - eps)          h = sigmoid or softmax (the head)
    l(x, y) = -[ y * log p + (1 - y) * log(1 - p) ]

The clip is Keras 3's ``binary_crossentropy`` on probabilities (``epsilon() = 1e-7``; Keras' graph-mode
shortcut that recovers the logits of a ``Sigmoid`` op is not reproduced). ``eps=0`` is the naive form
the threads warn about (tensorflow/tensorflow#2462): in float32 ``sigmoid(x)`` is exactly 1 from
x = 16.64 and exactly 0 from x = -88.73 (reports/stability), so ``log(1 - p) = -inf`` for a wrong
target and ``0 * log 0 = NaN`` for a right one. The clip keeps float32 finite but not float16 or
bfloat16, where ``1 - 1e-7`` rounds to 1.
Heads: sigmoid (natural) or softmax (softmax + BCE, a pairing people try). Tasks: both.
"""

from __future__ import annotations

import torch

from lossbench.losses.base import Loss, check_head, probabilities, register_loss

KERAS_EPSILON = 1e-7


@register_loss
class BCEManual(Loss):
    name = "bce_manual"
    heads = ("sigmoid", "softmax")

    def __init__(self, reduction: str = "mean", head: str = "sigmoid", eps: float = KERAS_EPSILON) -> None:
        super().__init__(reduction)
        check_head(self.name, head, self.heads)
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"loss.eps must be in [0, 0.5), got {eps}")
        self.head, self.eps = head, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = probabilities(logits, self.head)
        if self.eps:
            p = p.clamp(self.eps, 1.0 - self.eps)
        values = -(target * torch.log(p) + (1.0 - target) * torch.log(1.0 - p))
        return self.reduce(values)
