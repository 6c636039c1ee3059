"""Splits carved from one labelled pool, and the input normalisation taken from the training split.

``carve(y, size, seed)`` cuts ``size`` examples off with iterative stratification (Sechidis, Tsoumakas &
Vlahavas, "On the Stratification of Multi-Label Data", ECML PKDD 2011; the ``iterative-stratification``
package), which keeps every label's share of positives about equal on both sides; a single-label
target is stratified as its one-hot matrix, i.e. per class. The algorithm sends a rare label's few
positives to the side that wants most of them, so a label with 2-5 examples often has none in a 10%
cut; ``cover`` then moves examples (and moves others back, to keep the size) so that every label with
at least two positives has one on each side, and one with a single positive keeps it for training.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import torch

from lossbench.data.base import IMAGENET, Normalization
from lossbench.errors import ConfigError

log = logging.getLogger("lossbench")
NORMALIZATIONS = ("auto", "imagenet", "train", "none")


def count_of(key: str, value: object, n: int) -> int:
    """``data.<key>`` as a number of the ``n`` examples: a count (integer >= 1) or a fraction in (0, 1)
    (rounded, at least 1)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        count = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < 1:
        count = max(1, round(float(value) * n))
    else:
        raise ConfigError(f"data.{key}={value!r} is invalid; allowed: a count (an integer >= 1) or a fraction "
                          "in (0, 1)")
    return count


def multi_hot(y: torch.Tensor, num_classes: int) -> np.ndarray:
    """``(N, C)`` bool: ``y`` as it is (multi-label) or one-hot (class indices)."""
    if y.ndim == 2:
        return y.numpy() > 0.5
    return np.eye(num_classes, dtype=bool)[y.numpy()]


def carve(y: torch.Tensor, num_classes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, carved)``: sorted indices into ``y`` (``(N,)`` class indices or ``(N, C)`` multi-hot),
    ``carved`` about ``size`` of them, stratified per label, then ``cover``-ed."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    labels = multi_hot(y, num_classes)
    n = len(labels)
    if not 1 <= size < n:
        raise ValueError(f"cannot carve {size} of {n} examples")
    if labels.any(axis=0).sum() >= 2:
        split = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
        _, carved_idx = next(split.split(np.zeros(n), labels))
    else:  # scikit-learn does not call one label column (or none) a multi-label target
        carved_idx = np.random.default_rng(seed).permutation(n)[:size]
    carved = np.zeros(n, dtype=bool)
    carved[carved_idx] = True
    cover(labels, carved, size)
    return torch.from_numpy(np.flatnonzero(~carved)), torch.from_numpy(np.flatnonzero(carved))


def cover(labels: np.ndarray, carved: np.ndarray, size: int | None = None) -> None:
    """Move examples across ``carved`` (bool per example, in place) until every label with >= 2 positives
    has positives on both sides and a label with 1 positive has it on the kept side, where possible;
    then to exactly ``size`` carved examples (the stratification gives about that many), where possible.

    Labels are fixed rarest first. An example moves only if its source side keeps a positive of each of
    its other labels; for each move one example goes the other way (fewest labels first, one whose
    every label keeps a positive where it leaves) so the carved size stays, when such an example exists.
    The size is then fitted the same way: examples with fewest labels move, none that would leave a
    label without a positive on its side.
    """
    totals = labels.sum(axis=0)
    counts = {True: labels[carved].sum(axis=0), False: labels[~carved].sum(axis=0)}
    n_labels = labels.sum(axis=1)

    def move(i: int, to_carved: bool) -> None:
        carved[i] = to_carved
        counts[to_carved] += labels[i]
        counts[not to_carved] -= labels[i]

    def pick(side: bool, must: int | None, exclude: int) -> int | None:
        """An example on ``side`` (with label ``must``) whose other labels all keep a positive there."""
        ok = carved == side
        if must is not None:
            ok &= labels[:, must]
        keeps = counts[side] >= 2
        if must is not None:
            keeps = keeps.copy()
            keeps[must] = True
        ok &= ~(labels & ~keeps).any(axis=1)
        ok[exclude] = False
        found = np.flatnonzero(ok)
        if not len(found):
            return None
        return int(found[np.argmin(n_labels[found])])  # the first of those with fewest labels

    for c in np.argsort(totals, kind="stable"):
        if totals[c] == 0:
            continue
        if totals[c] == 1:
            lacking = False if counts[True][c] else None  # its one positive belongs to training
        elif counts[True][c] == 0:
            lacking = True
        elif counts[False][c] == 0:
            lacking = False
        else:
            continue
        if lacking is None:
            continue
        i = pick(not lacking, c, exclude=-1)
        if i is None:
            continue
        move(i, lacking)
        back = pick(lacking, None, exclude=i)
        if back is not None:
            move(back, not lacking)
    while size is not None and carved.sum() != size:
        grow = bool(carved.sum() < size)
        i = pick(not grow, None, exclude=-1)
        if i is None:
            break
        move(i, grow)


def uncovered(labels: np.ndarray, carved: np.ndarray) -> list[int]:
    """Labels with >= 2 positives that have none on one side."""
    totals = labels.sum(axis=0)
    on_carved = labels[carved].sum(axis=0)
    return [int(c) for c in np.flatnonzero((totals >= 2) & ((on_carved == 0) | (on_carved == totals)))]


def normalization(mode: str, x_train: torch.Tensor) -> Normalization:
    """``x -> (x / scale - mean) / std`` for ``data.normalization``:

    - ``imagenet``: ImageNet's RGB mean/std (3-channel uint8 images; what pretrained timm models expect);
    - ``train``: the training split's mean and std per channel (dimension 1; per feature for ``(N, D)``),
      a constant channel getting std 1;
    - ``none``: uint8 images scaled to [0, 1], features as they are;
    - ``auto``: ``imagenet`` for 3-channel uint8 images, else ``train``.
    """
    images = x_train.dtype == torch.uint8
    scale = 255.0 if images else 1.0
    if mode == "auto":
        mode = "imagenet" if images and x_train.ndim == 4 and x_train.shape[1] == 3 else "train"
    if mode == "imagenet":
        if not (images and x_train.ndim == 4 and x_train.shape[1] == 3):
            raise ConfigError(f"data.normalization=imagenet needs 3-channel (RGB) uint8 images; these inputs are "
                              f"{x_train.dtype} of shape {tuple(x_train.shape[1:])}; allowed: train, none")
        return IMAGENET
    if mode == "none":
        return Normalization(scale)
    if mode != "train":
        raise ConfigError(f"data.normalization={mode!r} is invalid; allowed: {', '.join(NORMALIZATIONS)}")
    channels = x_train.shape[1] if x_train.ndim >= 2 else 1

    def chunks():  # float64 in chunks: no full float copy of a large image set
        for chunk in x_train.split(4096):
            yield chunk.to(torch.float64).reshape(len(chunk), channels, -1) / scale

    count = x_train[:1].reshape(1, channels, -1).shape[2] * len(x_train)
    mean = sum(c.sum(dim=(0, 2)) for c in chunks()) / count
    # two passes (mean, then squared deviations): no cancellation for a constant channel
    var = sum(((c - mean.view(1, -1, 1)) ** 2).sum(dim=(0, 2)) for c in chunks()) / count
    std = var.sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return Normalization(scale, mean.tolist(), std.tolist())
