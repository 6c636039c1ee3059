"""Models (an MLP and a small CNN, both output raw scores, ``num_outputs`` of them) and the optimizers.

A model is a function ``(input_shape, num_outputs, **model.*) -> nn.Module`` registered with
``@register_model("name")`` (its config is ``configs/model/<name>.yaml``); an optimizer is a
``torch.optim`` class registered under its config name (``configs/optimizer/<name>.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from lossbench.registry import Registry

MODELS: Registry = Registry("model")
OPTIMIZERS: Registry = Registry("optimizer")
for _name, _cls in {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                    "rmsprop": torch.optim.RMSprop, "adadelta": torch.optim.Adadelta,
                    "adagrad": torch.optim.Adagrad}.items():
    OPTIMIZERS.register(_name)(_cls)


def register_model(name: str):
    return MODELS.register(name)


@register_model("mlp")
def mlp(input_shape: Sequence[int], num_outputs: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0):
    layers: list[nn.Module] = [nn.Flatten()]
    width = prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


@register_model("cnn")
def cnn(input_shape: Sequence[int], num_outputs: int, channels: Sequence[int] = (32, 64), hidden: int = 128,
        dropout: float = 0.0):
    """Two 3x3 conv + max-pool blocks, then two fully connected layers (the classic MNIST net)."""
    if len(input_shape) != 3:
        raise ValueError(f"model 'cnn' needs image inputs (C, H, W); this dataset gives shape {tuple(input_shape)}")
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, num_outputs))
    return nn.Sequential(*layers)


def build_model(name: str, input_shape: Sequence[int], num_outputs: int, **params) -> nn.Module:
    return MODELS.get(name)(input_shape, num_outputs, **params)
