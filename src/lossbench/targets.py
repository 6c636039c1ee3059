"""The one place targets are converted.

Datasets store targets in their natural form: class indices ``(N,)`` (int64) for single-label
(multiclass) data and a multi-hot float matrix ``(N, C)`` for multi-label data. Each loss declares
which form it consumes (its ``target_form``):

``multihot``      0/1 float matrix -- BCE-style losses; one-hot rows for single-label data.
``distribution``  each row a probability distribution -- softmax cross-entropy. Single-label data
                  keeps class indices (identical loss, cheaper); multi-label rows are the multi-hot
                  row divided by its label count (the "valid probability distribution" of the
                  threads); an all-zero row stays all-zero and so contributes no loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TARGET_FORMS = ("multihot", "distribution")


def to_multihot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    if y.ndim == 1:
        return F.one_hot(y.long(), num_classes).float()
    return y.float()


def to_distribution(y: torch.Tensor) -> torch.Tensor:
    """Indices stay indices; a multi-hot matrix becomes row-normalised."""
    if y.ndim == 1:
        return y.long()
    y = y.float()
    return y / y.sum(dim=1, keepdim=True).clamp_min(1.0)


def prepare(y: torch.Tensor, form: str, num_classes: int) -> torch.Tensor:
    if form == "multihot":
        return to_multihot(y, num_classes)
    if form == "distribution":
        return to_distribution(y)
    raise ValueError(f"target form must be one of {TARGET_FORMS}, got {form!r}")
