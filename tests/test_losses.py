"""Every loss against an independent float64 reference written here from its published formula
(numpy/scipy, never the implementation under test), on random and extreme inputs; float64 gradcheck
where the loss is smooth; the documented equivalences; reductions; parameter errors; config files."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.special import expit, log_softmax, logsumexp, softmax

from lossbench import losses
from lossbench.errors import ConfigError
from lossbench.targets import prepare

from conftest import CONFIG_DIR, TINY, TINY_SYNTHETIC, compose_config

KERAS_EPS = 1e-7
RNG = np.random.default_rng(0)
N, C = 7, 5


# -- references: float64 numpy, straight from the formulas in each module's docstring --------------
def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def ref_bce(x, y, pos_weight=1.0, label_smoothing=0.0):
    y = y * (1 - label_smoothing) + label_smoothing / 2
    return -(pos_weight * y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))


def ref_cross_entropy(x, t):
    if t.ndim == 1:
        return -log_softmax(x, axis=1)[np.arange(len(t)), t]
    return -(t * log_softmax(x, axis=1)).sum(axis=1)


def head_probabilities(x, head):
    return expit(x) if head == "sigmoid" else softmax(x, axis=1)


def ref_bce_manual(x, y, head="sigmoid", eps=KERAS_EPS):
    p = head_probabilities(x, head)
    if eps:
        p = np.clip(p, eps, 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def ref_abs_kl(p, q, eps=KERAS_EPS):
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return np.abs((p - q) * np.log(p / q)).sum(axis=1)


def ref_partition(raw, y, variant, mse_weight=1.0, z_activation="clip"):
    x, z = raw[:, :-1], raw[:, -1]
    count = np.maximum(0.01, z) if z_activation == "clip" else np.logaddexp(0.0, z)
    q = softmax(x, axis=1)
    if variant == "abs_kl_product":
        return ref_abs_kl(y, count[:, None] * q)
    n = y.sum(axis=1)
    out = mse_weight * (count - n) ** 2
    for i in range(len(y)):
        if n[i] > 0:
            t = y[i] / n[i]
            on = t > 0
            out[i] += (t[on] * np.log(t[on] / q[i, on])).sum()
    return out


def ref_focal(x, y, gamma=2.0, alpha=0.25):
    log_pt = np.where(y == 1, log_sigmoid(x), log_sigmoid(-x))
    weight = 1.0 if alpha is None else np.where(y == 1, alpha, 1 - alpha)
    return -weight * (1 - np.exp(log_pt)) ** gamma * log_pt


def ref_asymmetric(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05):
    p = expit(x)
    p_m = np.maximum(p - clip, 0.0)
    positive = -((1 - p) ** gamma_pos) * log_sigmoid(x)
    negative = -(p_m**gamma_neg) * (np.log(1 - p_m) if clip else log_sigmoid(-x))
    return np.where(y == 1, positive, negative)


def ref_zlpr(s, y):
    out = np.empty(len(s))
    for i in range(len(s)):
        neg, pos = s[i][y[i] == 0], s[i][y[i] == 1]
        out[i] = logsumexp(np.r_[0.0, neg]) + logsumexp(np.r_[0.0, -pos])
    return out


def ref_two_way(x, y, tp=4.0, tn=1.0):
    def term(scores, labels):
        pos, neg = scores[labels == 1], scores[labels == 0]
        hard_neg = tn * logsumexp(neg / tn) if len(neg) else -np.inf
        return np.logaddexp(0.0, hard_neg + tp * logsumexp(-pos / tp))

    samples = [term(x[i], y[i]) for i in range(len(x)) if y[i].any()]
    classes = [term(x[:, c], y[:, c]) for c in range(x.shape[1]) if y[:, c].any()]
    return (np.mean(samples) if samples else 0.0) + (np.mean(classes) if classes else 0.0)


def ref_poly(x, y, epsilon=1.0):
    p = expit(x)
    return ref_bce(x, y) + epsilon * (1 - (y * p + (1 - y) * (1 - p)))


def ref_wan(x, y, negative_weight=None):
    gamma = 1.0 / (x.shape[1] - 1) if negative_weight is None else negative_weight
    return -(y * log_sigmoid(x) + gamma * (1 - y) * log_sigmoid(-x))


def ref_hill(x, y, lamb=1.5, margin=1.0, gamma=2.0):
    p, p_m = expit(x), expit(x - margin)
    return np.where(y == 1, -((1 - p_m) ** gamma) * np.log(p_m), (lamb - p) * p**2)


# single-label softmax losses: t is class indices (N,) or target distributions (N, C)
def as_rows(t, c):
    return np.eye(c)[t] if t.ndim == 1 else t


def ref_gce(x, t, q=0.7):
    p, t = softmax(x, axis=1), as_rows(t, x.shape[1])
    return (t * (1 - p**q)).sum(axis=1) / q


def ref_mae(x, t):
    return np.abs(as_rows(t, x.shape[1]) - softmax(x, axis=1)).sum(axis=1)


def ref_rce(x, t, log_zero=-4.0):
    t = as_rows(t, x.shape[1])
    return -(softmax(x, axis=1) * np.log(np.maximum(t, np.exp(log_zero)))).sum(axis=1)


def ref_sce(x, t, alpha=0.01, beta=1.0, log_zero=-4.0):
    ce = -(as_rows(t, x.shape[1]) * log_softmax(x, axis=1)).sum(axis=1)
    return alpha * ce + beta * ref_rce(x, t, log_zero)


def ref_nce_rce(x, t, alpha=1.0, beta=10.0, log_zero=-4.0):
    log_p = log_softmax(x, axis=1)
    nce = -(as_rows(t, x.shape[1]) * log_p).sum(axis=1) / -log_p.sum(axis=1)
    return alpha * nce + beta * ref_rce(x, t, log_zero)


# -- inputs -----------------------------------------------------------------------------------------
def multihot(n=N, c=C):
    y = (RNG.random((n, c)) < 0.4).astype(np.float64)
    y[0], y[1] = 0.0, 1.0  # a row without labels and a row with every label
    return y


RANDOM_LOGITS = RNG.normal(0, 3, (N, C))
EXTREME_LOGITS = np.array([[-100.0, -40.0, -17.0, 17.0, 100.0],
                           [100.0, 40.0, 17.0, -17.0, -100.0],
                           [1e-4, -1e-4, 30.0, -30.0, 0.0],
                           [88.0, -88.0, 60.0, -60.0, 5.0]])
EXTREME_TARGETS = np.array([[1, 0, 1, 0, 1], [1, 0, 1, 0, 1], [1, 1, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=np.float64)


def run(loss, x, y, dtype=torch.float64):
    loss.reduction = "none"
    return loss(torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)).double().detach().numpy()


# (registry name, constructor params, reference(x, y)) for the per-element / per-sample losses
CASES = {
    "bce_with_logits": ({}, ref_bce),
    "bce_with_logits-pos_weight-smoothing": (
        {"pos_weight": [0.5, 1.0, 2.0, 3.0, 4.0], "label_smoothing": 0.1},
        lambda x, y: ref_bce(x, y, np.array([0.5, 1.0, 2.0, 3.0, 4.0]), 0.1)),
    "weighted_bce": ({"pos_weight": 3.0}, lambda x, y: ref_bce(x, y, 3.0)),
    "focal": ({}, ref_focal),
    "focal-gamma0.5-no-alpha": ({"gamma": 0.5, "alpha": None}, lambda x, y: ref_focal(x, y, 0.5, None)),
    "asymmetric": ({}, ref_asymmetric),
    "asymmetric-no-clip": ({"clip": 0.0, "gamma_neg": 2.0, "gamma_pos": 0.0},
                           lambda x, y: ref_asymmetric(x, y, 2.0, 0.0, 0.0)),
    "poly": ({}, ref_poly),
    "poly-negative": ({"epsilon": -1.0}, lambda x, y: ref_poly(x, y, -1.0)),
    "zlpr": ({}, ref_zlpr),
    "bce_manual": ({}, ref_bce_manual),
    "bce_manual-softmax": ({"head": "softmax"}, lambda x, y: ref_bce_manual(x, y, "softmax")),
    "bce_manual-naive": ({"eps": 0.0}, lambda x, y: ref_bce_manual(x, y, eps=0.0)),
    "abs_kl": ({}, lambda x, y: ref_abs_kl(y, expit(x))),
    "abs_kl-softmax": ({"head": "softmax"}, lambda x, y: ref_abs_kl(y, softmax(x, axis=1))),
    "wan": ({}, ref_wan),
    "wan-weight0.3": ({"negative_weight": 0.3}, lambda x, y: ref_wan(x, y, 0.3)),
    "hill": ({}, ref_hill),
    "hill-lamb2-margin0.5-gamma1": ({"lamb": 2.0, "margin": 0.5, "gamma": 1.0}, lambda x, y: ref_hill(x, y, 2.0, 0.5, 1.0)),
}
# single-label softmax losses, on class indices and on target distributions
SINGLE_LABEL_CASES = {
    "gce": ({}, ref_gce),
    "gce-q0.3": ({"q": 0.3}, lambda x, t: ref_gce(x, t, 0.3)),
    "mae": ({}, ref_mae),
    "sce": ({}, ref_sce),
    "sce-alpha0.5-beta2-A-6": ({"alpha": 0.5, "beta": 2.0, "log_zero": -6.0}, lambda x, t: ref_sce(x, t, 0.5, 2.0, -6.0)),
    "nce_rce": ({}, ref_nce_rce),
    "nce_rce-alpha2-beta0.5": ({"alpha": 2.0, "beta": 0.5}, lambda x, t: ref_nce_rce(x, t, 2.0, 0.5)),
}
# losses whose float64 reference test has its own shape (a batch-coupled loss, the partition head, index targets)
REFERENCE_TESTS_ELSEWHERE = {"cross_entropy": "test_cross_entropy_index_and_soft_targets",
                             "partition_softmax": "test_partition_softmax_matches_reference",
                             "two_way": "test_two_way_matches_reference"}
STABLE = ["bce_with_logits", "bce_with_logits-pos_weight-smoothing", "weighted_bce", "focal",
          "focal-gamma0.5-no-alpha", "asymmetric", "asymmetric-no-clip", "poly", "poly-negative", "zlpr",
          "wan", "hill"]


def build(case):
    params, reference = CASES[case] if case in CASES else SINGLE_LABEL_CASES[case]
    return losses.get_loss(case.split("-")[0], **params), reference


def single_label_inputs(inputs):
    """(logits, targets): class indices on random / extreme logits, or target distributions (one-hot rows,
    soft rows, and an empty row)."""
    if inputs == "random-indices":
        return RANDOM_LOGITS, RNG.integers(0, C, N)
    if inputs == "extreme-indices":
        return EXTREME_LOGITS, np.array([0, 4, 2, 3])
    return RANDOM_LOGITS, prepare(torch.tensor(multihot()), "distribution", C).double().numpy()


def test_every_registered_loss_has_a_float64_reference_case():
    covered = {case.split("-")[0] for case in [*CASES, *SINGLE_LABEL_CASES]}
    for name, test in REFERENCE_TESTS_ELSEWHERE.items():
        assert callable(globals().get(test)), test
        assert f'get_loss("{name}"' in inspect.getsource(globals()[test]), f"{test} does not build loss={name}"
        covered.add(name)
    assert sorted(set(losses.available()) - covered) == []


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("inputs", ["random", "extreme"])
def test_loss_matches_float64_reference(case, inputs):
    loss, reference = build(case)
    x, y = (RANDOM_LOGITS, multihot()) if inputs == "random" else (EXTREME_LOGITS, EXTREME_TARGETS)
    np.testing.assert_allclose(run(loss, x, y), reference(x, y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(SINGLE_LABEL_CASES))
@pytest.mark.parametrize("inputs", ["random-indices", "extreme-indices", "distributions"])
def test_single_label_loss_matches_float64_reference(case, inputs):
    loss, reference = build(case)
    x, t = single_label_inputs(inputs)
    target = torch.tensor(t) if t.dtype != np.float64 else torch.tensor(t, dtype=torch.float64)
    loss.reduction = "none"
    got = loss(torch.tensor(x, dtype=torch.float64), target).numpy()
    np.testing.assert_allclose(got, reference(x, t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", sorted(SINGLE_LABEL_CASES))
def test_single_label_losses_stay_accurate_in_float32_at_extreme_logits(case):
    loss, reference = build(case)
    x, t = single_label_inputs("extreme-indices")
    loss.reduction = "none"
    got = loss(torch.tensor(x, dtype=torch.float32), torch.tensor(t)).double().numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", STABLE)
def test_fused_losses_stay_accurate_in_float32_at_extreme_logits(case):
    loss, reference = build(case)
    got = run(loss, EXTREME_LOGITS, EXTREME_TARGETS, torch.float32)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference(EXTREME_LOGITS, EXTREME_TARGETS), rtol=1e-5, atol=1e-6)


def test_naive_bce_breaks_where_the_fused_form_does_not():
    x, y = np.array([[20.0, -20.0]]), np.array([[0.0, 1.0]])  # confidently wrong on both classes
    naive = run(losses.get_loss("bce_manual", eps=0.0), x, y, torch.float32)
    assert np.isinf(naive[0, 0])  # float32 sigma(20) == 1, log(1 - 1) = -inf
    clipped = run(losses.get_loss("bce_manual"), x, y, torch.float32)
    assert np.isfinite(clipped).all() and clipped[0, 0] == pytest.approx(-np.log(1.1920929e-07), rel=1e-6)
    fused = run(losses.get_loss("bce_with_logits"), x, y, torch.float32)
    np.testing.assert_allclose(fused, [[20.0, 20.0]], rtol=1e-6)


def test_cross_entropy_index_and_soft_targets():
    y = multihot()
    loss = losses.get_loss("cross_entropy")
    soft = prepare(torch.tensor(y), "distribution", C).numpy()
    for x in (RANDOM_LOGITS, EXTREME_LOGITS[:, :C]):
        t = soft[: len(x)]
        np.testing.assert_allclose(run(loss, x, t), ref_cross_entropy(x, t), rtol=1e-10, atol=1e-12)
        idx = RNG.integers(0, C, len(x))
        got = loss(torch.tensor(x), torch.tensor(idx)).numpy()
        np.testing.assert_allclose(got, ref_cross_entropy(x, idx), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["kl_mse", "abs_kl_product"])
@pytest.mark.parametrize("z_activation", ["clip", "softplus"])
def test_partition_softmax_matches_reference(variant, z_activation):
    raw = np.concatenate([RANDOM_LOGITS, RNG.uniform(-1, 4, (N, 1))], axis=1)
    y = multihot()
    loss = losses.get_loss("partition_softmax", variant=variant, mse_weight=0.5, z_activation=z_activation)
    expected = ref_partition(raw, y, variant, 0.5, z_activation)
    np.testing.assert_allclose(run(loss, raw, y), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("inputs", ["random", "extreme", "single-row"])
def test_two_way_matches_reference(inputs):
    x, y = {"random": (RANDOM_LOGITS, multihot()), "extreme": (EXTREME_LOGITS, EXTREME_TARGETS),
            "single-row": (RANDOM_LOGITS[:1], np.array([[0.0, 1.0, 0.0, 0.0, 1.0]]))}[inputs]
    loss = losses.get_loss("two_way", temperature_pos=3.0, temperature_neg=0.5)
    per_sample = run(loss, x, y)
    assert per_sample.shape == (len(x),)
    assert per_sample.mean() == pytest.approx(ref_two_way(x, y, 3.0, 0.5), rel=1e-10)
    loss.reduction = "mean"
    assert loss(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(ref_two_way(x, y, 3.0, 0.5), rel=1e-10)


def test_two_way_with_no_positive_in_the_batch_is_zero_not_nan():
    loss = losses.get_loss("two_way")
    assert loss(torch.randn(3, 4), torch.zeros(3, 4)).item() == 0.0


# -- gradients --------------------------------------------------------------------------------------
GRAD_CASES = [
    ("bce_with_logits", {"pos_weight": [1.0, 2.0, 0.5, 1.0, 3.0], "label_smoothing": 0.1}),
    ("weighted_bce", {"pos_weight": 2.5}),
    ("bce_manual", {}), ("bce_manual", {"head": "softmax"}),
    ("abs_kl", {}), ("abs_kl", {"head": "softmax"}),
    ("focal", {}), ("asymmetric", {}), ("asymmetric", {"clip": 0.0}),
    ("zlpr", {}), ("two_way", {}), ("poly", {}), ("cross_entropy", {}),
    ("partition_softmax", {"variant": "kl_mse"}), ("partition_softmax", {"variant": "abs_kl_product"}),
    ("gce", {}), ("mae", {}), ("sce", {}), ("nce_rce", {}), ("wan", {}), ("hill", {}),
]


@pytest.mark.parametrize(("name", "params"), GRAD_CASES, ids=[f"{n}-{p}" for n, p in GRAD_CASES])
def test_gradcheck_float64(name, params):
    loss = losses.get_loss(name, reduction="sum", **params)
    y = torch.tensor(multihot())
    target = prepare(y, loss.target_form, C).double()  # prepare() gives float32 targets
    x = torch.tensor(RANDOM_LOGITS / 2)
    if name == "partition_softmax":  # keep Z = max(0.01, z) away from its kink
        x = torch.cat([x, torch.rand(N, 1, dtype=torch.float64) * 2 + 0.5], dim=1)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda logits: loss(logits, target), (x,), fast_mode=True)


def test_gradcheck_cross_entropy_with_class_indices():
    loss = losses.get_loss("cross_entropy", label_smoothing=0.1)
    x = torch.tensor(RANDOM_LOGITS, requires_grad=True)
    assert torch.autograd.gradcheck(lambda logits: loss(logits, torch.tensor([0, 1, 2, 3, 4, 0, 1])), (x,), fast_mode=True)


@pytest.mark.parametrize("name", ["gce", "mae", "sce", "nce_rce"])
def test_gradcheck_single_label_losses_with_class_indices(name):
    loss = losses.get_loss(name, reduction="sum")
    x = torch.tensor(RANDOM_LOGITS / 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda logits: loss(logits, torch.tensor([0, 1, 2, 3, 4, 0, 1])), (x,), fast_mode=True)


# -- equivalences -----------------------------------------------------------------------------------
def _both(a, b, x, y):
    return a(x, y), b(x, y)


MODERATE = torch.tensor(RNG.uniform(-8, 8, (64, C)), dtype=torch.float32)
MODERATE_Y = torch.tensor(multihot(64), dtype=torch.float32)


@pytest.mark.parametrize(("name", "params"), [
    ("bce_manual", {}),                               # clip inactive for |x| <= 8 in float32
    ("weighted_bce", {"pos_weight": 1.0}),
    ("focal", {"gamma": 0.0, "alpha": None}),
    ("poly", {"epsilon": 0.0}),
])
def test_reduces_to_bce_with_logits(name, params):
    reference = losses.get_loss("bce_with_logits", reduction="none")
    got, expected = _both(losses.get_loss(name, reduction="none", **params), reference, MODERATE, MODERATE_Y)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-6)


def test_wan_with_negative_weight_one_is_bce_with_logits():
    got, expected = _both(losses.get_loss("wan", reduction="none", negative_weight=1.0),
                          losses.get_loss("bce_with_logits", reduction="none"), MODERATE, MODERATE_Y)
    torch.testing.assert_close(got, expected)


def test_robust_single_label_losses_relate_as_their_papers_say():
    x, idx = MODERATE.double(), torch.tensor(RNG.integers(0, C, 64))

    def loss(name, **params):
        return losses.get_loss(name, reduction="none", **params)(x, idx)

    mae, ce = loss("mae"), loss("cross_entropy")
    torch.testing.assert_close(loss("gce", q=1.0), mae / 2)  # q = 1: 1 - p_y
    torch.testing.assert_close(loss("gce", q=1e-7), ce, rtol=1e-5, atol=1e-6)  # q -> 0: CE
    torch.testing.assert_close(loss("sce", alpha=1.0, beta=0.0), ce)
    torch.testing.assert_close(loss("sce", alpha=0.0, beta=1.0), 2 * mae)  # RCE = -A (1 - p_y), A = -4
    nce = loss("nce_rce", alpha=1.0, beta=0.0)
    assert bool(((nce > 0) & (nce <= 1)).all())
    torch.testing.assert_close(loss("nce_rce", alpha=0.0, beta=1.0), 2 * mae)


def test_weighted_bce_is_bce_with_logits_pos_weight():
    w = [0.5, 1.0, 2.0, 3.0, 9.0]
    got, expected = _both(losses.get_loss("weighted_bce", pos_weight=w),
                          losses.get_loss("bce_with_logits", pos_weight=w), MODERATE, MODERATE_Y)
    torch.testing.assert_close(got, expected)


def test_cross_entropy_one_hot_soft_targets_equal_index_targets():
    idx = torch.tensor(RNG.integers(0, C, 64))
    loss = losses.get_loss("cross_entropy", reduction="none")
    torch.testing.assert_close(loss(MODERATE, torch.nn.functional.one_hot(idx, C).float()), loss(MODERATE, idx))


def test_zlpr_with_one_positive_is_cross_entropy_against_an_extra_zero_logit_plus_the_negatives():
    # exp(zlpr) = (1 + A)(1 + e^{-s_t}) and exp(CE over [s, 0]) = 1 + e^{-s_t} + A e^{-s_t}, A = sum_neg e^{s}:
    # so exp(zlpr) = exp(CE) + A exactly.
    x, idx = MODERATE.double(), torch.tensor(RNG.integers(0, C, 64))
    one_hot = torch.nn.functional.one_hot(idx, C).double()
    ce = losses.get_loss("cross_entropy", reduction="none")(torch.cat([x, torch.zeros(64, 1, dtype=x.dtype)], 1), idx)
    zlpr = losses.get_loss("zlpr", reduction="none")(x, one_hot)
    torch.testing.assert_close(zlpr.exp(), ce.exp() + (x.exp() * (1 - one_hot)).sum(1))


@pytest.mark.parametrize("name", losses.available())
def test_reductions(name):
    cls = losses.loss_class(name)
    raw = torch.cat([MODERATE, torch.rand(64, 1) * 3], dim=1) if cls.heads == ("partition",) else MODERATE
    target = prepare(MODERATE_Y, cls.target_form, C)
    values = {r: losses.get_loss(name, reduction=r)(raw, target) for r in losses.REDUCTIONS}
    torch.testing.assert_close(values["sum"], values["none"].sum())
    torch.testing.assert_close(values["mean"], values["none"].mean())
    factor = C if cls.per_class else 1
    assert values["none"].shape == ((64, C) if cls.per_class else (64,))
    torch.testing.assert_close(values["sum_classes"], factor * values["mean"])


# -- parameters, config files, the harness ----------------------------------------------------------
@pytest.mark.parametrize(("name", "params", "message"), [
    ("bce_with_logits", {"pos_weight": -1.0}, "loss.pos_weight must be a number > 0"),
    ("bce_with_logits", {"label_smoothing": 1.0}, "loss.label_smoothing must be in"),
    ("weighted_bce", {"pos_weight": [1.0, 0.0]}, "loss.pos_weight must be a number > 0"),
    ("weighted_bce", {"pos_weight": None}, "loss.pos_weight must be a number > 0"),
    ("cross_entropy", {"label_smoothing": -0.1}, "loss.label_smoothing must be in"),
    ("bce_manual", {"eps": 0.5}, r"loss.eps must be in \[0, 0.5\)"),
    ("bce_manual", {"head": "partition"}, "defined for heads sigmoid, softmax"),
    ("abs_kl", {"eps": 0.0}, "loss.eps must be > 0"),
    ("partition_softmax", {"variant": "kl"}, "loss.variant must be one of kl_mse, abs_kl_product"),
    ("partition_softmax", {"z_activation": "relu"}, "loss.z_activation must be one of clip, softplus"),
    ("partition_softmax", {"mse_weight": -1.0}, "loss.mse_weight must be >= 0"),
    ("focal", {"gamma": -1.0}, "loss.gamma must be >= 0"),
    ("focal", {"alpha": 1.5}, r"loss.alpha must be in \[0, 1\] or null"),
    ("asymmetric", {"gamma_neg": -2.0}, "loss.gamma_neg must be >= 0"),
    ("asymmetric", {"clip": 1.0}, r"loss.clip must be in \[0, 1\)"),
    ("two_way", {"temperature_pos": 0.0}, "loss.temperature_pos must be > 0"),
    ("poly", {"epsilon": -2.0}, "loss.epsilon must be >= -1"),
    ("zlpr", {"reduction": "avg"}, "loss.reduction must be one of mean, sum, none, sum_classes"),
    ("gce", {"q": 0.0}, r"loss.q must be in \(0, 1\]"),
    ("gce", {"q": 1.5}, r"loss.q must be in \(0, 1\]"),
    ("sce", {"alpha": -1.0}, "loss.alpha must be >= 0"),
    ("sce", {"log_zero": 0.0}, "loss.log_zero must be < 0"),
    ("nce_rce", {"beta": -1.0}, "loss.beta must be >= 0"),
    ("wan", {"negative_weight": -0.5}, "loss.negative_weight must be >= 0 or null"),
    ("hill", {"lamb": 0.5}, "loss.lamb must be >= 1"),
    ("hill", {"margin": -1.0}, "loss.margin must be >= 0"),
])
def test_bad_parameters_give_one_line_errors(name, params, message):
    with pytest.raises(ValueError, match=message) as err:
        losses.get_loss(name, **params)
    assert "\n" not in str(err.value)


LOSS_CONFIGS = sorted(Path(CONFIG_DIR, "loss").glob("*.yaml"))


def test_every_loss_has_a_config_file_and_a_documented_module():
    assert sorted(p.stem for p in LOSS_CONFIGS) == losses.available()
    for name in losses.available():
        doc = inspect.getmodule(losses.loss_class(name)).__doc__
        assert doc and "Head" in doc and "Tasks" in doc, name


@pytest.mark.parametrize("path", LOSS_CONFIGS, ids=[p.stem for p in LOSS_CONFIGS])
def test_config_file_matches_constructor_and_natural_head(path):
    raw = OmegaConf.load(path)
    cls = losses.loss_class(raw.name)
    assert raw.name == path.stem
    assert list(raw.defaults) == [{"/head@_global_.head": cls.heads[0]}]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    params = {k: v for k, v in OmegaConf.to_container(raw).items() if k not in ("defaults", "name")}
    assert set(params) <= accepted, set(params) - accepted
    cfg = compose_config([f"loss={path.stem}"])
    assert cfg.head.name == cls.heads[0]
    loss = losses.get_loss(path.stem, head=cfg.head.name, **params)
    assert loss.reduction == "mean"


def test_bad_loss_parameter_stops_the_run_with_a_config_error(tmp_path):
    from lossbench.engine import train

    cfg = compose_config(["loss=focal", "loss.gamma=-1", *TINY_SYNTHETIC, *TINY])
    with pytest.raises(ConfigError, match=r"^loss.gamma must be >= 0, got -1$"):
        train(cfg, tmp_path)


@pytest.mark.slow
def test_non_finite_loss_marks_the_run_diverged_and_the_fused_form_completes(tmp_path):
    from lossbench.engine import train

    # a huge step drives logits far past 17: sigma rounds to 1 in float32 and naive BCE is inf
    blowup = ["optimizer=sgd", "optimizer.lr=1000.0", "trainer.limit_train_batches=8", *TINY_SYNTHETIC, *TINY]
    naive = train(compose_config(["loss=bce_manual", "loss.eps=0.0", *blowup]), tmp_path / "naive")
    assert naive["status"] == "diverged" and naive["metrics"] == {}
    assert naive["divergence"]["step"] >= 0 and not np.isfinite(float(naive["divergence"]["loss"]))
    fused = train(compose_config(["loss=bce_with_logits", *blowup]), tmp_path / "fused")
    assert fused["status"] == "completed" and fused["metrics"]


@pytest.mark.slow
def test_stability_script_finds_where_naive_bce_breaks(tmp_path):
    from lossbench import stability

    rows, status, xs = stability.study(step=0.25, device="cpu")
    found = {(r.loss, r.dtype, r.target): r for r in rows}
    naive = found["bce_manual[sigmoid, eps=0.0]", "float32", 0]
    assert 16.5 <= naive.loss_first_nonfinite_pos <= 16.75 and naive.loss_nonfinite_kind  # sigmoid(x) == 1
    fused = [r for r in rows if r.loss == "bce_with_logits[sigmoid]"]
    assert len(fused) == 8 and not any(r.loss_nonfinite_share or r.grad_nonfinite_share for r in fused)
    assert all(r.max_loss_error < 1e-6 for r in fused if r.dtype == "float32")
    stability.write_markdown(rows, tmp_path / "stability.md", 0.25, "cpu")
    stability.plot(status, xs, tmp_path / "stability.png")
    assert "| bce_with_logits[sigmoid] | finite | finite | finite | finite |" in (tmp_path / "stability.md").read_text()
    assert (tmp_path / "stability.png").stat().st_size > 10_000
