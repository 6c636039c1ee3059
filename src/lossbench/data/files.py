"""What the file-backed datasets share (COCO, image folders, label CSVs, arrays): paths kept inside their
root, images decoded once -- in DataLoader workers, with a progress bar -- into resized ``uint8`` tensors,
and the on-disk tensor cache those tensors are kept in, so later runs skip decoding.

A cache file is named by a key over everything its tensor depends on (the source files' path, size and
modification time, the image size, the images chosen); a file that is unreadable or holds a tensor of
the wrong shape is rebuilt, and a new one is written atomically (``summary.write_atomic``), so two runs
decoding at once never leave half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PureWindowsPath

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from lossbench.errors import DataError

# what torchvision.io.decode_image reads without optional system libraries
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")
MODES = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
log = logging.getLogger("lossbench")


def default_cache_dir() -> Path:
    """``$LOSSBENCH_CACHE``, else ``~/.cache/lossbench``."""
    return Path(os.environ.get("LOSSBENCH_CACHE") or Path.home() / ".cache" / "lossbench")


def stamp(path: Path) -> str:
    """Size and modification time: they change whenever the file is replaced or edited."""
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def file_key(path: Path) -> str:
    return f"{Path(path).resolve()}:{stamp(path)}"


def digest(*parts: object, length: int = 16) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:length]


def safe_relative_path(root: Path, name: object, where: str, what: str = "image path",
                       inside: str = "the image folder") -> Path:
    """``root / name``, refusing names that are absolute (POSIX or Windows) or climb out with ``..``.

    The check is on the name alone: a symbolic link inside ``root`` stays allowed (datasets often
    link their images from a larger disk)."""
    if not isinstance(name, str):
        raise DataError(f"{where}: {what} {name!r} is not a string")
    relative = Path(name)
    windows = PureWindowsPath(name)
    if relative.is_absolute() or windows.is_absolute() or windows.drive or ".." in relative.parts \
            or ".." in windows.parts or not relative.parts:
        raise DataError(f"{where}: {what} {name!r} is not a path inside {inside} "
                        "(absolute paths and '..' are refused)")
    return Path(root) / relative


def decode_image_file(path: Path, channels: int = 3, where: str | None = None) -> torch.Tensor:
    """``(channels, H, W)`` uint8 from a JPEG, PNG, GIF or WebP file: grayscale, RGB or RGBA converted to
    ``channels`` (1 or 3), 16-bit PNGs scaled to 8 bits. A file that does not decode is a one-line
    ``DataError`` naming it (and ``where`` it is listed)."""
    try:
        image = decode_image(str(path), mode=MODES[channels])
    except (RuntimeError, OSError, ValueError) as err:
        text = str(err).strip()
        reason = re.sub(r"^.*?\.cpp:\d+, ", "", text.splitlines()[0] if text else repr(err))
        raise DataError(f"{path}: unreadable image ({reason})" + (f" ({where})" if where else "")) from None
    if image.ndim == 4:  # an animated GIF: its first frame
        image = image[0]
    if image.dtype != torch.uint8:
        image = TF.to_dtype(image, torch.uint8, scale=True)
    return image


class _Resized(Dataset):
    """Decodes and resizes one image per item; a bad image comes back as its error message, so the
    main process raises a one-line ``DataError`` instead of a DataLoader worker traceback."""

    def __init__(self, paths: Sequence[Path], size: int, channels: int, wheres: Sequence[str] | None) -> None:
        self.paths, self.size, self.channels, self.wheres = paths, size, channels, wheres

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int):
        try:
            image = decode_image_file(self.paths[item], self.channels, self.wheres[item] if self.wheres else None)
        except DataError as err:
            return str(err)
        return TF.resize(image, [self.size, self.size], antialias=True)


def _first_error_or_stack(batch: list):
    for item in batch:
        if isinstance(item, str):
            return item
    return torch.stack(batch)


def decode_resized(paths: Sequence[Path], size: int, channels: int = 3, workers: int = 0,
                   wheres: Sequence[str] | None = None) -> torch.Tensor:
    """``(len(paths), channels, size, size)`` uint8: every image decoded and resized once (square,
    antialiased), ``workers`` DataLoader processes decoding; a rich progress bar on a terminal."""
    from rich.console import Console
    from rich.progress import track

    out = torch.empty(len(paths), channels, size, size, dtype=torch.uint8)
    loader = DataLoader(_Resized(paths, size, channels, wheres), batch_size=64, num_workers=workers,
                        collate_fn=_first_error_or_stack)
    console = Console(stderr=True)
    start = 0
    for batch in track(loader, description=f"decoding {len(paths)} images", total=len(loader), transient=True,
                       console=console, disable=not console.is_terminal):
        if isinstance(batch, str):
            raise DataError(batch)
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def cached_tensor(path: Path | None, build: Callable[[], torch.Tensor], shape: tuple[int, ...],
                  dtype: torch.dtype, what: str = "", **extra) -> torch.Tensor:
    """The tensor stored at ``path`` when it has ``shape`` and ``dtype``; else ``build()``, stored there
    (atomically, with ``extra`` beside it) for the next run. ``path=None``: no cache, always build."""
    from lossbench.summary import write_atomic

    if path is None:
        return build()
    if path.is_file():
        try:
            x = torch.load(path, weights_only=True)["x"]
            if tuple(x.shape) == tuple(shape) and x.dtype == dtype:
                return x
        except (OSError, RuntimeError, KeyError, EOFError, TypeError, IndexError):
            pass  # an unreadable or foreign cache file is rebuilt below
    log.info("decoding %s (cached afterwards in %s)", what or f"{shape[0]} images", path)
    x = build()
    write_atomic(path, lambda tmp: torch.save({"x": x, **extra}, tmp))
    return x


def check_image_size(image_size: object, allow_none: bool = False) -> None:
    from lossbench.errors import ConfigError

    if image_size is None and allow_none:
        return
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ConfigError(f"data.image_size={image_size!r} is invalid; allowed: "
                          f"{'null or ' if allow_none else ''}an integer >= 8")


def check_workers(decode_workers: object) -> None:
    from lossbench.errors import ConfigError

    if not isinstance(decode_workers, int) or isinstance(decode_workers, bool) or decode_workers < 0:
        raise ConfigError(f"data.decode_workers={decode_workers!r} is invalid; allowed: an integer >= 0")
