"""ZLPR, the multi-label softmax cross-entropy (Su et al., "ZLPR: A Novel Loss for Multi-label
Classification", arXiv:2208.02955, 2022; Su's 2020 "multilabel categorical cross-entropy").

    l(s, y) = log(1 + sum_{c: y_c = 0} e^{s_c}) + log(1 + sum_{c: y_c = 1} e^{-s_c})

Each term is a log-sum-exp over the row plus one extra logit 0, the other classes masked out with
``-inf`` (the reference code subtracts 1e12 instead, which is ``inf`` in float16 and turns the mask's
``0 * 1e12`` into NaN). With exactly one positive class it is softmax cross-entropy against a fixed
0 logit, so the answer to "can a softmax-style loss do multi-label?" is yes, with the decision at
logit 0 (= sigmoid 0.5). Not a sum of per-class terms: one value per sample. 0/1 targets.
Head: sigmoid (its 0.5 threshold is the logit-0 rule). Tasks: multi-label, and single-label.
"""

from __future__ import annotations

import torch

from lossbench.losses.base import Loss, register_loss


def masked_logsumexp_with_zero(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``log(1 + sum_{keep} e^{scores})`` per row: a log-sum-exp with one extra 0 logit."""
    masked = torch.where(keep, scores, torch.full_like(scores, float("-inf")))
    return torch.logsumexp(torch.cat([masked, torch.zeros_like(scores[:, :1])], dim=1), dim=1)


@register_loss
class ZLPR(Loss):
    name = "zlpr"
    heads = ("sigmoid",)
    per_class = False

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive = target > 0.5
        values = masked_logsumexp_with_zero(logits, ~positive) + masked_logsumexp_with_zero(-logits, positive)
        return self.reduce(values)
