"""Label perturbations of the training split: the ``noise=`` config group (``configs/noise/*.yaml``).

Applied once, when the DataModule reads its data (``TensorDataModule.setup``), to the training split
only: validation and test stay clean, so every metric measures the true labels. Every draw comes from
its own ``torch.Generator`` seeded by ``noise.seed`` -- not by the run's ``seed`` -- so every strategy
(loss, head, model) and every run seed trains on the same corrupted labels. The draws are made for every
sample (or label) whatever the rate, so with one ``noise.seed`` the corruptions are nested: the labels
flipped at 20 % are among those flipped at 40 %, with the same new classes.

Kinds (``noise.name``), with the exact meaning of ``realised_rate`` in ``summary.json``:

``none``            nothing changes; ``realised_rate`` = 0.
``symmetric``       single-label. Each training sample is selected independently with probability
                    ``rate`` and its class replaced by one drawn uniformly from the C - 1 *other* classes
                    (uniform label noise with the true class excluded, as in Patrini et al., "Making Deep
                    Neural Networks Robust to Label Noise: a Loss Correction Approach", CVPR 2017, and
                    Ma et al. 2020). ``realised_rate`` = changed samples / training samples, expected ``rate``.
``pairflip``        single-label (alias ``asymmetric``). A sample of a source class c flips to its fixed
                    target class with probability ``rate``; other classes never change. ``noise.pairs``
                    lists ``[source, target]`` pairs; null takes the dataset's default: for ``data=mnist``
                    Patrini et al.'s map 7 -> 1, 2 -> 7, 5 <-> 6, 3 -> 8 (also Ma et al. 2020's MNIST
                    "asymmetric" noise), for any other dataset c -> (c + 1) mod C (every class a source).
                    ``realised_rate`` = changed samples / training samples, expected ``rate x source_share``
                    (``source_share`` = the share of training samples in a source class, also recorded);
                    ``rate_in_sources`` = changed / samples of source classes, expected ``rate``.
``missing``         multi-label. Each positive label is dropped (1 -> 0) independently with probability
                    ``rate`` (incomplete tags; a sample may lose all its tags). ``realised_rate`` = dropped
                    positives / training positives, expected ``rate``.
``single_positive`` multi-label. Each sample keeps exactly one of its positives, drawn uniformly (Cole et
                    al., "Multi-Label Learning from Single Positive Labels", CVPR 2021); samples without a
                    positive stay empty. No rate: ``realised_rate`` = dropped positives / training positives.
``false_positive``  multi-label. Each negative label is switched on (0 -> 1) independently with probability
                    ``rate``. ``realised_rate`` = switched negatives / training negatives, expected ``rate``.
``longtail``        both tasks. Subsamples the training split (labels unchanged) so class sizes decay
                    exponentially with the class index, from the head class 0 to the tail class C - 1 (Cui
                    et al., "Class-Balanced Loss Based on Effective Number of Samples", CVPR 2019, §5: n_c =
                    n_0 mu^c), with imbalance ratio rho = n_0 / n_{C-1} (``imbalance_ratio``):

                        n_c = floor(n_head * rho^(-c / (C - 1))),  n_head = floor(min_c a_c * rho^(c / (C - 1)))

                    where a_c is the number of training samples available to group c, so n_head is the
                    largest head size every group can supply. Single-label: the group of a sample is its
                    class. Multi-label: the group of a sample is its tail-most positive -- the highest class
                    index it carries, i.e. its label whose target frequency is the smallest -- so the group
                    sizes follow the formula exactly and each label's count (its group plus its appearances
                    in samples of more-tail groups) decays with it; samples without a positive keep their share
                    of the training split (floor(empty x kept / labelled)). Which samples of a group are kept is a uniform draw.
                    ``realised_rate`` = removed samples / training samples; the record also has the group
                    sizes before and after, the label counts after and the realised label imbalance
                    (largest / smallest label count).

Sampling error: a Bernoulli rate over n independent draws has standard deviation sqrt(rate (1 - rate) / n);
tests/test_noise.py checks every realised rate within 4 of them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lossbench.data.base import Split
from lossbench.errors import ConfigError

SINGLE_LABEL_KINDS = ("symmetric", "pairflip")
MULTI_LABEL_KINDS = ("missing", "single_positive", "false_positive")
KINDS = ("none", *SINGLE_LABEL_KINDS, *MULTI_LABEL_KINDS, "longtail")
RATE_KINDS = ("symmetric", "pairflip", "missing", "false_positive")
KEYS = {"none": (), "symmetric": ("rate", "seed"), "pairflip": ("rate", "seed", "pairs"),
        "missing": ("rate", "seed"), "single_positive": ("seed",), "false_positive": ("rate", "seed"),
        "longtail": ("imbalance_ratio", "seed")}
# Patrini et al. 2017, MNIST: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1
MNIST_PAIRS = ((7, 1), (2, 7), (5, 6), (6, 5), (3, 8))
DEFAULT_PAIRS = {"mnist": MNIST_PAIRS}
NOISE_STREAM = 0x6E6F697365  # b"noise": the key of the noise's random stream (see generator())


def check_task(name: str, task: str) -> None:
    """One-line ConfigError when a perturbation does not fit the data's task."""
    if name in SINGLE_LABEL_KINDS and task != "multiclass":
        raise ConfigError(f"noise={name} needs single-label data, but the data are {task}; for multi-label data "
                          f"use noise={', '.join(MULTI_LABEL_KINDS)} or longtail")
    if name in MULTI_LABEL_KINDS and task != "multilabel":
        raise ConfigError(f"noise={name} needs multi-label data, but the data are {task}; for single-label data "
                          f"use noise={', '.join(SINGLE_LABEL_KINDS)} or longtail")


def check_config(node: DictConfig | dict | None, task: str | None = None) -> None:
    """Names, keys and ranges of the ``noise`` node (and the task when given). Used by config.validate."""
    settings = _plain(node)
    name = settings.get("name", "none")
    if name not in KINDS:
        raise ConfigError(f"noise={name!r} is unknown; available: {', '.join(KINDS)} (asymmetric = pairflip)")
    allowed = KEYS[name]
    for key, value in settings.items():
        if key == "name":
            continue
        if key not in allowed:
            raise ConfigError(f"noise.{key} is not a setting of noise={name}; allowed: {', '.join(allowed) or 'none'}")
        if key == "rate" and not (_is_number(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"noise.rate={value!r} is invalid; allowed: a number in [0, 1]")
        if key == "seed" and not (_is_int(value) and value >= 0):
            raise ConfigError(f"noise.seed={value!r} is invalid; allowed: an integer >= 0")
        if key == "imbalance_ratio" and not (_is_number(value) and value >= 1.0):
            raise ConfigError(f"noise.imbalance_ratio={value!r} is invalid; allowed: a number >= 1 "
                              "(head class size / tail class size)")
        if key == "pairs" and value is not None and not _is_pair_list(value):
            raise ConfigError(f"noise.pairs={value!r} is invalid; allowed: null (the dataset's default) or a "
                              "list of [source, target] class pairs, e.g. [[7, 1], [2, 7]]")
    for key in allowed:
        if key not in settings and key != "pairs":
            raise ConfigError(f"noise={name} needs noise.{key}")
    if task is not None:
        check_task(name, task)


@dataclass(frozen=True)
class Noise:
    name: str = "none"
    rate: float = 0.0
    seed: int = 0
    pairs: tuple[tuple[int, int], ...] | None = None
    imbalance_ratio: float = 1.0
    dataset: str | None = None  # the data config's name: picks the default pairflip map

    @classmethod
    def from_config(cls, node: DictConfig | dict | None, dataset: str | None = None) -> Noise:
        check_config(node)
        settings = _plain(node)
        pairs = settings.get("pairs")
        return cls(name=settings.get("name", "none"), rate=float(settings.get("rate", 0.0)),
                   seed=int(settings.get("seed", 0)),
                   pairs=tuple((int(s), int(t)) for s, t in pairs) if pairs is not None else None,
                   imbalance_ratio=float(settings.get("imbalance_ratio", 1.0)), dataset=dataset)

    def settings(self) -> dict[str, Any]:
        keys = KEYS[self.name]
        values = {"rate": self.rate, "seed": self.seed, "imbalance_ratio": self.imbalance_ratio}
        out: dict[str, Any] = {"name": self.name, **{k: values[k] for k in keys if k in values}}
        if self.name == "pairflip":
            out["pairs"] = [list(p) for p in self.pairs] if self.pairs is not None else None
        return out

    def apply(self, split: Split, task: str, num_classes: int) -> tuple[Split, dict[str, Any]]:
        """The perturbed training split and the record ``summary.json`` keeps as ``noise``."""
        check_task(self.name, task)
        g = generator(self.seed)
        if self.name == "none":
            y, record = split.y, {"realised_rate": 0.0}
        elif self.name == "symmetric":
            y, record = symmetric(split.y, num_classes, self.rate, g)
        elif self.name == "pairflip":
            y, record = pairflip(split.y, num_classes, self.pair_map(num_classes), self.rate, g)
        elif self.name == "missing":
            y, record = missing(split.y, self.rate, g)
        elif self.name == "single_positive":
            y, record = single_positive(split.y, g)
        elif self.name == "false_positive":
            y, record = false_positive(split.y, self.rate, g)
        else:
            keep, record = longtail_indices(split.y, num_classes, self.imbalance_ratio, g)
            split, y = Split(split.x[keep], split.y[keep]), split.y[keep]
        record = {**self.settings(), **record, "train_size": len(y), "train_labels_sha1": labels_digest(y)}
        return Split(split.x, y), record

    def pair_map(self, num_classes: int) -> tuple[tuple[int, int], ...]:
        """The ``[source, target]`` pairs in use, checked against the number of classes."""
        if self.pairs is not None:
            pairs = self.pairs
        elif self.dataset in DEFAULT_PAIRS:
            pairs = DEFAULT_PAIRS[self.dataset]
        else:
            pairs = tuple((c, (c + 1) % num_classes) for c in range(num_classes))
        sources = [s for s, _ in pairs]
        for source, target in pairs:
            if not (0 <= source < num_classes and 0 <= target < num_classes) or source == target:
                raise ConfigError(f"noise.pairs: [{source}, {target}] is invalid; allowed: two different class "
                                  f"indices in 0..{num_classes - 1}")
        if len(set(sources)) != len(sources):
            raise ConfigError(f"noise.pairs: a source class appears twice in {[list(p) for p in pairs]}; each "
                              "class flips to at most one target")
        return pairs


# -- the perturbations: pure functions of (labels, settings, generator) ------------------------------
def symmetric(y: torch.Tensor, num_classes: int, rate: float, g: torch.Generator):
    chosen = torch.rand(len(y), generator=g) < rate
    offset = torch.randint(1, num_classes, (len(y),), generator=g)  # uniform over the other classes
    noisy = torch.where(chosen, (y + offset) % num_classes, y)
    changed = int((noisy != y).sum())
    return noisy, {"realised_rate": _ratio(changed, len(y)), "changed": changed, "out_of": len(y),
                   "unit": "training samples"}


def pairflip(y: torch.Tensor, num_classes: int, pairs: tuple[tuple[int, int], ...], rate: float,
             g: torch.Generator):
    target = torch.arange(num_classes)  # class -> the class it flips to (itself: never flips)
    for source, to in pairs:
        target[source] = to
    chosen = torch.rand(len(y), generator=g) < rate
    noisy = torch.where(chosen, target[y], y)
    changed = int((noisy != y).sum())
    in_sources = int(torch.isin(y, torch.tensor([s for s, _ in pairs])).sum())
    return noisy, {"realised_rate": _ratio(changed, len(y)), "changed": changed, "out_of": len(y),
                   "unit": "training samples", "pairs_used": [list(p) for p in pairs],
                   "source_share": _ratio(in_sources, len(y)), "rate_in_sources": _ratio(changed, in_sources)}


def missing(y: torch.Tensor, rate: float, g: torch.Generator):
    drop = (torch.rand(y.shape, generator=g) < rate) & (y > 0)
    noisy = torch.where(drop, torch.zeros_like(y), y)
    positives, dropped = int((y > 0).sum()), int(drop.sum())
    return noisy, {"realised_rate": _ratio(dropped, positives), "changed": dropped, "out_of": positives,
                   "unit": "positive labels",
                   "samples_left_without_positive": int(((noisy > 0).sum(1) == 0).sum() - ((y > 0).sum(1) == 0).sum())}


def single_positive(y: torch.Tensor, g: torch.Generator):
    scores = torch.rand(y.shape, generator=g)
    pick = torch.where(y > 0, scores, torch.full_like(scores, -1.0)).argmax(dim=1)  # uniform among positives
    has_positive = (y > 0).any(dim=1)
    noisy = torch.zeros_like(y)
    noisy[has_positive, pick[has_positive]] = 1.0
    positives = int((y > 0).sum())
    dropped = positives - int(has_positive.sum())
    return noisy, {"realised_rate": _ratio(dropped, positives), "changed": dropped, "out_of": positives,
                   "unit": "positive labels"}


def false_positive(y: torch.Tensor, rate: float, g: torch.Generator):
    switch = (torch.rand(y.shape, generator=g) < rate) & (y == 0)
    noisy = torch.where(switch, torch.ones_like(y), y)
    negatives, switched = int((y == 0).sum()), int(switch.sum())
    return noisy, {"realised_rate": _ratio(switched, negatives), "changed": switched, "out_of": negatives,
                   "unit": "negative labels"}


def longtail_sizes(available: list[int], imbalance_ratio: float) -> tuple[int, list[int]]:
    """``(n_head, [n_c])`` of the module docstring's formula for groups of ``available`` samples."""
    last = len(available) - 1
    head = math.floor(min(a * imbalance_ratio ** (c / last) for c, a in enumerate(available)))
    return head, [math.floor(head * imbalance_ratio ** (-c / last)) for c in range(len(available))]


def longtail_groups(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each sample's group: its class (single-label) or its tail-most positive, -1 for none (multi-label)."""
    if y.ndim == 1:
        return y.long()
    index = torch.arange(num_classes).expand_as(y)
    return torch.where(y > 0, index, torch.full_like(index, -1)).max(dim=1).values


def longtail_indices(y: torch.Tensor, num_classes: int, imbalance_ratio: float, g: torch.Generator):
    """Indices (in their original order) of the training samples kept, and the record."""
    group = longtail_groups(y, num_classes)
    available = [int((group == c).sum()) for c in range(num_classes)]
    head, sizes = longtail_sizes(available, imbalance_ratio)
    if sizes[-1] < 1:
        tight = min(range(num_classes), key=lambda c: available[c] * imbalance_ratio ** (c / (num_classes - 1)))
        raise ConfigError(f"noise=longtail with imbalance_ratio={imbalance_ratio:g} leaves the tail class "
                          f"{num_classes - 1} without training samples (group {tight} has {available[tight]} "
                          f"samples, so the head gets {head}); use a smaller imbalance_ratio or more training data")
    order = torch.argsort(torch.rand(len(y), generator=g))  # a uniform draw within every group
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(y))
    keep = torch.zeros(len(y), dtype=torch.bool)
    quota = {c: n for c, n in enumerate(sizes)}
    empty = int((group == -1).sum())
    if empty:  # unlabelled samples keep their share of the data
        quota[-1] = math.floor(empty * sum(sizes) / sum(available))
    for c, n in quota.items():
        members = (group == c).nonzero().squeeze(1)
        keep[members[torch.argsort(rank[members])[:n]]] = True
    kept = keep.nonzero().squeeze(1)
    labels = y[kept] if y.ndim == 2 else torch.nn.functional.one_hot(y[kept], num_classes)
    label_counts = [int(v) for v in (labels > 0).sum(dim=0)]
    removed = len(y) - len(kept)
    record = {"realised_rate": _ratio(removed, len(y)), "changed": removed, "out_of": len(y),
              "unit": "training samples removed", "head_size": head,
              "group_sizes_before": available, "group_sizes_after": sizes, "label_counts_after": label_counts,
              "realised_label_imbalance": _ratio(max(label_counts), min(label_counts))}
    if empty:
        record["samples_without_positive"] = {"before": empty, "after": quota[-1]}
    return kept, record


def generator(seed: int) -> torch.Generator:
    """The noise's own random stream. Not ``manual_seed(seed)``: datasets draw their samples from
    ``manual_seed(0)``, ``manual_seed(1)``, ... too, and the same uniforms would pick the positives of a
    synthetic dataset as the labels to corrupt. A SeedSequence of (stream key, seed) keeps them apart."""
    state = np.random.SeedSequence([NOISE_STREAM, seed]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def labels_digest(y: torch.Tensor) -> str:
    """A short fingerprint of the training labels: equal digests, equal labels (across runs and strategies)."""
    return hashlib.sha1(y.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _plain(node) -> dict[str, Any]:
    if node is None:
        return {"name": "none"}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_pair_list(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0
            and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(c) for c in p) for p in v))
