"""Multi-digit MNIST: a real-pixel multi-label task that needs no download beyond MNIST.

Each example is a ``canvas_size x canvas_size`` canvas holding ``k`` MNIST digits, ``k`` uniform in
``min_digits..max_digits``; the target is the multi-hot vector over the 10 digit classes (a repeated
digit counts once). The canvas is cut into a ``g x g`` grid of cells, ``g = canvas_size // 28``; each
digit gets its own cell (so digits never overlap) and a uniform offset inside it when the cell is
larger than 28 pixels. ``distinct=True`` draws the digits' classes without replacement.

Digits come from the matching MNIST split -- training canvases from the training digits, validation
canvases from the digits carved off for validation (the same fixed-seed carve as ``data=mnist``),
test canvases from the MNIST test set -- so no test digit is ever seen in training. Everything is
drawn from ``torch.Generator`` seeded by ``problem_seed`` (+ split number): identical for identical
arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lossbench.data.base import Normalization, Split, TensorDataModule, register_data
from lossbench.data.mnist import (
    IMAGE_SIZE,
    MNIST_LIKE,
    carve_validation,
    check_size,
    default_cache_dir,
    load_split,
)
from lossbench.errors import ConfigError

NUM_DIGITS = 10
PASTE_CHUNK = 8192  # canvases pasted per index operation (bounds the int64 index tensors to ~50 MB)


@dataclass
class Canvases:
    x: torch.Tensor  # (N, 1, S, S) uint8
    y: torch.Tensor  # (N, 10) float multi-hot
    digits: torch.Tensor  # (N, K) int64 class of each placed digit, -1 for an empty slot
    sources: torch.Tensor  # (N, K) int64 index of the digit image in the pool, -1 for an empty slot
    corners: torch.Tensor  # (N, K, 2) int64 (top, left) pixel of each digit's 28x28 box


def grid_cells(canvas_size: int) -> int:
    """Cells per side of the placement grid."""
    return canvas_size // IMAGE_SIZE


def check_layout(canvas_size: int, min_digits: int, max_digits: int, distinct: bool, classes: int = NUM_DIGITS) -> None:
    """Raise ``ConfigError`` naming ``data.<key>`` if these digits cannot be placed without overlap."""
    for key, value in (("canvas_size", canvas_size), ("min_digits", min_digits), ("max_digits", max_digits)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"data.{key}={value!r} is invalid; allowed: an integer")
    if canvas_size < IMAGE_SIZE:
        raise ConfigError(f"data.canvas_size={canvas_size} is invalid; allowed: an integer >= {IMAGE_SIZE}")
    cells = grid_cells(canvas_size) ** 2
    limit = min(cells, classes) if distinct else cells
    if not 1 <= max_digits <= limit:
        why = f"{cells} non-overlapping cells fit a {canvas_size}x{canvas_size} canvas"
        if distinct:
            why += f" and distinct digits need at most {classes} classes"
        raise ConfigError(f"data.max_digits={max_digits} is invalid; allowed: 1..{limit} ({why})")
    if not 0 <= min_digits <= max_digits:
        raise ConfigError(f"data.min_digits={min_digits} is invalid; allowed: 0..{max_digits} (data.max_digits)")


def compose_canvases(images: torch.Tensor, labels: torch.Tensor, n: int, canvas_size: int = 56,
                     min_digits: int = 1, max_digits: int = 3, distinct: bool = True, seed: int = 0) -> Canvases:
    """Build ``n`` canvases from a digit pool ``images`` ((P, 28, 28) or (P, 1, 28, 28) uint8) with
    class ``labels`` ((P,) int). Vectorised: one draw per quantity for all canvases, one paste per
    digit slot (in chunks)."""
    present = torch.unique(labels.long())
    check_layout(canvas_size, min_digits, max_digits, distinct, classes=len(present))
    images = images.reshape(-1, IMAGE_SIZE * IMAGE_SIZE)
    labels = labels.long()
    g = torch.Generator().manual_seed(seed)
    k_max, side = max_digits, grid_cells(canvas_size)
    cell = canvas_size // side

    counts = torch.bincount(labels, minlength=NUM_DIGITS)
    offsets = torch.cumsum(counts, 0) - counts
    by_class = torch.argsort(labels, stable=True)  # pool indices grouped by class
    if distinct:
        pick = torch.argsort(torch.rand(n, len(present), generator=g), dim=1)[:, :k_max]
    else:
        pick = torch.randint(len(present), (n, k_max), generator=g)
    digits = present[pick]
    within = (torch.rand(n, k_max, generator=g) * counts[digits]).long().clamp(max=counts[digits] - 1)
    sources = by_class[offsets[digits] + within]

    count = torch.randint(min_digits, max_digits + 1, (n,), generator=g)
    active = torch.arange(k_max) < count[:, None]
    cells = torch.argsort(torch.rand(n, side * side, generator=g), dim=1)[:, :k_max]
    jitter = torch.randint(cell - IMAGE_SIZE + 1, (n, k_max, 2), generator=g)
    corners = torch.stack([cells // side, cells % side], dim=-1) * cell + jitter

    canvas = torch.zeros(n, canvas_size * canvas_size, dtype=torch.uint8)
    box = (torch.arange(IMAGE_SIZE)[:, None] * canvas_size + torch.arange(IMAGE_SIZE)[None, :]).reshape(-1)
    start = corners[..., 0] * canvas_size + corners[..., 1]
    for slot in range(k_max):
        rows = active[:, slot].nonzero().squeeze(1)
        for chunk in rows.split(PASTE_CHUNK):
            canvas[chunk[:, None], start[chunk, slot, None] + box] = images[sources[chunk, slot]]

    y = torch.zeros(n, NUM_DIGITS)
    y.scatter_add_(1, torch.where(active, digits, 0), active.float())
    y = (y > 0).float()
    empty = torch.full_like(digits, -1)
    return Canvases(
        x=canvas.view(n, 1, canvas_size, canvas_size),
        y=y,
        digits=torch.where(active, digits, empty),
        sources=torch.where(active, sources, empty),
        corners=torch.where(active[..., None], corners, -1),
    )


def digit_pools(root: Path, download: bool, cache_dir: Path, val_digits: int) -> dict[str, Split]:
    """MNIST's digits split as ``data=mnist`` splits them: train / val (carved, fixed seed) / test."""
    full = load_split("mnist", root, True, download, cache_dir)
    if val_digits >= len(full.y):
        raise ConfigError(f"data.val_digits={val_digits} is invalid; allowed: 1..{len(full.y) - 1}")
    train_idx, val_idx = carve_validation(len(full.y), val_digits)
    return {
        "train": Split(full.x[train_idx], full.y[train_idx]),
        "val": Split(full.x[val_idx], full.y[val_idx]),
        "test": load_split("mnist", root, False, download, cache_dir),
    }


@register_data("mnist_multi")
class MultiMNISTDataModule(TensorDataModule):
    task = "multilabel"
    num_classes = NUM_DIGITS

    def __init__(self, root: str | None = None, download: bool = False, cache_dir: str | None = None,
                 canvas_size: int = 56, min_digits: int = 1, max_digits: int = 3, distinct: bool = True,
                 train_size: int = 55000, val_size: int = 5000, test_size: int = 10000, val_digits: int = 5000,
                 problem_seed: int = 0, **loader) -> None:
        super().__init__(**loader)
        check_layout(canvas_size, min_digits, max_digits, distinct)
        for key, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size),
                           ("val_digits", val_digits)):
            check_size(key, value, allow_none=False)
        self.root = Path(root) if root else default_cache_dir()
        self.download = download
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "torchvision"
        self.layout = dict(canvas_size=canvas_size, min_digits=min_digits, max_digits=max_digits, distinct=distinct)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.val_digits, self.problem_seed = val_digits, problem_seed
        self.input_shape = (1, canvas_size, canvas_size)
        self.classes = list(MNIST_LIKE["mnist"][0].classes)

    def load(self) -> dict[str, Split]:
        pools = digit_pools(self.root, self.download, self.cache_dir, self.val_digits)
        splits = {}
        for number, (name, size) in enumerate(self.sizes.items()):
            made = compose_canvases(pools[name].x, pools[name].y, size, seed=self.problem_seed * 3 + number,
                                    **self.layout)
            splits[name] = Split(made.x, made.y)
        # canvases are mostly background: take mean/std from (a fixed slice of) the training canvases
        sample = splits["train"].x[:4096].float() / 255.0
        self.normalization = Normalization(255.0, [round(sample.mean().item(), 4)], [round(sample.std().item(), 4)])
        return splits
