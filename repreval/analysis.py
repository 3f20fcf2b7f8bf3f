"""Records -> the analyses a report shows (pure data; plots and Markdown live in :mod:`repreval.render`).

* correlations: Spearman's rank correlation between two metrics across the rows of a results directory
  (model · variant · dataset), e.g. the average noise score against linear-probe accuracy;
* drift: the relative noise score ``(NS(x) - NS(x_lambda)) / NS(x)`` per input over a sweep of drifted
  datasets, and its Spearman correlation with lambda;
* replicates: a metric over models that differ only in their seed (mean ± std), with the training time
  relative to a baseline group (e.g. score-constrained vs unconstrained training);
* claims: a finding of the paper checked against the numbers: agrees / disagrees / inconclusive.

A metric is chosen with a :class:`MetricSelector` (``{score: noise_score, saliency: gradients, ...}``);
its value for a row is the mean of the score curve over probe layers, or the value at ``layer``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean, pstdev

from .config import MetricSelector
from .errors import ReprevalError
from .store import ScoreRecord

Row = tuple[str, str, str | None]  # (model, variant, dataset; None for embedding scores)

SIGNIFICANCE = 0.05


def _plain(label: str) -> str:
    """``linear_probe[test=a,train=b].top1`` -> ``linear_probe.top1`` (options dropped)."""
    return re.sub(r"\[[^\]]*\]", "", label)


def selects(selector: MetricSelector, record: ScoreRecord) -> bool:
    """Whether ``record`` (a finished one) belongs to the metric ``selector`` names."""
    wanted = (
        (selector.score, record.score),
        (selector.saliency, record.saliency),
        (selector.channels, record.channel_aggregator),
        (selector.components, record.embedding_aggregator),
        (selector.layer, record.layer),
        (selector.variant, record.variant),
        (selector.model, record.model),
    )
    return record.status == "ok" and all(w is None or (v is not None and w in (v, _plain(v))) for w, v in wanted)


def metric_values(records: list[ScoreRecord], selector: MetricSelector) -> dict[Row, float]:
    """Per row, the mean over the matching records (the curve mean over layers, or one layer's value)."""
    found: dict[Row, list[float]] = defaultdict(list)
    for record in records:
        if selects(selector, record):
            found[(record.model, record.variant, record.dataset)].append(record.ok_value())
    metrics = {
        (r.score, r.saliency, r.channel_aggregator, r.embedding_aggregator) for r in records if selects(selector, r)
    }
    if len(metrics) > 1:
        raise ReprevalError(
            f"metric {selector.label!r} matches {len(metrics)} different scores, e.g. {sorted(metrics, key=str)[:2]}",
            fix="name saliency, channels and components in the report's metric",
        )
    return {row: fmean(values) for row, values in found.items()}


def row_name(row: Row, rows: list[Row]) -> str:
    """The shortest name telling ``row`` apart among ``rows``."""
    parts = [part for i, part in enumerate(row) if len({r[i] for r in rows}) > 1 and part is not None]
    return " · ".join(parts) or " · ".join(p for p in row if p is not None)


def _row_key(row: Row) -> tuple[str, str, str]:
    return (row[0], row[1], row[2] or "")


def spearman(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy); NaN when undefined (fewer than 3 points or ties only)."""
    from scipy.stats import spearmanr

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return float("nan"), float("nan")
    result = spearmanr(xs, ys)
    return float(result.statistic), float(result.pvalue)


@dataclass
class Correlation:
    """Spearman's rho (and p-value) between metrics ``x`` and ``y``, with the points it was computed from."""

    x: MetricSelector
    y: MetricSelector
    rho: float
    p: float
    points: list[tuple[str, float, float]]  # (row name, x, y)


def correlate(records: list[ScoreRecord], x: MetricSelector, y: MetricSelector) -> Correlation:
    """Spearman between ``x`` and ``y`` over the rows that have both. Embedding scores (one per model
    variant) pair with every dataset row of the same model variant."""
    xs, ys = metric_values(records, x), metric_values(records, y)

    def lookup(values: dict[Row, float], row: Row) -> float | None:
        return values[row] if row in values else values.get((row[0], row[1], None))

    everything = set(xs) | set(ys)
    rows = sorted(row for row in everything if row[2] is not None) or sorted(everything, key=_row_key)
    looked_up = [(row, lookup(xs, row), lookup(ys, row)) for row in rows]
    both = [(row, a, b) for row, a, b in looked_up if a is not None and b is not None]
    kept = [row for row, _, _ in both]
    points = [(row_name(row, kept), a, b) for row, a, b in both]
    rho, p = spearman([a for _, a, _ in points], [b for _, _, b in points])
    return Correlation(x, y, rho, p, points)


@dataclass
class DriftResult:
    """One model variant's per-input relative score drop at each drift strength lambda, and its Spearman
    correlation with lambda."""

    model: str
    variant: str
    lambdas: list[float]
    relative: dict[float, list[float]]  # lambda -> per-input relative score drop
    rho: float  # Spearman(lambda, relative drop) over every (lambda > 0, input) pair
    p: float
    rho_of_means: float  # over the per-lambda means
    p_of_means: float


def drift(records: list[ScoreRecord], selector: MetricSelector, strengths: dict[str, float]) -> list[DriftResult]:
    """Relative score drop per input for every drifted dataset against the undrifted one (lambda = 0).

    ``strengths``: dataset name -> lambda. The metric must be one layer's (``layer``) per-input values.
    """
    by_row: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(dict)
    for record in records:
        if selects(selector, record) and record.dataset in strengths:
            by_row[(record.model, record.variant)][strengths[record.dataset]] = record.values
    results = []
    for (model, variant), curves in sorted(by_row.items()):
        if 0.0 not in curves:
            raise ReprevalError(
                f"no undrifted (lambda = 0) results for {model} · {variant}",
                fix="add a dataset with drift 0 (or none) to the evaluation",
            )
        clean = curves[0.0]
        relative = {}
        for strength in sorted(curves):
            if len(curves[strength]) != len(clean):
                raise ReprevalError(
                    f"drift datasets differ in size ({len(curves[strength])} vs {len(clean)} inputs)",
                    fix="give every drifted dataset the same subset as the clean one",
                )
            relative[strength] = [(c - d) / c if c else 0.0 for c, d in zip(clean, curves[strength])]
        drifted = [s for s in relative if s > 0]
        rho, p = spearman([s for s in drifted for _ in relative[s]], [v for s in drifted for v in relative[s]])
        rho_means, p_means = spearman(drifted, [fmean(relative[s]) for s in drifted])
        results.append(DriftResult(model, variant, sorted(relative), relative, rho, p, rho_means, p_means))
    return results


@dataclass
class ReplicateRow:
    """A metric's values over the seed replicates of one model group, with their training times."""

    group: str
    baseline: str | None
    values: list[float]
    train_seconds: list[float]
    time_ratio: float | None = None  # mean training time / the baseline group's

    @property
    def mean(self) -> float:
        """Mean of ``values``."""
        return fmean(self.values)

    @property
    def std(self) -> float:
        """Population standard deviation of ``values`` (0.0 for a single value)."""
        return pstdev(self.values) if len(self.values) > 1 else 0.0


def replicates(
    records: list[ScoreRecord], selector: MetricSelector, groups: dict[str, str], baselines: dict[str, str | None]
) -> list[ReplicateRow]:
    """Mean ± std of a metric per model group; training time relative to each group's baseline."""
    rows: dict[str, ReplicateRow] = {}
    for record in records:
        if not selects(selector, record):
            continue
        group = groups.get(record.model, record.model)
        row = rows.setdefault(group, ReplicateRow(group, baselines.get(group), [], []))
        row.values.append(record.ok_value())
        if "train_seconds" in record.extras:
            row.train_seconds.append(record.extras["train_seconds"])
    for row in rows.values():
        base = rows.get(row.baseline) if row.baseline else None
        if base and base.train_seconds and row.train_seconds:
            row.time_ratio = fmean(row.train_seconds) / fmean(base.train_seconds)
    order = list(dict.fromkeys(groups.values()))
    return sorted(rows.values(), key=lambda r: order.index(r.group) if r.group in order else len(order))


# ---------------------------------------------------------------------------------------------
# Claims: a paper's finding, checked


@dataclass
class Verdict:
    """A paper's claim checked against the results: the verdict, its evidence and per-layer details."""

    claim: str
    paper: str
    verdict: str  # "agrees", "disagrees" or "inconclusive"
    evidence: str
    details: list[str] = field(default_factory=list)


def _welch(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``, whose import
    alone takes half a second: the statistic by hand, the t distribution from ``scipy.special``)."""
    import numpy as np
    from scipy.special import stdtr

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if vx + vy == 0:  # two constant samples: certainly different, or nothing to test
        return 0.0 if x.mean() != y.mean() else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x.mean() - y.mean()) / np.sqrt(vx + vy)
        df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
        return float(2 * stdtr(df, -np.abs(t)))


def check_greater(
    records: list[ScoreRecord], selector: MetricSelector, higher: str, lower: str, layers: str, expect: str = "higher"
) -> tuple[str, str, list[str]]:
    """Is variant ``higher`` above variant ``lower`` (Welch's t-test on per-input values, p < 0.05)?

    ``layers``: ``every`` (each probe layer), ``curve`` (all layers pooled), ``deepest`` or ``shallowest``.
    ``expect: higher``: agrees when every judged layer is significantly higher, disagrees when one is
    significantly lower, else inconclusive. ``expect: same`` (the paper finds no difference): agrees when
    no judged layer differs significantly, disagrees when one does.
    Returns (verdict, evidence, per-layer details).
    """
    by_layer: dict[tuple[int, str], dict[str, ScoreRecord]] = defaultdict(dict)
    for record in records:
        if selects(selector, record) and record.variant in (higher, lower):
            by_layer[(record.layer_index, record.layer)][record.variant] = record
    complete = {key: pair for key, pair in sorted(by_layer.items()) if len(pair) == 2}
    if not complete:
        return "inconclusive", f"no results for both {higher} and {lower}", []
    outcomes, details = [], []
    for (_, layer), pair in complete.items():
        a, b = pair[higher], pair[lower]
        p = _welch(a.values, b.values)
        va, vb = a.ok_value(), b.ok_value()
        outcome = (
            "agrees"
            if va > vb and p < SIGNIFICANCE
            else "disagrees"
            if va < vb and p < SIGNIFICANCE
            else "inconclusive"
        )
        outcomes.append(outcome)
        details.append(f"{layer}: {va:.4f} vs {vb:.4f} (p = {p:.2g})")
    if layers in ("deepest", "shallowest"):
        outcomes = outcomes[-1:] if layers == "deepest" else outcomes[:1]
    elif layers == "curve":
        pooled_a = [v for pair in complete.values() for v in pair[higher].values]
        pooled_b = [v for pair in complete.values() for v in pair[lower].values]
        p = _welch(pooled_a, pooled_b)
        ma, mb = fmean(pooled_a), fmean(pooled_b)
        outcomes = [
            "agrees"
            if ma > mb and p < SIGNIFICANCE
            else "disagrees"
            if ma < mb and p < SIGNIFICANCE
            else "inconclusive"
        ]
        details.insert(0, f"curve: {ma:.4f} vs {mb:.4f} (p = {p:.2g})")
    if expect == "same":
        verdict = "agrees" if all(o == "inconclusive" for o in outcomes) else "disagrees"
    else:
        verdict = (
            "agrees"
            if all(o == "agrees" for o in outcomes)
            else "disagrees"
            if "disagrees" in outcomes
            else "inconclusive"
        )
    outcomes = [
        {"agrees": "higher", "disagrees": "lower", "inconclusive": "no significant difference"}[o] for o in outcomes
    ]
    counts = {o: outcomes.count(o) for o in dict.fromkeys(outcomes)}
    scope = {
        "every": "each layer",
        "curve": "all layers pooled",
        "deepest": "deepest layer",
        "shallowest": "shallowest layer",
    }[layers]
    evidence = f"{higher} vs {lower} ({scope}): " + ", ".join(f"{n} {o}" for o, n in counts.items())
    return verdict, evidence, details


def check_correlation(correlation: Correlation, sign: str) -> tuple[str, str]:
    """Does the Spearman correlation have the expected sign, significantly (p < 0.05)?"""
    rho, p = correlation.rho, correlation.p
    evidence = f"rho = {rho:.3f}, p = {p:.2g}, n = {len(correlation.points)}"
    if rho != rho:  # NaN
        return "inconclusive", evidence
    right = rho > 0 if sign == "positive" else rho < 0
    if p < SIGNIFICANCE:
        return ("agrees" if right else "disagrees"), evidence
    return "inconclusive", evidence


def check_above(records: list[ScoreRecord], selector: MetricSelector, threshold: float) -> tuple[str, str]:
    """Is every matching row's metric (curve mean) at least ``threshold``?"""
    values = metric_values(records, selector)
    if not values:
        return "inconclusive", "no results"
    rows = sorted(values, key=_row_key)  # not record order: unit ids differ between machines
    below = [f"{row_name(r, rows)} {values[r]:.3f}" for r in rows if values[r] < threshold]
    evidence = f"{len(rows) - len(below)} of {len(rows)} at or above {threshold:g}" + (
        f"; below: {', '.join(below)}" if below else ""
    )
    return ("agrees" if not below else "disagrees"), evidence
