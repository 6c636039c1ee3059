"""One DataModule per dataset, each registered where it is defined (``@register_data``);
``build_datamodule(name, **params)`` picks one by its config name (``configs/data/<name>.yaml``)."""

from __future__ import annotations

from lossbench.data.base import DATASETS, Normalization, Split, TensorDataModule, register_data


def available() -> list[str]:
    return DATASETS.names()


def build_datamodule(name: str, **params) -> TensorDataModule:
    return DATASETS.get(name)(**params)


__all__ = ["DATASETS", "Normalization", "Split", "TensorDataModule", "available", "build_datamodule",
           "register_data"]
