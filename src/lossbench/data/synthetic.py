"""Seeded synthetic classification data: multi-label by default, single-label on request.

Each class ``c`` has a random prototype ``mu_c`` in feature space. Class prevalence follows a power
law, ``pi_c ~ (c + 1) ** -imbalance``. Multi-label: class ``c`` is present independently with
probability ``min(1, pi_c * cardinality / sum(pi))`` (so the mean label count is close to
``cardinality``), and ``x = sum_c y_c mu_c + noise * N(0, I)``. Single-label: one class drawn from
``pi``, ``x = mu_y + noise * N(0, I)``. Identical for identical arguments.
"""

from __future__ import annotations

import torch

from lossbench.data.base import Split, TensorDataModule, register_data
from lossbench.data.mnist import check_size
from lossbench.errors import ConfigError


def make_synthetic(
    n: int,
    num_classes: int = 10,
    num_features: int = 32,
    cardinality: float = 2.0,
    imbalance: float = 0.5,
    noise: float = 3.0,
    multilabel: bool = True,
    seed: int = 0,
    prototype_seed: int = 1234,
) -> Split:
    """``prototype_seed`` fixes the problem (prototypes, prevalence); ``seed`` draws the samples."""
    g = torch.Generator().manual_seed(prototype_seed)
    prototypes = torch.randn(num_classes, num_features, generator=g) * 1.5
    prevalence = (torch.arange(num_classes, dtype=torch.float64) + 1.0) ** -imbalance
    g = torch.Generator().manual_seed(seed)
    if multilabel:
        prob = (prevalence * cardinality / prevalence.sum()).clamp(max=1.0).float()
        y = (torch.rand(n, num_classes, generator=g) < prob).float()
        x = y @ prototypes
    else:
        y = torch.multinomial(prevalence / prevalence.sum(), n, replacement=True, generator=g)
        x = prototypes[y]
    x = x + noise * torch.randn(n, num_features, generator=g)
    return Split(x.float(), y)


@register_data("synthetic")
class SyntheticDataModule(TensorDataModule):
    def __init__(
        self,
        num_classes: int = 10,
        num_features: int = 32,
        cardinality: float = 2.0,
        imbalance: float = 0.5,
        noise: float = 3.0,
        multilabel: bool = True,
        train_size: int = 8000,
        val_size: int = 1000,
        test_size: int = 2000,
        problem_seed: int = 1234,
        **loader,
    ) -> None:
        super().__init__(**loader)
        if num_classes < 2:
            raise ConfigError(f"data.num_classes={num_classes} is invalid; allowed: an integer >= 2")
        if not 0 < cardinality <= num_classes:
            raise ConfigError(f"data.cardinality={cardinality} is invalid; allowed: 0 < cardinality <= num_classes")
        for key, size in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            check_size(key, size, allow_none=False)
        self.task = "multilabel" if multilabel else "multiclass"
        self.num_classes, self.input_shape = num_classes, (num_features,)
        self.classes = [f"class_{c}" for c in range(num_classes)]
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.params = dict(num_classes=num_classes, num_features=num_features, cardinality=cardinality,
                           imbalance=imbalance, noise=noise, multilabel=multilabel, prototype_seed=problem_seed)

    def load(self) -> dict[str, Split]:
        # The data are part of the problem, not of the run: split seeds are fixed, not the run's seed.
        return {name: make_synthetic(size, seed=i, **self.params) for i, (name, size) in enumerate(self.sizes.items())}
