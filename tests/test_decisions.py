"""Decision rules: the threshold tuner on hand-made vectors, the rules, and a real imbalanced run."""

from __future__ import annotations

import json

import pytest
import torch
from torchmetrics.functional.classification import multilabel_f1_score

from lossbench.config import validate
from lossbench.decisions import (
    DecisionRules,
    default_top_k,
    fit_rules,
    tune_global,
    tune_per_class,
    tune_threshold,
)
from lossbench.engine import train
from lossbench.errors import ConfigError
from lossbench.heads import get_head
from lossbench.paths import THRESHOLDS_FILE

from conftest import TINY, compose_config


def brute_force_f1(scores, labels, t):
    predicted = scores >= t
    tp = int((predicted & (labels == 1)).sum())
    fp, fn = int((predicted & (labels == 0)).sum()), int((~predicted & (labels == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn)


# (scores, labels, the optimal threshold worked out by hand)
HAND_MADE = {
    # scores >= 0.3 (tp 3, fp 1) give F1 6/7; every other cut is worse
    "interior_optimum": ([0.1, 0.2, 0.3, 0.35, 0.6, 0.9], [0, 0, 1, 1, 0, 1], 0.3),
    # any t in (0.2, 0.3] separates; 0.3 is the candidate nearest 0.5
    "separable_below_half": ([0.05, 0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1, 1], 0.3),
    # any t in (0.2, 0.7] separates, 0.5 included: the tie goes to 0.5
    "tie_includes_default": ([0.1, 0.2, 0.7, 0.8], [0, 0, 1, 1], 0.5),
    # t = 0.1 and t = 0.95 both give F1 2/3 (0.5 gives 1/2): 0.1 is nearer 0.5
    "tie_between_candidates": ([0.1, 0.2, 0.9, 0.95], [1, 0, 0, 1], 0.1),
    # the best cut is above 0.5
    "above_half": ([0.3, 0.55, 0.6, 0.8, 0.9], [0, 0, 0, 1, 1], 0.8),
}


@pytest.mark.parametrize("case", list(HAND_MADE))
def test_tuner_finds_the_known_optimal_threshold(case):
    scores, labels, expected = HAND_MADE[case]
    scores, labels = torch.tensor(scores), torch.tensor(labels)
    t = tune_threshold(scores, labels)
    assert t == pytest.approx(expected)
    # independently: no cut at any score (or at 0.5) does better
    best = max(brute_force_f1(scores, labels, c) for c in [*scores.tolist(), 0.5])
    assert brute_force_f1(scores, labels, t) == pytest.approx(best)


def test_tie_break_follows_the_default_threshold():
    scores, labels = torch.tensor([0.1, 0.2, 0.9, 0.95]), torch.tensor([1, 0, 0, 1])
    assert tune_threshold(scores, labels, default=0.6) == pytest.approx(0.95)  # 0.95 is nearer 0.6 than 0.1


def test_class_without_positives_keeps_the_default():
    scores = torch.tensor([0.1, 0.6, 0.9])
    assert tune_threshold(scores, torch.zeros(3)) == 0.5
    assert tune_threshold(scores, torch.zeros(3), default=0.3) == 0.3


def test_per_class_tunes_each_column_and_global_maximises_micro_f1():
    cases = [HAND_MADE["interior_optimum"], HAND_MADE["above_half"]]
    probs = torch.tensor([c[0][:5] for c in cases]).T
    labels = torch.tensor([c[1][:5] for c in cases]).T
    labels_with_empty = torch.cat([labels, torch.zeros(5, 1, dtype=labels.dtype)], dim=1)
    probs_with_empty = torch.cat([probs, torch.rand(5, 1, generator=torch.Generator().manual_seed(0))], dim=1)
    tuned = tune_per_class(probs_with_empty, labels_with_empty)
    assert tuned.tolist() == pytest.approx([0.3, 0.8, 0.5])

    g = tune_global(probs, labels)
    micro = [float(multilabel_f1_score((probs >= t).long(), labels, 2, average="micro"))
             for t in probs.flatten().tolist()]
    assert float(multilabel_f1_score((probs >= g).long(), labels, 2, average="micro")) == pytest.approx(max(micro))


def test_default_top_k_is_the_rounded_mean_label_count_at_least_one():
    assert default_top_k(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])) == 2
    assert default_top_k(torch.tensor([[0, 0, 1], [0, 0, 0], [0, 0, 0]])) == 1


def test_rules_decide_as_documented():
    raw = torch.tensor([[2.0, -1.0, 0.1, -3.0, 0.5], [-2.0, 1.5, 1.0, 0.0, -0.2]])  # 4 classes + count output
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0]])
    partition = get_head("partition")
    rules = fit_rules(partition, raw, y, ["a", "b", "c", "d"], top_k=1)
    assert rules.headline == "count" and rules.names == ("fixed", "per_class", "global", "top_k", "count")
    assert torch.equal(rules.decide(raw, "count"), partition.decide(raw, "multilabel"))
    assert rules.decide(raw, "top_k").tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    probs = partition.probabilities(raw, "multilabel")
    assert torch.equal(rules.decide(raw, "fixed"), (probs > 0.5).long())

    sigmoid = get_head("sigmoid")
    logits = raw[:, :4]
    rules = fit_rules(sigmoid, logits, y, ["a", "b", "c", "d"], top_k=2, headline="per_class")
    assert rules.names == ("fixed", "per_class", "global", "top_k")
    assert torch.equal(rules.decide(logits, "fixed"), (logits > 0).long())  # 0.5 on sigmoid == logit > 0 (zlpr's rule)
    with pytest.raises(ConfigError, match="rule 'count' is not available for head=sigmoid"):
        rules.decide(logits, "count")
    restored = DecisionRules.from_json(json.loads(json.dumps(rules.to_json(y))), sigmoid)
    for rule in rules.names:
        assert torch.equal(restored.decide(logits, rule), rules.decide(logits, rule))
    assert restored.headline == "per_class"


def test_decision_config_is_validated_before_training():
    with pytest.raises(ConfigError, match=r"decision.headline='count' is invalid for head=sigmoid; allowed: null"):
        validate(compose_config(["decision.headline=count"]), "multilabel")
    with pytest.raises(ConfigError, match=r"decision.top_k=0 is invalid; allowed: null .* or an integer >= 1"):
        validate(compose_config(["decision.top_k=0"]), "multilabel")
    validate(compose_config(["loss=partition_softmax", "decision.headline=count", "decision.top_k=3"]), "multilabel")


IMBALANCED = ["data=synthetic", "data.imbalance=2.0", "data.train_size=1500", "data.val_size=1000",
              "data.test_size=1000", *TINY, "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
              "trainer.limit_test_batches=null"]


@pytest.mark.slow
def test_tuned_per_class_thresholds_beat_half_on_imbalanced_data(tmp_path):
    summary = train(compose_config(IMBALANCED), tmp_path)
    m = summary["metrics"]
    rules = ("fixed", "per_class", "global", "top_k")
    for rule in rules:  # every rule's F1 beside the threshold-free metrics
        assert {f"test/rule/{rule}/f1_macro", f"test/rule/{rule}/f1_micro"} <= set(m)
    assert {"test/map", "test/auroc"} <= set(m)
    assert "test/rule/count/f1_macro" not in m
    # the head's own rule (0.5) is the module's test/f1_*, computed on the same whole test split
    assert m["test/rule/fixed/f1_macro"] == pytest.approx(m["test/f1_macro"], abs=1e-6)
    assert m["test/rule/fixed/f1_micro"] == pytest.approx(m["test/f1_micro"], abs=1e-6)
    # held-out: thresholds tuned on val, scored on test; strictly better (equal would mean nothing was tuned)
    assert m["test/rule/per_class/f1_macro"] > m["test/rule/fixed/f1_macro"]

    saved = json.loads((tmp_path / THRESHOLDS_FILE).read_text())
    assert saved["headline"] == "fixed" and saved["rules"] == list(rules)
    assert list(saved["per_class"]) == saved["classes"] == [f"class_{c}" for c in range(10)]
    assert saved["top_k"] == 2  # data.cardinality=2.0
    rare = [c for c, t in saved["per_class"].items() if t != 0.5]
    assert rare, "no class moved away from 0.5 on strongly imbalanced data"
    assert all(saved["val_positives"][c] > 0 for c in rare)


@pytest.mark.slow
def test_partition_run_reports_the_count_rule_as_headline(tmp_path):
    overrides = ["data=synthetic", "data.train_size=512", "data.val_size=128", "data.test_size=128",
                 "loss=partition_softmax", "decision.top_k=3", *TINY]
    m = train(compose_config(overrides), tmp_path)["metrics"]
    assert m["test/rule/count/f1_macro"] == pytest.approx(m["test/f1_macro"], abs=1e-6)
    assert m["test/rule/top_k/pred_count"] == 3.0
    saved = json.loads((tmp_path / THRESHOLDS_FILE).read_text())
    assert saved["headline"] == "count" and saved["head"] == "partition" and saved["top_k"] == 3
