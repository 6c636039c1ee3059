"""Multi-hot image tags from a COCO instances annotation file (e.g. ``instances_train2017.json``).

The target of an image is the multi-hot vector over the file's categories: class index = rank of the
category id in ascending order (COCO's 80 ids run 1..90 with gaps), ``classes`` = the category names in
that order. Several annotations of one category (crowd ones included) count once. Images without any
annotation are kept with an all-zero target unless ``keep_empty=False``.
Format: https://cocodataset.org/#format-data ; indexed with pycocotools' ``COCO``.

``CocoTags`` is the plain torch Dataset (decodes one image per item with ``torchvision.io``: JPEG or
PNG, grayscale and RGBA converted to RGB). ``CocoDataModule`` decodes the images it uses once,
resizes them to ``image_size x image_size`` uint8 tensors (the same whole-tensor fast path as MNIST)
and keeps them in an on-disk cache keyed by annotation file, image folder, image size and the images
chosen, so later runs do not decode JPEGs again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from lossbench.data.base import IMAGENET, Split, TensorDataModule, register_data
from lossbench.data.files import (
    cached_tensor,
    check_image_size,
    check_workers,
    decode_image_file,
    decode_resized,
    default_cache_dir,
    file_key,
    safe_relative_path,
)
from lossbench.data.mnist import carve_validation, check_size
from lossbench.errors import ConfigError, DataError

CACHE_VERSION = 1  # bump when the cached tensors' meaning changes


def _read_json(annotation_file: Path) -> dict:
    if not annotation_file.is_file():
        raise DataError(f"{annotation_file}: no such annotation file")
    try:
        with open(annotation_file, encoding="utf-8") as f:
            dataset = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{annotation_file}: malformed JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{annotation_file}: cannot read ({err})") from None
    if not isinstance(dataset, dict):
        raise DataError(f"{annotation_file}: not a COCO annotation file (top level is {type(dataset).__name__}, "
                        "expected an object with 'images', 'annotations', 'categories')")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{annotation_file}: '{key}' is missing or not a list; a COCO instances file has "
                            "'images', 'annotations' and 'categories'")
    return dataset


def _check_entries(annotation_file: Path, dataset: dict) -> None:
    """Every entry has the keys lossbench reads, ids are unique, and annotations point at existing ids."""
    for key, needed in (("images", ("id", "file_name")), ("categories", ("id", "name")),
                        ("annotations", ("image_id", "category_id"))):
        for number, entry in enumerate(dataset[key]):
            missing = [k for k in needed if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise DataError(f"{annotation_file}: {key}[{number}] lacks {', '.join(repr(k) for k in missing)}")
    for key in ("images", "categories"):
        ids = [entry["id"] for entry in dataset[key]]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"{annotation_file}: {key} id {dup} appears more than once")
    images = {image["id"] for image in dataset["images"]}
    categories = {category["id"] for category in dataset["categories"]}
    for number, ann in enumerate(dataset["annotations"]):
        name = f"annotation {ann.get('id', f'#{number}')}"
        if ann["image_id"] not in images:
            raise DataError(f"{annotation_file}: {name} refers to image_id {ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in categories:
            raise DataError(f"{annotation_file}: {name} refers to category_id {ann['category_id']}, "
                            "which is not in 'categories'")


def safe_image_path(image_dir: Path, file_name: str, annotation_file: Path) -> Path:
    """``image_dir / file_name``, refusing names that are absolute or climb out of ``image_dir``."""
    return safe_relative_path(image_dir, file_name, str(annotation_file), "image file_name")


class CocoTags(Dataset):
    """``(image, target)`` pairs from a COCO instances file: image ``(3, H, W)`` uint8 (or whatever
    ``transform`` makes of it), target a float multi-hot tensor over ``classes``.

    Everything but the pixels is checked on construction: the JSON, every annotation's image and
    category id, every ``file_name`` (inside ``image_dir``, existing). Images are in ascending id order.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, keep_empty: bool = True) -> None:
        self.image_dir, self.annotation_file = Path(image_dir), Path(annotation_file)
        self.transform = transform
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: no such image folder")
        dataset = _read_json(self.annotation_file)
        _check_entries(self.annotation_file, dataset)
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco.createIndex()
        self.category_ids = sorted(self.coco.getCatIds())
        self.classes = [self.coco.cats[c]["name"] for c in self.category_ids]
        column = {category: index for index, category in enumerate(self.category_ids)}
        self.image_ids = sorted(self.coco.getImgIds())
        if not keep_empty:
            self.image_ids = [i for i in self.image_ids if self.coco.imgToAnns[i]]
        self.targets = torch.zeros(len(self.image_ids), len(self.category_ids))
        for row, image_id in enumerate(self.image_ids):
            for ann in self.coco.imgToAnns[image_id]:
                self.targets[row, column[ann["category_id"]]] = 1.0
        self.paths = []
        for image_id in self.image_ids:
            path = safe_image_path(self.image_dir, self.coco.imgs[image_id]["file_name"], self.annotation_file)
            if not path.is_file():
                raise DataError(f"{path}: image file missing (image id {image_id} in {self.annotation_file})")
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode_image_file(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


@register_data("coco")
class CocoDataModule(TensorDataModule):
    """COCO tags as a multi-label task. ``train_*`` gives the training and validation splits (the
    validation split carved with a fixed seed), ``test_*`` (COCO's val annotations) the test split.
    Nothing is read before ``setup``; ``classes`` and ``num_classes`` exist from then on.
    Paths default to a COCO download under ``root``: ``train<year>/``, ``val<year>/``,
    ``annotations/instances_{train,val}<year>.json``."""

    task = "multilabel"
    normalization = IMAGENET

    def __init__(self, root: str | None = None, year: int | str = 2017, train_images: str | None = None,
                 train_annotations: str | None = None, test_images: str | None = None,
                 test_annotations: str | None = None, image_size: int = 64, val_size: int = 5000,
                 train_size: int | None = None, test_size: int | None = None, keep_empty: bool = True,
                 cache: bool = True, cache_dir: str | None = None, decode_workers: int = 0, **loader) -> None:
        super().__init__(**loader)
        defaults = {"train_images": f"train{year}", "train_annotations": f"annotations/instances_train{year}.json",
                    "test_images": f"val{year}", "test_annotations": f"annotations/instances_val{year}.json"}
        given = {"train_images": train_images, "train_annotations": train_annotations,
                 "test_images": test_images, "test_annotations": test_annotations}
        self.paths: dict[str, Path] = {}
        for key, value in given.items():
            if value is None and root is None:
                raise ConfigError(f"data.{key} is not set; allowed: set data.root to a COCO download (holding "
                                  f"train{year}/, val{year}/, annotations/) or give data.{key} explicitly")
            self.paths[key] = Path(value) if value is not None else Path(root) / defaults[key]
        check_image_size(image_size)
        check_workers(decode_workers)
        check_size("val_size", val_size, allow_none=False)
        check_size("train_size", train_size)
        check_size("test_size", test_size)
        self.image_size, self.val_size, self.train_size, self.test_size = image_size, val_size, train_size, test_size
        self.keep_empty, self.cache, self.decode_workers = keep_empty, cache, decode_workers
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "coco"
        self.input_shape = (3, image_size, image_size)
        self.tags: dict[str, CocoTags] = {}

    def _index(self) -> None:
        """Read and check both annotation files (``setup`` runs before any training); fix the classes."""
        for split in ("train", "test"):
            self.tags[split] = CocoTags(self.paths[f"{split}_images"], self.paths[f"{split}_annotations"],
                                        keep_empty=self.keep_empty)
        train, test = self.tags["train"], self.tags["test"]
        if (train.category_ids, train.classes) != (test.category_ids, test.classes):
            raise DataError(f"{test.annotation_file}: its categories differ from those of {train.annotation_file}; "
                            "both files must list the same category ids and names")
        self.classes = train.classes
        self.num_classes = len(self.classes)
        if self.val_size >= len(train):
            raise ConfigError(f"data.val_size={self.val_size} is invalid; allowed: 1..{len(train) - 1} "
                              f"({train.annotation_file} has {len(train)} usable images)")

    def _tensors(self, tags: CocoTags, indices: list[int]) -> torch.Tensor:
        """Decoded, resized images of ``tags`` at ``indices``, from the on-disk cache when present."""
        paths = [tags.paths[i] for i in indices]
        if not self.cache:
            return decode_resized(paths, self.image_size, workers=self.decode_workers)
        chosen = hashlib.sha1(",".join(str(tags.image_ids[i]) for i in indices).encode()).hexdigest()
        key = hashlib.sha1(f"{CACHE_VERSION}|{file_key(tags.annotation_file)}|{tags.image_dir.resolve()}|"
                           f"{self.image_size}|{chosen}".encode()).hexdigest()[:16]
        path = self.cache_dir / f"{tags.annotation_file.stem}-{self.image_size}px-{key}.pt"
        return cached_tensor(path, lambda: decode_resized(paths, self.image_size, workers=self.decode_workers),
                             (len(indices), 3, self.image_size, self.image_size), torch.uint8,
                             what=f"{len(indices)} images of {tags.image_dir} to {self.image_size}x{self.image_size}",
                             image_ids=[tags.image_ids[i] for i in indices])

    def load(self) -> dict[str, Split]:
        self._index()
        train, test = self.tags["train"], self.tags["test"]
        train_idx, val_idx = carve_validation(len(train), self.val_size)
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        test_idx = torch.arange(len(test) if self.test_size is None else min(self.test_size, len(test)))
        splits = {}
        for name, tags, idx in (("train", train, train_idx), ("val", train, val_idx), ("test", test, test_idx)):
            idx = idx.tolist()
            splits[name] = Split(self._tensors(tags, idx), tags.targets[idx])
        return splits
