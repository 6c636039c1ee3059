"""Paired statistics for seed-matched comparisons, and the verdict rule.

Two strategies ``a`` and ``b`` are run with the same seeds; a seed fixes the initial weights and the
batch order, so run ``i`` of ``a`` and run ``i`` of ``b`` form a pair. With per-seed differences
``d_i = a_i - b_i``, ``i = 1..n``:

* mean ``d̄`` and sample standard deviation ``s`` (``ddof=1``);
* 95% confidence interval ``d̄ ± t_{0.975, n-1} · s / √n`` (Student t);
* paired t-test, two-sided: ``t = d̄ / (s / √n)`` with ``n - 1`` degrees of freedom
  (``scipy.stats.ttest_rel``);
* Wilcoxon signed-rank test, two-sided (``scipy.stats.wilcoxon``, exact distribution when there are no
  ties or zeros, else the normal approximation; zero differences are dropped). With no non-zero
  difference there is no evidence either way and ``p = 1``. The smallest two-sided p-value it can give is
  ``2 / 2**n``, so below ``n = 6`` it can never reach 0.05.

Verdict on a directional claim ("a > b" or "a < b"), at ``alpha = 0.05``: **supported** when both tests
give ``p < alpha`` and ``d̄`` points the claim's way; **contradicted** when both give ``p < alpha`` and
``d̄`` points the other way; otherwise **no significant difference at n=…**. Requiring both tests guards
against one outlying seed driving the t-test and against the Wilcoxon test's ignorance of magnitudes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
CLAIMS = ("greater", "less")
VERDICTS = ("supported", "contradicted", "no significant difference")


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single value
    n: int

    def format(self, digits: int = 2, scale: float = 1.0) -> str:
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    t_stat: float
    t_p: float
    wilcoxon_stat: float
    wilcoxon_p: float

    def as_dict(self) -> dict:
        return asdict(self)


def mean_std(values: Sequence[float]) -> MeanStd:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return MeanStd(float(x.mean()), std, int(x.size))


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTest:
    """Paired comparison of ``a`` and ``b`` (same seeds, same order); differences are ``a - b``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    n = int(a.size)
    if n < 2:
        raise ValueError(f"paired_test needs at least 2 pairs, got {n}")
    d = a - b
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if std == 0.0:
        # every pair differs by the same amount: no spread, so the t statistic is 0/0 or ±inf
        t_stat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        t_p = 1.0 if mean == 0.0 else 0.0
        half = 0.0
    else:
        res = sps.ttest_rel(a, b)
        t_stat, t_p = float(res.statistic), float(res.pvalue)
        half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    if np.count_nonzero(d) == 0:
        w_stat, w_p = 0.0, 1.0
    else:
        res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        w_stat, w_p = float(res.statistic), float(res.pvalue)
    return PairedTest(n, mean, std, mean - half, mean + half, t_stat, t_p, w_stat, w_p)


def verdict(test: PairedTest, claim: str, alpha: float = ALPHA) -> str:
    """``claim`` is "greater" (the claim says a > b) or "less" (a < b). See the module docstring."""
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {', '.join(CLAIMS)}, got {claim!r}")
    significant = test.t_p < alpha and test.wilcoxon_p < alpha
    if significant and test.mean_diff != 0.0:
        agrees = (test.mean_diff > 0) == (claim == "greater")
        return "supported" if agrees else "contradicted"
    return f"no significant difference at n={test.n}"
