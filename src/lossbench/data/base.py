"""Whole-tensor datasets: the base every lossbench DataModule builds on.

A dataset is decoded once into tensors (images stay ``uint8``), batches are taken with one index
operation per batch, and scaling/normalisation happens on the device inside the model
(``LossModule.normalize``) -- no per-sample Python or PIL work in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import torch
from torch.utils.data import Sampler

from lossbench.registry import Registry


@dataclass
class Split:
    x: torch.Tensor  # (N, *input_shape), uint8 images or float features
    y: torch.Tensor  # (N,) int64 class indices, or (N, C) float multi-hot


@dataclass
class Normalization:
    """``x -> (x / scale - mean) / std``, applied on the device."""

    scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])


# ImageNet's per-channel RGB mean and std (torchvision's and timm's pretrained weights expect them)
IMAGENET = Normalization(255.0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


class TensorBatches:
    """The batches of a whole-tensor split, one index operation each: no per-sample work, no collate, no
    DataLoader machinery (about 0.1 ms a step at MLP scale). Lightning takes any iterable with a length as a
    dataloader and calls ``sampler.set_epoch`` before every epoch.

    ``sampler`` yields index tensors: ``(B,)`` for one model, ``(M, B)`` for M members (``MemberBatches``),
    which gives ``x`` of shape ``(M, B, ...)``."""

    batch_sampler = None  # what Lightning looks for beside ``sampler`` on a dataloader

    def __init__(self, split: Split, sampler: Sampler) -> None:
        self.split, self.sampler = split, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        x, y = self.split.x, self.split.y
        for index in self.sampler:
            yield x[index], y[index]


class ShuffledBatches(Sampler):
    """Yields index tensors of one batch each; the order depends only on (seed, epoch).

    Deterministic per epoch so a run resumed from an epoch-end checkpoint sees exactly the batches an
    uninterrupted run would. Under ``torch.distributed`` each rank takes its own slice.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> None:
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _shard() -> slice:
        """This process's share of every order: all of it, or every world-th index under DDP."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return slice(torch.distributed.get_rank(), None, torch.distributed.get_world_size())
        return slice(None)

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return order[self._shard()]

    def __iter__(self):
        order = self._indices()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        n = len(range(self.n)[self._shard()])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class MemberBatches(Sampler):
    """One ``ShuffledBatches`` per member (its own seed, so its own batch order), stacked: ``(M, B)`` indices."""

    def __init__(self, samplers: list[ShuffledBatches]) -> None:
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __iter__(self):
        for indices in zip(*self.samplers, strict=True):
            yield torch.stack(indices)

    def __len__(self) -> int:
        return len(self.samplers[0])


class TensorDataModule(L.LightningDataModule):
    """Subclasses set ``task``, ``num_classes``, ``input_shape``, ``classes``, ``normalization`` and
    implement ``load() -> dict[str, Split]`` with keys "train", "val", "test"."""

    task: str = "multiclass"
    num_classes: int
    input_shape: tuple[int, ...]
    classes: list[str]
    normalization: Normalization = Normalization()
    # a lossbench.noise.Noise set by build.build_datamodule: perturbs the training split once, in setup();
    # noise_record is what summary.json keeps of it
    noise = None
    noise_record: dict | None = None

    def __init__(self, batch_size: int = 128, seed: int = 0, eval_batch_size: int = 1024) -> None:
        super().__init__()
        self.batch_size, self.seed, self.eval_batch_size = batch_size, seed, eval_batch_size
        self.splits: dict[str, Split] | None = None
        self.member_seeds: list[int] | None = None  # set by lossbench.members: one batch order per member
        self._device_splits: dict[tuple[str, str], Split] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            splits = self.load()
            if self.noise is not None:  # the training split only: validation and test stay clean
                splits["train"], self.noise_record = self.noise.apply(splits["train"], self.task, self.num_classes)
            self.splits = splits

    def _split(self, name: str) -> Split:
        """The split, moved once to the trainer's device when that is an accelerator (the batches are then
        indexed where they are used; a 60,000-image MNIST split is 47 MB of uint8)."""
        self.setup()
        split = self.splits[name]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is None or device.type == "cpu":
            return split
        key = (name, str(device))
        if key not in self._device_splits:  # ``splits`` itself stays on the CPU for everything else
            self._device_splits[key] = Split(split.x.to(device), split.y.to(device))
        return self._device_splits[key]

    def train_dataloader(self) -> TensorBatches:
        data = self._split("train")
        if self.member_seeds is not None:
            return TensorBatches(data, MemberBatches([ShuffledBatches(len(data.y), self.batch_size, True, seed)
                                                      for seed in self.member_seeds]))
        return TensorBatches(data, ShuffledBatches(len(data.y), self.batch_size, shuffle=True, seed=self.seed))

    def _eval_loader(self, name: str) -> TensorBatches:
        data = self._split(name)
        return TensorBatches(data, ShuffledBatches(len(data.y), self.eval_batch_size, shuffle=False))

    def val_dataloader(self) -> TensorBatches:
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorBatches:
        return self._eval_loader("test")

    def describe(self) -> dict:
        self.setup()
        return {
            "task": self.task,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "sizes": {k: len(v.y) for k, v in self.splits.items()},
        }


# every module of lossbench.data registers its datasets here: @register_data("name") on a DataModule class
# or on a function taking the data.* keys (and ``seed``) and returning one
DATASETS: Registry = Registry("data", package="lossbench.data")


def register_data(name: str):
    return DATASETS.register(name)
