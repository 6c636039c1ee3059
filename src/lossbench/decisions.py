"""Decision rules: how multi-label probabilities become 0/1 predictions, and how thresholds are tuned.

The PyTorch forum question: "people set 0.5 as a decision threshold ... how do I tune three
thresholds at the same time, or maybe I just output probability?" Every rule below is evaluated on the
test split side by side, beside the threshold-free mAP and AUROC that ``metrics.py`` already reports.

Rules for multi-label data (``p`` = the head's probabilities, ``s`` = its class scores):

``fixed``      ``p_c > t`` with the head's threshold ``t`` (``head.threshold``, 0.5 by default). On the
               sigmoid head this is ``logit_c > 0``, which is also the rule ZLPR prescribes.
``per_class``  ``p_c >= t_c``; each ``t_c`` maximises class ``c``'s F1 on the validation split. The
               candidates are the distinct validation scores (torchmetrics' precision-recall curve,
               whose convention is ``p >= t``); ``F1 = 2PR / (P + R)``. Ties (within 1e-6) go to the
               default threshold, else to the candidate nearest it; a class without validation
               positives keeps the default.
``global``     ``p_c >= t`` with one ``t`` maximising micro-F1 over all validation (sample, class) pairs
               (the same tuner on the flattened scores).
``top_k``      the ``k`` highest class scores per sample; ``k = max(1, round(mean training label count))``
               unless ``decision.top_k`` sets it.
``count``      partition head only: the top ``round(Z)`` classes (the head's own rule, ``heads.py``).

Single-label (multiclass) data has one rule, ``argmax``, which ``metrics.py`` reports already; the
multi-label rules are not evaluated there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    multilabel_exact_match,
    multilabel_f1_score,
)

from lossbench.errors import ConfigError
from lossbench.heads import Head, top_k_mask
from lossbench.paths import THRESHOLDS_FILE

RULES = ("fixed", "per_class", "global", "top_k", "count")
SINGLE_LABEL_RULE = "argmax"
TIE_TOLERANCE = 1e-6


def own_rule(head_name: str) -> str:
    """The head's own multi-label rule: ``count`` for the partition head, ``fixed`` otherwise."""
    return "count" if head_name == "partition" else "fixed"


def rules_for(head_name: str) -> tuple[str, ...]:
    return RULES if head_name == "partition" else tuple(r for r in RULES if r != "count")


def check_config(decision: Any, head_name: str) -> None:
    """Validate the ``decision`` block (absent or null values mean the defaults)."""
    if decision is None:
        return
    headline = decision.get("headline")
    if headline is not None and headline not in rules_for(head_name):
        raise ConfigError(f"decision.headline={headline!r} is invalid for head={head_name}; allowed: null (the head's "
                          f"own rule) or one of {', '.join(rules_for(head_name))}")
    top_k = decision.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"decision.top_k={top_k!r} is invalid; allowed: null (round(mean training label count)) "
                          "or an integer >= 1")


# -- tuning -------------------------------------------------------------------------------------
def f1_curve(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate thresholds (ascending distinct scores) and the F1 of ``scores >= t`` at each.

    The returned F1 has one extra last entry: predicting nothing (threshold above every score).
    """
    precision, recall, thresholds = binary_precision_recall_curve(scores.float(), labels.long())
    precision, recall = precision.double(), recall.double()
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(recall))
    return thresholds, f1


def tune_threshold(scores: torch.Tensor, labels: torch.Tensor, default: float = 0.5) -> float:
    """The threshold ``t`` maximising the F1 of ``scores >= t`` against 0/1 ``labels``.

    ``scores`` are probabilities in [0, 1] (torchmetrics would read other values as logits).
    Ties go to ``default``, then to the candidate nearest it. No positives: ``default``.
    """
    scores, labels = scores.flatten(), labels.flatten()
    if not bool((labels > 0).any()):
        return default
    thresholds, f1 = f1_curve(scores, labels)
    best = f1.max()
    # predicting ``p >= default`` selects what the smallest candidate >= default selects
    at_default = int(torch.searchsorted(thresholds, torch.tensor(default, dtype=thresholds.dtype)))
    if f1[at_default] >= best - TIE_TOLERANCE:
        return default
    ties = (f1[:-1] >= best - TIE_TOLERANCE).nonzero().flatten()
    nearest = ties[(thresholds[ties].double() - default).abs().argmin()]
    return float(thresholds[nearest])


def tune_per_class(probs: torch.Tensor, labels: torch.Tensor, default: float = 0.5) -> torch.Tensor:
    """One F1-maximising threshold per class (column), shape ``(C,)``."""
    return torch.tensor([tune_threshold(probs[:, c], labels[:, c], default) for c in range(probs.shape[1])])


def tune_global(probs: torch.Tensor, labels: torch.Tensor, default: float = 0.5) -> float:
    """One threshold for every class, maximising micro-F1 (F1 over all (sample, class) pairs)."""
    return tune_threshold(probs.flatten(), labels.flatten(), default)


def default_top_k(train_labels: torch.Tensor) -> int:
    """``max(1, round(mean label count))`` of multi-hot training labels."""
    return max(1, round(float(train_labels.float().sum(dim=1).mean())))


# -- the rules ----------------------------------------------------------------------------------
@dataclass
class DecisionRules:
    """A multi-label run's rules: the head plus the tuned thresholds and ``k``."""

    head: Head
    classes: list[str]
    per_class: torch.Tensor  # (C,)
    global_threshold: float
    top_k: int
    headline: str

    @property
    def names(self) -> tuple[str, ...]:
        return rules_for(self.head.name)

    def decide(self, raw: torch.Tensor, rule: str) -> torch.Tensor:
        """0/1 matrix ``(N, C)`` of ``rule``'s decisions for raw model outputs."""
        if rule not in self.names:
            raise ConfigError(f"rule {rule!r} is not available for head={self.head.name}; "
                              f"allowed: {', '.join(self.names)}")
        probs = self.head.probabilities(raw, "multilabel")
        if rule == "fixed":
            return (probs > self.head.threshold).long()
        if rule == "per_class":
            return (probs >= self.per_class.to(probs.device)).long()
        if rule == "global":
            return (probs >= self.global_threshold).long()
        if rule == "top_k":
            return top_k_mask(self.head.class_scores(raw), self.top_k)
        return self.head.decide(raw, "multilabel")  # count

    def to_json(self, val_labels: torch.Tensor | None = None) -> dict[str, Any]:
        data = {
            "task": "multilabel",
            "head": self.head.name,
            "headline": self.headline,
            "rules": list(self.names),
            "classes": self.classes,
            "comparison": "fixed: p > t; per_class and global: p >= t",
            "fixed_threshold": self.head.threshold,
            "per_class": dict(zip(self.classes, self.per_class.tolist(), strict=True)),
            "global_threshold": self.global_threshold,
            "top_k": self.top_k,
        }
        if val_labels is not None:
            counts = val_labels.long().sum(dim=0).tolist()
            data["val_positives"] = dict(zip(self.classes, counts, strict=True))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], head: Head) -> DecisionRules:
        classes = list(data["classes"])
        return cls(head=head, classes=classes, per_class=torch.tensor([data["per_class"][c] for c in classes]),
                   global_threshold=float(data["global_threshold"]), top_k=int(data["top_k"]),
                   headline=data["headline"])


def fit_rules(head: Head, raw_val: torch.Tensor, y_val: torch.Tensor, classes: list[str], top_k: int,
              headline: str | None = None) -> DecisionRules:
    """Tune the per-class and global thresholds on validation outputs."""
    probs = head.probabilities(raw_val, "multilabel")
    return DecisionRules(head=head, classes=list(classes),
                         per_class=tune_per_class(probs, y_val, head.threshold),
                         global_threshold=tune_global(probs, y_val, head.threshold),
                         top_k=top_k, headline=headline or own_rule(head.name))


def rule_metrics(decisions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The same torchmetrics (and ``zero_division``) as the module's ``test/f1_*``."""
    labels, num_labels = labels.long(), labels.shape[1]
    return {
        "f1_macro": float(multilabel_f1_score(decisions, labels, num_labels, average="macro")),
        "f1_micro": float(multilabel_f1_score(decisions, labels, num_labels, average="micro")),
        "exact_match": float(multilabel_exact_match(decisions, labels, num_labels)),
        "pred_count": float(decisions.sum(dim=1).float().mean()),
    }


@torch.no_grad()
def raw_outputs(module: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The module's raw outputs for ``x``, computed in batches on ``device``, returned on the CPU."""
    was_training = module.training
    module.eval()
    try:
        return torch.cat([module(chunk.to(device)).float().cpu() for chunk in x.split(batch_size)])
    finally:
        module.train(was_training)


def evaluate_decision_rules(cfg: Any, trainer: Any, module: Any, dm: Any, run_dir: Path) -> dict[str, float]:
    """After ``trainer.test``: tune on the whole val split, score every rule on the whole test split.

    Returns ``test/rule/<rule>/<metric>`` entries for the summary and writes ``thresholds.json``.
    Single-label runs get only the rules file (``argmax``) for ``lossbench.predict``.
    """
    from lossbench.summary import write_json_atomic

    head, task = module.head, module.task
    decision = cfg.get("decision") or {}
    if task != "multilabel":
        if trainer.is_global_zero:
            write_json_atomic(Path(run_dir) / THRESHOLDS_FILE, {
                "task": task, "head": head.name, "headline": SINGLE_LABEL_RULE, "rules": [SINGLE_LABEL_RULE],
                "classes": list(dm.classes)})
        return {}
    device = trainer.strategy.root_device
    original_device = module.device
    module.to(device)
    val, test = dm.splits["val"], dm.splits["test"]
    raw_val = raw_outputs(module, val.x, dm.eval_batch_size, device)
    raw_test = raw_outputs(module, test.x, dm.eval_batch_size, device)
    module.to(original_device)
    top_k = decision.get("top_k") or default_top_k(dm.splits["train"].y)
    rules = fit_rules(head, raw_val, val.y, dm.classes, top_k, decision.get("headline"))
    metrics = {}
    for rule in rules.names:
        for name, value in rule_metrics(rules.decide(raw_test, rule), test.y).items():
            metrics[f"test/rule/{rule}/{name}"] = value if math.isfinite(value) else None
    if trainer.is_global_zero:
        write_json_atomic(Path(run_dir) / THRESHOLDS_FILE, rules.to_json(val.y))
    return metrics
