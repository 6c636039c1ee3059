"""``data=image_folder``: torchvision's ``ImageFolder`` layout, one folder per class, single-label.

    root/cat/001.jpg  root/dog/xyz.png ...                       splits carved (fixed seed, stratified)
    root/train/cat/001.jpg  root/val/cat/...  root/test/cat/...   splits as given (val/ or test/ may be
                                                                  missing: carved from train/)

A split folder may also be called ``valid``/``validation``. Classes are the sorted names of the class
folders of every split (a class with no training images is a warning); hidden folders and files (``.x``)
are skipped, as are files that are not JPEG, PNG, GIF or WebP (counted in one warning). The walk is
torchvision's ``make_dataset``; the images are decoded once into ``(N, channels, image_size,
image_size)`` uint8 and cached (``lossbench.data.files``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torchvision.datasets.folder import make_dataset

from lossbench.data.base import register_data
from lossbench.data.files import (
    IMAGE_SUFFIXES,
    cached_tensor,
    check_image_size,
    check_workers,
    decode_resized,
    digest,
    stamp,
)
from lossbench.data.labelled import TEST, TRAIN, VAL, LabelledDataModule, Labels
from lossbench.errors import ConfigError, DataError

log = logging.getLogger("lossbench")
CACHE_VERSION = 1  # bump when the cached tensors' meaning changes
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_channels(channels: object) -> None:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"data.channels={channels!r} is invalid; allowed: 3 (RGB) or 1 (grayscale)")


@register_data("image_folder")
class ImageFolderDataModule(LabelledDataModule):
    cache_name = "image_folder"

    def __init__(self, root: str | None = None, image_size: int = 64, channels: int = 3,
                 decode_workers: int = 0, **params) -> None:
        super().__init__(**params)
        if root is None:
            raise ConfigError("data.root is not set; allowed: a folder holding one folder of images per class "
                              "(or train/, val/, test/ folders that do)")
        check_image_size(image_size)
        check_channels(channels)
        check_workers(decode_workers)
        self.root, self.image_size, self.channels, self.decode_workers = Path(root), image_size, channels, decode_workers
        self.input_shape = (channels, image_size, image_size)
        self.paths: list[Path] = []

    def split_folders(self) -> dict[str, Path]:
        """The split -> folder map: ``train/`` (+ ``val/``, ``test/``) when there, else the root for all."""
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder (data.root)")
        if not (self.root / "train").is_dir():
            return {"train": self.root}
        found = {"train": self.root / "train"}
        for split in ("val", "test"):
            for name in SPLIT_FOLDERS[split]:
                if (self.root / name).is_dir():
                    found[split] = self.root / name
                    break
        return found

    def read_labels(self) -> Labels:
        folders = self.split_folders()
        names = sorted({c for folder in folders.values() for c in class_folders(folder)})
        if len(names) < 2:
            where = ", ".join(str(f) for f in folders.values())
            raise DataError(f"{where}: {len(names)} class folder(s) ({', '.join(names) or 'none'}); an image folder "
                            "holds one folder per class, at least 2")
        class_to_idx = {c: i for i, c in enumerate(names)}
        ignored: list[str] = []
        ys, splits = [], []
        self.paths = []
        for split, folder in folders.items():

            def valid(path: str, folder=folder) -> bool:
                if not _visible(Path(path), folder):
                    return False
                if Path(path).suffix.lower() in IMAGE_SUFFIXES:
                    return True
                ignored.append(path)
                return False

            present = {c: class_to_idx[c] for c in class_folders(folder)}
            if not present:
                raise DataError(f"{folder}: no class folders; an image folder holds one folder of images per class")
            samples = make_dataset(str(folder), present, is_valid_file=valid, allow_empty=True)
            if not samples:
                raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
            self.paths += [Path(p) for p, _ in samples]
            ys += [c for _, c in samples]
            splits += [{"train": TRAIN, "val": VAL, "test": TEST}[split]] * len(samples)
        if ignored:
            log.warning("%s: %d file(s) that are not %s images skipped (e.g. %s)", self.root, len(ignored),
                        "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES), ignored[0])
        paths = self.paths
        return Labels(y=torch.tensor(ys, dtype=torch.int64), split=torch.tensor(splits), classes=names,
                      where=lambda i: str(paths[i]), given={k: str(v) for k, v in folders.items() if k != "train"})

    def read_inputs(self, labels: Labels) -> torch.Tensor:
        def build() -> torch.Tensor:
            return decode_resized(self.paths, self.image_size, self.channels, self.decode_workers)

        shape = (len(self.paths), self.channels, self.image_size, self.image_size)
        if not self.cache:
            return build()
        listing = digest(*(f"{p.relative_to(self.root)}:{stamp(p)}" for p in self.paths), length=40)
        key = digest(CACHE_VERSION, self.root.resolve(), self.image_size, self.channels, listing)
        path = self.cache_dir / f"{self.root.resolve().name}-{self.image_size}px-{self.channels}ch-{key}.pt"
        return cached_tensor(path, build, shape, torch.uint8,
                             what=f"{len(self.paths)} images of {self.root} to {self.image_size}x{self.image_size}",
                             paths=[str(p.relative_to(self.root)) for p in self.paths])
