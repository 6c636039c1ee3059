"""End-to-end: the real Hydra config + real Lightning Trainer, on tiny settings."""

from __future__ import annotations

import json
import math

import pytest

from lossbench.config import validity_table
from lossbench.engine import train

from conftest import TINY, TINY_SYNTHETIC, compose_config, run_cli

SYNTHETIC_TASKS = {"multilabel": ["data=synthetic", *TINY_SYNTHETIC],
                   "multiclass": ["data=synthetic", "data.multilabel=false", *TINY_SYNTHETIC]}
VALID = [(r["task"], r["head"], r["loss"]) for r in validity_table() if r["valid"]]


def _check_summary(summary, run_dir, loss, head):
    assert summary["status"] == "completed"
    assert summary["config"]["loss"]["name"] == loss and summary["config"]["head"]["name"] == head
    assert summary["metrics"], "no test metrics"
    for name, value in summary["metrics"].items():
        assert value is not None and math.isfinite(value), (name, value)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["metrics"] == summary["metrics"]
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "metrics.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("task", "head", "loss"), VALID, ids=["-".join(v) for v in VALID])
def test_every_valid_combination_trains_on_synthetic(task, head, loss, tmp_path):
    cfg = compose_config([*SYNTHETIC_TASKS[task], f"loss={loss}", f"head={head}", *TINY])
    summary = train(cfg, tmp_path)
    _check_summary(summary, tmp_path, loss, head)
    assert summary["task"] == task
    expected = {"multilabel": {"test/f1_micro", "test/f1_macro", "test/map", "test/hamming", "test/exact_match"},
                "multiclass": {"test/acc", "test/f1_macro", "test/nll", "test/ece", "test/exact_match"}}[task]
    assert expected <= set(summary["metrics"])


MNIST_COMBOS = sorted({(h, lo) for t, h, lo in VALID if t == "multiclass"})


@pytest.mark.slow
@pytest.mark.parametrize(("head", "loss"), MNIST_COMBOS, ids=["-".join(v) for v in MNIST_COMBOS])
def test_every_valid_combination_trains_on_mnist(head, loss, mnist_root, tmp_path):
    cfg = compose_config(["data=mnist", f"data.root={mnist_root}", f"loss={loss}", f"head={head}", *TINY])
    summary = train(cfg, tmp_path)
    _check_summary(summary, tmp_path, loss, head)
    assert summary["task"] == "multiclass"


def test_mnist_cnn_learns_in_a_few_steps(mnist_root, tmp_path):
    overrides = ["data=mnist", f"data.root={mnist_root}", "loss=cross_entropy", "model=cnn", *TINY,
                 "trainer.limit_train_batches=40", "trainer.limit_test_batches=4", "data.batch_size=128"]
    summary = train(compose_config(overrides), tmp_path)
    assert summary["metrics"]["test/acc"] > 0.7  # 40 steps of a CNN already beat chance (0.1) by far


def test_head_defaults_to_the_losses_natural_head():
    assert compose_config(["loss=cross_entropy"]).head.name == "softmax"
    assert compose_config(["loss=partition_softmax"]).head.name == "partition"
    assert compose_config([]).head.name == "sigmoid"
    assert compose_config(["loss=bce_manual", "head=softmax"]).head.name == "softmax"


def test_same_seed_gives_identical_metrics(tmp_path):
    overrides = [*SYNTHETIC_TASKS["multilabel"], *TINY, "seed=3"]
    first = train(compose_config(overrides), tmp_path / "a")
    second = train(compose_config(overrides), tmp_path / "b")
    assert first["metrics"] == second["metrics"]
    other = train(compose_config([*SYNTHETIC_TASKS["multilabel"], *TINY, "seed=4"]), tmp_path / "c")
    assert other["metrics"] != first["metrics"]


@pytest.mark.slow
def test_cli_trains_and_prints_metrics_table(tmp_path):
    result = run_cli([f"output_root={tmp_path}", *TINY_SYNTHETIC, *TINY], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/f1_macro" in result.stdout and "run directory:" in result.stdout
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1
    assert summaries[0].parent.parent.name == "synthetic-sigmoid-bce_with_logits-seed0"


@pytest.mark.slow
def test_cli_rejects_invalid_combination_in_one_line(tmp_path):
    result = run_cli([f"output_root={tmp_path}", "loss=cross_entropy", "head=sigmoid"], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: head=sigmoid is not valid for loss=cross_entropy; valid heads for cross_entropy: softmax"]
    assert not list(tmp_path.rglob("summary.json"))
