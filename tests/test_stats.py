"""Paired statistics against values computed by hand (closed forms, exact rank counts)."""

from __future__ import annotations

import math

import pytest

from lossbench.stats import mean_std, paired_test, verdict


def test_mean_std_uses_the_sample_standard_deviation():
    # values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, s = sqrt(32 / 7)
    result = mean_std([2, 4, 4, 4, 5, 5, 7, 9])
    assert result.mean == pytest.approx(5.0)
    assert result.std == pytest.approx(math.sqrt(32 / 7))
    assert result.n == 8
    assert mean_std([3.0]).std == 0.0
    assert mean_std([0.9912, 0.9874]).format(2, 100) == "98.93 ± 0.27"  # (0.9912 + 0.9874) / 2; s = 0.0038 / sqrt(2)


def test_paired_t_test_ci_and_p_value_match_the_closed_form():
    # d = 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), se = s / 2, t = sqrt(15), df = 3
    result = paired_test([11, 12, 13, 14], [10, 10, 10, 10])
    se = math.sqrt(5 / 3) / 2
    assert result.mean_diff == pytest.approx(2.5)
    assert result.t_stat == pytest.approx(math.sqrt(15))
    # Student t with 3 degrees of freedom has a closed-form CDF:
    # P(|T| > t) = 1 - (2/pi) * (x / (1 + x^2) + atan(x)),  x = t / sqrt(3)
    x = math.sqrt(15) / math.sqrt(3)
    assert result.t_p == pytest.approx(1 - 2 / math.pi * (x / (1 + x * x) + math.atan(x)), rel=1e-9)
    t_975_df3 = 3.182446305284263  # from statistical tables
    assert result.ci_low == pytest.approx(2.5 - t_975_df3 * se, rel=1e-9)
    assert result.ci_high == pytest.approx(2.5 + t_975_df3 * se, rel=1e-9)


def test_wilcoxon_exact_p_values_from_rank_counts():
    # all 4 differences positive: only 1 of the 2^4 sign patterns is as extreme on each side -> 2/16
    assert paired_test([1, 2, 3, 4], [0, 0, 0, 0]).wilcoxon_p == pytest.approx(2 / 16)
    # n = 6, all positive: 2/64, the smallest p possible at n = 6
    assert paired_test([1, 2, 3, 4, 5, 6], [0] * 6).wilcoxon_p == pytest.approx(2 / 64)
    # ranks 1..6, the difference of rank 2 negative: W- = 2; subsets of {1..6} with sum <= 2 are
    # {}, {1}, {2}, so p = 2 * 3 / 64
    result = paired_test([1, -2, 3, 4, 5, 6], [0] * 6)
    assert result.wilcoxon_stat == pytest.approx(2)
    assert result.wilcoxon_p == pytest.approx(6 / 64)


def test_identical_runs_give_no_evidence_and_constant_shifts_are_handled():
    same = paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same.mean_diff, same.t_p, same.wilcoxon_p) == (0.0, 1.0, 1.0)
    assert (same.ci_low, same.ci_high) == (0.0, 0.0)
    assert verdict(same, "greater") == "no significant difference at n=3"
    shifted = paired_test([1.5, 2.5, 3.5, 4.5, 5.5, 6.5], [1, 2, 3, 4, 5, 6])
    assert shifted.t_p == 0.0 and shifted.t_stat == math.inf
    assert (shifted.ci_low, shifted.ci_high) == (0.5, 0.5)


def test_verdict_needs_both_tests_and_follows_the_claims_direction():
    better = paired_test([2, 3, 4, 5, 6, 8], [0] * 6)  # t p ~ 0.002, Wilcoxon p = 2/64
    assert verdict(better, "greater") == "supported"
    assert verdict(better, "less") == "contradicted"
    worse = paired_test([0] * 6, [2, 3, 4, 5, 6, 8])
    assert verdict(worse, "less") == "supported"
    assert verdict(worse, "greater") == "contradicted"
    # n = 5: the t-test is significant but Wilcoxon cannot go below 2/32 -> not significant
    five = paired_test([2, 3, 4, 5, 6], [0] * 5)
    assert five.t_p < 0.05 and five.wilcoxon_p == pytest.approx(2 / 32)
    assert verdict(five, "greater") == "no significant difference at n=5"


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal length"):
        paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_test([1], [2])
    with pytest.raises(ValueError, match="claim must be one of"):
        verdict(paired_test([1, 2], [0, 0]), "bigger")
