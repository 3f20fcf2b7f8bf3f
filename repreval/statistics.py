"""Comparisons behind the claims of a report: a test, an effect size, a bootstrap confidence interval and,
when one claim makes several tests, Holm's correction.

Trained and random networks are scored on the same inputs, so their per-input values are *paired*: the
default test is Wilcoxon's signed-rank test on the differences (no normality assumed), the paired t-test is
an option, and Welch's unpaired t-test is kept for values that do not pair (different inputs).

Effect sizes: the mean difference with its 95 % bootstrap confidence interval (BCa, seeded), plus a
standardised effect named after the test: the matched-pairs rank-biserial correlation r for Wilcoxon (-1:
every input lower, +1: every input higher), Cohen's d_z (mean difference / its standard deviation) for the
paired t-test, Hedges' g for Welch.

When the replicates are networks (one network against K random copies): the exact rank p-value of where it
falls among them (:func:`rank_p`; no assumption beyond exchangeable networks, but never below ``1 / (K + 1)``)
and the t-test of a prediction interval (:func:`prediction_p`). Equivalence (two one-sided tests, TOST, within a
margin): :func:`equivalence_p` for per-input values, :func:`prediction_equivalence_p` for one network against K.
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
    from scipy.special import stdtr

    t, df = _welch_t(x, y)
    return float(2 * stdtr(df, -abs(t)))


def _welch_t(x, y, shift: float = 0.0) -> tuple[float, float]:
    """Welch's t of ``mean(x) - mean(y) - shift`` and its degrees of freedom. Two constant samples give an
    infinite t (a certain difference) or NaN (nothing to test), as do fewer than two values a side (NaN)."""
    import numpy as np

    if len(x) < 2 or len(y) < 2:
        return math.nan, 1.0
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    gap = float(x.mean() - y.mean() - shift)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if vx + vy == 0:
        return (math.copysign(math.inf, gap) if gap else math.nan), 1.0
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return gap / float(np.sqrt(vx + vy)), float(df)


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


# ---------------------------------------------------------------------------------------------
# Networks as the replicates, and equivalence (two one-sided tests)


def rank_p(value: float, others: Sequence[float]) -> tuple[float, float]:
    """Where ``value`` falls among ``others`` (K values of networks of one kind): the exact one-sided rank
    p-values ``(1 + #{others >= value}) / (K + 1)`` (that ``value`` is above them) and
    ``(1 + #{others <= value}) / (K + 1)`` (below them), valid when the K + 1 networks are exchangeable."""
    count = len(others) + 1
    return (1 + sum(o >= value for o in others)) / count, (1 + sum(o <= value for o in others)) / count


def copies_needed(alpha: float, tests: int = 1) -> int:
    """The fewest copies K for which the smallest rank p-value, ``tests / (K + 1)`` after Holm over ``tests``
    comparisons, is below ``alpha``."""
    copies = max(1, math.ceil(tests / alpha) - 1)
    while tests / (copies + 1) >= alpha:
        copies += 1
    return copies


def equivalence_p(a: Sequence[float], b: Sequence[float], test: str, margin: float) -> tuple[float, float]:
    """Two one-sided tests (TOST) that ``a - b`` lies within ``±margin``, by the one-sided form of ``test``:
    the p that the difference is above ``-margin`` and the p that it is below ``+margin`` (equivalence at level
    alpha when both are below it). Paired tests shift the per-input differences ``d``: Wilcoxon's signed-rank test
    of ``d + margin > 0`` and ``d - margin < 0``, the one-sample t-test likewise; Welch shifts the samples."""
    import numpy as np
    from scipy.special import stdtr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if test == "welch":
        t_low, df_low = _welch_t(x, y, -margin)
        t_high, df_high = _welch_t(x, y, margin)
        return float(stdtr(df_low, -t_low)), float(stdtr(df_high, t_high))
    if len(x) != len(y):
        raise ValueError(f"paired values differ in number ({len(x)} vs {len(y)})")
    d = x - y
    if len(d) < 2:
        return math.nan, math.nan
    if test == "wilcoxon":
        return _signed_rank_one_sided(d + margin, "greater"), _signed_rank_one_sided(d - margin, "less")
    sd = float(d.std(ddof=1))
    if sd == 0:
        return float(d[0] + margin <= 0), float(d[0] - margin >= 0)
    scale = sd / math.sqrt(len(d))
    t_low, t_high = (d.mean() + margin) / scale, (d.mean() - margin) / scale
    return float(stdtr(len(d) - 1, -t_low)), float(stdtr(len(d) - 1, t_high))


def _signed_rank_one_sided(d, alternative: str) -> float:
    """One-sided p of Wilcoxon's signed-rank test that ``d`` is centred above (``greater``) or below (``less``)
    zero, zero differences dropped as in :func:`_wilcoxon`."""
    from scipy.stats import wilcoxon

    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return 1.0
    return float(wilcoxon(nonzero, zero_method="wilcox", alternative=alternative).pvalue)


def prediction_p(value: float, others: Sequence[float]) -> float:
    """Two-sided p that one network's ``value`` is not a draw from the distribution of K networks' ``others``
    (normal, mean and sd estimated from them): ``t = (value - mean) / (sd · sqrt(1 + 1/K))``, K - 1 degrees of
    freedom, the t-test behind a prediction interval."""
    from scipy.special import stdtr

    t, df = _prediction_t(value, others, 0.0)
    return float(2 * stdtr(df, -abs(t)))


def prediction_equivalence_p(value: float, others: Sequence[float], margin: float) -> tuple[float, float]:
    """TOST of one network's ``value`` against K networks' ``others``: is ``value - mean(others)`` within
    ``±margin``? Each side a one-sided :func:`prediction_p` t-test,
    ``t = (value - mean ∓ margin) / (sd · sqrt(1 + 1/K))`` with K - 1 degrees of freedom (sd with ddof 1): the
    p that the gap is above ``-margin`` and the p that it is below ``+margin``."""
    from scipy.special import stdtr

    t_low, df = _prediction_t(value, others, -margin)
    t_high, _ = _prediction_t(value, others, margin)
    return float(stdtr(df, -t_low)), float(stdtr(df, t_high))


def _prediction_t(value: float, others: Sequence[float], shift: float) -> tuple[float, float]:
    """``(value - mean(others) - shift) / (sd · sqrt(1 + 1/K))`` and K - 1; NaN for fewer than two others, an
    infinite t (or NaN at a zero gap) when they do not spread."""
    count = len(others)
    if count < 2:
        return math.nan, 1.0
    gap = value - math.fsum(others) / count - shift
    sd = _sd(others)
    if sd == 0:
        return (math.copysign(math.inf, gap) if gap else math.nan), float(count - 1)
    return gap / (sd * math.sqrt(1 + 1 / count)), float(count - 1)


def _sd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1)."""
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
