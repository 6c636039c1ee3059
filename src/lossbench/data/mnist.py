"""MNIST and Fashion-MNIST through torchvision, decoded once into uint8 tensors.

``root`` uses torchvision's layout (``<root>/MNIST/raw/*.gz``). With ``download=True`` torchvision
fetches the files. Offline, a folder holding the four IDX ``.gz`` files is enough: they are
decompressed into ``cache_dir/<Name>/raw`` (what torchvision's loader reads) without the network.
A validation split of ``val_size`` images is carved from the training set with a fixed seed; the test
set is only used for final metrics.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
from torchvision import datasets

from lossbench.data.base import Normalization, Split, TensorDataModule
from lossbench.errors import ConfigError, DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DATASETS = {
    "mnist": (datasets.MNIST, Normalization(255.0, [0.1307], [0.3081])),
    "fashion_mnist": (datasets.FashionMNIST, Normalization(255.0, [0.2860], [0.3530])),
}
SPLIT_SEED = 0  # the validation split is part of the dataset definition, not of the run


def default_cache_dir() -> Path:
    """``$LOSSBENCH_CACHE``, else ``~/.cache/lossbench``."""
    return Path(os.environ.get("LOSSBENCH_CACHE") or Path.home() / ".cache" / "lossbench")


def prepare_raw(name: str, root: Path, cache_dir: Path) -> Path:
    """Return a torchvision root whose ``<Name>/raw`` holds the four decompressed IDX files."""
    cls = DATASETS[name][0]
    source = Path(root) / cls.__name__ / "raw"
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; data.root must hold {cls.__name__}/raw/ with the four IDX .gz files "
                        f"({', '.join(f + '.gz' for f in FILES)}), or set data.download=true")
    target = Path(cache_dir) / cls.__name__ / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for stem in FILES:
        out = target / stem
        if out.exists():
            continue
        plain, packed = source / stem, source / f"{stem}.gz"
        if plain.exists():
            shutil.copyfile(plain, out)
            continue
        if not packed.exists():
            raise DataError(f"{packed}: missing; {source} must hold {', '.join(f + '.gz' for f in FILES)}")
        tmp = out.with_suffix(".part")
        try:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{packed}: not a readable gzip file ({err})") from None
        tmp.replace(out)
    return Path(cache_dir)


def load_split(name: str, root: Path, train: bool, download: bool, cache_dir: Path) -> Split:
    cls = DATASETS[name][0]
    torchvision_root = Path(root) if download else prepare_raw(name, root, cache_dir)
    try:
        ds = cls(str(torchvision_root), train=train, download=download)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise DataError(f"{torchvision_root / cls.__name__ / 'raw'}: cannot read {name} ({err})") from None
    return Split(ds.data.unsqueeze(1).contiguous(), ds.targets.long())


class MNISTDataModule(TensorDataModule):
    task = "multiclass"
    num_classes = 10
    input_shape = (1, 28, 28)

    def __init__(self, name: str = "mnist", root: str | None = None, download: bool = False,
                 cache_dir: str | None = None, val_size: int = 5000, train_size: int | None = None,
                 test_size: int | None = None, **loader) -> None:
        super().__init__(**loader)
        if name not in DATASETS:
            raise ConfigError(f"data.name={name!r} is not an MNIST-like dataset; allowed: {', '.join(DATASETS)}")
        self.name, self.download = name, download
        self.root = Path(root) if root else default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "torchvision"
        self.val_size, self.train_size, self.test_size = val_size, train_size, test_size
        self.normalization = DATASETS[name][1]
        cls = DATASETS[name][0]
        self.classes = list(cls.classes)

    def load(self) -> dict[str, Split]:
        full = load_split(self.name, self.root, True, self.download, self.cache_dir)
        test = load_split(self.name, self.root, False, self.download, self.cache_dir)
        if not 0 < self.val_size < len(full.y):
            raise ConfigError(f"data.val_size={self.val_size} is invalid; allowed: 1..{len(full.y) - 1} "
                              f"(the training set has {len(full.y)} images)")
        order = torch.randperm(len(full.y), generator=torch.Generator().manual_seed(SPLIT_SEED))
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        if self.test_size is not None:
            test = Split(test.x[: self.test_size], test.y[: self.test_size])
        return {
            "train": Split(full.x[train_idx], full.y[train_idx]),
            "val": Split(full.x[val_idx], full.y[val_idx]),
            "test": test,
        }
