"""Loss registry: ``get_loss(name, **params)`` and ``available()``.

Every loss is a short module in this package whose docstring gives its formula and source, and whose
class is registered with ``@register_loss``; the registry key, the module name and the
``configs/loss/<name>.yaml`` file are the same word. Adding a module here is all it takes to add a loss
(plus its YAML file and a float64 reference case in ``tests/test_losses.py``).
"""

from __future__ import annotations

from lossbench.losses.base import LOSSES, REDUCTIONS, Loss, register_loss


def available() -> list[str]:
    return LOSSES.names()


def loss_class(name: str) -> type[Loss]:
    return LOSSES.get(name)


def get_loss(name: str, **params) -> Loss:
    """Build a loss by name. Losses defined for several heads take ``head=...``."""
    cls = loss_class(name)
    if "head" in params and len(cls.heads) == 1:
        params.pop("head")  # single-head losses: the head is implied
    return cls(**params)


__all__ = ["LOSSES", "REDUCTIONS", "Loss", "available", "get_loss", "loss_class", "register_loss"]
