"""Partition x softmax factorisation, from an answer in the Cross Validated thread.

The multi-hot target is factorised as ``y_c = Z * P(c)``: ``Z`` the label count (partition
function), ``P`` a distribution over classes. The partition head gives ``q = softmax(x_{1..C})`` and
``Z = max(0.01, x_{C+1})`` ("a linear unit ... in practice I clipped it as max(0.01, output)"), or
``softplus(x_{C+1})``. Two variants, one value per sample:

``kl_mse``          "KL on distribution and MSE on partition":
                    ``KL(t || q) + w * (Z - n)^2`` with ``n = sum_c y_c`` and ``t = y / n``
                    (a sample with no labels contributes only the MSE term).
``abs_kl_product``  "the following loss on their product": abs-KL (``lossbench.losses.abs_kl``)
                    between ``y`` and ``Z * q``.

Head: partition. Tasks: multi-label (single-label works too: n = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.heads import Z_ACTIVATIONS, label_count
from lossbench.losses.abs_kl import KERAS_EPSILON, abs_kl
from lossbench.losses.base import Loss, register_loss

VARIANTS = ("kl_mse", "abs_kl_product")


@register_loss
class PartitionSoftmax(Loss):
    name = "partition_softmax"
    heads = ("partition",)
    per_class = False

    def __init__(
        self,
        reduction: str = "mean",
        variant: str = "kl_mse",
        mse_weight: float = 1.0,
        z_activation: str = "clip",
        eps: float = KERAS_EPSILON,
    ) -> None:
        super().__init__(reduction)
        if variant not in VARIANTS:
            raise ValueError(f"loss.variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if z_activation not in Z_ACTIVATIONS:
            raise ValueError(f"loss.z_activation must be one of {', '.join(Z_ACTIVATIONS)}, got {z_activation!r}")
        if not mse_weight >= 0:
            raise ValueError(f"loss.mse_weight must be >= 0, got {mse_weight}")
        if not eps > 0.0:
            raise ValueError(f"loss.eps must be > 0 for partition_softmax (log of a clipped value), got {eps}")
        self.variant, self.mse_weight, self.z_activation, self.eps = variant, mse_weight, z_activation, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scores, z = logits[:, :-1], label_count(logits[:, -1], self.z_activation)
        if self.variant == "abs_kl_product":
            values = abs_kl(target, z.unsqueeze(1) * torch.softmax(scores, dim=1), self.eps)
        else:
            n = target.sum(dim=1)
            t = target / n.clamp_min(1.0).unsqueeze(1)
            kl = (torch.xlogy(t, t) - t * F.log_softmax(scores, dim=1)).sum(dim=1)
            values = kl + self.mse_weight * (z - n) ** 2
        return self.reduce(values)
