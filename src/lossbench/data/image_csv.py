"""``data=image_csv``: a CSV or TSV of image paths and their labels (Kaggle style), multi- or single-label.

    image,tags                          data.csv=tags.csv data.image_root=imgs
    0001.jpg,cat dog                    labels separated by data.separator (a space by default)
    0002.jpg,dog
    0003.jpg,                           no label: allowed for multi-label data (an image without tags)

Columns: ``data.path_column`` (default: the first) and ``data.label_column`` (default: the second),
optionally ``data.split_column`` (train / val / test per row). Or separate files per split
(``data.val_csv``, ``data.test_csv``), or splits carved from ``data.csv`` (stratified, fixed seed).
``data.multilabel=auto`` makes the data multi-label when any row has two labels. Classes are
``data.classes`` (a list or a file, one name per line) or the sorted set of labels found (as numbers when
every label is an integer). Paths are relative to ``data.image_root`` (default: the CSV's folder);
absolute paths and ``..`` are refused.

Every problem is one ``DataError`` naming the file and line (the header is line 1): a missing or
unreadable image, an unknown label, an empty label field in single-label data, a path listed twice (in
one file or across split files), a path outside the image root, a row with the wrong number of fields.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lossbench.data.base import register_data
from lossbench.data.files import (
    cached_tensor,
    check_image_size,
    check_workers,
    decode_resized,
    digest,
    safe_relative_path,
    stamp,
)
from lossbench.data.image_folder import check_channels
from lossbench.data.labelled import TEST, TRAIN, VAL, LabelledDataModule, Labels, read_class_list, sort_labels
from lossbench.errors import ConfigError, DataError

CACHE_VERSION = 1  # bump when the cached tensors' meaning changes
SPLIT_NAMES = {"train": TRAIN, "training": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST,
               "testing": TEST}
MULTILABEL = ("auto", True, False)


@dataclass
class Row:
    file: Path
    line: int
    image: str
    labels: list[str]
    split: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def split_labels(field: str, separator: str) -> list[str]:
    """The labels of one field, each once, in order; a space separator splits on any run of whitespace."""
    tokens = field.split() if separator.strip() == "" else [t.strip() for t in field.split(separator)]
    return list(dict.fromkeys(t for t in tokens if t))


def read_rows(path: Path, split: int, delimiter: str, path_column: str | None, label_column: str | None,
              split_column: str | None, separator: str) -> list[Row]:
    if not path.is_file():
        raise DataError(f"{path}: no such label file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next((r for r in reader if any(cell.strip() for cell in r)), None)
            if header is None:
                raise DataError(f"{path}: empty file; the first line names the columns (e.g. image{delimiter}labels)")
            header = [h.strip() for h in header]

            def column(name: str | None, position: int, key: str) -> int:
                if name is None:
                    if len(header) <= position:
                        raise DataError(f"{path}: {len(header)} column(s) ({', '.join(map(repr, header))}) with "
                                        f"delimiter {delimiter!r}; it needs an image path column and a labels column "
                                        "(is data.delimiter right?)")
                    return position
                if name not in header:
                    raise DataError(f"{path}: no column {name!r} (data.{key}); its columns: {', '.join(header)}")
                return header.index(name)

            image_at = column(path_column, 0, "path_column")
            labels_at = column(label_column, 1, "label_column")
            split_at = column(split_column, -1, "split_column") if split_column is not None else None
            rows = []
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                where = f"{path}:{reader.line_num}"
                if len(record) != len(header):
                    raise DataError(f"{where}: {len(record)} field(s), the header has {len(header)} "
                                    f"(delimiter {delimiter!r})")
                image = record[image_at].strip()
                if not image:
                    raise DataError(f"{where}: empty image path")
                row_split = split
                if split_at is not None:
                    value = record[split_at].strip().lower()
                    if value not in SPLIT_NAMES:
                        raise DataError(f"{where}: split {record[split_at]!r} (column {split_column!r}) is not one "
                                        f"of {', '.join(SPLIT_NAMES)}")
                    row_split = SPLIT_NAMES[value]
                rows.append(Row(path, reader.line_num, image, split_labels(record[labels_at], separator), row_split))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: no rows below the header")
    return rows


@register_data("image_csv")
class ImageCSVDataModule(LabelledDataModule):
    cache_name = "image_csv"

    def __init__(self, csv: str | None = None, image_root: str | None = None, val_csv: str | None = None,
                 test_csv: str | None = None, path_column: str | None = None, label_column: str | None = None,
                 split_column: str | None = None, separator: str = " ", delimiter: str = "auto",
                 multilabel: bool | str = "auto", classes: list[str] | str | None = None, path_suffix: str = "",
                 image_size: int = 64, channels: int = 3, decode_workers: int = 0, **params) -> None:
        super().__init__(**params)
        if csv is None:
            raise ConfigError("data.csv is not set; allowed: the path of a CSV/TSV file with an image path column and "
                              "a labels column")
        if split_column is not None and (val_csv or test_csv):
            raise ConfigError("data.split_column and data.val_csv/data.test_csv are both set; allowed: one way of "
                              "giving splits (a split column, or a file per split)")
        if multilabel not in MULTILABEL:
            raise ConfigError(f"data.multilabel={multilabel!r} is invalid; allowed: auto, true, false")
        if not isinstance(separator, str) or not separator:
            raise ConfigError(f"data.separator={separator!r} is invalid; allowed: a non-empty string such as ' ', "
                              "'|', ',', ';'")
        if delimiter != "auto" and (not isinstance(delimiter, str) or len(delimiter) != 1):
            raise ConfigError(f"data.delimiter={delimiter!r} is invalid; allowed: auto (tab for .tsv/.tab files, "
                              "else a comma) or one character")
        check_image_size(image_size)
        check_channels(channels)
        check_workers(decode_workers)
        self.files = {TRAIN: Path(csv)}
        if val_csv:
            self.files[VAL] = Path(val_csv)
        if test_csv:
            self.files[TEST] = Path(test_csv)
        self.image_root = Path(image_root) if image_root else Path(csv).parent
        self.path_column, self.label_column, self.split_column = path_column, label_column, split_column
        self.separator, self.delimiter, self.multilabel = separator, delimiter, multilabel
        self.class_list = read_class_list(classes)
        self.path_suffix = path_suffix or ""
        self.image_size, self.channels, self.decode_workers = image_size, channels, decode_workers
        self.input_shape = (channels, image_size, image_size)
        self.rows: list[Row] = []
        self.paths: list[Path] = []

    def _delimiter(self, path: Path) -> str:
        if self.delimiter != "auto":
            return self.delimiter
        return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","

    def read_labels(self) -> Labels:
        rows: list[Row] = []
        for split, path in self.files.items():
            rows += read_rows(path, split, self._delimiter(path), self.path_column, self.label_column,
                              self.split_column, self.separator)
        self.rows = rows
        multilabel = self.multilabel
        if multilabel == "auto":
            multilabel = any(len(r.labels) > 1 for r in rows)
        for row in rows:
            if not multilabel and len(row.labels) != 1:
                if not row.labels:
                    raise DataError(f"{row.where}: empty label field; single-label data needs one label per image "
                                    "(data.multilabel=true allows images without labels)")
                raise DataError(f"{row.where}: {len(row.labels)} labels ({', '.join(map(repr, row.labels))}) but "
                                "data.multilabel=false")
        classes = self.class_list or sort_labels({label for r in rows for label in r.labels})
        if len(classes) < 2:
            raise DataError(f"{self.files[TRAIN]}: {len(classes)} distinct label(s) in all; lossbench needs at "
                            "least 2 classes")
        index = {c: i for i, c in enumerate(classes)}
        if self.class_list:
            for row in rows:
                for label in row.labels:
                    if label not in index:
                        shown = ", ".join(classes[:8]) + (f", ... ({len(classes)} in all)" if len(classes) > 8 else "")
                        raise DataError(f"{row.where}: label {label!r} is not in data.classes ({shown})")
        self.paths = self._image_paths(rows)
        if multilabel:
            y = torch.zeros(len(rows), len(classes))
            for i, row in enumerate(rows):
                y[i, [index[label] for label in row.labels]] = 1.0
        else:
            y = torch.tensor([index[r.labels[0]] for r in rows], dtype=torch.int64)
        split = torch.tensor([r.split for r in rows], dtype=torch.int64)
        given = {name: str(self.files.get(code, self.files[TRAIN])) for name, code in (("val", VAL), ("test", TEST))
                 if bool((split == code).any())}
        return Labels(y=y, split=split, classes=classes, where=lambda i: rows[i].where, given=given)

    def _image_paths(self, rows: list[Row]) -> list[Path]:
        """Each row's image, inside the root, existing, listed once (``a.jpg`` and ``./a.jpg`` are one)."""
        root = self.image_root
        if not root.is_dir():
            raise DataError(f"{root}: no such image folder (data.image_root)")
        first: dict[str, str] = {}
        paths = []
        for row in rows:
            name = row.image + self.path_suffix
            path = safe_relative_path(root, name, row.where, inside=f"data.image_root ({root})")
            key = os.path.normpath(name)
            if key in first:
                raise DataError(f"{row.where}: image {row.image!r} is listed again (first at {first[key]})")
            first[key] = row.where
            if not path.is_file():
                raise DataError(f"{row.where}: image file missing: {path}")
            paths.append(path)
        return paths

    def read_inputs(self, labels: Labels) -> torch.Tensor:
        wheres = [r.where for r in self.rows]

        def build() -> torch.Tensor:
            return decode_resized(self.paths, self.image_size, self.channels, self.decode_workers, wheres)

        if not self.cache:
            return build()
        root = self.image_root.resolve()
        listing = digest(*(f"{p.relative_to(self.image_root)}:{stamp(p)}" for p in self.paths), length=40)
        key = digest(CACHE_VERSION, root, self.image_size, self.channels, listing)
        path = self.cache_dir / f"{self.files[TRAIN].stem}-{self.image_size}px-{self.channels}ch-{key}.pt"
        shape = (len(self.paths), self.channels, self.image_size, self.image_size)
        return cached_tensor(path, build, shape, torch.uint8,
                             what=f"{len(self.paths)} images of {self.image_root} to {self.image_size}x{self.image_size}",
                             paths=[str(p.relative_to(self.image_root)) for p in self.paths])
