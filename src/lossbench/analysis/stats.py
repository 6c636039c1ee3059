"""Statistics for seed-matched comparisons of strategies, computed here so that no p-value depends on a
library version's defaults. Formulas, families and power: ``docs/statistics.md``.

Paired comparison of ``a`` and ``b`` (run ``i`` of each used seed ``i``), differences ``d_i = a_i - b_i``,
``i = 1..n`` (``paired_comparison``):

* **mean** ``d̄``, sample std ``s`` (``ddof=1``), **Student-t CI** ``d̄ ± t_{1-α/2, n-1} s/√n``;
* **percentile bootstrap CI** of ``d̄``: ``BOOTSTRAP_RESAMPLES`` resamples of the ``n`` pairs with
  replacement, ``numpy.random.default_rng(BOOTSTRAP_SEED)``, the ``α/2`` and ``1-α/2`` quantiles (linear
  interpolation) of the resampled means (Efron & Tibshirani 1993, ch. 13);
* **paired t-test**, two-sided: ``t = d̄ / (s/√n)``, ``p = 2 P(T_{n-1} ≥ |t|)``; ``s = 0`` gives ``p = 1``
  when ``d̄ = 0`` and ``p = 0`` (``t = ±inf``) otherwise;
* **Wilcoxon signed-rank test**, two-sided, zero differences dropped (Wilcoxon's method, ``zero_method=
  "wilcox"`` in scipy's terms; ``n'`` non-zero differences), tied ``|d_i|`` get their average rank
  (midranks). ``W+`` (``W-``) is the sum of the ranks of the positive (negative) differences. For
  ``n' ≤`` ``EXACT_MAX_N`` the p-value is exact: the null distribution of ``W+`` over all ``2^n'``
  equally likely sign patterns of the observed ranks (ties included) is counted by dynamic programming on
  the doubled ranks, ``p = min(1, 2 min(P(W+ ≤ w), P(W+ ≥ w)))``. Above, the normal approximation with
  tie correction and continuity correction: ``z = (|W+ - μ| - 1/2) / σ``, ``μ = n'(n'+1)/4``,
  ``σ² = n'(n'+1)(2n'+1)/24 - Σ(t³ - t)/48`` over tie groups of size ``t``. No non-zero difference: ``p = 1``.
  The smallest two-sided p-value at ``n'`` is ``2/2^n'``;
* **direction** of each test: the t-test's is the sign of ``d̄``, the Wilcoxon test's is the sign of
  ``W+ - W-`` (never the mean's);
* **effect size** Cohen's ``d_z = d̄ / s`` (Cohen 1988; Lakens 2013);
* **detectable difference**: the smallest ``|δ|`` the two-sided paired t-test at level ``α_d`` detects with
  probability ``POWER`` given the observed ``s``: ``P(|T'| > t_{1-α_d/2, n-1}) = POWER`` with ``T'``
  noncentral t, ``n-1`` degrees of freedom, noncentrality ``δ√n/s`` (``scipy.stats.nct``). The callers pass
  ``α_d = α/m``, the Bonferroni level Holm applies to the smallest p of a family of ``m``: a difference above
  it would have been seen at every step of the correction.

Unpaired comparison (strategies that share no seed, ``unpaired_comparison``): Welch's t-test (``df`` by
Welch–Satterthwaite) and the Mann–Whitney U test (exact permutation distribution of the rank sum, midranks
for ties, when ``C(n_a+n_b, n_a) ≤`` ``EXACT_MAX_COMBINATIONS``; else normal approximation with tie and
continuity correction).

Family of comparisons: ``holm`` (Holm 1979) adjusts each test's p-values over the family;
``decide`` gives the verdict on a directional claim ("a > b" or "a < b"): **supported** when both
adjusted p-values are ``< α`` and both tests point the claim's way; **contradicted** when both are ``< α``
and both point the other way; **tests disagree** when both are ``< α`` but point different ways;
otherwise **no significant difference at n=…**. ``assess_family`` does all of it for one family.

Across settings (``friedman``): ranks of ``k`` strategies within each of ``N`` settings, the Friedman
test with tie correction, and the Nemenyi critical difference of average ranks (Demšar 2006).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8
EXACT_MAX_N = 20  # exact signed-rank distribution up to this many non-zero differences
EXACT_MAX_COMBINATIONS = 200_000  # exact Mann-Whitney distribution up to this many group assignments
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CLAIMS = ("greater", "less")
SUPPORTED, CONTRADICTED, DISAGREE = "supported", "contradicted", "tests disagree in direction"
A_HIGHER, A_LOWER = "a higher", "a lower"


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single value
    n: int

    def format(self, digits: int = 2, scale: float = 1.0) -> str:
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def mean_std(values: Sequence[float]) -> MeanStd:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return MeanStd(float(x.mean()), std, int(x.size))


# --- the single tests -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TTest:
    t: float
    p: float
    df: float
    direction: int  # +1: a > b, -1: a < b, 0: none


@dataclass(frozen=True)
class RankTest:
    statistic: float  # W+ (signed rank) or U_a (Mann-Whitney)
    opposite: float  # W- or U_b
    p: float
    n: int  # non-zero differences (signed rank) or n_a + n_b
    method: str  # "exact" or "normal approximation"
    direction: int


def _sign(x: float) -> int:
    return 0 if x == 0 or math.isnan(x) else (1 if x > 0 else -1)


def paired_t(d: Sequence[float]) -> TTest:
    """Two-sided one-sample t-test of the differences against 0 (the paired t-test)."""
    d = np.asarray(d, dtype=float)
    n = d.size
    if n < 2:
        raise ValueError(f"the paired t-test needs at least 2 pairs, got {n}")
    mean, s = float(d.mean()), float(d.std(ddof=1))
    if s == 0.0:
        return TTest(0.0 if mean == 0 else math.copysign(math.inf, mean), 1.0 if mean == 0 else 0.0, n - 1,
                     _sign(mean))
    t = mean / (s / math.sqrt(n))
    return TTest(t, float(min(1.0, 2 * sps.t.sf(abs(t), n - 1))), n - 1, _sign(mean))


def midranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given the average of the ranks they span."""
    return sps.rankdata(np.asarray(x, dtype=float), method="average")


def _tie_sizes(x: np.ndarray) -> np.ndarray:
    return np.unique(x, return_counts=True)[1]


def signed_rank_null_counts(doubled_ranks: Sequence[int]) -> np.ndarray:
    """``counts[v]``: how many of the ``2^n`` sign patterns give ``2 W+ = v`` (ranks given doubled, so
    midranks are integers). Each rank is either in ``W+`` or not: the counts are the coefficients of
    ``prod_i (1 + x^{r_i})``."""
    counts = np.zeros(int(sum(doubled_ranks)) + 1, dtype=np.float64)  # exact integers below 2^53
    counts[0] = 1
    for r in doubled_ranks:
        r = int(r)  # >= 2
        counts[r:] = counts[r:] + counts[:-r]  # the right side is a new array: old[v] + old[v - r]
    return counts


def signed_rank(d: Sequence[float], exact_max_n: int = EXACT_MAX_N) -> RankTest:
    """Two-sided Wilcoxon signed-rank test of the differences (module docstring)."""
    d = np.asarray(d, dtype=float)
    nz = d[d != 0]
    n = nz.size
    if n == 0:
        return RankTest(0.0, 0.0, 1.0, 0, "exact", 0)
    ranks = midranks(np.abs(nz))
    w_plus, w_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    direction = _sign(w_plus - w_minus)
    if n <= exact_max_n:
        doubled = np.rint(2 * ranks).astype(int)
        counts = signed_rank_null_counts(doubled)
        total = counts.sum()  # 2^n
        w2 = int(round(2 * w_plus))
        p_low, p_high = counts[:w2 + 1].sum() / total, counts[w2:].sum() / total
        return RankTest(w_plus, w_minus, float(min(1.0, 2 * min(p_low, p_high))), n, "exact", direction)
    mu = n * (n + 1) / 4
    ties = _tie_sizes(np.abs(nz))
    var = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(ties ** 3 - ties)) / 48
    z = max(0.0, abs(w_plus - mu) - 0.5) / math.sqrt(var)
    return RankTest(w_plus, w_minus, float(min(1.0, 2 * sps.norm.sf(z))), n, "normal approximation", direction)


def welch_t(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Two-sided Welch t-test: ``t = (ā - b̄)/√(s_a²/n_a + s_b²/n_b)``, Welch–Satterthwaite ``df``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values per group, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return TTest(0.0 if diff == 0 else math.copysign(math.inf, diff), 1.0 if diff == 0 else 0.0,
                     a.size + b.size - 2, _sign(diff))
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return TTest(t, float(min(1.0, 2 * sps.t.sf(abs(t), df))), float(df), _sign(diff))


def mann_whitney(a: Sequence[float], b: Sequence[float],
                 exact_max_combinations: int = EXACT_MAX_COMBINATIONS) -> RankTest:
    """Two-sided Mann–Whitney U test; ``U_a = R_a - n_a(n_a+1)/2`` with ``R_a`` the midrank sum of ``a``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = a.size, b.size
    if na == 0 or nb == 0:
        raise ValueError("the Mann-Whitney test needs values in both groups")
    ranks = midranks(np.concatenate([a, b]))
    u_a = float(ranks[:na].sum() - na * (na + 1) / 2)
    u_b = na * nb - u_a
    direction = _sign(u_a - u_b)
    if math.comb(na + nb, na) <= exact_max_combinations:
        doubled = np.rint(2 * ranks).astype(int)
        sums = np.array([sum(c) for c in itertools.combinations(doubled, na)])  # every assignment of ranks
        observed = int(doubled[:na].sum())
        p = 2 * min(np.mean(sums <= observed), np.mean(sums >= observed))
        return RankTest(u_a, u_b, float(min(1.0, p)), na + nb, "exact", direction)
    n = na + nb
    ties = _tie_sizes(ranks)
    var = na * nb / 12 * ((n + 1) - float(np.sum(ties ** 3 - ties)) / (n * (n - 1)))
    if var == 0:
        return RankTest(u_a, u_b, 1.0, n, "normal approximation", 0)
    z = max(0.0, abs(u_a - na * nb / 2) - 0.5) / math.sqrt(var)
    return RankTest(u_a, u_b, float(min(1.0, 2 * sps.norm.sf(z))), n, "normal approximation", direction)


def bootstrap_ci(d: Sequence[float], confidence: float = 1 - ALPHA, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``d`` (resampling the pairs; fixed seed)."""
    d = np.asarray(d, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def bootstrap_ci_unpaired(a: Sequence[float], b: Sequence[float], confidence: float = 1 - ALPHA,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(a) - mean(b)``, each group resampled on its own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
             - b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1))
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def t_power(delta: float, sd: float, n: int, alpha: float, df: float | None = None) -> float:
    """Power of the two-sided t-test: ``P(|T'| > t_crit)``, ``T'`` noncentral t with ``nc = δ√n/sd``."""
    df = n - 1 if df is None else df
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = delta * math.sqrt(n) / sd
    # P(T' < -crit | nc) = P(T' > crit | -nc): scipy's nct.cdf returns nan far in that tail
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def detectable_difference(sd: float, n: int, alpha: float, power: float = POWER, df: float | None = None) -> float:
    """The smallest ``δ > 0`` with ``t_power`` ``= power``: paired, ``sd`` of the differences and ``n``
    pairs; Welch, ``sd`` the standard error ``√(s_a²/n_a + s_b²/n_b)``, ``n = 1`` and the Welch ``df``."""
    if n < 2 and df is None:
        return math.inf
    if sd == 0:
        return 0.0
    upper = sd
    while t_power(upper, sd, n, alpha, df) < power:
        upper *= 2
    return float(optimize.brentq(lambda x: t_power(x, sd, n, alpha, df) - power, 0.0, upper, xtol=1e-12 * upper))


# --- comparisons -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One comparison of ``a`` with ``b``, in the metric's units (differences ``a - b``)."""
    paired: bool
    n: int  # pairs (paired) or n_a + n_b
    n_a: int
    n_b: int
    mean_diff: float
    std_diff: float  # sd of the paired differences; for unpaired, √(s_a²/n_a + s_b²/n_b) (the standard error)
    ci_low: float  # Student-t (paired) or Welch CI
    ci_high: float
    boot_low: float
    boot_high: float
    effect_size: float  # Cohen's d_z (paired) or Cohen's d with the pooled sd (unpaired)
    t_stat: float
    t_df: float
    p_t: float
    t_direction: int
    rank_stat: float  # W+ or U_a
    rank_opposite: float  # W- or U_b
    p_wilcoxon: float  # signed-rank (paired) or Mann-Whitney (unpaired)
    wilcoxon_direction: int
    rank_method: str
    t_test: str  # "paired t" or "Welch t"
    rank_test: str  # "Wilcoxon signed-rank" or "Mann-Whitney U"
    min_p_wilcoxon: float  # the smallest p the rank test can give at this n

    def as_dict(self) -> dict:
        return asdict(self)


def paired_comparison(a: Sequence[float], b: Sequence[float], scale: float = 1.0,
                      confidence: float = 1 - ALPHA) -> Comparison:
    """Paired comparison of ``a`` and ``b`` (same seeds, same order).

    Integer inputs (error counts, predicted-label counts) are differenced as integers, so equal counts
    tie exactly; ``scale`` then converts every location (means, CIs) to the reported unit (e.g. ``1/N`` for
    counts out of ``N`` test images). p-values, ``d_z`` and directions do not depend on it."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"a paired comparison needs two 1-D sequences of equal length, got shapes "
                         f"{a_arr.shape} and {b_arr.shape}")
    n = int(a_arr.size)
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs, got {n}")
    integer = np.issubdtype(a_arr.dtype, np.integer) and np.issubdtype(b_arr.dtype, np.integer)
    d = (a_arr.astype(np.int64) - b_arr.astype(np.int64)) if integer else a_arr.astype(float) - b_arr.astype(float)
    t, w = paired_t(d), signed_rank(d)
    mean, s = float(np.mean(d)), float(np.std(d.astype(float), ddof=1))
    half = 0.0 if s == 0 else float(sps.t.ppf((1 + confidence) / 2, n - 1)) * s / math.sqrt(n)
    boot = bootstrap_ci(d, confidence)
    effect = 0.0 if mean == 0 else (math.copysign(math.inf, mean) if s == 0 else mean / s)
    return Comparison(True, n, n, n, mean * scale, s * scale, (mean - half) * scale, (mean + half) * scale,
                      boot[0] * scale, boot[1] * scale, effect, t.t, t.df, t.p, t.direction, w.statistic, w.opposite,
                      w.p, w.direction, w.method, "paired t", "Wilcoxon signed-rank",
                      min(1.0, 2 / 2 ** n))


def unpaired_comparison(a: Sequence[float], b: Sequence[float], scale: float = 1.0,
                        confidence: float = 1 - ALPHA) -> Comparison:
    """Welch t + Mann–Whitney U for strategies that share no seed (module docstring)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    t, u = welch_t(a_arr, b_arr), mann_whitney(a_arr, b_arr)
    na, nb = a_arr.size, b_arr.size
    mean = float(a_arr.mean() - b_arr.mean())
    se = float(math.sqrt(a_arr.var(ddof=1) / na + b_arr.var(ddof=1) / nb))
    half = 0.0 if se == 0 else float(sps.t.ppf((1 + confidence) / 2, t.df)) * se
    boot = bootstrap_ci_unpaired(a_arr, b_arr, confidence)
    pooled = math.sqrt(((na - 1) * a_arr.var(ddof=1) + (nb - 1) * b_arr.var(ddof=1)) / (na + nb - 2))
    effect = 0.0 if mean == 0 else (math.copysign(math.inf, mean) if pooled == 0 else mean / pooled)
    return Comparison(False, na + nb, na, nb, mean * scale, se * scale, (mean - half) * scale,
                      (mean + half) * scale, boot[0] * scale, boot[1] * scale, effect, t.t, t.df, t.p, t.direction,
                      u.statistic, u.opposite, u.p, u.direction, u.method, "Welch t", "Mann-Whitney U",
                      min(1.0, 2 / math.comb(na + nb, na)))


def comparison_detectable(c: Comparison, alpha: float, power: float = POWER) -> float:
    """The smallest difference (metric units) the t-test of ``c`` detects with ``power`` at ``alpha``,
    from the observed spread; ``inf`` when the rank test cannot reach ``alpha`` at this ``n`` (then no
    difference, however large, gives a verdict: both tests are needed)."""
    if c.min_p_wilcoxon >= alpha:
        return math.inf
    if c.paired:
        return detectable_difference(c.std_diff, c.n, alpha, power)
    # Welch: noncentrality δ / se with the Welch df, i.e. n = 1 and sd = se
    return detectable_difference(c.std_diff, 1, alpha, power, df=c.t_df)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values over the family of the non-``None`` entries:
    ``p̃_(i) = max_{j ≤ i} min(1, (m - j + 1) p_(j))`` with ``p_(1) ≤ … ≤ p_(m)`` (Holm 1979).
    Rejecting where ``p̃ < α`` controls the family-wise error rate at ``α``."""
    present = [(i, p) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(present, key=lambda x: x[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def decide(claim: str | None, p_t: float, p_wilcoxon: float, t_direction: int, wilcoxon_direction: int, n: int,
           alpha: float = ALPHA) -> str:
    """Verdict on a directional claim (module docstring); the p-values are the family-adjusted ones.
    ``claim=None`` (no stated direction, a sweep report): **a higher** / **a lower** when both tests are
    significant and agree."""
    if claim is not None and claim not in CLAIMS:
        raise ValueError(f"claim must be one of {', '.join(CLAIMS)}, got {claim!r}")
    if p_t < alpha and p_wilcoxon < alpha and t_direction != 0 and wilcoxon_direction != 0:
        if t_direction != wilcoxon_direction:
            return DISAGREE
        if claim is None:
            return A_HIGHER if t_direction > 0 else A_LOWER
        return SUPPORTED if t_direction == (1 if claim == "greater" else -1) else CONTRADICTED
    return f"no significant difference at n={n}"


def assess_family(comparisons: Sequence[Comparison], claims: Sequence[str | None], alpha: float = ALPHA,
                  power: float = POWER) -> list[dict]:
    """Holm over the family (the t and the rank p-values each), the verdict of each comparison on its
    claim, and its detectable difference at ``α/m`` (see the module docstring)."""
    m = len(comparisons)
    p_t = holm([c.p_t for c in comparisons])
    p_w = holm([c.p_wilcoxon for c in comparisons])
    level = alpha / m if m else alpha
    return [{"p_t_holm": pt, "p_wilcoxon_holm": pw, "verdict": decide(claim, pt, pw, c.t_direction,
                                                                       c.wilcoxon_direction, c.n_a, alpha),
             "detectable": comparison_detectable(c, level, power), "detectable_alpha": level, "family_size": m}
            for c, claim, pt, pw in zip(comparisons, claims, p_t, p_w, strict=True)]


def direction_word(direction: int) -> str:
    return {1: "a > b", -1: "a < b", 0: "none"}[direction]


# --- across settings -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Friedman:
    strategies: list[str]
    settings: list[str]
    ranks: list[list[float]]  # per setting, per strategy (1 = best)
    mean_ranks: list[float]
    statistic: float
    p: float
    critical_difference: float  # Nemenyi, at alpha
    alpha: float

    def as_dict(self) -> dict:
        return asdict(self)


def friedman(values: Sequence[Sequence[float]], strategies: Sequence[str], settings: Sequence[str],
             higher_is_better: bool = True, alpha: float = ALPHA) -> Friedman:
    """Friedman test over ``N`` settings (rows) × ``k`` strategies (columns), ranks 1 = best, midranks
    for ties. ``χ²_F = 12 Σ_j (R_j - N(k+1)/2)² / (N k (k+1) - Σ(t³ - t)/(k - 1))`` with ``R_j`` the rank
    sums and the tie groups ``t`` of every row; p from ``χ²_{k-1}``. Nemenyi critical difference of
    average ranks: ``CD = q_α(k, ∞)/√2 · √(k(k+1)/(6N))``, ``q`` the studentized range quantile
    (Demšar 2006, JMLR 7:1-30)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 3:
        raise ValueError(f"the Friedman test needs at least 2 settings x 3 strategies, got shape {x.shape}")
    n_settings, k = x.shape
    ranks = np.array([midranks(-row if higher_is_better else row) for row in x])
    rank_sums = ranks.sum(axis=0)
    ties = sum(float(np.sum(t ** 3 - t)) for t in (_tie_sizes(row) for row in ranks))
    denominator = n_settings * k * (k + 1) - ties / (k - 1)
    statistic = 12 * float(np.sum((rank_sums - n_settings * (k + 1) / 2) ** 2)) / denominator if denominator else 0.0
    p = float(sps.chi2.sf(statistic, k - 1)) if denominator else 1.0
    q = float(sps.studentized_range.ppf(1 - alpha, k, np.inf))
    cd = q / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n_settings))
    return Friedman(list(strategies), list(settings), ranks.tolist(), (rank_sums / n_settings).tolist(),
                    statistic, p, cd, alpha)


def nemenyi_cliques(mean_ranks: Sequence[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``[i, j]`` (positions in rank order) of strategies whose average ranks differ by
    less than ``cd``: the bars of a critical-difference diagram."""
    order = sorted(mean_ranks)
    runs = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and order[j + 1] - order[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return runs


# -- tuning budgets -------------------------------------------------------------------------------------

def expected_max(scores: Sequence[float], n: int) -> float:
    """Expected best score of ``n`` trials drawn (with replacement) from the observed trial scores — the
    expected validation performance of a tuning budget of ``n`` trials (Dodge et al. 2019, "Show your work",
    eq. 1): with the ``N`` scores sorted ``v_(1) ≤ … ≤ v_(N)``,
    ``E[max_n] = Σ_i v_(i) [(i/N)^n − ((i−1)/N)^n]``."""
    v = np.sort(np.asarray(scores, dtype=float))
    if v.size == 0 or n < 1:
        raise ValueError("expected_max needs at least one score and n >= 1")
    i = np.arange(1, v.size + 1)
    weights = (i / v.size) ** n - ((i - 1) / v.size) ** n
    return float((v * weights).sum())


def expected_max_curve(scores: Sequence[float], confidence: float = 1 - ALPHA,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """``expected_max`` for ``n = 1..N`` with a percentile bootstrap band: the ``N`` trials resampled
    with replacement ``resamples`` times (fixed seed), the curve of each resample, its ``(1 ± confidence)/2``
    quantiles per ``n``."""
    v = np.asarray(scores, dtype=float)
    ns = list(range(1, v.size + 1))
    rng = np.random.default_rng(seed)
    samples = np.sort(v[rng.integers(0, v.size, size=(resamples, v.size))], axis=1)
    i = np.arange(1, v.size + 1)
    curves = np.stack([(samples * ((i / v.size) ** n - ((i - 1) / v.size) ** n)).sum(axis=1) for n in ns], axis=1)
    low, high = np.quantile(curves, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    return {"n": ns, "mean": [expected_max(v, n) for n in ns], "low": low.tolist(), "high": high.tolist()}
