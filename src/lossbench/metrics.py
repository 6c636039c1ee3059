"""torchmetrics collections for each task. Created once per stage inside the LightningModule, so
Lightning moves them to the device and syncs them under DDP; computed once per epoch."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric, Metric
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
        return
    y_int = y.long()
    for name in ("f1_micro", "f1_macro", "hamming", "exact_match"):
        metrics[name].update(decisions, y_int)
    metrics["map"].update(probs, y_int)
    metrics["auroc"].update(probs, y_int)
    metrics["pred_count"].update(decisions.sum(dim=1).float())
    metrics["true_count"].update(y.sum(dim=1).float())
