"""lossbench.analysis.stats against values computed by hand, closed forms, brute-force enumeration written
here, a Monte-Carlo simulation, and scipy's own implementations where they do not depend on its version."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from lossbench.analysis.stats import (
    assess_family,
    bootstrap_ci,
    comparison_detectable,
    decide,
    detectable_difference,
    friedman,
    holm,
    mann_whitney,
    mean_std,
    nemenyi_cliques,
    paired_comparison,
    paired_t,
    signed_rank,
    unpaired_comparison,
    welch_t,
)


def brute_force_signed_rank_p(d) -> float:
    """Two-sided exact p by listing all 2^n sign patterns of the midranks of the non-zero |d|."""
    d = [x for x in d if x != 0]
    absd = [abs(x) for x in d]
    ranks = [sum(1 for y in absd if y < x) + (sum(1 for y in absd if y == x) + 1) / 2 for x in absd]
    observed = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    totals = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    low = sum(t <= observed + 1e-9 for t in totals) / len(totals)
    high = sum(t >= observed - 1e-9 for t in totals) / len(totals)
    return min(1.0, 2 * min(low, high))


def test_mean_std_uses_the_sample_standard_deviation():
    # values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, s = sqrt(32 / 7)
    result = mean_std([2, 4, 4, 4, 5, 5, 7, 9])
    assert (result.mean, result.std, result.n) == (pytest.approx(5.0), pytest.approx(math.sqrt(32 / 7)), 8)
    assert mean_std([3.0]).std == 0.0
    assert mean_std([0.9912, 0.9874]).format(2, 100) == "98.93 ± 0.27"


def test_paired_t_test_ci_and_p_value_match_the_closed_form():
    # d = 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), se = s / 2, t = sqrt(15), df = 3
    result = paired_comparison([11, 12, 13, 14], [10, 10, 10, 10])
    se = math.sqrt(5 / 3) / 2
    assert result.mean_diff == pytest.approx(2.5) and result.t_stat == pytest.approx(math.sqrt(15))
    # Student t with 3 df: P(|T| > t) = 1 - (2/pi) (x/(1+x^2) + atan x), x = t/sqrt(3)
    x = math.sqrt(15) / math.sqrt(3)
    assert result.p_t == pytest.approx(1 - 2 / math.pi * (x / (1 + x * x) + math.atan(x)), rel=1e-9)
    t_975_df3 = 3.182446305284263  # statistical tables
    assert (result.ci_low, result.ci_high) == (pytest.approx(2.5 - t_975_df3 * se, rel=1e-9),
                                               pytest.approx(2.5 + t_975_df3 * se, rel=1e-9))
    assert result.effect_size == pytest.approx(2.5 / math.sqrt(5 / 3))  # Cohen's d_z = mean / sd
    assert result.t_direction == 1 and result.t_test == "paired t"


def test_exact_signed_rank_p_values_by_hand():
    # n = 6, all positive and distinct: only the all-positive pattern is as extreme on each side -> 2/64
    w = signed_rank([1, 2, 3, 4, 5, 6])
    assert (w.statistic, w.opposite, w.p, w.method, w.direction) == (21, 0, pytest.approx(2 / 64), "exact", 1)
    # ranks 1..6, rank 2 negative: W- = 2; subsets of {1..6} with sum <= 2: {}, {1}, {2} -> p = 2 * 3/64
    w = signed_rank([1, -2, 3, 4, 5, 6])
    assert (w.opposite, w.p) == (2, pytest.approx(6 / 64))
    # n < 6: the floor 2/2^n; n = 5 -> 2/32, n = 3 -> 2/8
    assert signed_rank([1, 2, 3, 4, 5]).p == pytest.approx(2 / 32)
    assert signed_rank([-3, -1, -2]).p == pytest.approx(2 / 8) and signed_rank([-3, -1, -2]).direction == -1


def test_signed_rank_ties_and_zeros():
    # zeros are dropped (Wilcoxon's method): the 6 non-zero differences decide, as above
    assert signed_rank([0, 0, 1, 2, 3, 4, 5, 6]).p == pytest.approx(2 / 64)
    assert signed_rank([0, 0, 1, 2, 3, 4, 5, 6]).n == 6
    # ties: |d| = 1, 1, 2, 3, 4, 5 -> midranks 1.5, 1.5, 3..6; W- = 1.5; patterns with W- <= 1.5 are
    # {}, {first 1.5}, {second 1.5} -> p = 2 * 3/64
    w = signed_rank([1, -1, 2, 3, 4, 5])
    assert (w.statistic, w.opposite, w.p) == (19.5, 1.5, pytest.approx(6 / 64))
    # all positive with a tie: W+ = 10 is the maximum, 1 pattern of 16 -> 2/16
    assert signed_rank([1, 1, 2, 3]).p == pytest.approx(2 / 16)
    # all equal to zero: no evidence
    w = signed_rank([0.0, 0.0, 0.0])
    assert (w.p, w.direction, w.n) == (1.0, 0, 0)


def test_exact_signed_rank_equals_brute_force_enumeration_on_random_data():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(1, 11))
        d = rng.integers(-4, 5, size=n)  # small integers: many ties and zeros
        assert signed_rank(d).p == pytest.approx(brute_force_signed_rank_p(list(d)), abs=1e-12), d
    d = rng.normal(size=12)  # no ties: scipy's exact method is the same distribution
    assert signed_rank(d).p == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)


def test_signed_rank_above_the_exact_limit_uses_the_normal_approximation_with_corrections():
    d = list(range(1, 21)) + [-21, -22, 3, 3, -5]  # 25 non-zero, tie groups of size 2 (|3|) and 2 (|5|)
    w = signed_rank(d)
    assert w.method == "normal approximation" and w.n == 25
    n = 25
    absd = sorted(abs(x) for x in d)
    ranks = {v: (absd.index(v) + 1 + len(absd) - absd[::-1].index(v)) / 2 for v in set(absd)}
    w_plus = sum(ranks[abs(x)] for x in d if x > 0)
    var = n * (n + 1) * (2 * n + 1) / 24 - (2 * (2 ** 3 - 2) + (3 ** 3 - 3)) / 48  # |3| three times, |5| twice
    counts = {v: absd.count(v) for v in set(absd)}
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t ** 3 - t for t in counts.values()) / 48
    z = (abs(w_plus - n * (n + 1) / 4) - 0.5) / math.sqrt(var)
    assert w.statistic == pytest.approx(w_plus)
    assert w.p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)  # 2 * (1 - Phi(z))


def test_constant_and_identical_differences():
    same = paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same.mean_diff, same.p_t, same.p_wilcoxon, same.t_direction, same.wilcoxon_direction) == (0, 1, 1, 0, 0)
    assert (same.ci_low, same.ci_high, same.boot_low, same.boot_high) == (0, 0, 0, 0)
    shifted = paired_comparison([2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6])
    assert shifted.p_t == 0.0 and shifted.t_stat == math.inf and shifted.p_wilcoxon == pytest.approx(2 / 64)
    assert (shifted.ci_low, shifted.ci_high) == (1, 1)


def test_counts_are_differenced_as_integers_and_scaled_afterwards():
    # accuracies stored as float32 lose the ties that equal error counts have
    test_size = 10000
    errors_a = np.array([186, 203, 218, 213, 212, 182])
    errors_b = np.array([175, 192, 229, 208, 201, 179])  # a - b: 11, 11, -11, 5, 11, 3: four |d| tied at 11
    acc32 = lambda e: ((test_size - e) / test_size).astype(np.float32).astype(float)  # noqa: E731
    c = paired_comparison(test_size - errors_b, test_size - errors_a, scale=1 / test_size)  # acc_b - acc_a
    # |d| = 3, 5, 11 x 4: ranks 1, 2, 4.5 x 4; W- = 4.5 (the -11); subsets of {1, 2, 4.5 x 4} with sum <= 4.5:
    # {}, {1}, {2}, {1, 2} and each 4.5 alone -> 8 of 64 -> p = 16/64
    assert (c.rank_opposite, c.p_wilcoxon) == (4.5, pytest.approx(16 / 64))
    # the same accuracies as float32: the tie is broken and the p-value moves
    assert signed_rank(acc32(errors_b) - acc32(errors_a)).p == pytest.approx(20 / 64)
    assert c.mean_diff == pytest.approx(30 / 6 / test_size)
    assert c.ci_low < c.mean_diff < c.ci_high and c.ci_high < 0.01


def test_bootstrap_percentile_ci_by_hand():
    # d = 0, 1: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4 -> 2.5% and 97.5% are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    assert bootstrap_ci([1.0, 2.0, 4.0]) == bootstrap_ci([1.0, 2.0, 4.0])  # fixed seed: the same every time
    # n = 3: the smallest resampled mean is 1 (all ones, 1/27), so the 2.5% quantile lies between 1 and 4/3
    low, high = bootstrap_ci([1.0, 2.0, 4.0])
    assert 1.0 <= low <= 4 / 3 and 10 / 3 <= high <= 4.0


def test_detectable_difference_has_the_stated_power_by_simulation():
    n, sd, alpha = 10, 2.0, 0.05
    delta = detectable_difference(sd, n, alpha)
    rng = np.random.default_rng(0)
    samples = rng.normal(delta, sd, size=(40000, n))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1))
    assert power == pytest.approx(0.8, abs=0.01)
    assert detectable_difference(sd, n, alpha / 24) > delta  # a stricter level needs a larger difference


def test_detectable_is_infinite_where_the_rank_test_cannot_reach_alpha():
    five = paired_comparison([2, 3, 4, 5, 6], [0] * 5)  # Wilcoxon floor 2/32 = 0.0625
    assert comparison_detectable(five, 0.05) == math.inf
    ten = paired_comparison(list(range(10)), [0] * 10)  # floor 2/1024
    assert math.isfinite(comparison_detectable(ten, 0.05))
    assert math.isfinite(comparison_detectable(ten, 0.05 / 24))  # 2/1024 = 0.00195 < 0.05/24 = 0.00208
    assert comparison_detectable(ten, 0.05 / 30) == math.inf  # 2/1024 > 0.05/30: never significant at that level


def test_holm_adjustment_by_hand():
    # sorted p: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.01, None, 0.04]) == [pytest.approx(0.02), None, pytest.approx(0.04)]
    assert holm([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_verdict_needs_both_adjusted_p_values_and_both_directions():
    assert decide("greater", 0.01, 0.03, 1, 1, 10) == "supported"
    assert decide("less", 0.01, 0.03, 1, 1, 10) == "contradicted"
    assert decide("less", 0.01, 0.03, -1, -1, 10) == "supported"
    assert decide("greater", 0.01, 0.06, 1, 1, 10) == "no significant difference at n=10"
    assert decide("greater", 0.06, 0.01, 1, 1, 10) == "no significant difference at n=10"
    assert decide("greater", 0.01, 0.01, 1, -1, 10) == "tests disagree in direction"
    with pytest.raises(ValueError, match="claim must be one of"):
        decide("bigger", 0.01, 0.01, 1, 1, 10)


def test_a_family_is_adjusted_together_and_sized_for_its_detectable_difference():
    strong = paired_comparison(list(range(1, 11)), [0] * 10)  # t p tiny, Wilcoxon 2/1024
    weak = paired_comparison([1, -2, 3, 4, 5, 6], [0] * 6)  # Wilcoxon 6/64
    worse = paired_comparison([0] * 10, list(range(2, 12)))
    out = assess_family([strong, weak, worse], ["greater", "greater", "greater"])
    # Wilcoxon p 2/1024, 6/64, 2/1024 -> Holm: max(3, 2) * 2/1024 for the two smallest, then 1 * 6/64
    assert [o["p_wilcoxon_holm"] for o in out] == pytest.approx([3 * 2 / 1024, 6 / 64, 3 * 2 / 1024])
    assert [o["verdict"] for o in out] == ["supported", "no significant difference at n=6", "contradicted"]
    assert {o["family_size"] for o in out} == {3} and out[0]["detectable_alpha"] == pytest.approx(0.05 / 3)
    assert out[0]["detectable"] == pytest.approx(detectable_difference(strong.std_diff, 10, 0.05 / 3))
    assert out[1]["detectable"] == math.inf  # 2/64 > 0.05/3: six pairs cannot reach the corrected level
    assert assess_family([strong], [None])[0]["verdict"] == "a higher"
    assert assess_family([worse], [None])[0]["verdict"] == "a lower"


def test_wilcoxon_direction_comes_from_its_own_statistic_not_the_mean():
    # one large positive difference, five small negative ones: mean > 0, but W+ = 6 < W- = 15
    c = paired_comparison([20, -1, -2, -3, -4, -5], [0] * 6)
    assert c.mean_diff > 0 and c.t_direction == 1
    assert (c.rank_stat, c.rank_opposite, c.wilcoxon_direction) == (6, 15, -1)
    assert decide("greater", 0.0, 0.0, c.t_direction, c.wilcoxon_direction, 6) == "tests disagree in direction"


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal length"):
        paired_comparison([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_comparison([1], [2])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_t([1.0])


def test_welch_and_mann_whitney_for_strategies_without_shared_seeds():
    a, b = [0.91, 0.93, 0.92, 0.95, 0.94], [0.90, 0.89, 0.92, 0.88]
    ref = sps.ttest_ind(a, b, equal_var=False)
    t = welch_t(a, b)
    assert (t.t, t.p) == (pytest.approx(ref.statistic, rel=1e-12), pytest.approx(ref.pvalue, rel=1e-12))
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 4
    assert t.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 3))
    # completely separated groups of 3: U_a = 0, only 1 of C(6,3) = 20 assignments as extreme per side
    u = mann_whitney([1, 2, 3], [4, 5, 6])
    assert (u.statistic, u.p, u.method, u.direction) == (0, pytest.approx(2 / 20), "exact", -1)
    u = mann_whitney([1, 1], [1, 2])  # ranks 2, 2, 2, 4: a's rank sum 4 is the smallest, P(<=4) = 3/6 -> p = 1
    assert u.p == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=7), rng.normal(0.5, size=6)
    assert mann_whitney(x, y).p == pytest.approx(sps.mannwhitneyu(x, y, method="exact").pvalue, rel=1e-12)
    c = unpaired_comparison(a, b)
    assert not c.paired and c.rank_test == "Mann-Whitney U" and c.t_test == "Welch t"
    assert c.mean_diff == pytest.approx(np.mean(a) - np.mean(b)) and c.min_p_wilcoxon == pytest.approx(2 / 126)


def test_friedman_and_nemenyi_by_hand():
    # 3 settings, strategies always ranked A < B < C (A best): rank sums 3, 6, 9
    # chi2 = 12/(N k (k+1)) * sum R^2 - 3 N (k+1) = 12/36 * 126 - 36 = 6; p = exp(-6/2) for 2 df
    f = friedman([[0.9, 0.8, 0.7], [0.95, 0.85, 0.6], [0.7, 0.65, 0.1]], ["A", "B", "C"], ["s1", "s2", "s3"])
    assert f.mean_ranks == [1.0, 2.0, 3.0]
    assert f.statistic == pytest.approx(6.0) and f.p == pytest.approx(math.exp(-3))
    # Demsar 2006, table 5: q_0.05 for k = 3 is 2.343 -> CD = 2.343 * sqrt(3 * 4 / (6 * 3))
    assert f.critical_difference == pytest.approx(2.343 * math.sqrt(12 / 18), abs=1e-3)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(6, 4)).astype(float)  # ties within rows
    ref = sps.friedmanchisquare(*x.T)
    assert friedman(x, list("abcd"), list("123456"), higher_is_better=False).statistic == pytest.approx(ref.statistic)
    assert nemenyi_cliques([1.0, 1.5, 3.0, 3.2], cd=1.0) == [(0, 1), (2, 3)]
    assert nemenyi_cliques([1.0, 1.5, 1.9, 3.0], cd=1.0) == [(0, 2)]


# -- expected best score of a tuning budget (Dodge et al. 2019) ------------------------------------------
def test_expected_max_by_enumerating_every_draw():
    from lossbench.analysis.stats import expected_max

    # [1, 2, 3], 2 draws with replacement: the 9 equally likely pairs have maxima summing to 22
    assert expected_max([3, 1, 2], 2) == pytest.approx(22 / 9)
    values = [0.2, 0.9, 0.5, 0.5]
    for n in (1, 2, 3):
        maxima = [max(draw) for draw in itertools.product(values, repeat=n)]
        assert expected_max(values, n) == pytest.approx(sum(maxima) / len(maxima))
    assert expected_max(values, 1) == pytest.approx(np.mean(values))
    assert expected_max(values, 200) == pytest.approx(0.9, abs=1e-12)


def test_expected_max_curve_rises_and_its_band_holds_the_curve():
    from lossbench.analysis.stats import expected_max_curve

    scores = [0.91, 0.95, 0.97, 0.93, 0.60, 0.96]
    curve = expected_max_curve(scores)
    assert curve["n"] == [1, 2, 3, 4, 5, 6]
    assert all(b >= a for a, b in zip(curve["mean"], curve["mean"][1:], strict=False))
    assert all(lo <= m <= hi for lo, m, hi in zip(curve["low"], curve["mean"], curve["high"], strict=True))
    assert max(curve["high"]) <= 0.97 and min(curve["low"]) >= 0.60  # a resample holds only observed scores
    assert curve == expected_max_curve(scores)  # fixed seed: the same band every time
