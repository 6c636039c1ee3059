"""Data-path benchmark: one MNIST training epoch through lossbench's whole-tensor fast path against
torchvision's default per-sample path, plus the one-off costs of loading and building datasets.

Epoch: MLP 784-256-256-10, Adam (lr 1e-3), cross-entropy, batch 128, the 55,000 training images left
after the 5,000-image validation carve, shuffled.
  fast         ``MNISTDataModule.train_dataloader()``: uint8 tensor, one index op per batch, scaled and
               normalised on the device (as ``LossModule.normalize`` does)
  torchvision  ``MNIST(..., transform=Compose([ToTensor(), Normalize(mean, std)]))`` in a ``DataLoader``
               (per-sample PIL image -> tensor, default collate)
Each path runs ``--repeats`` epochs, interleaved; the table gives the median and the range.

    python scripts/bench_data.py --root ../shared/datasets [--repeats 3] [--workers 0] [--coco-root DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from lossbench.data.mnist import MNIST_LIKE, MNISTDataModule, carve_validation, prepare_raw
from lossbench.data.mnist_multi import MultiMNISTDataModule


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def run_epoch(batches, device: torch.device, normalize, limit: int | None = None) -> tuple[float, int]:
    """Seconds for one epoch over ``batches`` (or its first ``limit`` batches) and the samples seen."""
    torch.manual_seed(0)
    model = mlp().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seen = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        if step == limit:
            break
        x, y = normalize(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, seen


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("LOSSBENCH_DATA", "../shared/datasets")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the torchvision path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--coco-root", type=Path, default=None, help="also time COCO decoding vs its tensor cache")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":  # as lossbench.train does: import lightning's CUDA check costs ~47 us per Adam step
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    console = Console(width=120)
    rows: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory() as scratch:
        # one-off costs: decompressing the .gz files (first run) and decoding the IDX files (every run)
        cold, _ = timed(lambda: MNISTDataModule(root=str(args.root), cache_dir=f"{scratch}/tv").setup())
        warm, dm = timed(lambda: (m := MNISTDataModule(root=str(args.root), cache_dir=f"{scratch}/tv"), m.setup(),
                                  m)[-1])
        rows += [("MNIST load, first run (gunzip + decode to one uint8 tensor)", f"{cold:.2f} s"),
                 ("MNIST load, later runs (decode the cached IDX files)", f"{warm:.2f} s")]
        build, multi = timed(lambda: (m := MultiMNISTDataModule(root=str(args.root), cache_dir=f"{scratch}/tv"),
                                      m.setup(), m)[-1])
        sizes = multi.describe()["sizes"]
        rows.append((f"mnist_multi build: {sum(sizes.values()):,} canvases 56x56, 1-3 digits (incl. MNIST load)",
                     f"{build:.2f} s"))

        norm = MNIST_LIKE["mnist"][1]
        mean = torch.tensor(norm.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(norm.std, device=device).view(1, -1, 1, 1)

        def on_device(x):
            return (x.float() / norm.scale - mean) / std

        torchvision_root = prepare_raw("mnist", args.root, Path(scratch) / "tv")
        per_sample = datasets.MNIST(str(torchvision_root), train=True, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(norm.mean, norm.std)]))
        train_idx, _ = carve_validation(len(per_sample), dm.val_size)
        per_sample = Subset(per_sample, train_idx.tolist())

        def per_sample_loader(seed: int) -> DataLoader:
            return DataLoader(per_sample, batch_size=128, shuffle=True, num_workers=args.workers,
                              pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))

        # untimed warm-up: the first optimizer steps of a process pay one-off costs (lazy imports, kernels)
        run_epoch(dm.train_dataloader(), device, on_device, limit=20)
        run_epoch(per_sample_loader(1000), device, lambda x: x, limit=20)
        times: dict[str, list[float]] = {"fast": [], "torchvision": []}
        for repeat in range(args.repeats):
            dm.seed = repeat
            fast_time, fast_n = run_epoch(dm.train_dataloader(), device, on_device)
            tv_time, tv_n = run_epoch(per_sample_loader(repeat), device, lambda x: x)
            assert fast_n == tv_n == len(train_idx)
            times["fast"].append(fast_time)
            times["torchvision"].append(tv_time)

        if args.coco_root is not None:
            from lossbench.data.coco import CocoDataModule

            def coco():
                m = CocoDataModule(root=str(args.coco_root), val_size=16, cache_dir=f"{scratch}/coco")
                m.setup()
                return m

            first, coco_dm = timed(coco)
            again, _ = timed(coco)
            n = sum(coco_dm.describe()["sizes"].values())
            rows += [(f"COCO load, {n} images decoded + resized to 64x64", f"{first:.2f} s"),
                     ("COCO load, from the tensor cache", f"{again:.2f} s")]

    table = Table(title=f"lossbench data paths on {device} ({torch.get_num_threads()} threads, torch {torch.__version__})")
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    n = len(train_idx)
    for name, label in (("fast", "fast path (uint8 tensor, index batches)"),
                        ("torchvision", f"torchvision per-sample path ({args.workers} workers)")):
        t = times[name]
        table.add_row(f"MNIST epoch, {label}",
                      f"{statistics.median(t):.2f} s ({min(t):.2f}-{max(t):.2f}), {n / statistics.median(t):,.0f} samples/s")
    table.add_row("speed-up of the fast path (median epoch)",
                  f"{statistics.median(times['torchvision']) / statistics.median(times['fast']):.1f}x")
    console.print(table)


if __name__ == "__main__":
    main()
