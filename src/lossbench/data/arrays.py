"""``data=arrays``: features and targets from ``.npz`` (numpy) or ``.pt`` (torch) files.

    np.savez("train.npz", x=x, y=y)            data.path=train.npz [data.test_path=test.npz]
    torch.save({"x": x, "y": y}, "train.pt")   data.path=train.pt

``x`` has any shape ``(N, ...)``: ``uint8`` with 3 or 4 dimensions is images (``(N, H, W)``, ``(N, C, H,
W)`` or ``(N, H, W, C)``, the layout told by the channel count or ``data.layout``), kept as uint8 and
normalised on the device; anything else is float32 features. ``y`` is ``(N,)`` class indices
(single-label) or an ``(N, C)`` 0/1 matrix (multi-label). Class names: ``data.classes``, else a
``classes`` entry of the file, else ``"0" .. "C-1"``. A ``.pt`` file is read with
``torch.load(weights_only=True)`` and an ``.npz`` with ``allow_pickle=False``: data, never code.

Every problem is one ``DataError`` naming the file and the row: a missing key, ragged or non-finite
features, non-integral or negative class indices, values other than 0/1 in a multi-label matrix, ``x`` and
``y`` of different lengths, files whose rows disagree in shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from lossbench.data.base import register_data
from lossbench.data.files import cached_tensor, check_image_size, digest, file_key
from lossbench.data.labelled import TEST, TRAIN, VAL, LabelledDataModule, Labels, read_class_list
from lossbench.errors import ConfigError, DataError

CACHE_VERSION = 1
LAYOUTS = ("auto", "nchw", "nhwc")
CHANNEL_COUNTS = (1, 3, 4)


def _load(path: Path, keys: tuple[str, ...]) -> dict[str, object]:
    """The entries ``keys`` of an ``.npz`` or ``.pt`` file (absent ones left out)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                found = {}
                for key in keys:
                    if key in f.files:
                        try:
                            found[key] = f[key]
                        except ValueError as err:
                            if "allow_pickle" in str(err):
                                raise DataError(f"{path}: {key} is an object array (ragged rows, or mixed types); "
                                                "lossbench does not unpickle: save it as one numeric array "
                                                "(N, ...)") from None
                            raise
                return found | {"_keys": list(f.files)}
        except DataError:
            raise
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npz file ({str(err).splitlines()[0]})") from None
    if suffix == ".pt":
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises many kinds; each means "not a readable file"
            raise DataError(f"{path}: not a readable .pt file ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: holds a {type(data).__name__}; expected a dict such as "
                            "{'x': tensor, 'y': tensor} (torch.save)")
        return {k: data[k] for k in keys if k in data} | {"_keys": [str(k) for k in data]}
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; allowed: .npz (numpy.savez) or .pt (torch.save)")


def _as_tensor(value: object, path: Path, key: str) -> torch.Tensor:
    """A tensor from a numpy array, a tensor, or a list of equal-shape rows (tensors, arrays, numbers)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(f"{path}: {key} has dtype {value.dtype}; allowed: numbers or booleans")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        if not value:
            raise DataError(f"{path}: {key} is empty")
        rows = [torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v for v in value]
        for i, row in enumerate(rows):
            if row.shape != rows[0].shape:
                raise DataError(f"{path}: {key} is ragged: row {i} has shape {tuple(row.shape)}, row 0 has "
                                f"{tuple(rows[0].shape)}")
        return torch.stack(rows)
    raise DataError(f"{path}: {key} is a {type(value).__name__}; expected an array or tensor")


def first_bad_row(bad: torch.Tensor) -> int:
    return int(bad.nonzero()[0, 0])


def features(x: torch.Tensor, path: Path, key: str, layout: str) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` or float32 features, checked finite row by row."""
    if x.dtype.is_complex:
        raise DataError(f"{path}: {key} is complex; allowed: real numbers")
    if x.ndim == 0:
        raise DataError(f"{path}: {key} is a single number; expected rows (N, ...)")
    if x.ndim == 4 and layout == "auto" and x.dtype == torch.uint8:
        first, last = x.shape[1] in CHANNEL_COUNTS, x.shape[3] in CHANNEL_COUNTS
        if first and last:
            raise DataError(f"{path}: {key} has shape {tuple(x.shape)}: NCHW or NHWC? set data.layout=nchw "
                            "or data.layout=nhwc")
        layout = "nhwc" if last else "nchw"
    if x.ndim == 4 and layout == "nhwc":
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8 and x.ndim in (3, 4):
        return (x.unsqueeze(1) if x.ndim == 3 else x).contiguous()
    x = x.to(torch.float32)
    if x.ndim == 1:
        x = x.unsqueeze(1)
    finite = torch.isfinite(x.reshape(len(x), -1))
    if not finite.all():
        row = first_bad_row(~finite.all(dim=1))
        value = x[row].reshape(-1)[~finite[row]][0].item()
        raise DataError(f"{path}: {key} row {row} has {'NaN' if value != value else value} (features must be finite)")
    return x


def targets(y: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    """``(N,)`` int64 class indices or ``(N, C)`` float32 0/1."""
    if y.dtype.is_complex or y.ndim == 0 or y.ndim > 2:
        raise DataError(f"{path}: {key} has shape {tuple(y.shape)} and dtype {y.dtype}; allowed: (N,) class "
                        "indices or an (N, C) 0/1 matrix")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    values = y.to(torch.float64)
    if y.is_floating_point():
        bad = ~torch.isfinite(values)
        if bad.any():
            row = first_bad_row(bad.reshape(len(y), -1).any(dim=1))
            raise DataError(f"{path}: {key} row {row} is not finite (NaN or inf)")
    if y.ndim == 2:
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = first_bad_row(bad.any(dim=1))
            shown = values[row][bad[row]][0].item()
            raise DataError(f"{path}: {key} row {row} holds {shown:g}; a multi-label {key} (N, C) holds only 0 and 1")
        return values.to(torch.float32)
    bad = (values != values.round()) | (values < 0)
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(f"{path}: {key} row {row} is {values[row].item():g}; class indices are integers >= 0")
    return values.to(torch.int64)


@register_data("arrays")
class ArraysDataModule(LabelledDataModule):
    cache_name = "arrays"

    def __init__(self, path: str | None = None, val_path: str | None = None, test_path: str | None = None,
                 x_key: str = "x", y_key: str = "y", classes: list[str] | str | None = None, layout: str = "auto",
                 image_size: int | None = None, **params) -> None:
        super().__init__(**params)
        if path is None:
            raise ConfigError("data.path is not set; allowed: an .npz or .pt file holding x (features) and y (targets)")
        if layout not in LAYOUTS:
            raise ConfigError(f"data.layout={layout!r} is invalid; allowed: {', '.join(LAYOUTS)}")
        check_image_size(image_size, allow_none=True)
        self.files = {TRAIN: Path(path)}
        if val_path:
            self.files[VAL] = Path(val_path)
        if test_path:
            self.files[TEST] = Path(test_path)
        self.x_key, self.y_key, self.layout, self.image_size = x_key, y_key, layout, image_size
        self.class_list = read_class_list(classes)
        self.xs: list[torch.Tensor] = []

    def read_labels(self) -> Labels:
        ys, xs, splits, offsets = [], [], [], []
        file_classes = None
        start = 0
        for split, path in self.files.items():
            found = _load(path, (self.x_key, self.y_key, "classes"))
            for key in (self.x_key, self.y_key):
                if key not in found:
                    raise DataError(f"{path}: no entry {key!r} (data.{'x' if key == self.x_key else 'y'}_key); it "
                                    f"holds: {', '.join(found['_keys']) or 'nothing'}")
            x = features(_as_tensor(found[self.x_key], path, self.x_key), path, self.x_key, self.layout)
            y = targets(_as_tensor(found[self.y_key], path, self.y_key), path, self.y_key)
            if len(x) != len(y):
                raise DataError(f"{path}: {self.x_key} has {len(x)} rows but {self.y_key} has {len(y)}")
            if len(x) == 0:
                raise DataError(f"{path}: no rows")
            if xs:
                reference = self.files[TRAIN]
                if x.shape[1:] != xs[0].shape[1:] or x.dtype != xs[0].dtype:
                    raise DataError(f"{path}: {self.x_key} rows are {x.dtype} {tuple(x.shape[1:])}, those of "
                                    f"{reference} {xs[0].dtype} {tuple(xs[0].shape[1:])}")
                if y.ndim != ys[0].ndim or y.shape[1:] != ys[0].shape[1:]:
                    raise DataError(f"{path}: {self.y_key} has shape {tuple(y.shape)}, that of {reference} "
                                    f"{tuple(ys[0].shape)}; every file needs the same kind of targets")
            if file_classes is None and "classes" in found:
                file_classes = [str(c) for c in np.asarray(found["classes"]).reshape(-1).tolist()]
            xs.append(x)
            ys.append(y)
            splits.append(torch.full((len(y),), split, dtype=torch.int64))
            offsets.append((start, path))
            start += len(y)
        y = torch.cat(ys)
        multilabel = y.ndim == 2
        count = y.shape[1] if multilabel else int(y.max()) + 1
        classes = self.class_list or file_classes
        source = "data.classes" if self.class_list else f"the classes of {self.files[TRAIN]}"
        if classes is not None:
            if multilabel and len(classes) != count:
                raise DataError(f"{self.files[TRAIN]}: {self.y_key} has {count} columns but {source} names "
                                f"{len(classes)} classes")
            if not multilabel and count > len(classes):
                row = int((y >= len(classes)).nonzero()[0, 0])
                where = self._where(offsets)(row)
                raise DataError(f"{where} is {int(y[row])}, not a class: {source} names {len(classes)} classes "
                                f"(0..{len(classes) - 1})")
        else:
            classes = [str(c) for c in range(count)]
        if len(classes) < 2:
            raise DataError(f"{self.files[TRAIN]}: {len(classes)} class(es); lossbench needs at least 2")
        self.xs = xs
        given = {name: str(self.files[code]) for name, code in (("val", VAL), ("test", TEST)) if code in self.files}
        return Labels(y=y, split=torch.cat(splits), classes=classes, where=self._where(offsets), given=given)

    def _where(self, offsets: list[tuple[int, Path]]):
        def where(i: int) -> str:
            start, path = max((o for o in offsets if o[0] <= i), key=lambda o: o[0])
            return f"{path}: {self.y_key} row {i - start}"

        return where

    def read_inputs(self, labels: Labels) -> torch.Tensor:
        x = torch.cat(self.xs) if len(self.xs) > 1 else self.xs[0]
        self.xs = []
        size = self.image_size
        if size is None or x.dtype != torch.uint8 or tuple(x.shape[2:]) == (size, size):
            return x
        if not self.cache:
            return self._resize(x, size)
        key = digest(CACHE_VERSION, *(file_key(p) for p in self.files.values()), self.x_key, self.layout, size)
        path = self.cache_dir / f"{self.files[TRAIN].stem}-{size}px-{key}.pt"
        return cached_tensor(path, lambda: self._resize(x, size), (len(x), x.shape[1], size, size), torch.uint8,
                             what=f"{len(x)} images of {self.files[TRAIN]} resized to {size}x{size}")

    @staticmethod
    def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
        return torch.cat([TF.resize(chunk, [size, size], antialias=True) for chunk in x.split(1024)])
