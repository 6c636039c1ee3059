"""One DataModule per dataset; ``build_datamodule(name, **params)`` picks it by config name."""

from __future__ import annotations

from lossbench.data.base import Normalization, Split, TensorDataModule
from lossbench.errors import ConfigError


def _synthetic(**params):
    from lossbench.data.synthetic import SyntheticDataModule

    return SyntheticDataModule(**params)


def _mnist(**params):
    from lossbench.data.mnist import MNISTDataModule

    return MNISTDataModule(name="mnist", **params)


def _fashion_mnist(**params):
    from lossbench.data.mnist import MNISTDataModule

    return MNISTDataModule(name="fashion_mnist", **params)


def _mnist_multi(**params):
    from lossbench.data.mnist_multi import MultiMNISTDataModule

    return MultiMNISTDataModule(**params)


def _coco(**params):
    from lossbench.data.coco import CocoDataModule

    return CocoDataModule(**params)


BUILDERS = {"synthetic": _synthetic, "mnist": _mnist, "fashion_mnist": _fashion_mnist,
            "mnist_multi": _mnist_multi, "coco": _coco}


def available() -> list[str]:
    return sorted(BUILDERS)


def build_datamodule(name: str, **params) -> TensorDataModule:
    if name not in BUILDERS:
        raise ConfigError(f"data={name!r} is unknown; available: {', '.join(available())}")
    return BUILDERS[name](**params)


__all__ = ["Normalization", "Split", "TensorDataModule", "available", "build_datamodule"]
