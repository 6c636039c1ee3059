"""Asymmetric loss, ASL (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021, eq. 1-4).

    p = sigma(x),   p_m = max(p - m, 0)              (probability shifting of negatives, m = ``clip``)
    L+ = -(1 - p)^gamma_pos * log(p)
    L- = -p_m^gamma_neg * log(1 - p_m)
    l(x, y) = y * L+ + (1 - y) * L-

Defaults are the paper's and its code's (Alibaba-MIIL/ASL): ``gamma_neg=4``, ``gamma_pos=1``,
``clip=0.05``. ``log p`` is ``logsigmoid(x)``, ``1 - p_m = min(1, sigma(-x) + m)`` and, for ``clip=0``,
``log(1 - p) = logsigmoid(-x)``: finite for every finite logit without the authors' ``eps=1e-8``
clamp inside the log (which caps each term at 18.4 and is not part of the published formula).
Head: sigmoid. Tasks: multi-label (its purpose), and single-label on one-hot targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss


@register_loss
class Asymmetric(Loss):
    name = "asymmetric"
    heads = ("sigmoid",)

    def __init__(
        self, reduction: str = "mean", gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05
    ) -> None:
        super().__init__(reduction)
        for key, value in (("gamma_neg", gamma_neg), ("gamma_pos", gamma_pos)):
            if not value >= 0.0:
                raise ValueError(f"loss.{key} must be >= 0, got {value}")
        if not 0.0 <= clip < 1.0:
            raise ValueError(f"loss.clip must be in [0, 1) (0 disables probability shifting), got {clip}")
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive = -torch.sigmoid(-logits) ** self.gamma_pos * F.logsigmoid(logits)
        if self.clip:
            p_shifted = (torch.sigmoid(logits) - self.clip).clamp_min(0.0)
            log_not_p = torch.log((torch.sigmoid(-logits) + self.clip).clamp_max(1.0))
        else:
            p_shifted, log_not_p = torch.sigmoid(logits), F.logsigmoid(-logits)
        negative = -p_shifted**self.gamma_neg * log_not_p
        return self.reduce(target * positive + (1.0 - target) * negative)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction!r}, gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, "
                f"clip={self.clip}")
