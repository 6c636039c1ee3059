"""Unit tests: heads, targets, the loss registry's contract, the validity table."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench import losses
from lossbench.config import check_combination, natural_head, validity_table
from lossbench.errors import ConfigError
from lossbench.heads import get_head, top_k_mask
from lossbench.targets import prepare, to_distribution, to_multihot


def test_sigmoid_head_thresholds_at_half():
    head = get_head("sigmoid")
    raw = torch.tensor([[2.0, -2.0, 0.1, -0.1]])
    assert head.decide(raw, "multilabel").tolist() == [[1, 0, 1, 0]]
    assert torch.allclose(head.probabilities(raw, "multilabel"), torch.sigmoid(raw))
    # single-label: argmax, and probabilities renormalised to one distribution
    assert head.decide(raw, "multiclass").tolist() == [0]
    assert head.probabilities(raw, "multiclass").sum().item() == pytest.approx(1.0)


def test_softmax_head_is_one_distribution():
    head = get_head("softmax", threshold=0.3)
    raw = torch.tensor([[0.0, math.log(3.0), -50.0]])
    p = head.probabilities(raw, "multilabel")
    assert torch.allclose(p, torch.tensor([[0.25, 0.75, 0.0]]), atol=1e-6)
    assert head.decide(raw, "multilabel").tolist() == [[0, 1, 0]]
    assert head.decide(raw, "multiclass").tolist() == [1]


def test_partition_head_takes_top_round_z():
    head = get_head("partition")
    # scores order: class 2 > 0 > 1 > 3; Z = 2.4 -> round -> 2 labels; second row Z clipped at 0.01 -> 0 labels
    raw = torch.tensor([[1.0, 0.5, 3.0, -1.0, 2.4], [1.0, 0.5, 3.0, -1.0, -7.0]])
    assert head.extra_outputs == 1
    assert head.decide(raw, "multilabel").tolist() == [[1, 0, 1, 0], [0, 0, 0, 0]]
    assert torch.allclose(head.count(raw), torch.tensor([2.4, 0.01]))
    p = head.probabilities(raw, "multilabel")
    expected = (torch.tensor([[2.4], [0.01]]) * torch.softmax(raw[:, :4], 1)).clamp_max(1)
    assert torch.allclose(p, expected)
    assert head.decide(raw, "multiclass").tolist() == [2, 2]
    soft = get_head("partition", z_activation="softplus")
    assert torch.allclose(soft.count(raw), torch.nn.functional.softplus(raw[:, -1]))


def test_top_k_mask_per_row():
    scores = torch.tensor([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]])
    assert top_k_mask(scores, torch.tensor([1, 3])).tolist() == [[0, 1, 0], [1, 1, 1]]
    assert top_k_mask(scores, 0).sum() == 0


def test_unknown_head_lists_choices():
    with pytest.raises(ValueError, match="available: sigmoid, softmax, partition"):
        get_head("tanh")


def test_target_conversion():
    idx = torch.tensor([2, 0])
    assert to_multihot(idx, 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert to_distribution(idx).tolist() == [2, 0]  # indices stay indices
    multi = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert to_distribution(multi).tolist() == [[0.5, 0.5, 0, 0], [0, 0, 0, 0], [0.25] * 4]
    assert prepare(multi, "multihot", 4) is not None and torch.equal(prepare(multi, "multihot", 4), multi)
    with pytest.raises(ValueError, match="target form"):
        prepare(multi, "ranks", 4)


def test_registry_lists_and_builds_every_loss():
    names = losses.available()
    for required in ("bce_with_logits", "cross_entropy", "bce_manual", "abs_kl", "partition_softmax"):
        assert required in names
    logits, target = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    for name in names:
        cls = losses.loss_class(name)
        for head in cls.heads:
            loss = losses.get_loss(name, head=head)
            raw = torch.randn(5, 5) if head == "partition" else logits
            t = prepare(target, cls.target_form, 4)
            value = loss(raw, t)
            assert value.ndim == 0 and torch.isfinite(value), (name, head)
            loss.reduction = "none"
            per = loss(raw, t)
            assert per.shape == ((5, 4) if cls.per_class else (5,)), (name, head, per.shape)
    with pytest.raises(ConfigError, match="loss='mse' is unknown; available: abs_kl, "):
        losses.get_loss("mse")
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none, sum_classes"):
        losses.get_loss("bce_with_logits", reduction="avg")


def test_reductions_relate_as_documented():
    logits, target = torch.randn(6, 5), (torch.rand(6, 5) > 0.5).float()
    values = {r: losses.get_loss("bce_with_logits", reduction=r)(logits, target) for r in losses.REDUCTIONS}
    assert torch.allclose(values["sum_classes"], 5 * values["mean"])
    assert torch.allclose(values["sum"], values["none"].sum())
    # per-sample losses: sum_classes == mean (the classes are already summed)
    ce = {r: losses.get_loss("cross_entropy", reduction=r)(logits, target / 5) for r in ("mean", "sum_classes")}
    assert torch.allclose(ce["mean"], ce["sum_classes"])


def test_validity_table():
    table = {(r["task"], r["head"], r["loss"]): r["valid"] for r in validity_table()}
    assert table[("multilabel", "sigmoid", "bce_with_logits")]
    assert table[("multiclass", "softmax", "cross_entropy")]
    assert table[("multilabel", "softmax", "bce_manual")]
    assert table[("multilabel", "partition", "partition_softmax")]
    assert not table[("multilabel", "sigmoid", "cross_entropy")]
    assert not table[("multiclass", "softmax", "partition_softmax")]
    assert natural_head("cross_entropy") == "softmax"
    assert natural_head("partition_softmax") == "partition"
    with pytest.raises(ConfigError, match="head=sigmoid is not valid for loss=cross_entropy; valid heads for cross_entropy: softmax"):
        check_combination("multiclass", "sigmoid", "cross_entropy")
