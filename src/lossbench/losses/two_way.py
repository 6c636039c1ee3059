"""Two-way multi-label loss (Kobayashi, "Two-Way Multi-Label Loss", CVPR 2023; code: tk1980/TwoWayMultiLabelLoss).

With ``P``/``N`` the positive/negative entries and the soft maxima
``hard_neg = T_n * log sum_N e^{x / T_n}`` and ``hard_pos = T_p * log sum_P e^{-x / T_p}``:

    sample-wise, per sample i (over its classes):   l_i = softplus(hard_neg_i + hard_pos_i)
    class-wise, per class c (over the batch):       k_c = softplus(hard_neg^c + hard_pos^c)
    L = mean_{i with a positive} l_i + mean_{c with a positive in the batch} k_c

Defaults ``temperature_pos=4`` (T_p), ``temperature_neg=1`` (T_n) as in the paper. Masks are exact
(``-inf``; the authors' code adds -100, which stops masking once |x| / T nears 100); an empty mean is 0.
The class-wise term couples the samples of a batch, so ``reduction="none"`` returns per-sample values
``v_i = N / |S| * [i in S] * l_i + mean_c k_c`` (S: samples with a positive), whose mean is ``L``.
Head: sigmoid (decision at logit 0). Tasks: multi-label, and single-label. 0/1 targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Loss, register_loss


def soft_max_over(values: torch.Tensor, keep: torch.Tensor, temperature: float, dim: int) -> torch.Tensor:
    """``T * log sum_{keep} e^{values / T}`` along ``dim`` (``-inf`` where nothing is kept)."""
    masked = torch.where(keep, values / temperature, torch.full_like(values, float("-inf")))
    return temperature * torch.logsumexp(masked, dim=dim)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, values, torch.zeros_like(values)).sum() / keep.sum().clamp_min(1).to(values.dtype)


@register_loss
class TwoWay(Loss):
    name = "two_way"
    heads = ("sigmoid",)
    per_class = False

    def __init__(self, reduction: str = "mean", temperature_pos: float = 4.0, temperature_neg: float = 1.0) -> None:
        super().__init__(reduction)
        for key, value in (("temperature_pos", temperature_pos), ("temperature_neg", temperature_neg)):
            if not value > 0.0:
                raise ValueError(f"loss.{key} must be > 0, got {value}")
        self.temperature_pos, self.temperature_neg = temperature_pos, temperature_neg

    def terms(self, logits: torch.Tensor, dim: int, positive: torch.Tensor) -> torch.Tensor:
        hard_neg = soft_max_over(logits, ~positive, self.temperature_neg, dim)
        hard_pos = soft_max_over(-logits, positive, self.temperature_pos, dim)
        return F.softplus(hard_neg + hard_pos)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive = target > 0.5
        has_pos_sample, has_pos_class = positive.any(dim=1), positive.any(dim=0)
        sample_terms = self.terms(logits, 1, positive)
        class_mean = masked_mean(self.terms(logits, 0, positive), has_pos_class)
        share = len(logits) / has_pos_sample.sum().clamp_min(1).to(logits.dtype)  # int / int is float32
        values = torch.where(has_pos_sample, sample_terms * share, torch.zeros_like(sample_terms)) + class_mean
        return self.reduce(values)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction!r}, temperature_pos={self.temperature_pos}, "
                f"temperature_neg={self.temperature_neg}")
