"""What every loss shares: its declared heads/tasks/target form and the reductions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.heads import TASKS, get_head
from lossbench.registry import Registry

REDUCTIONS = ("mean", "sum", "none", "sum_classes")


class Loss(nn.Module):
    """Base class. ``forward(logits, target)`` takes the model's raw scores, before any activation.

    Class attributes declare what the validity table needs:

    * ``heads`` -- heads the loss is defined for; the first is its natural head;
    * ``tasks`` -- "multiclass" and/or "multilabel";
    * ``target_form`` -- "multihot" or "distribution" (see ``lossbench.targets``);
    * ``per_class`` -- True when the loss is a sum of independent per-class terms, so
      ``reduction="none"`` gives ``(N, C)``; False when it is one value per sample ``(N,)``.

    Reductions: ``mean`` (PyTorch's default: mean over every element), ``sum``, ``none`` and
    ``sum_classes`` (TensorFlow's ``reduce_mean(reduce_sum(ce, axis=1))``: sum over classes, mean over
    the batch; C times ``mean`` for a per-class loss, identical to ``mean`` for a per-sample loss).
    """

    name: ClassVar[str]
    heads: ClassVar[tuple[str, ...]]
    tasks: ClassVar[tuple[str, ...]] = TASKS
    target_form: ClassVar[str] = "multihot"
    per_class: ClassVar[bool] = True

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction

    def reduce(self, values: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return values
        if self.reduction == "sum":
            return values.sum()
        if self.reduction == "sum_classes" and values.ndim == 2:
            return values.sum(dim=1).mean()
        return values.mean()

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


# every module of lossbench.losses registers its loss here with @register_loss
LOSSES: Registry[type[Loss]] = Registry("loss", package="lossbench.losses")


def register_loss(cls):
    """Class decorator: the loss is found under ``cls.name`` (the module and YAML file share that name)."""
    return LOSSES.register(cls.name)(cls)


def check_head(loss_name: str, head: str, allowed: tuple[str, ...]) -> None:
    if head not in allowed:
        raise ValueError(f"loss {loss_name!r} is defined for heads {', '.join(allowed)}; got head {head!r}")


def probabilities(logits: torch.Tensor, head: str) -> torch.Tensor:
    """Per-class probabilities of a sigmoid or softmax head, as the head itself defines them."""
    return get_head(head).probabilities(logits, "multilabel")


def one_minus_pt(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - p_t`` with ``p_t = y * sigma(x) + (1 - y) * (1 - sigma(x))``, computed as
    ``y * sigma(-x) + (1 - y) * sigma(x)`` (the same value, without the cancellation in ``1 - p_t``)."""
    return target * torch.sigmoid(-logits) + (1.0 - target) * torch.sigmoid(logits)


def positive_weight(value: float | Sequence[float] | None, key: str) -> torch.Tensor | None:
    """A number or one number per class, each > 0, as a float32 tensor (None stays None)."""
    if value is None:
        return None
    weight = torch.as_tensor(value, dtype=torch.float32)
    if weight.ndim > 1 or weight.numel() == 0 or not bool((weight > 0).all()):
        raise ValueError(f"loss.{key} must be a number > 0 or a list of one number > 0 per class, got {value}")
    return weight


def target_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-index targets ``(N,)`` as one-hot rows in the logits' dtype; probability rows ``(N, C)`` as
    they are (cast). For the softmax losses defined on a target distribution t."""
    if not target.is_floating_point():
        return F.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
    return target.to(logits.dtype)
