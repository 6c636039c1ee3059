"""Models (an MLP, a small CNN, any timm architecture, any ``nn.Module`` by ``_target_``; each outputs
raw scores, ``num_outputs`` of them) and the optimizers.

A model is a function ``(input_shape, num_outputs, **model.*) -> nn.Module`` registered with
``@register_model("name")`` (its config is ``configs/model/<name>.yaml``); an optimizer is a
``torch.optim`` class registered under its config name (``configs/optimizer/<name>.yaml``).
``num_outputs`` is the number of classes plus the head's extra outputs (the partition head's count).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from lossbench.errors import ConfigError
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


def _image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"model={model} needs image inputs (C, H, W); this dataset gives shape {tuple(input_shape)}")
    return tuple(input_shape)  # type: ignore[return-value]


@register_model("timm")
def timm_model(input_shape: Sequence[int], num_outputs: int, arch: str = "resnet18", pretrained: bool = False,
               **kwargs) -> nn.Module:
    """``timm.create_model(arch, pretrained, in_chans=C, num_classes=num_outputs, **kwargs)``: any timm
    architecture with its classifier sized to the head (https://huggingface.co/docs/timm). Extra
    ``model.*`` keys go to the architecture (``+model.drop_rate=0.1``, ``+model.img_size=32`` for ViTs).
    ``pretrained=true`` fetches the weights from the Hugging Face Hub (network, or its local cache); timm
    adapts the first convolution to ``in_chans`` and gives the new classifier fresh weights."""
    import timm

    channels, _, _ = _image_shape(input_shape, "timm")
    if not isinstance(arch, str) or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"model.arch={arch!r} is not a timm architecture; "
                          + (f"close: {', '.join(close)}" if close else "see timm.list_models()"))
    if pretrained not in (True, False):
        raise ConfigError(f"model.pretrained={pretrained!r} is invalid; allowed: true, false")

    def create(with_weights: bool) -> nn.Module:
        return timm.create_model(arch, pretrained=with_weights, in_chans=channels, num_classes=num_outputs, **kwargs)

    try:
        net = create(False)  # a bad model.* key fails here, before any download is tried
    except TypeError as err:
        raise ConfigError(f"model=timm model.arch={arch}: {str(err).splitlines()[0]}; drop the extra model.* key") from None
    if not pretrained:
        return net
    try:
        return create(True)
    except Exception as err:  # huggingface_hub / httpx / OSError: what fails depends on the network and the cache
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"model.pretrained=true: cannot fetch the {arch} weights ({type(err).__name__}: {reason}); "
                          "it needs network access to the Hugging Face Hub or the weights in its local cache; "
                          "model.pretrained=false trains from scratch") from None


def locate(target: str) -> object:
    """The object a dotted path names (``pkg.module.Class``), like Hydra's ``_target_``: the longest
    importable module prefix, then attributes."""
    parts = target.split(".")
    if not target or not all(p.isidentifier() for p in parts):
        raise ConfigError(f"model._target_={target!r} is not a dotted path such as my_pkg.models.MyNet")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise ConfigError(f"model._target_={target}: importing {module_name} failed ({err})") from None
        except Exception as err:  # the user's module raised while importing
            raise ConfigError(f"model._target_={target}: importing {module_name} failed "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ConfigError(f"model._target_={target}: {'.'.join(parts[:cut])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
            cut += 1
        return obj
    raise ConfigError(f"model._target_={target}: no module {parts[0]!r} can be imported (is it installed, or on "
                      "PYTHONPATH / in the directory you launch from?)")


@register_model("custom")
def custom(input_shape: Sequence[int], num_outputs: int, _target_: str | None = None, **kwargs) -> nn.Module:
    """Any ``nn.Module`` (class or factory) ``_target_(in_shape=input_shape, num_outputs=n, **kwargs)``:
    ``model=custom model._target_=my_pkg.MyNet`` (+ any ``+model.<arg>=...`` it takes)."""
    if not _target_ or _target_ == "???":
        raise ConfigError("model._target_ is not set; allowed: the dotted path of an nn.Module class or function "
                          "taking in_shape and num_outputs, e.g. model._target_=my_pkg.MyNet")
    factory = locate(_target_)
    if not callable(factory):
        raise ConfigError(f"model._target_={_target_} is a {type(factory).__name__}, not a class or function")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        params = signature.parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            missing = [a for a in ("in_shape", "num_outputs", *kwargs) if a not in params]
            if missing:
                raise ConfigError(f"model._target_={_target_}{signature} does not take "
                                  f"{', '.join(missing)}; lossbench calls it with in_shape=(C, H, W) or (D,), "
                                  "num_outputs=<classes + head outputs> and the other model.* keys")
    try:
        net = factory(in_shape=tuple(input_shape), num_outputs=num_outputs, **kwargs)
    except Exception as err:
        raise ConfigError(f"model._target_={_target_}: building it failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model._target_={_target_} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def member_obstacles(net: nn.Module) -> list[str]:
    """What keeps ``net`` from training as stacked members (``torch.func`` over several seeds in one
    process), one entry per layer: batch-norm layers with running statistics (buffers updated in
    ``forward``, which a functional call does not carry) and dropout / drop-path / drop-block layers
    with a non-zero rate (members would draw masks unlike separate runs). Empty: no obstacle."""
    found = []
    for name, module in net.named_modules():
        kind = type(module).__name__
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            found.append(f"{name or '<model>'} ({kind}: running statistics)")
            continue
        rate = None
        if isinstance(module, nn.modules.dropout._DropoutNd):
            rate = module.p
        elif "Drop" in kind:  # timm's DropPath, DropBlock2d and the like
            rate = next((getattr(module, a) for a in ("drop_prob", "p", "drop_rate") if hasattr(module, a)), None)
        if rate:
            found.append(f"{name or '<model>'} ({kind} p={rate:g})")
    return found


def build_model(name: str, input_shape: Sequence[int], num_outputs: int, **params) -> nn.Module:
    if "_target_" in params and name != "custom":
        raise ConfigError(f"model._target_ is set but model={name}; allowed: model=custom model._target_=my_pkg.MyNet")
    return MODELS.get(name)(input_shape, num_outputs, **params)
