"""torchmetrics collections for each task. Created once per stage inside the LightningModule, so
Lightning moves them to the device and syncs them under DDP; computed once per epoch.

``samples`` counts the evaluated samples, so a report can turn accuracies and label counts back into the
integers they are (``acc × samples`` correct predictions). Multi-label ``ece`` is
``MultilabelCalibrationError``: the mean over labels of each label's ECE; the test stage also logs
each label's ECE and the reliability diagram of the flattened per-label probabilities
(``metric_values``)."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric, Metric, SumMetric
from torchmetrics.classification import (
    Accuracy,
    AveragePrecision,
    CalibrationError,
    ExactMatch,
    F1Score,
    HammingDistance,
    MultilabelAUROC,
)

NLL_FLOOR = 1e-12
CALIBRATION_BINS = 15  # as the multiclass CalibrationError


class MultilabelCalibrationError(Metric):
    """Expected calibration error of each label's probability, averaged over labels.

    Bins ``b = min(floor(p · B), B - 1)`` of equal width on [0, 1] (``B`` = ``n_bins``). For label ``l`` with
    ``N`` samples, ``ECE_l = Σ_b (n_lb / N) · |conf_lb - freq_lb|`` where ``conf_lb`` is the mean probability
    and ``freq_lb`` the fraction of positives among the ``n_lb`` samples in bin ``b`` (Guo et al. 2017, the
    binary form of torchmetrics' ``BinaryCalibrationError``, L1 norm). ``compute`` returns
    ``mean_l ECE_l``; ``details`` each ``ECE_l`` and the reliability diagram of all labels' (probability,
    target) pairs pooled (flattened): per bin, mean probability, fraction positive and the pair count.
    torchmetrics has no multi-label calibration metric."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, num_labels: int, n_bins: int = CALIBRATION_BINS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_labels, self.n_bins = num_labels, n_bins
        for name in ("count", "confidence", "positives"):
            self.add_state(name, default=torch.zeros(num_labels, n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        probs = probs.detach().to(torch.float64)
        finite = torch.isfinite(probs)  # a diverging run's nan probabilities are left out, not binned
        probs = torch.where(finite, probs, torch.zeros_like(probs))
        bins = (probs * self.n_bins).floor().clamp(0, self.n_bins - 1).long()
        index = (bins + self.n_bins * torch.arange(self.num_labels, device=probs.device)).flatten()
        size = self.num_labels * self.n_bins
        positives = torch.where(finite, target.to(torch.float64), torch.zeros_like(probs))
        for state, values in ((self.count, finite.to(torch.float64)), (self.confidence, probs),
                              (self.positives, positives)):
            state += torch.zeros(size, dtype=torch.float64, device=probs.device).index_add_(
                0, index, values.flatten()).view(self.num_labels, self.n_bins)

    def per_label(self) -> torch.Tensor:
        total = self.count.sum(dim=1).clamp_min(1)
        return (self.confidence - self.positives).abs().sum(dim=1) / total  # Σ_b n_b |conf - freq| / N

    def compute(self) -> torch.Tensor:
        return self.per_label().mean().float()

    def details(self) -> dict[str, torch.Tensor]:
        with self.sync_context():  # under DDP every process's counts, as compute() gets them
            return self._details()

    def _details(self) -> dict[str, torch.Tensor]:
        out = {f"ece_label/{label}": value.float() for label, value in enumerate(self.per_label())}
        count, confidence, positives = self.count.sum(0), self.confidence.sum(0), self.positives.sum(0)
        for b in range(self.n_bins):
            n = count[b].clamp_min(1)
            out[f"reliability/{b:02d}/confidence"] = (confidence[b] / n).float()
            out[f"reliability/{b:02d}/frequency"] = (positives[b] / n).float()
            out[f"reliability/{b:02d}/count"] = count[b].float()
        return out


def metric_values(metrics, stage: str) -> dict[str, torch.Tensor]:
    """``<stage>/<name>`` -> value of each metric; at the test stage also each metric's ``details``."""
    values = {f"{stage}/{name}": metric.compute() for name, metric in metrics.items()}
    if stage == "test":
        for metric in metrics.values():
            if hasattr(metric, "details"):
                values.update({f"{stage}/{key}": value for key, value in metric.details().items()})
    return values


def build_metrics(task: str, num_classes: int) -> dict[str, Metric]:
    """Returns name -> metric. Inputs each metric receives are chosen in ``update_metrics``."""
    if task == "multiclass":
        return {
            "acc": Accuracy(task="multiclass", num_classes=num_classes),
            "f1_macro": F1Score(task="multiclass", num_classes=num_classes, average="macro"),
            "nll": MeanMetric(),
            "ece": CalibrationError(task="multiclass", num_classes=num_classes, n_bins=15),
            # the multi-label reading of a single-label model: exactly the true class above threshold
            "exact_match": MeanMetric(),
            "samples": SumMetric(),
        }
    return {
        "f1_micro": F1Score(task="multilabel", num_labels=num_classes, average="micro"),
        "f1_macro": F1Score(task="multilabel", num_labels=num_classes, average="macro"),
        "map": AveragePrecision(task="multilabel", num_labels=num_classes, average="macro"),
        "auroc": MultilabelAUROC(num_labels=num_classes, average="macro"),
        "hamming": HammingDistance(task="multilabel", num_labels=num_classes),
        "exact_match": ExactMatch(task="multilabel", num_labels=num_classes),
        "pred_count": MeanMetric(),
        "true_count": MeanMetric(),
        "ece": MultilabelCalibrationError(num_labels=num_classes),
        "samples": SumMetric(),
    }


def update_metrics(metrics, task: str, probs: torch.Tensor, decisions: torch.Tensor,
                   label_decisions: torch.Tensor, y: torch.Tensor) -> None:
    """``decisions``: the head's rule for the task; ``label_decisions``: its multi-label 0/1 rule."""
    if task == "multiclass":
        metrics["acc"].update(decisions, y)
        metrics["f1_macro"].update(decisions, y)
        p_true = probs.gather(1, y.unsqueeze(1)).squeeze(1)
        metrics["nll"].update(-torch.log(p_true.clamp_min(NLL_FLOOR)))
        metrics["ece"].update(probs, y)
        onehot = torch.nn.functional.one_hot(y, probs.shape[1])
        metrics["exact_match"].update((label_decisions == onehot).all(dim=1).float())
        metrics["samples"].update(torch.tensor(float(len(y)), device=y.device))
        return
    y_int = y.long()
    for name in ("f1_micro", "f1_macro", "hamming", "exact_match"):
        metrics[name].update(decisions, y_int)
    metrics["map"].update(probs, y_int)
    metrics["auroc"].update(probs, y_int)
    metrics["pred_count"].update(decisions.sum(dim=1).float())
    metrics["true_count"].update(y.sum(dim=1).float())
    metrics["ece"].update(probs, y_int)
    metrics["samples"].update(torch.tensor(float(len(y)), device=y.device))
