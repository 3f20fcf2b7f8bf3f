"""Records -> the analyses a report shows (pure data; plots and Markdown live in :mod:`repreval.render`).

* correlations: Spearman's rank correlation between two metrics across the rows of a results directory
  (model · variant · dataset), e.g. the average noise score against linear-probe accuracy;
* drift: the relative noise score ``(NS(x) - NS(x_lambda)) / NS(x)`` per input over a sweep of drifted
  datasets, and its Spearman correlation with lambda;
* replicates: a metric over models that differ only in their seed (mean ± std), with the training time
  relative to a baseline group (e.g. score-constrained vs unconstrained training);
* claims: a finding of the paper checked against the numbers: agrees / disagrees / inconclusive, and
  whether that verdict is robust (the same for every random copy and every reading of the metric).

A metric is chosen with a :class:`MetricSelector` (``{score: noise_score, saliency: gradients, ...}``);
its value for a row is the mean of the score curve over probe layers, or the value at ``layer``, read raw
or relative to the chance level (``reading``, see :func:`read_values`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from statistics import fmean, pstdev

from .config import READINGS, MetricSelector
from .errors import ReprevalError
from .statistics import PAIRED_TESTS, TESTS, Comparison, compare, holm
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


def selected(records: list[ScoreRecord], selector: MetricSelector) -> list[ScoreRecord]:
    """The finished records of the metric ``selector`` names. A label matches with or without its options
    (``grad_cam`` matches ``grad_cam[style=reference]``) unless some record matches it exactly; a selector that
    still matches several different scores is refused."""
    found = [record for record in records if selects(selector, record)]
    exact = [r for r in found if all(w is None or w == v for w, v in _labels(selector, r))]
    found = exact or found
    metrics = {(r.score, r.saliency, r.channel_aggregator, r.embedding_aggregator) for r in found}
    if len(metrics) > 1:
        raise ReprevalError(
            f"metric {selector.label!r} matches {len(metrics)} different scores, e.g. {sorted(metrics, key=str)[:2]}",
            fix="name saliency, channels and components in the report's metric",
        )
    return found


def _labels(selector: MetricSelector, record: ScoreRecord) -> list[tuple[str | None, str | None]]:
    return [
        (selector.score, record.score),
        (selector.saliency, record.saliency),
        (selector.channels, record.channel_aggregator),
        (selector.components, record.embedding_aggregator),
    ]


def read_values(record: ScoreRecord, reading: str) -> list[float]:
    """The record's per-input values as ``reading`` (one of READINGS) reads them:

    * ``raw``: as computed;
    * ``minus_chance``: each input's value minus the chance level of its noise pair (the same score between
      two noise inputs, at this layer, for this variant); their mean is the value minus the chance level;
    * ``over_chance``: each value divided by the chance level (its mean over the noise pairs).
    """
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}")
    if reading == "raw":
        return list(record.values)
    if record.reference is None:
        raise ReprevalError(
            f"score {record.score!r} has no chance level to read it against", fix="read it raw (reading: raw)"
        )
    if reading == "minus_chance":
        chance = record.reference_values
        if len(chance) != len(record.values):  # records written before per-input chance levels were kept
            chance = [record.reference] * len(record.values)
        return [v - c for v, c in zip(record.values, chance)]
    if record.reference <= 0:
        raise ReprevalError(
            f"{record.model} · {record.variant} · {record.layer}: chance level {record.reference:g}, "
            "nothing to divide by",
            fix="read it as minus_chance",
        )
    return [v / record.reference for v in record.values]


def read_value(record: ScoreRecord, reading: str) -> float:
    """The record's value (mean over inputs) as ``reading`` reads it."""
    return record.ok_value() if reading == "raw" else fmean(read_values(record, reading))


def readings_of(records: list[ScoreRecord]) -> tuple[str, ...]:
    """The readings every one of ``records`` has: all of READINGS when each has a positive chance level."""
    if records and all(r.reference is not None and r.reference > 0 for r in records):
        return READINGS
    return ("raw",)


def metric_values(records: list[ScoreRecord], selector: MetricSelector) -> dict[Row, float]:
    """Per row, the mean over the matching records (the curve mean over layers, or one layer's value)."""
    found: dict[Row, list[float]] = defaultdict(list)
    for record in selected(records, selector):
        found[(record.model, record.variant, record.dataset)].append(read_value(record, selector.reading))
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
    left_out: list[str] = field(default_factory=list)  # rows whose network embeds exactly as another's


def _same_signature(a: list[float], b: list[float]) -> bool:
    scale = max(1.0, *(abs(v) for v in a))
    return len(a) == len(b) and all(abs(u - v) <= 1e-5 * scale for u, v in zip(a, b))


def embedding_twins(records: list[ScoreRecord]) -> dict[tuple[str, str], str]:
    """(model, variant) -> the variant of the same model it embeds exactly like, for every variant whose
    embedding signature (runner.embedding_signature) equals that of one kept before it (trained first, then
    by name). Such a variant cannot change any attribution score: re-initialising the classifier layer is one."""
    signatures: dict[tuple[str, str], list[float]] = {}
    for record in records:
        if record.embedding_signature:
            signatures.setdefault((record.model, record.variant), record.embedding_signature)
    kept: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    twins = {}
    for model, variant in sorted(signatures, key=lambda key: (key[0], key[1] != "trained", key[1])):
        signature = signatures[(model, variant)]
        twin = next((name for name, other in kept[model] if _same_signature(other, signature)), None)
        if twin is None:
            kept[model].append((variant, signature))
        else:
            twins[(model, variant)] = twin
    return twins


def correlate(records: list[ScoreRecord], x: MetricSelector, y: MetricSelector) -> Correlation:
    """Spearman between ``x`` and ``y`` over the rows that have both. Embedding scores (one per model
    variant) pair with every dataset row of the same model variant. A variant that embeds exactly as
    another (:func:`embedding_twins`) is left out: it would enter the ranking twice with one set of scores."""
    xs, ys = metric_values(records, x), metric_values(records, y)

    def lookup(values: dict[Row, float], row: Row) -> float | None:
        return values[row] if row in values else values.get((row[0], row[1], None))

    twins = embedding_twins(records)
    everything = set(xs) | set(ys)
    rows = sorted(row for row in everything if row[2] is not None) or sorted(everything, key=_row_key)
    looked_up = [(row, lookup(xs, row), lookup(ys, row)) for row in rows]
    both = [(row, a, b) for row, a, b in looked_up if a is not None and b is not None]
    left_out = [f"{row[0]} · {row[1]} (embeds as {twins[row[:2]]})" for row, _, _ in both if row[:2] in twins]
    both = [(row, a, b) for row, a, b in both if row[:2] not in twins]
    kept = [row for row, _, _ in both]
    points = [(row_name(row, kept), a, b) for row, a, b in both]
    rho, p = spearman([a for _, a, _ in points], [b for _, _, b in points])
    return Correlation(x, y, rho, p, points, left_out)


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
    for record in selected(records, selector):
        if record.dataset in strengths:
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
    for record in selected(records, selector):
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
class Robustness:
    """One claim re-checked under another random copy or reading: its verdict and the effects it saw."""

    lower: str
    reading: str
    verdict: str
    differences: list[float]  # the judged mean differences (one per judged layer), or rho
    p_values: list[float]  # theirs (Holm-adjusted where several)


@dataclass
class Verdict:
    """A paper's claim checked against the results: the verdict, its evidence, per-layer details and how it
    fares under the other random copies and readings (``checks``; empty when there is nothing else to try)."""

    claim: str
    paper: str
    verdict: str  # "agrees", "disagrees" or "inconclusive"
    evidence: str
    details: list[str] = field(default_factory=list)
    checks: list[Robustness] = field(default_factory=list)

    @property
    def robust(self) -> bool | None:
        """True when every check gives the same verdict; None when there were no other checks."""
        if len(self.checks) < 2:
            return None
        return all(check.verdict == self.verdict for check in self.checks)

    @property
    def robustness(self) -> str:
        """``robust (6 of 6)`` or ``not robust: agrees 2, disagrees 4 of 6``; ``—`` without checks."""
        if self.robust is None:
            return "—"
        if self.robust:
            return f"robust ({len(self.checks)} of {len(self.checks)})"
        counts = {v: sum(c.verdict == v for c in self.checks) for v in ("agrees", "disagrees", "inconclusive")}
        return "not robust: " + ", ".join(f"{v} {n}" for v, n in counts.items() if n) + f" of {len(self.checks)}"


#: Which probe layers a ``greater`` claim judges, as the report words it
_SCOPES = {"every": "each layer", "curve": "the curve", "deepest": "deepest layer", "shallowest": "shallowest layer"}
_OUTCOMES = {"agrees": "higher", "disagrees": "lower", "inconclusive": "no significant difference"}


def _pairs(
    records: list[ScoreRecord], selector: MetricSelector, higher: str, lower: str
) -> list[tuple[str, ScoreRecord, ScoreRecord]]:
    """(layer, higher's record, lower's record) for every layer both variants have, shallowest first."""
    by_layer: dict[tuple[int, str], dict[str, ScoreRecord]] = defaultdict(dict)
    for record in selected(records, selector):
        if record.variant in (higher, lower):
            by_layer[(record.layer_index, record.layer)][record.variant] = record
    return [(layer, pair[higher], pair[lower]) for (_, layer), pair in sorted(by_layer.items()) if len(pair) == 2]


def compare_variants(
    records: list[ScoreRecord],
    selector: MetricSelector,
    higher: str,
    lower: str,
    layers: str,
    *,
    test: str = "wilcoxon",
    reading: str | None = None,
    seed: int = 0,
) -> list[tuple[str, Comparison]]:
    """The comparisons a ``greater`` claim judges: (layer, higher vs lower) for each judged layer, Holm-adjusted
    when there are several. ``layers``: ``every``, ``deepest``, ``shallowest``, or ``curve`` (one comparison of
    each input's mean over the layers). ``reading``: default the selector's."""
    reading = reading or selector.reading
    pairs = _pairs(records, selector, higher, lower)
    if layers == "deepest":
        pairs = pairs[-1:]
    elif layers == "shallowest":
        pairs = pairs[:1]
    judged = [(layer, read_values(a, reading), read_values(b, reading)) for layer, a, b in pairs]
    if test in PAIRED_TESTS:
        for layer, a, b in judged:
            if len(a) != len(b):
                raise ReprevalError(
                    f"{higher} and {lower} at {layer} have {len(a)} and {len(b)} inputs: values do not pair",
                    fix="evaluate both on the same dataset, or use test: welch",
                )
    if layers == "curve" and judged:
        count = len(judged[0][1])
        if any(len(a) != count for _, a, _ in judged):
            raise ReprevalError("the layers were scored on different inputs", fix="use layers: every")
        judged = [(
            "curve",
            [fmean(a[i] for _, a, _ in judged) for i in range(count)],
            [fmean(b[i] for _, _, b in judged) for i in range(count)],
        )]  # fmt: skip
    comparisons = [(layer, compare(a, b, test, seed)) for layer, a, b in judged]
    if len(comparisons) > 1:
        adjusted = holm([c.p for _, c in comparisons])
        comparisons = [(layer, replace(c, p_adjusted=p)) for (layer, c), p in zip(comparisons, adjusted)]
    return comparisons


def _outcome(comparison: Comparison) -> str:
    significant = comparison.p_used < SIGNIFICANCE
    if significant and comparison.direction > 0:
        return "agrees"
    if significant and comparison.direction < 0:
        return "disagrees"
    return "inconclusive"


def _verdict(comparisons: list[tuple[str, Comparison]], expect: str) -> str:
    if not comparisons:
        return "inconclusive"
    outcomes = [_outcome(c) for _, c in comparisons]
    if expect == "same":
        return "agrees" if all(o == "inconclusive" for o in outcomes) else "disagrees"
    if all(o == "agrees" for o in outcomes):
        return "agrees"
    return "disagrees" if "disagrees" in outcomes else "inconclusive"


def check_greater(
    records: list[ScoreRecord],
    selector: MetricSelector,
    higher: str,
    lower: str | list[str],
    layers: str,
    expect: str = "higher",
    *,
    test: str = "wilcoxon",
    readings: list[str] | None = None,
    seed: int = 0,
) -> Verdict:
    """Is variant ``higher`` above ``lower`` (per-input values paired, ``test``, p < 0.05 after Holm)?

    ``layers``: ``every`` (each probe layer, Holm across them), ``curve`` (each input's mean over the
    layers), ``deepest`` or ``shallowest``. ``expect: higher``: agrees when every judged layer is
    significantly higher, disagrees when one is significantly lower, else inconclusive. ``expect: same``
    (the paper finds no difference): agrees when no judged layer differs significantly, disagrees when one does.
    ``lower`` may list several random copies: the first decides the verdict (under the selector's reading);
    every copy under every reading in ``readings`` (default: all the records have) is checked too, and the
    verdict is robust when they all agree with it.
    """
    lowers = [lower] if isinstance(lower, str) else list(lower)
    primary = compare_variants(records, selector, higher, lowers[0], layers, test=test, seed=seed)
    claim = Verdict("", "", _verdict(primary, expect), "")
    if not primary:
        claim.evidence = f"no results for both {higher} and {lowers[0]}"
        return claim
    outcomes = [_OUTCOMES[_outcome(c)] for _, c in primary]
    counts = {o: outcomes.count(o) for o in dict.fromkeys(outcomes)}
    judged = ", ".join(f"{n} {o}" for o, n in counts.items())
    if len(primary) == 1:
        judged += f"; {primary[0][1].describe()}"
    reading = "" if selector.reading == "raw" else f", {selector.reading.replace('_', ' ')}"
    claim.evidence = f"{higher} vs {lowers[0]} ({_SCOPES[layers]}{reading}, {TESTS[test]}): {judged}"
    claim.details = [f"{layer}: {c.mean_a:.4f} vs {c.mean_b:.4f}, {c.describe()}" for layer, c in primary]
    compared = [r for r in selected(records, selector) if r.variant in (higher, *lowers)]
    for other in lowers:
        for other_reading in readings or readings_of(compared):
            comparisons = compare_variants(
                records, selector, higher, other, layers, test=test, reading=other_reading, seed=seed
            )
            if comparisons:
                differences, ps = [c.difference for _, c in comparisons], [c.p_used for _, c in comparisons]
                claim.checks.append(Robustness(other, other_reading, _verdict(comparisons, expect), differences, ps))
    return claim


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


def check_below(
    records: list[ScoreRecord],
    selector: MetricSelector,
    threshold: float | None,
    than: MetricSelector | None,
    seed: int,
) -> Verdict:
    """Is every matching row's metric at most ``threshold``, or (``than``) significantly below the other metric of
    the same row (model · variant · dataset; Welch's t-test on the per-item values, which need not pair)?"""
    from .statistics import compare

    values = metric_values(records, selector)
    if not values:
        return Verdict("", "", "inconclusive", "no results")
    rows = sorted(values, key=_row_key)
    if than is None:
        assert threshold is not None  # the claim parser requires one of the two
        above = [f"{row_name(r, rows)} {values[r]:.3f}" for r in rows if values[r] > threshold]
        evidence = f"{len(rows) - len(above)} of {len(rows)} at or below {threshold:g}" + (
            f"; above: {', '.join(above)}" if above else ""
        )
        return Verdict("", "", "disagrees" if above else "agrees", evidence)
    mine = {(r.model, r.variant, r.dataset): r for r in selected(records, selector)}
    theirs = {(r.model, r.variant, r.dataset): r for r in selected(records, than)}
    verdicts, details = [], []
    for row in rows:
        if row not in theirs:
            continue
        result = compare(theirs[row].values, mine[row].values, test="welch", seed=seed)
        verdicts.append(_outcome(result))
        details.append(f"{row_name(row, rows)}: {result.mean_b:.3f} vs {result.mean_a:.3f}, {result.describe()}")
    if not verdicts:
        return Verdict("", "", "inconclusive", f"no row has both {selector.label} and {than.label}")
    verdict = (
        "agrees" if all(v == "agrees" for v in verdicts) else "disagrees" if "disagrees" in verdicts else "inconclusive"
    )
    agreeing = sum(v == "agrees" for v in verdicts)
    return Verdict("", "", verdict, f"{agreeing} of {len(verdicts)} rows significantly below {than.label}", details)
