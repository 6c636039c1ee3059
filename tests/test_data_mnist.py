"""MNIST / Fashion-MNIST: exact loading of hand-built IDX files, the shared files offline, and bad input."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
import torch

from lossbench.data import build_datamodule
from lossbench.data.mnist import FILES, SPLIT_SEED, carve_validation, check_idx, prepare_raw
from lossbench.engine import train
from lossbench.errors import ConfigError, DataError

from conftest import SHARED_DATA, TINY, compose_config, run_cli, trained_classes


def idx_bytes(array: torch.Tensor, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array: magic (0x0000 08 ndim), big-endian int32 sizes, the bytes."""
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">i{array.ndim}i", magic, *array.shape) + array.numpy().tobytes()


def hand_built(n_train: int = 6, n_test: int = 3):
    """Images whose every pixel encodes (split, index), so any mix-up shows."""
    train_x = (torch.arange(n_train, dtype=torch.uint8)[:, None, None] * 10 + 1).expand(n_train, 28, 28).clone()
    train_x[:, 0, :5] = torch.arange(5, dtype=torch.uint8)  # not constant images either
    test_x = (torch.arange(n_test, dtype=torch.uint8)[:, None, None] * 10 + 200).expand(n_test, 28, 28).clone()
    train_y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6][:n_train], dtype=torch.uint8)
    test_y = torch.tensor([7, 0, 8][:n_test], dtype=torch.uint8)
    return {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y,
            "t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}


def write_raw(root, arrays, folder="MNIST", level=1, override: dict | None = None):
    """``root/<folder>/raw/<stem>.gz`` at gzip ``level`` (not the canonical files' level, so not their md5)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = (override or {}).get(stem, idx_bytes(array))
        (raw / f"{stem}.gz").write_bytes(gzip.compress(data, compresslevel=level))
    return raw


def test_hand_built_gz_files_load_exactly(tmp_path):
    arrays = hand_built()
    write_raw(tmp_path, arrays)
    dm = build_datamodule("mnist", root=str(tmp_path), val_size=2, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    train_idx, val_idx = carve_validation(6, 2)
    full_x, full_y = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"].long()
    assert torch.equal(dm.splits["train"].x, full_x[train_idx].unsqueeze(1))
    assert torch.equal(dm.splits["train"].y, full_y[train_idx])
    assert torch.equal(dm.splits["val"].x, full_x[val_idx].unsqueeze(1))
    assert torch.equal(dm.splits["val"].y, full_y[val_idx])
    assert torch.equal(dm.splits["test"].x, arrays["t10k-images-idx3-ubyte"].unsqueeze(1))
    assert torch.equal(dm.splits["test"].y, torch.tensor([7, 0, 8]))
    assert dm.splits["train"].x.dtype == torch.uint8 and dm.splits["train"].y.dtype == torch.int64
    assert sorted(torch.cat([train_idx, val_idx]).tolist()) == list(range(6))


def test_validation_carve_is_fixed_and_independent_of_run_seed(tmp_path):
    write_raw(tmp_path, hand_built(8))
    one = build_datamodule("mnist", root=str(tmp_path), val_size=3, seed=1, cache_dir=str(tmp_path / "c"))
    two = build_datamodule("mnist", root=str(tmp_path), val_size=3, seed=7, cache_dir=str(tmp_path / "c"))
    one.setup(), two.setup()
    assert torch.equal(one.splits["val"].y, two.splits["val"].y)
    expected = torch.randperm(8, generator=torch.Generator().manual_seed(SPLIT_SEED))[:3]
    assert torch.equal(one.splits["val"].x[:, 0], hand_built(8)["train-images-idx3-ubyte"][expected])


def test_uncompressed_files_are_read_in_place(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, array in hand_built().items():
        (raw / stem).write_bytes(idx_bytes(array))
    assert prepare_raw("fashion_mnist", tmp_path, tmp_path / "cache") == tmp_path
    dm = build_datamodule("fashion_mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert not (tmp_path / "cache").exists()
    assert dm.classes[0] == "T-shirt/top" and torch.equal(dm.splits["test"].y, torch.tensor([7, 0, 8]))


def test_newer_gz_replaces_the_decompressed_cache(tmp_path):
    arrays = hand_built()
    write_raw(tmp_path, arrays)
    build_datamodule("mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "c")).setup()
    arrays["t10k-labels-idx1-ubyte"] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    write_raw(tmp_path, arrays)
    dm = build_datamodule("mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert dm.splits["test"].y.tolist() == [1, 2, 3]


BAD_INPUTS = {
    # name: (file to spoil, replacement bytes of its decompressed content, expected words)
    "truncated images": ("train-images-idx3-ubyte", lambda b: b[:-100], "truncated"),
    "trailing bytes": ("train-labels-idx1-ubyte", lambda b: b + b"\x00", "trailing bytes"),
    "header cut": ("t10k-labels-idx1-ubyte", lambda b: b[:6], "truncated"),
    "wrong magic": ("t10k-images-idx3-ubyte", lambda b: struct.pack(">i", 2049) + b[4:], "wrong magic number 2049"),
    "wrong image size": ("t10k-images-idx3-ubyte",
                         lambda b: struct.pack(">iiii", 2051, 3, 14, 56) + b[16:], "must be 28x28"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_idx_content_is_one_line_naming_the_file(case, tmp_path):
    arrays = hand_built()
    stem, spoil, words = BAD_INPUTS[case]
    write_raw(tmp_path, arrays, override={stem: spoil(idx_bytes(arrays[stem]))})
    dm = build_datamodule("mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        dm.setup()
    message = str(err.value)
    assert "\n" not in message and words in message
    assert str(tmp_path / "MNIST" / "raw" / stem) in message


def test_corrupt_gzip_missing_file_and_missing_folder(tmp_path):
    raw = write_raw(tmp_path, hand_built())
    packed = raw / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:-40])  # a cut download
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: not a readable gzip file") as err:
        build_datamodule("mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "c")).setup()
    assert "\n" not in str(err.value)
    packed.unlink()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: missing; .* must hold"):
        build_datamodule("mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "c")).setup()
    with pytest.raises(DataError, match=r"nowhere/FashionMNIST/raw: no such folder; data.root must hold"):
        build_datamodule("fashion_mnist", root=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c")).setup()


def test_images_and_labels_must_agree(tmp_path):
    arrays = hand_built()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:5]
    write_raw(tmp_path, arrays)
    with pytest.raises(DataError, match="train images and labels disagree \\(6 images, 5 labels\\)"):
        build_datamodule("mnist", root=str(tmp_path), val_size=1, cache_dir=str(tmp_path / "c")).setup()


def test_bad_sizes_name_the_key(tmp_path):
    write_raw(tmp_path, hand_built())
    with pytest.raises(ConfigError, match=r"data.val_size=6 is invalid; allowed: 1..5"):
        build_datamodule("mnist", root=str(tmp_path), val_size=6, cache_dir=str(tmp_path / "c")).setup()
    with pytest.raises(ConfigError, match=r"data.train_size=0 is invalid"):
        build_datamodule("mnist", root=str(tmp_path), train_size=0)


def test_check_idx_reads_declared_dims(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(torch.zeros(4, dtype=torch.uint8)))
    assert check_idx(path) == (4,)


def test_shared_mnist_offline(mnist_root):
    dm = build_datamodule("mnist", root=str(mnist_root))
    dm.setup()
    assert dm.describe()["sizes"] == {"train": 55000, "val": 5000, "test": 10000}
    train = dm.splits["train"]
    assert train.x.shape == (55000, 1, 28, 28) and train.x.dtype == torch.uint8
    assert torch.bincount(train.y, minlength=10).min() > 4000  # every digit well represented
    # the normalisation constants describe these pixels
    pixels = train.x.float() / 255
    assert abs(pixels.mean().item() - dm.normalization.mean[0]) < 2e-3
    assert abs(pixels.std().item() - dm.normalization.std[0]) < 2e-3
    assert dm.splits["test"].y[:3].tolist() == [7, 2, 1]  # the canonical first test labels


@pytest.fixture
def fashion_root():
    if not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"Fashion-MNIST IDX files not found under {SHARED_DATA}/FashionMNIST/raw (set LOSSBENCH_DATA)")
    return SHARED_DATA


def test_shared_fashion_mnist_offline(fashion_root):
    dm = build_datamodule("fashion_mnist", root=str(fashion_root), val_size=1000, test_size=500)
    dm.setup()
    assert dm.describe()["sizes"] == {"train": 59000, "val": 1000, "test": 500}
    assert dm.classes[9] == "Ankle boot"
    assert torch.bincount(dm.splits["train"].y, minlength=10).tolist() == [
        6000 - int((dm.splits["val"].y == c).sum()) for c in range(10)]  # Fashion-MNIST: 6000 per class
    pixels = dm.splits["train"].x.float() / 255
    assert abs(pixels.mean().item() - dm.normalization.mean[0]) < 2e-3


def test_files_list_matches_torchvision():
    from torchvision.datasets import MNIST

    assert sorted(FILES) == sorted(url.removesuffix(".gz") for url, _ in MNIST.resources)


@pytest.mark.slow
def test_cli_trains_fashion_mnist(fashion_root, tmp_path):
    from torchvision.datasets import FashionMNIST

    result = run_cli([f"output_root={tmp_path}", "data=fashion_mnist", f"data.root={fashion_root}",
                      "loss=cross_entropy", *TINY], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/acc" in result.stdout
    [path] = tmp_path.glob("fashion_mnist-softmax-cross_entropy-seed0/*/summary.json")
    # it trained on Fashion-MNIST's ten classes, and 4 steps already beat chance (0.1) by far (0.47 measured)
    assert trained_classes(path.parent) == (FashionMNIST.classes, 10)
    assert json.loads(path.read_text())["metrics"]["test/acc"] > 0.25


def test_missing_folder_stops_training_before_it_starts(tmp_path):
    cfg = compose_config(["data=mnist", f"data.root={tmp_path / 'missing'}", *TINY])
    with pytest.raises(DataError, match=f"^{tmp_path / 'missing' / 'MNIST' / 'raw'}: no such folder"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
