"""MNIST and Fashion-MNIST through torchvision, decoded once into uint8 tensors.

``root`` uses torchvision's layout (``<root>/MNIST/raw/…``, ``<root>/FashionMNIST/raw/…``). With
``download=True`` torchvision fetches the files when they are not there. Offline, a folder holding the
four IDX files is enough, gzipped with any settings (Debian recompresses Fashion-MNIST, so torchvision's
md5 list does not match): ``prepare_raw`` decompresses them into a cache folder laid out as torchvision
expects, checking each IDX header (magic number, declared sizes against the file length) first.

Fast path: the whole split is one ``(N, 1, 28, 28)`` uint8 tensor, batches are one index operation,
and scaling/normalisation happen on the device (``LossModule.normalize``). A validation split of
``val_size`` images is carved from the training set with a fixed seed; the test set is only used for
final metrics. IDX format: http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from math import prod
from pathlib import Path

import torch
from torchvision import datasets

from lossbench.data.base import Normalization, Split, TensorDataModule, register_data
from lossbench.data.files import default_cache_dir
from lossbench.errors import ConfigError, DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
LISTING = ", ".join(f + ".gz" for f in FILES)
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # 0x00000803: uint8, 3 dims; 0x00000801: uint8, 1 dim
IMAGE_SIZE = 28
# each MNIST-like dataset: its torchvision class (the raw folder name, the class names) and input normalisation
MNIST_LIKE = {
    "mnist": (datasets.MNIST, Normalization(255.0, [0.1307], [0.3081])),
    "fashion_mnist": (datasets.FashionMNIST, Normalization(255.0, [0.2860], [0.3530])),
}
SPLIT_SEED = 0  # the validation split is part of the dataset definition, not of the run


def check_idx(path: Path, shown: Path | None = None) -> tuple[int, ...]:
    """Return the dimensions an uncompressed IDX file declares, after checking its magic number and
    that its length is exactly header + product of dimensions. ``shown`` is the name used in errors."""
    shown = shown or path
    expected = LABEL_MAGIC if "labels" in path.name else IMAGE_MAGIC
    ndim = expected & 0xFF
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4:
        raise DataError(f"{shown}: truncated IDX file ({size} bytes, shorter than its header)")
    (magic,) = struct.unpack(">i", header[:4])
    if magic != expected:
        raise DataError(f"{shown}: wrong magic number {magic} (expected {expected} for an IDX "
                        f"{'label' if expected == LABEL_MAGIC else 'image'} file)")
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{shown}: truncated IDX file ({size} bytes, shorter than its header)")
    dims = struct.unpack(f">{ndim}i", header[4:])
    want = len(header) + prod(dims)
    if size != want:
        problem = "truncated" if size < want else "has trailing bytes"
        raise DataError(f"{shown}: {problem}: the header declares {' x '.join(map(str, dims))} "
                        f"({want} bytes in all) but the file holds {size} bytes"
                        f"{' once decompressed' if shown.suffix == '.gz' else ''}")
    if expected == IMAGE_MAGIC and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{shown}: images are {dims[1]}x{dims[2]}; MNIST-like data must be {IMAGE_SIZE}x{IMAGE_SIZE}")
    return dims


def _source_folder(name: str, root: Path) -> Path:
    return Path(root) / MNIST_LIKE[name][0].__name__ / "raw"


def _decompress(packed: Path, out: Path) -> None:
    """gunzip ``packed`` into ``out`` through a unique temporary name; ``out`` appears only once checked."""
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    try:
        with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        tmp.unlink(missing_ok=True)
        raise DataError(f"{packed}: not a readable gzip file ({err})") from None
    try:
        check_idx(tmp, shown=packed)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)


def _is_fresh(out: Path, source: Path) -> bool:
    """``out`` exists, is no older than ``source`` and is a well-formed IDX file."""
    try:
        return out.stat().st_mtime >= source.stat().st_mtime and check_idx(out) is not None
    except (DataError, OSError):
        return False


def prepare_raw(name: str, root: Path, cache_dir: Path) -> Path:
    """Return a torchvision root whose ``<Name>/raw`` holds the four checked, uncompressed IDX files.

    ``root/<Name>/raw`` may hold them uncompressed (used in place) or gzipped (decompressed into
    ``cache_dir/<hash of the source folder>/<Name>/raw``, refreshed when a ``.gz`` is newer).
    """
    source = _source_folder(name, root)
    folder = source.parent.name
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; data.root must hold {folder}/raw/ with the four IDX files "
                        f"({LISTING}), or set data.download=true")
    if all((source / stem).is_file() for stem in FILES):
        for stem in FILES:
            check_idx(source / stem)
        return Path(root)
    key = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    target_root = Path(cache_dir) / key
    target = target_root / folder / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for stem in FILES:
        out, plain, packed = target / stem, source / stem, source / f"{stem}.gz"
        if plain.is_file():
            check_idx(plain)
            if not _is_fresh(out, plain):
                tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
                shutil.copyfile(plain, tmp)
                tmp.replace(out)
            continue
        if not packed.is_file():
            raise DataError(f"{packed}: missing; {source} must hold {LISTING}")
        if not _is_fresh(out, packed):
            _decompress(packed, out)
    return target_root


def load_split(name: str, root: Path, train: bool, download: bool, cache_dir: Path) -> Split:
    """One split as ``Split(x: (N, 1, 28, 28) uint8, y: (N,) int64)``, read by torchvision's class."""
    cls = MNIST_LIKE[name][0]
    source = _source_folder(name, root)
    have_files = all((source / s).is_file() or (source / f"{s}.gz").is_file() for s in FILES)
    if download and not have_files:
        try:
            cls(str(root), train=train, download=True)
        except (RuntimeError, OSError) as err:
            first = str(err).strip().splitlines()[0]
            raise DataError(f"{source}: downloading {cls.__name__} failed ({first})") from None
    torchvision_root = prepare_raw(name, root, cache_dir)
    prefix = "train" if train else "t10k"
    images, labels = (_source_folder(name, torchvision_root) / f"{prefix}-{k}" for k in ("images-idx3-ubyte",
                                                                                          "labels-idx1-ubyte"))
    n_images, n_labels = check_idx(images, source / images.name)[0], check_idx(labels, source / labels.name)[0]
    if n_images != n_labels:
        raise DataError(f"{source}: {prefix} images and labels disagree ({n_images} images, {n_labels} labels)")
    ds = cls(str(torchvision_root), train=train, download=False)
    y = ds.targets.long()
    if len(y) and int(y.max()) >= len(cls.classes):
        raise DataError(f"{source / labels.name}: label {int(y.max())} out of range 0..{len(cls.classes) - 1}")
    return Split(ds.data.unsqueeze(1).contiguous(), y)


def carve_validation(n: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: a fixed-seed permutation of ``range(n)`` cut after ``val_size``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[val_size:], order[:val_size]


def check_size(key: str, value: int | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"data.{key}={value!r} is invalid; allowed: {'null or ' if allow_none else ''}an integer >= 1")


class MNISTDataModule(TensorDataModule):
    task = "multiclass"
    num_classes = 10
    input_shape = (1, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, name: str = "mnist", root: str | None = None, download: bool = False,
                 cache_dir: str | None = None, val_size: int = 5000, train_size: int | None = None,
                 test_size: int | None = None, **loader) -> None:
        super().__init__(**loader)
        if name not in MNIST_LIKE:
            raise ConfigError(f"data.name={name!r} is not an MNIST-like dataset; allowed: {', '.join(MNIST_LIKE)}")
        check_size("val_size", val_size, allow_none=False)
        check_size("train_size", train_size)
        check_size("test_size", test_size)
        self.name, self.download = name, download
        self.root = Path(root) if root else default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "torchvision"
        self.val_size, self.train_size, self.test_size = val_size, train_size, test_size
        self.normalization = MNIST_LIKE[name][1]
        self.classes = list(MNIST_LIKE[name][0].classes)

    def load(self) -> dict[str, Split]:
        full = load_split(self.name, self.root, True, self.download, self.cache_dir)
        test = load_split(self.name, self.root, False, self.download, self.cache_dir)
        if self.val_size >= len(full.y):
            raise ConfigError(f"data.val_size={self.val_size} is invalid; allowed: 1..{len(full.y) - 1} "
                              f"(the training set has {len(full.y)} images)")
        train_idx, val_idx = carve_validation(len(full.y), self.val_size)
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        if self.test_size is not None:
            test = Split(test.x[: self.test_size], test.y[: self.test_size])
        return {
            "train": Split(full.x[train_idx], full.y[train_idx]),
            "val": Split(full.x[val_idx], full.y[val_idx]),
            "test": test,
        }


@register_data("mnist")
def mnist(**params) -> MNISTDataModule:
    return MNISTDataModule(name="mnist", **params)


@register_data("fashion_mnist")
def fashion_mnist(**params) -> MNISTDataModule:
    return MNISTDataModule(name="fashion_mnist", **params)
