"""The base of the user's own datasets (``image_folder``, ``image_csv``, ``arrays``): one labelled table
of every example, given splits taken as they are, missing ones carved off with stratification, the
normalisation taken from the training split.

A subclass reads the labels first (``read_labels``: cheap, no pixels; the task is known from them, so a
sweep can ask for ``task`` without decoding anything), then the inputs (``read_inputs``: decoded once,
cached on disk). Splits are index operations on the one decoded tensor.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lossbench.data.base import Split, TensorDataModule
from lossbench.data.files import default_cache_dir
from lossbench.data.splits import NORMALIZATIONS, carve, count_of, multi_hot, normalization, uncovered
from lossbench.errors import ConfigError, DataError

log = logging.getLogger("lossbench")
SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


@dataclass
class Labels:
    """Every example's target and split, before any input is read."""

    y: torch.Tensor  # (N,) int64 class indices or (N, C) float32 multi-hot
    split: torch.Tensor  # (N,) int64: TRAIN, VAL or TEST
    classes: list[str]
    where: Callable[[int], str]  # "file:line" (or the file) of example i, for messages
    given: dict[str, str] = field(default_factory=dict)  # split -> where it came from, when not carved

    @property
    def task(self) -> str:
        return "multilabel" if self.y.ndim == 2 else "multiclass"


def read_class_list(classes: object) -> list[str] | None:
    """``data.classes``: null, a list of names, or a text file with one name per line."""
    if classes is None:
        return None
    if isinstance(classes, str):
        path = Path(classes)
        if not path.is_file():
            raise ConfigError(f"data.classes={classes!r}: no such file; allowed: null (the labels found), a list "
                              "of class names, or a text file with one name per line")
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read the class list ({err})") from None
        names = [n for n in names if n]
        source = str(path)
    elif isinstance(classes, (list, tuple)):
        names = [str(n) for n in classes]
        source = "data.classes"
    else:
        raise ConfigError(f"data.classes={classes!r} is invalid; allowed: null, a list of class names, or the "
                          "path of a text file with one name per line")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{source}: class {name!r} is listed twice")
        seen.add(name)
    if len(names) < 2:
        raise ConfigError(f"{source}: {len(names)} class name(s); lossbench needs at least 2 classes")
    return names


def sort_labels(names: set[str]) -> list[str]:
    """Sorted as numbers when every label is an integer ("2" before "10"), else as text."""
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


class LabelledDataModule(TensorDataModule, abc.ABC):
    """``task``, ``classes``, ``num_classes`` come from the labels (read on first use); ``input_shape``
    and ``normalization`` once the inputs are read (``setup``)."""

    cache_name = "own"

    def __init__(self, val_size: int | float = 0.1, test_size: int | float = 0.1, split_seed: int = 0,
                 normalization: str = "auto", cache: bool = True, cache_dir: str | None = None, **loader) -> None:
        super().__init__(**loader)
        for key, value in (("val_size", val_size), ("test_size", test_size)):
            count_of(key, value, 10)  # the type and range now; the count once the data is read
        if not isinstance(split_seed, int) or isinstance(split_seed, bool) or split_seed < 0:
            raise ConfigError(f"data.split_seed={split_seed!r} is invalid; allowed: an integer >= 0")
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"data.normalization={normalization!r} is invalid; allowed: {', '.join(NORMALIZATIONS)}")
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed
        self.normalization_mode, self.cache = normalization, cache
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / self.cache_name
        self._labels: Labels | None = None

    # -- what a subclass provides ------------------------------------------------------------------
    @abc.abstractmethod
    def read_labels(self) -> Labels:
        """Every row's path or index, labels and split, read from the user's files."""

    @abc.abstractmethod
    def read_inputs(self, labels: Labels) -> torch.Tensor:
        """``(N, *input_shape)``: uint8 images or float32 features, in the rows' order."""

    # -- from the labels ---------------------------------------------------------------------------
    @property
    def labels(self) -> Labels:
        if self._labels is None:
            self._labels = self.read_labels()
        return self._labels

    @property
    def task(self) -> str:  # type: ignore[override]
        return self.labels.task

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return self.labels.classes

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.labels.classes)

    # -- splits ------------------------------------------------------------------------------------
    def assign_splits(self) -> torch.Tensor:
        """Every example's split: the given ones, then validation and test carved from training."""
        labels = self.labels
        split = labels.split.clone()
        pool = int((split == TRAIN).sum())
        wanted = {name: count_of(f"{name}_size", size, pool)
                  for name, size in (("val", self.val_size), ("test", self.test_size)) if name not in labels.given}
        if wanted and sum(wanted.values()) >= pool:
            sizes = " + ".join(f"data.{k}_size={getattr(self, f'{k}_size')!r} ({v})" for k, v in wanted.items())
            raise ConfigError(f"{sizes} leave no training examples of {pool}; allowed: fewer (a count, or a "
                              "fraction in (0, 1))")
        for name, code in (("val", VAL), ("test", TEST)):
            if name not in wanted:
                continue
            rows = torch.nonzero(split == TRAIN).flatten()
            _, carved = carve(labels.y[rows], self.num_classes, wanted[name], self.split_seed)
            split[rows[carved]] = code
            if name == "val":
                self._warn_uncovered(labels.y[rows], carved, wanted[name])
        return split

    def _warn_uncovered(self, y: torch.Tensor, carved: torch.Tensor, size: int) -> None:
        labels = multi_hot(y, self.num_classes)
        mask = torch.zeros(len(y), dtype=torch.bool)
        mask[carved] = True
        mask = mask.numpy()
        single = [c for c in range(self.num_classes) if labels[:, c].sum() == 1]
        missing = [c for c in uncovered(labels, mask) if not labels[mask, c].any()] + single
        if missing:
            names = ", ".join(repr(self.classes[c]) for c in sorted(missing)[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            log.warning("data: %d label(s) have no positive in the carved validation split (%d examples): %s%s "
                        "(one example in all, or data.val_size too small); their thresholds are not tuned",
                        len(missing), size, names, more)

    def _warn_unseen(self, split: torch.Tensor) -> None:
        """Labels in validation or test that training never has: a warning, not an error."""
        hot = torch.as_tensor(multi_hot(self.labels.y, self.num_classes))
        in_train = hot[split == TRAIN].any(dim=0)
        for name, code in (("val", VAL), ("test", TEST)):
            rows = torch.nonzero(split == code).flatten()
            unseen = torch.nonzero(hot[rows].any(dim=0) & ~in_train).flatten().tolist()
            if not unseen:
                continue
            first = int(rows[hot[rows][:, unseen[0]].nonzero()[0, 0]])
            others = [self.classes[c] for c in unseen[1:]]
            log.warning("%s: label %r is in %s but never in training (%d %s row(s))%s", self.labels.where(first),
                        self.classes[unseen[0]], name, int(hot[rows][:, unseen[0]].sum()), name,
                        f"; so are {len(others)} more: {', '.join(map(repr, others[:10]))}" if others else "")

    def load(self) -> dict[str, Split]:
        labels = self.labels
        split = self.assign_splits()
        self._warn_unseen(split)
        x = self.read_inputs(labels)
        self.input_shape = tuple(x.shape[1:])
        splits = {}
        for name, code in zip(SPLITS, (TRAIN, VAL, TEST), strict=True):
            idx = torch.nonzero(split == code).flatten()
            splits[name] = Split(x[idx], labels.y[idx])
        self.normalization = normalization(self.normalization_mode, splits["train"].x)
        log.info("data: %s; %d classes (%s), %s inputs %s", ", ".join(f"{len(s.y)} {k}" for k, s in splits.items()),
                 self.num_classes, self.task, x.dtype, "x".join(map(str, self.input_shape)))
        return splits
