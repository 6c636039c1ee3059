"""Loss registry: ``get_loss(name, **params)`` and ``available()``.

Every loss is a short module in this package whose docstring gives its formula and source; the
registry key, the module name and the ``configs/loss/<name>.yaml`` file are the same word.
"""

from __future__ import annotations

from lossbench.losses.abs_kl import AbsKL
from lossbench.losses.asymmetric import Asymmetric
from lossbench.losses.base import REDUCTIONS, Loss
from lossbench.losses.bce_manual import BCEManual
from lossbench.losses.bce_with_logits import BCEWithLogits
from lossbench.losses.cross_entropy import CrossEntropy
from lossbench.losses.focal import Focal
from lossbench.losses.partition_softmax import PartitionSoftmax
from lossbench.losses.poly import Poly
from lossbench.losses.two_way import TwoWay
from lossbench.losses.weighted_bce import WeightedBCE
from lossbench.losses.zlpr import ZLPR

LOSSES: dict[str, type[Loss]] = {
    cls.name: cls
    for cls in (BCEWithLogits, WeightedBCE, CrossEntropy, BCEManual, AbsKL, PartitionSoftmax,
                Focal, Asymmetric, ZLPR, TwoWay, Poly)
}


def available() -> list[str]:
    return sorted(LOSSES)


def loss_class(name: str) -> type[Loss]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(available())}")
    return LOSSES[name]


def get_loss(name: str, **params) -> Loss:
    """Build a loss by name. Losses defined for several heads take ``head=...``."""
    cls = loss_class(name)
    if "head" in params and len(cls.heads) == 1:
        params.pop("head")  # single-head losses: the head is implied
    return cls(**params)


__all__ = ["LOSSES", "REDUCTIONS", "Loss", "available", "get_loss", "loss_class"]
