"""Multi-digit MNIST: exact canvases from a hand-built digit pool, real MNIST pools, end-to-end training."""

from __future__ import annotations

import json

import pytest
import torch

from lossbench.data import build_datamodule
from lossbench.data.mnist import carve_validation, load_split
from lossbench.data.mnist_multi import compose_canvases, digit_pools
from lossbench.engine import train
from lossbench.errors import ConfigError

from conftest import TINY, compose_config, run_cli, trained_classes


def labelled_pool(per_class: int = 2):
    """Digit images that are solid squares of a unique value: 1 + c + 10 * j for the j-th image of class c."""
    labels = torch.arange(10).repeat(per_class)
    values = (1 + labels + 10 * (torch.arange(len(labels)) // 10)).to(torch.uint8)
    return values[:, None, None].expand(-1, 28, 28).clone(), labels, values


@pytest.mark.parametrize(("canvas_size", "distinct"), [(56, True), (70, True), (84, False)])
def test_canvases_hold_exactly_the_drawn_digits_without_overlap(canvas_size, distinct):
    images, labels, values = labelled_pool()
    made = compose_canvases(images, labels, 300, canvas_size=canvas_size, min_digits=1, max_digits=4,
                            distinct=distinct, seed=5)
    assert made.x.shape == (300, 1, canvas_size, canvas_size) and made.x.dtype == torch.uint8
    for i in range(300):
        placed = made.digits[i] >= 0
        k = int(placed.sum())
        assert 1 <= k <= 4
        canvas = made.x[i, 0]
        # no overlap: exactly k full 28x28 boxes are inked, each with its source digit's value
        assert int((canvas > 0).sum()) == 28 * 28 * k
        for slot in placed.nonzero().squeeze(1).tolist():
            top, left = made.corners[i, slot].tolist()
            source = int(made.sources[i, slot])
            assert torch.equal(canvas[top : top + 28, left : left + 28], images[source])
            assert int(labels[source]) == int(made.digits[i, slot])
        expected = torch.zeros(10)
        expected[made.digits[i][placed]] = 1.0
        assert torch.equal(made.y[i], expected)
        if distinct:
            assert len(set(made.digits[i][placed].tolist())) == k
    # every value on the canvas belongs to a digit of the target
    present = {int(v) for v in made.x.unique().tolist() if v}
    assert present <= set(values.tolist())


def test_repeated_digits_count_once_and_counts_cover_the_range():
    images, labels, _ = labelled_pool(per_class=3)
    made = compose_canvases(images, labels, 400, canvas_size=84, min_digits=0, max_digits=9, distinct=False, seed=1)
    counts = (made.digits >= 0).sum(1)
    assert set(counts.tolist()) == set(range(10))  # 0..9 digits all occur in 400 draws
    repeats = made.y.sum(1) < counts
    assert repeats.any()  # with 9 draws from 10 classes, repeats are near certain
    assert torch.equal(made.y.sum(1) == 0, counts == 0)


def test_same_seed_same_canvases_other_seed_other_canvases():
    images, labels, _ = labelled_pool()
    a = compose_canvases(images, labels, 50, seed=3)
    b = compose_canvases(images, labels, 50, seed=3)
    c = compose_canvases(images, labels, 50, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_impossible_layouts_name_the_key():
    images, labels, _ = labelled_pool()
    with pytest.raises(ConfigError, match=r"data.max_digits=5 is invalid; allowed: 1..4 \(4 non-overlapping cells"):
        compose_canvases(images, labels, 4, canvas_size=56, max_digits=5)
    with pytest.raises(ConfigError, match=r"data.canvas_size=20 is invalid"):
        build_datamodule("mnist_multi", canvas_size=20)
    with pytest.raises(ConfigError, match=r"data.min_digits=3 is invalid; allowed: 0..2"):
        build_datamodule("mnist_multi", min_digits=3, max_digits=2)
    with pytest.raises(ConfigError, match=r"allowed: 1..3 .*distinct digits need at most 3 classes"):
        compose_canvases(images[:3], labels[:3], 4, canvas_size=84, max_digits=4, distinct=True)


def test_digit_pools_keep_test_digits_out_of_training(mnist_root, tmp_path):
    cache = tmp_path / "cache"
    pools = digit_pools(mnist_root, False, cache, val_digits=5000)
    full = load_split("mnist", mnist_root, True, False, cache)
    train_idx, val_idx = carve_validation(60000, 5000)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert torch.equal(pools["train"].x, full.x[train_idx]) and torch.equal(pools["val"].x, full.x[val_idx])
    assert torch.equal(pools["test"].x, load_split("mnist", mnist_root, False, False, cache).x)


def test_datamodule_splits_come_from_their_pools(mnist_root):
    dm = build_datamodule("mnist_multi", root=str(mnist_root), train_size=64, val_size=32, test_size=32,
                          canvas_size=64, max_digits=4)
    dm.setup()
    assert dm.task == "multilabel" and dm.input_shape == (1, 64, 64)
    assert dm.describe()["sizes"] == {"train": 64, "val": 32, "test": 32}
    pools = digit_pools(dm.root, False, dm.cache_dir, 5000)
    for number, name in enumerate(("train", "val", "test")):
        expected = compose_canvases(pools[name].x, pools[name].y, 32 if name != "train" else 64, canvas_size=64,
                                    max_digits=4, seed=number)
        assert torch.equal(dm.splits[name].x, expected.x) and torch.equal(dm.splits[name].y, expected.y)
    sample = dm.splits["train"].x.float() / 255
    assert abs(sample.mean().item() - dm.normalization.mean[0]) < 1e-3


def _test_label_count(mnist_root, size: int) -> float:
    """Mean number of distinct digits per test canvas, from the data module's own targets."""
    dm = build_datamodule("mnist_multi", root=str(mnist_root), train_size=64, val_size=32, test_size=size)
    dm.setup()
    return float(dm.splits["test"].y.sum(1).mean())


@pytest.mark.slow
def test_cli_trains_multi_digit_mnist(mnist_root, tmp_path):
    from torchvision.datasets import MNIST

    sizes = ["data.train_size=1920", "data.val_size=128", "data.test_size=128", "trainer.limit_train_batches=30"]
    result = run_cli([f"output_root={tmp_path}", "data=mnist_multi", f"data.root={mnist_root}", *TINY, *sizes],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/f1_micro" in result.stdout
    [path] = tmp_path.glob("mnist_multi-sigmoid-bce_with_logits-seed0/*/summary.json")
    metrics = json.loads(path.read_text())["metrics"]
    assert trained_classes(path.parent) == (MNIST.classes, 10)  # the ten digits, one output each
    assert metrics["test/true_count"] == pytest.approx(_test_label_count(mnist_root, 128), abs=1e-6)
    # 30 steps rank the digits present above those absent: chance is AUROC 0.5 and mAP the label density
    # (true count / 10, ~0.2); measured 0.86 and 0.65
    assert metrics["test/auroc"] > 0.7 and metrics["test/map"] > 2 * metrics["test/true_count"] / 10


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "head", "outputs"), [("cross_entropy", "softmax", 10),
                                                       ("partition_softmax", "partition", 11)])
def test_multi_digit_mnist_trains_with_other_losses(loss, head, outputs, mnist_root, tmp_path):
    cfg = compose_config(["data=mnist_multi", f"data.root={mnist_root}", "data.train_size=256", "data.val_size=64",
                          "data.test_size=64", f"loss={loss}", f"head={head}", *TINY])
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["task"] == "multilabel"
    # ten digit classes; the partition head adds its label-count output
    assert trained_classes(tmp_path)[1] == outputs
    assert summary["metrics"]["test/true_count"] == pytest.approx(_test_label_count(mnist_root, 64), abs=1e-6)
    assert summary["metrics"]["test/auroc"] > 0.6  # chance 0.5; 4 steps: 0.75 (softmax), 0.69 (partition)
