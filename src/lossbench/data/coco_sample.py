"""Write a small COCO-format dataset (images + instances JSON) made of multi-digit MNIST canvases.

Layout, as a COCO 2017 download (so ``data=coco data.root=OUT`` reads it unchanged)::

    OUT/train2017/*.jpg|*.png            canvases from MNIST training digits
    OUT/val2017/*.jpg|*.png              canvases from MNIST test digits
    OUT/annotations/instances_{train,val}2017.json

One annotation per digit (bbox = the digit's tight ink box). Category ids have gaps (``3 * digit + 1``)
and are listed out of order, image ids are not contiguous, and ``--min-digits 0`` (the default) gives
some images no annotation -- the cases a real COCO file has. Even images are RGB JPEGs with a tinted
digit colour, odd ones grayscale PNGs. Deterministic for a given ``--seed``.

    python -m lossbench.data.coco_sample --out /tmp/coco-sample --train 200 --val 100

(``scripts/make_coco_sample.py`` runs the same.) MNIST's IDX files are read from ``--mnist-root``, default
``$LOSSBENCH_DATA``, else ``~/.cache/lossbench`` (where ``data=mnist`` looks too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torchvision.io import write_jpeg, write_png

from lossbench.data.files import default_cache_dir
from lossbench.data.mnist import load_split
from lossbench.data.mnist_multi import compose_canvases
from lossbench.errors import UserError

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
YEAR = 2017


def category_id(digit: int) -> int:
    return 3 * digit + 1


def ink_box(digit: torch.Tensor) -> tuple[int, int, int, int]:
    """Tight ``(x, y, w, h)`` of the non-zero pixels of a 28x28 digit (the whole box if it is blank)."""
    rows, cols = digit.nonzero(as_tuple=True)
    if len(rows) == 0:
        return 0, 0, digit.shape[1], digit.shape[0]
    return int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


def write_split(out: Path, split: str, images: torch.Tensor, labels: torch.Tensor, n: int, seed: int,
                canvas_size: int, min_digits: int, max_digits: int) -> dict:
    canvases = compose_canvases(images, labels, n, canvas_size=canvas_size, min_digits=min_digits,
                                max_digits=max_digits, distinct=False, seed=seed)
    folder = out / f"{split}{YEAR}"
    folder.mkdir(parents=True, exist_ok=True)
    tint = torch.Generator().manual_seed(seed + 10_000)
    pool = images.reshape(-1, 28, 28)
    entries, annotations = [], []
    for i in range(n):
        image_id = 1000 + 7 * i
        gray = canvases.x[i]  # (1, S, S) uint8
        if i % 2 == 0:
            colour = 0.4 + 0.6 * torch.rand(3, 1, 1, generator=tint)
            file_name = f"{image_id:012d}.jpg"
            write_jpeg((gray.float() * colour).round().to(torch.uint8), str(folder / file_name), quality=95)
        else:
            file_name = f"{image_id:012d}.png"
            write_png(gray, str(folder / file_name))
        entries.append({"id": image_id, "file_name": file_name, "width": canvas_size, "height": canvas_size})
        for slot in range(canvases.digits.shape[1]):
            digit = int(canvases.digits[i, slot])
            if digit < 0:
                continue
            x, y, w, h = ink_box(pool[canvases.sources[i, slot]])
            top, left = (int(v) for v in canvases.corners[i, slot])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id(digit),
                                "bbox": [left + x, top + y, w, h], "area": w * h, "iscrowd": 0,
                                "segmentation": [[left + x, top + y, left + x + w, top + y,
                                                  left + x + w, top + y + h, left + x, top + y + h]]})
    categories = [{"id": category_id(d), "name": DIGIT_NAMES[d], "supercategory": "digit"} for d in range(10)]
    categories.reverse()  # ids listed out of order: the class index must come from sorting them
    document = {"info": {"description": f"lossbench multi-digit MNIST sample ({split})", "year": YEAR},
                "licenses": [], "images": entries, "annotations": annotations, "categories": categories}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    path = out / "annotations" / f"instances_{split}{YEAR}.json"
    path.write_text(json.dumps(document))
    return {"images": n, "annotations": len(annotations), "empty": int((canvases.y.sum(1) == 0).sum()), "file": str(path)}


def main(argv: list[str] | None = None) -> int:
    default_root = os.environ.get("LOSSBENCH_DATA") or str(default_cache_dir())
    parser = argparse.ArgumentParser(prog="python -m lossbench.data.coco_sample", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--mnist-root", type=Path, default=Path(default_root), help="folder holding MNIST/raw/")
    parser.add_argument("--train", type=int, default=200, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation (COCO val = lossbench test) images")
    parser.add_argument("--canvas-size", type=int, default=56)
    parser.add_argument("--min-digits", type=int, default=0, help="0 lets some images have no annotation")
    parser.add_argument("--max-digits", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cache = default_cache_dir() / "torchvision"
    try:
        sources = {"train": load_split("mnist", args.mnist_root, True, False, cache),
                   "val": load_split("mnist", args.mnist_root, False, False, cache)}
        for number, (split, n) in enumerate((("train", args.train), ("val", args.val))):
            made = write_split(args.out, split, sources[split].x, sources[split].y, n, args.seed * 2 + number,
                               args.canvas_size, args.min_digits, args.max_digits)
            print(f"{split}: {made['images']} images, {made['annotations']} annotations, "
                  f"{made['empty']} without any -> {made['file']}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
