"""Name -> part registries, filled where each part is defined (timm's way).

    LOSSES = Registry("loss", package="lossbench.losses")

    @LOSSES.register()            # the class's ``name`` attribute is the key
    class CrossEntropy(Loss): ...

A registry built with ``package=`` imports every module of that package the first time it is read, so a
new part is one module (plus its YAML file under ``configs/``) and nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from lossbench.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind, self.package = kind, package
        self._parts: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``, or ``register()`` to use the part's ``name``."""

        def add(part: T) -> T:
            key = name or getattr(part, "name", None) or getattr(part, "__name__", None)
            if not key:
                raise ValueError(f"a {self.kind} needs a name to be registered")
            if key in self._parts and self._parts[key] is not part:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._parts[key] = part
            return part

        return add

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._parts)

    def get(self, name: str) -> T:
        """The part registered as ``name``; a one-line ``ConfigError`` naming the choices otherwise."""
        self._load()
        if name not in self._parts:
            raise ConfigError(f"{self.kind}={name!r} is unknown; available: {', '.join(self.names())}")
        return self._parts[name]

    __getitem__ = get

    def __contains__(self, name: Any) -> bool:
        self._load()
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._parts[k]) for k in self.names()]
