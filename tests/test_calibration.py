"""Multi-label calibration (lossbench.metrics.MultilabelCalibrationError) against a numpy float64 reference
written from the formula, against torchmetrics' binary ECE label by label, and in a real training run's
summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import BinaryCalibrationError

from lossbench.engine import train
from lossbench.metrics import MultilabelCalibrationError, metric_values

from conftest import TINY, TINY_SYNTHETIC, compose_config


def numpy_ece(probs: np.ndarray, target: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Per-label ECE: bins [k/B, (k+1)/B) (1.0 in the last), Σ_b (n_b/N) |mean p - mean y| over the bin."""
    out = []
    for p, y in zip(probs.T, target.T, strict=True):
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        ece = 0.0
        for b in range(n_bins):
            inside = bins == b
            if inside.any():
                ece += inside.mean() * abs(p[inside].mean() - y[inside].mean())
        out.append(ece)
    return np.array(out)


def random_case(seed: int, n: int = 500, labels: int = 6):
    rng = np.random.default_rng(seed)
    probs = rng.beta(0.7, 1.5, size=(n, labels))
    target = (rng.random((n, labels)) < probs ** 1.5).astype(np.int64)  # miscalibrated on purpose
    probs[:3, 0] = [0.0, 1.0, 1 / 15]  # the edges: 0 in the first bin, 1 in the last, 1/15 in the second
    return probs, target


def test_per_label_ece_and_mean_match_the_numpy_reference_over_batches():
    probs, target = random_case(0)
    metric = MultilabelCalibrationError(num_labels=6)
    for chunk in np.array_split(np.arange(len(probs)), 7):  # state summed over batches
        metric.update(torch.tensor(probs[chunk], dtype=torch.float32), torch.tensor(target[chunk]))
    expected = numpy_ece(probs.astype(np.float32).astype(np.float64), target)
    assert metric.per_label().numpy() == pytest.approx(expected, abs=1e-9)
    assert float(metric.compute()) == pytest.approx(expected.mean(), abs=1e-6)
    assert expected.min() > 0.01  # a case where calibration is off, so a zero would be wrong


def test_each_label_equals_torchmetrics_binary_ece():
    probs, target = random_case(1)
    probs[:3, 0] = [0.3, 0.5, 0.7]  # no probability on a bin edge, where the two bin conventions differ
    metric = MultilabelCalibrationError(num_labels=6)
    metric.update(torch.tensor(probs), torch.tensor(target))
    for label in range(6):
        reference = BinaryCalibrationError(n_bins=15, norm="l1")(torch.tensor(probs[:, label]),
                                                                 torch.tensor(target[:, label]))
        assert float(metric.per_label()[label]) == pytest.approx(float(reference), abs=1e-6), label


def test_reliability_bins_pool_every_labels_probabilities():
    probs = np.array([[0.05, 0.95], [0.10, 0.90], [0.95, 0.02]])
    target = np.array([[0, 1], [1, 1], [0, 0]])
    metric = MultilabelCalibrationError(num_labels=2)
    metric.update(torch.tensor(probs), torch.tensor(target))
    d = metric.details()
    # bin 0 ([0, 1/15)): 0.05 (y 0), 0.02 (y 0); bin 1: 0.10 (y 1); bin 13 ([13/15, 14/15)): 0.90 (y 1);
    # bin 14: 0.95 (y 1), 0.95 (y 0)
    assert float(d["reliability/00/count"]) == 2 and float(d["reliability/00/confidence"]) == pytest.approx(0.035)
    assert float(d["reliability/00/frequency"]) == 0.0
    assert float(d["reliability/01/frequency"]) == 1.0
    assert (float(d["reliability/14/count"]), float(d["reliability/14/frequency"])) == (2, 0.5)
    assert float(d["reliability/13/count"]) == 1 and float(d["reliability/05/count"]) == 0
    # label 0: bins 0 (0.05, 0), 1 (0.10, 1), 14 (0.95, 0) -> (0.05 + 0.9 + 0.95) / 3
    assert float(d["ece_label/0"]) == pytest.approx((0.05 + 0.9 + 0.95) / 3, abs=1e-6)
    assert set(metric_values({"ece": metric}, "val")) == {"val/ece"}  # details only at the test stage
    assert "test/ece_label/1" in metric_values({"ece": metric}, "test")


def test_non_finite_probabilities_are_left_out():
    probs, target = random_case(2)
    metric = MultilabelCalibrationError(num_labels=6)
    with_nan = probs.copy()
    with_nan[:50, 2] = np.nan  # as a diverging model's outputs
    metric.update(torch.tensor(with_nan), torch.tensor(target))
    expected = numpy_ece(probs, target)
    expected[2] = numpy_ece(probs[50:, 2:3], target[50:, 2:3])[0]  # label 2 over its 450 finite values
    assert metric.per_label().numpy() == pytest.approx(expected, abs=1e-9)
    assert float(metric.details()["reliability/00/count"]) + sum(
        float(metric.details()[f"reliability/{b:02d}/count"]) for b in range(1, 15)) == 500 * 6 - 50


@pytest.mark.slow
def test_a_multilabel_run_summary_holds_the_calibration_and_the_sample_count(tmp_path):
    summary = train(compose_config([*TINY_SYNTHETIC, *TINY, "loss=bce_with_logits"]), tmp_path)
    metrics = summary["metrics"]
    labels = [k for k in metrics if k.startswith("test/ece_label/")]
    assert len(labels) == 10  # the synthetic data's 10 labels
    assert metrics["test/ece"] == pytest.approx(np.mean([metrics[k] for k in labels]), abs=1e-6)
    assert metrics["test/samples"] == 128  # limit_test_batches=2 x batch 64
    assert sum(metrics[f"test/reliability/{b:02d}/count"] for b in range(15)) == 128 * 10
