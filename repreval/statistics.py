"""Comparisons behind the claims of a report: a test, an effect size, a bootstrap confidence interval and,
when one claim makes several tests, Holm's correction.

Trained and random networks are scored on the same inputs, so their per-input values are *paired*: the
default test is Wilcoxon's signed-rank test on the differences (no normality assumed), the paired t-test is
an option, and Welch's unpaired t-test is kept for values that do not pair (different inputs).

Effect sizes: the mean difference with its 95 % bootstrap confidence interval (BCa, seeded), plus a
standardised effect named after the test: the matched-pairs rank-biserial correlation r for Wilcoxon (-1:
every input lower, +1: every input higher), Cohen's d_z (mean difference / its standard deviation) for the
paired t-test, Hedges' g for Welch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Test name -> how reports print it
TESTS = {"wilcoxon": "Wilcoxon", "paired_t": "paired t", "welch": "Welch t"}
PAIRED_TESTS = ("wilcoxon", "paired_t")
EFFECTS = {"wilcoxon": "r", "paired_t": "d_z", "welch": "g"}
CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: means, the mean difference with its confidence interval, effect size, p-value."""

    test: str
    n: int  # pairs (paired tests) or the smaller sample (Welch)
    mean_a: float
    mean_b: float
    difference: float  # mean(a - b) for paired tests (= mean(a) - mean(b)), else mean(a) - mean(b)
    low: float  # confidence interval of the difference
    high: float
    effect: float
    p: float
    p_adjusted: float | None = None  # Holm, when the comparison is one of several of a claim

    @property
    def direction(self) -> int:
        """+1 when ``a`` is the larger by the test's own measure, -1 when ``b`` is, 0 for a tie: the sign of the
        effect size (Wilcoxon's rank-biserial r counts pairs, so it may disagree with the sign of a mean
        difference driven by a few large pairs), or of the difference where the effect is undefined."""
        value = self.effect if math.isfinite(self.effect) else self.difference
        return (value > 0) - (value < 0)

    @property
    def p_used(self) -> float:
        """The p-value a verdict reads: Holm-adjusted where the claim made several tests."""
        return self.p if self.p_adjusted is None else self.p_adjusted

    def describe(self) -> str:
        """``Δ = +0.0284 [+0.0210, +0.0351], r = 0.94, Wilcoxon p = 1.2e-06 (Holm 3.6e-06)``."""
        holm = f" (Holm {self.p_adjusted:.2g})" if self.p_adjusted is not None else ""
        return (
            f"Δ = {self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}], {EFFECTS[self.test]} = "
            f"{self.effect:.2f}, {TESTS[self.test]} p = {self.p:.2g}{holm}"
        )


def compare(a: Sequence[float], b: Sequence[float], test: str = "wilcoxon", seed: int = 0) -> Comparison:
    """Compare ``a`` with ``b`` by ``test`` (one of :data:`TESTS`); paired tests need equal lengths, in the
    same input order."""
    import numpy as np

    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; use one of {', '.join(TESTS)}")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if test in PAIRED_TESTS:
        if len(x) != len(y):
            raise ValueError(f"paired values differ in number ({len(x)} vs {len(y)})")
        d = x - y
        p, effect = (_wilcoxon(d) if test == "wilcoxon" else _paired_t(d)) if len(d) >= 2 else (math.nan, math.nan)
        low, high = bootstrap_interval((d,), seed)
        return Comparison(test, len(d), float(x.mean()), float(y.mean()), float(d.mean()), low, high, effect, p)
    p = welch_p(x, y)
    low, high = bootstrap_interval((x, y), seed)
    return Comparison(
        test, min(len(x), len(y)), float(x.mean()), float(y.mean()), float(x.mean() - y.mean()), low, high,
        _hedges_g(x, y), p,
    )  # fmt: skip


def _wilcoxon(d) -> tuple[float, float]:
    """Two-sided p of Wilcoxon's signed-rank test (zero differences dropped, scipy's exact or normal
    method) and the matched-pairs rank-biserial correlation."""
    import numpy as np
    from scipy.stats import rankdata, wilcoxon

    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return 1.0, 0.0
    ranks = rankdata(np.abs(nonzero))
    positive, negative = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    effect = float((positive - negative) / (positive + negative))
    return float(wilcoxon(nonzero, zero_method="wilcox").pvalue), effect


def _paired_t(d) -> tuple[float, float]:
    """Two-sided p of the paired t-test (the one-sample t-test of the differences) and Cohen's d_z."""
    import warnings

    from scipy.stats import ttest_1samp

    sd = float(d.std(ddof=1))
    if sd == 0:  # every difference the same: no spread to test against
        return (0.0 if d[0] != 0 else 1.0), (math.copysign(math.inf, d[0]) if d[0] != 0 else 0.0)
    with warnings.catch_warnings():  # "catastrophic cancellation" for nearly equal differences: still exact enough
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_1samp(d, 0.0).pvalue), float(d.mean() / sd)


def _hedges_g(x, y) -> float:
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return math.nan
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return 0.0 if x.mean() == y.mean() else math.copysign(math.inf, x.mean() - y.mean())
    return float((x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (nx + ny) - 9)))


def welch_p(x, y) -> float:
    """Two-sided p-value of Welch's t-test (``scipy.stats.ttest_ind(x, y, equal_var=False)``), by hand with
    ``scipy.special.stdtr`` (scipy.stats alone takes half a second to import)."""
    import numpy as np
    from scipy.special import stdtr

    if len(x) < 2 or len(y) < 2:
        return float("nan")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if vx + vy == 0:  # two constant samples: certainly different, or nothing to test
        return 0.0 if x.mean() != y.mean() else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x.mean() - y.mean()) / np.sqrt(vx + vy)
        df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
        return float(2 * stdtr(df, -np.abs(t)))


def bootstrap_interval(samples: tuple, seed: int) -> tuple[float, float]:
    """95 % BCa bootstrap interval of the mean of one sample, or of the difference of two sample means
    (resampled independently), from ``RESAMPLES`` seeded resamples; a constant statistic gives a point."""
    import numpy as np
    from scipy.stats import bootstrap

    def statistic(*data, axis=-1):
        return data[0].mean(axis=axis) - (data[1].mean(axis=axis) if len(data) > 1 else 0.0)

    point = float(statistic(*samples))
    if any(len(s) < 2 for s in samples) or all(np.ptp(s) == 0 for s in samples):
        return point, point
    import warnings

    with warnings.catch_warnings():  # BCa warns (and gives NaN) for degenerate resamples; percentile then
        warnings.simplefilter("ignore")
        result = bootstrap(samples, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                           rng=np.random.default_rng(seed), vectorized=True)  # fmt: skip
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            result = bootstrap(samples, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                               rng=np.random.default_rng(seed), vectorized=True, method="percentile")  # fmt: skip
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return low, high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control): the i-th smallest p times (m - i + 1),
    made monotone, capped at 1. NaN stays NaN and does not count towards m."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
