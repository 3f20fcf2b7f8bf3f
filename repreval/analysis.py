"""Records -> the analyses a report shows (pure data; plots and Markdown live in :mod:`repreval.render`).

* correlations: Spearman's rank correlation between two metrics across the rows of a results directory
  (model · variant · dataset), e.g. the average noise score against linear-probe accuracy;
* drift: the relative noise score ``(NS(x) - NS(x_lambda)) / NS(x)`` per input over a sweep of drifted
  datasets; per input, its Spearman correlation with lambda, tested over the inputs (Wilcoxon);
* replicates: a metric over models that differ only in their seed (mean ± std), with the training time
  relative to a baseline group (e.g. score-constrained vs unconstrained training), and each group's difference
  from its baseline with its standard error (:func:`replicate_difference`);
* claims: a finding of the paper checked against the numbers: agrees / disagrees / inconclusive, with the
  p-value it rests on, and whether that verdict is robust (the same for every random copy and every reading of
  the metric); thresholds are judged with each row's standard error (:class:`Estimate`).

A metric is chosen with a :class:`MetricSelector` (``{score: noise_score, saliency: gradients, ...}``);
its value for a row is the mean of the score curve over probe layers, or the value at ``layer``, read raw
or relative to the chance level (``reading``, see :func:`read_values`).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean, median, pstdev, stdev

from .config import READINGS, MetricSelector
from .errors import ReprevalError
from .statistics import Comparison, compare, holm
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
    """The readings every one of ``records`` has: raw; minus chance when each has a chance level; over chance
    too when each chance level is positive (a dead random network's is 0: nothing to divide by)."""
    if not records or any(r.reference is None for r in records):
        return ("raw",)
    return READINGS if all(r.reference is not None and r.reference > 0 for r in records) else ("raw", "minus_chance")


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
    """One model variant's per-input relative score drop at each drift strength lambda; per input, Spearman's
    correlation of that drop with lambda over the drifted lambdas, and those correlations tested over the inputs.

    The inputs are the replicates: the (lambda, input) pairs of one input are not independent of each other."""

    model: str
    variant: str
    lambdas: list[float]
    relative: dict[float, list[float]]  # lambda -> per-input relative score drop
    input_rhos: list[float]  # per input: Spearman(drifted lambdas, its relative drop); NaN where undefined
    over_inputs: Comparison | None  # Wilcoxon signed-rank of the defined input_rhos against 0 (two-sided);
    # None with fewer than two defined
    rho_of_means: float  # over the per-lambda means: a description, blind to the spread between inputs
    p_of_means: float

    def count(self, sign: str) -> int:
        """How many inputs' trends have ``sign`` (positive or negative)."""
        return sum(rho > 0 if sign == "positive" else rho < 0 for rho in self.input_rhos)

    @property
    def defined(self) -> int:
        """How many inputs have a trend (a drop that varies with lambda)."""
        return sum(not math.isnan(rho) for rho in self.input_rhos)

    @property
    def median_rho(self) -> float:
        """The median of the inputs' rhos (NaN where none is defined)."""
        defined = [rho for rho in self.input_rhos if not math.isnan(rho)]
        return median(defined) if defined else math.nan

    def describe(self, sign: str) -> str:
        """``holds in 49 of 64 inputs (median rho 0.35), Wilcoxon p = 1.2e-05``."""
        if self.over_inputs is None:
            return f"{self.defined} inputs with a trend (three drifted lambdas and a varying drop needed)"
        return (
            f"holds in {self.count(sign)} of {self.defined} inputs (median rho {self.median_rho:.2f}), "
            f"Wilcoxon p = {self.over_inputs.p:.2g}"
        )


def drift(
    records: list[ScoreRecord], selector: MetricSelector, strengths: dict[str, float], seed: int = 0
) -> list[DriftResult]:
    """Relative score drop per input for every drifted dataset against the undrifted one (lambda = 0), its trend
    per input and that trend tested over the inputs (``seed``: the bootstrap interval of the mean rho).

    ``strengths``: dataset name -> lambda. The metric must be one layer's (``layer``) per-input values.
    """
    by_row: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(dict)
    for record in selected(records, selector):
        if record.dataset in strengths:
            by_row[(record.model, record.variant)][strengths[record.dataset]] = record.values
    results = []
    for (model, variant), curves in sorted(by_row.items()):
        relative = _relative_drops(model, variant, curves)
        drifted = [s for s in relative if s > 0]
        rhos = [spearman(drifted, [relative[s][i] for s in drifted])[0] for i in range(len(relative[0.0]))]
        defined = [rho for rho in rhos if not math.isnan(rho)]
        over_inputs = compare(defined, [0.0] * len(defined), "wilcoxon", seed) if len(defined) > 1 else None
        rho_means, p_means = spearman(drifted, [fmean(relative[s]) for s in drifted])
        results.append(DriftResult(model, variant, sorted(relative), relative, rhos, over_inputs, rho_means, p_means))
    return results


def _relative_drops(model: str, variant: str, curves: dict[float, list[float]]) -> dict[float, list[float]]:
    """lambda -> each input's ``(clean - drifted) / clean`` (0 where the clean value is 0), lambda 0 included."""
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
    return relative


@dataclass
class ReplicateRow:
    """A metric's values over the seed replicates of one model group, with their training times."""

    group: str
    baseline: str | None
    values: list[float]
    train_seconds: list[float]
    time_ratio: float | None = None  # mean training time / the baseline group's
    members: list[str] = field(default_factory=list)  # the model ids behind ``values``, in their order
    within: list[Estimate] = field(default_factory=list)  # each member's value with its error over inputs

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
        row.members.append(record.model)
        row.within.append(row_estimate([record], "raw"))
        if "train_seconds" in record.extras:
            row.train_seconds.append(record.extras["train_seconds"])
    for row in rows.values():
        base = rows.get(row.baseline) if row.baseline else None
        if base and base.train_seconds and row.train_seconds:
            row.time_ratio = fmean(row.train_seconds) / fmean(base.train_seconds)
    order = list(dict.fromkeys(groups.values()))
    return sorted(rows.values(), key=lambda r: order.index(r.group) if r.group in order else len(order))


def _seeds(row: ReplicateRow) -> dict[str, float]:
    """Seed -> value, for members named ``GROUP@SEED`` (a suite's ``seeds: [...]``)."""
    return {
        member.removeprefix(f"{row.group}@"): value
        for member, value in zip(row.members, row.values)
        if member.startswith(f"{row.group}@")
    }


def replicate_difference(row: ReplicateRow, base: ReplicateRow) -> Estimate:
    """``row``'s mean minus ``base``'s with its standard error, over the networks where there are several:

    * paired over the seeds when both groups ran the same two or more seeds (a seed fixes the initialisation and
      the batch order, so each seed's difference is one replicate of the effect): SD of the differences / sqrt(k);
    * else Welch over the seeds when each group has two or more;
    * else from each network's own error over its inputs (:func:`row_estimate`), which leaves out how much
      networks of different seeds differ.
    """
    mine, theirs = _seeds(row), _seeds(base)
    if len(mine) == len(row.values) > 1 and len(theirs) == len(base.values) and mine.keys() == theirs.keys():
        return mean_estimate([mine[seed] - theirs[seed] for seed in mine], "seeds, paired")
    if len(row.values) > 1 and len(base.values) > 1:
        a, b = mean_estimate(row.values, "seeds"), mean_estimate(base.values, "seeds")
        return _difference(a, b, f"Welch over {len(row.values)} and {len(base.values)} seeds")
    a, b = _mean_of(row.within), _mean_of(base.within)
    return _difference(a, b, "over inputs: one network per group" if a.se is not None else a.basis)


# ---------------------------------------------------------------------------------------------
# Estimates: a mean with its standard error (threshold and replicates claims)


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) with its standard error and the degrees of freedom of that error
    (``inf``: normal); ``se`` is None where nothing gives one (one value of unknown spread)."""

    value: float
    se: float | None
    df: float = math.inf
    basis: str = ""  # where the error comes from: "64 inputs", "3 seeds, paired", "binomial, n = 2000"

    def describe(self, signed: bool = False) -> str:
        """``0.021 ± 0.0097 (SE, 64 inputs)``, or ``0.888 (no standard error: ...)``."""
        value = f"{self.value:+.4g}" if signed else f"{self.value:.4g}"
        if self.se is None:
            return f"{value} (no standard error: {self.basis})"
        return f"{value} ± {self.se:.2g} (SE, {self.basis})"

    def one_sided(self, bound: float) -> tuple[float, float]:
        """One-sided p-values of "the true value is above ``bound``" and of "below ``bound``": Student's t with
        ``df`` on ``(value - bound) / se`` (normal for inf df); NaN without a standard error, 0 or 1 with a zero one."""
        from scipy.special import stdtr

        if self.se is None:
            return math.nan, math.nan
        gap = self.value - bound
        if self.se == 0:
            return (0.0 if gap > 0 else 1.0), (0.0 if gap < 0 else 1.0)
        t = gap / self.se
        return float(stdtr(self.df, -t)), float(stdtr(self.df, t))


def mean_estimate(values: Sequence[float], unit: str = "inputs") -> Estimate:
    """The mean of ``values`` with its standard error SD / sqrt(n) (ddof 1) and n - 1 degrees of freedom."""
    n = len(values)
    if n < 2:
        return Estimate(values[0] if values else math.nan, None, basis=f"{n} {unit}")
    return Estimate(fmean(values), stdev(values) / math.sqrt(n), n - 1, f"{n} {unit}")


def _satterthwaite(parts: Sequence[Estimate]) -> float:
    """Degrees of freedom of a sum of independent errors (Welch-Satterthwaite); inf where each part's is."""
    variance = sum(part.se**2 for part in parts if part.se is not None)
    spread = sum(part.se**4 / part.df for part in parts if part.se is not None and math.isfinite(part.df))
    return variance**2 / spread if spread > 0 else math.inf


def _difference(a: Estimate, b: Estimate, basis: str) -> Estimate:
    """``a - b``, independent: their errors added in quadrature."""
    if a.se is None or b.se is None:
        return Estimate(a.value - b.value, None, basis=basis)
    return Estimate(a.value - b.value, math.hypot(a.se, b.se), _satterthwaite((a, b)), basis)


def _mean_of(parts: Sequence[Estimate]) -> Estimate:
    """The mean of independent estimates, with its error (sqrt of the summed variances / k)."""
    value = fmean(part.value for part in parts)
    errors = [part.se for part in parts if part.se is not None]
    if len(errors) < len(parts):
        return Estimate(value, None, basis=next(part.basis for part in parts if part.se is None))
    se = math.sqrt(sum(error**2 for error in errors)) / len(parts)
    basis = parts[0].basis if len(parts) == 1 else f"{len(parts)} networks, over inputs"
    return Estimate(value, se, _satterthwaite(parts), basis)


def row_estimate(records: list[ScoreRecord], reading: str) -> Estimate:
    """A row's value (the mean over its records: one per layer of a curve) with its standard error over inputs:
    each input's mean over the records, then SD / sqrt(n) (ddof 1). A fraction of n inputs stored without its
    per-input values (an accuracy): the binomial sqrt(p (1 - p) / n)."""
    per_record = [read_values(record, reading) for record in records]
    if all(len(values) > 1 for values in per_record):
        count = len(per_record[0])
        if any(len(values) != count for values in per_record):
            raise ReprevalError(
                f"{records[0].model} · {records[0].variant}: the layers were scored on different inputs",
                fix="name one layer in the claim's metric (layer: NAME)",
            )
        return mean_estimate([fmean(column) for column in zip(*per_record)])
    record = records[0] if len(records) == 1 else None
    if record is not None and reading == "raw" and _is_fraction(record):
        p, n = record.ok_value(), record.n_inputs
        return Estimate(p, math.sqrt(p * (1 - p) / n), basis=f"binomial, n = {n}")
    value = fmean(fmean(values) for values in per_record)
    return Estimate(value, None, basis="one value per network and no per-input values or input count")


def _is_fraction(record: ScoreRecord) -> bool:
    """A value in [0, 1] of a score bounded by 1 (an accuracy), over ``n_inputs`` inputs."""
    return record.bound == 1.0 and record.n_inputs > 1 and 0.0 <= record.ok_value() <= 1.0


# ---------------------------------------------------------------------------------------------
# Claims: a paper's finding, checked (``greater`` claims in :mod:`repreval.comparisons`)


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
    # The p-value the verdict rests on (None: a check without a test, e.g. a bare threshold), and that p after
    # Holm's correction across every claim of the report (set by repreval.findings)
    p: float | None = None
    p_report: float | None = None
    uncorrected: str | None = None  # the verdict before Holm across the claims made it inconclusive

    @property
    def robust(self) -> bool | None:
        """True when every check gives the same verdict as the claim's own test (before any correction across
        claims: the checks are not corrected); None when there were no other checks."""
        if len(self.checks) < 2:
            return None
        return all(check.verdict == (self.uncorrected or self.verdict) for check in self.checks)

    @property
    def robustness(self) -> str:
        """``robust (6 of 6)`` or ``not robust: agrees 2, disagrees 4 of 6``; ``—`` without checks."""
        if self.robust is None:
            return "—"
        if self.robust:
            before = f", {self.uncorrected} before the correction across claims" if self.uncorrected else ""
            return f"robust ({len(self.checks)} of {len(self.checks)}{before})"
        counts = {v: sum(c.verdict == v for c in self.checks) for v in ("agrees", "disagrees", "inconclusive")}
        return "not robust: " + ", ".join(f"{v} {n}" for v, n in counts.items() if n) + f" of {len(self.checks)}"


def outcome(comparison: Comparison) -> str:
    """``agrees`` (significantly higher), ``disagrees`` (significantly lower) or ``inconclusive``."""
    significant = comparison.p_used < SIGNIFICANCE
    if significant and comparison.direction > 0:
        return "agrees"
    if significant and comparison.direction < 0:
        return "disagrees"
    return "inconclusive"


def every_unit(p_for: Sequence[float], p_against: Sequence[float]) -> tuple[str, float | None]:
    """The verdict on "every unit (row, group, model variant) is on the claimed side" from each unit's p-value
    for that side and against it: disagrees when some unit is significantly on the wrong side after Holm across
    the units; agrees when every unit is significantly on the claimed side (an intersection-union test: each
    must pass at 0.05, so the largest p decides and no correction is due); else inconclusive. With the p the
    verdict rests on: the smallest adjusted p against, or the largest p for (None where a unit has none)."""
    against = [p for p in holm(p_against) if not math.isnan(p)]
    if against and min(against) < SIGNIFICANCE:
        return "disagrees", min(against)
    if not p_for or any(math.isnan(p) for p in p_for):
        return "inconclusive", None
    worst = max(p_for)
    return ("agrees" if worst < SIGNIFICANCE else "inconclusive"), worst


def _directed(p: float, right: bool) -> tuple[float, float]:
    """A two-sided p-value as (for, against) the claimed direction: it counts for the side the effect lies on."""
    return (p, 1.0) if right else (1.0, p)


def _summary(head: str, lines: list[str], p_for: Sequence[float]) -> str:
    """``head``, then the one unit's line, or the lines of the units that did not pass (three at most)."""
    if len(lines) == 1:
        return f"{head}: {lines[0]}"
    failing = [line for line, p in zip(lines, p_for) if not p < SIGNIFICANCE]
    more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
    return head + ("; not: " + "; ".join(failing[:3]) + more if failing else "")


def check_correlation(correlation: Correlation, sign: str) -> Verdict:
    """Does the Spearman correlation have the expected sign, significantly (two-sided p < 0.05)?"""
    rho, p = correlation.rho, correlation.p
    evidence = f"rho = {rho:.3f}, p = {p:.2g}, n = {len(correlation.points)}"
    if math.isnan(rho):
        return Verdict("", "", "inconclusive", evidence)
    right = rho > 0 if sign == "positive" else rho < 0
    verdict = ("agrees" if right else "disagrees") if p < SIGNIFICANCE else "inconclusive"
    return Verdict("", "", verdict, evidence, p=p)


def check_threshold(records: list[ScoreRecord], selector: MetricSelector, threshold: float, side: str) -> Verdict:
    """Is every matching row's metric significantly ``side`` (``above`` or ``below``) ``threshold``? Each row
    (model · variant · dataset) is its value with its standard error (:func:`row_estimate`), judged by a
    one-sided t-test; the rows together by :func:`every_unit`."""
    by_row: dict[Row, list[ScoreRecord]] = defaultdict(list)
    for record in selected(records, selector):
        by_row[(record.model, record.variant, record.dataset)].append(record)
    if not by_row:
        return Verdict("", "", "inconclusive", "no results")
    rows = sorted(by_row, key=_row_key)  # not record order: unit ids differ between machines
    estimates = [row_estimate(by_row[row], selector.reading) for row in rows]
    above, below = zip(*(estimate.one_sided(threshold) for estimate in estimates))
    p_for, p_against = (above, below) if side == "above" else (below, above)
    verdict, p = every_unit(p_for, p_against)
    lines = [f"{row_name(row, rows)} {e.describe()}, p = {q:.2g}" for row, e, q in zip(rows, estimates, p_for)]
    passed = sum(q < SIGNIFICANCE for q in p_for)
    head = f"{passed} of {len(rows)} rows significantly {side} {threshold:g} (one-sided t on the standard error)"
    return Verdict("", "", verdict, _summary(head, lines, p_for), lines if len(lines) > 1 else [], p=p)


def check_above(records: list[ScoreRecord], selector: MetricSelector, threshold: float) -> Verdict:
    """Is every matching row's metric (curve mean) significantly above ``threshold``? See :func:`check_threshold`."""
    return check_threshold(records, selector, threshold, "above")


def check_below(
    records: list[ScoreRecord],
    selector: MetricSelector,
    threshold: float | None,
    than: MetricSelector | None,
    seed: int,
) -> Verdict:
    """Is every matching row's metric significantly below ``threshold`` (:func:`check_threshold`), or (``than``)
    significantly below the other metric of the same row (model · variant · dataset; Welch's t-test on the
    per-item values, which need not pair)?"""
    if than is None:
        assert threshold is not None  # the claim parser requires one of the two
        return check_threshold(records, selector, threshold, "below")
    mine = {(r.model, r.variant, r.dataset): r for r in selected(records, selector)}
    theirs = {(r.model, r.variant, r.dataset): r for r in selected(records, than)}
    rows = sorted(mine, key=_row_key)
    if not rows:
        return Verdict("", "", "inconclusive", "no results")
    judged, details = [], []
    for row in rows:
        if row not in theirs:
            continue
        result = compare(theirs[row].values, mine[row].values, test="welch", seed=seed)
        judged.append(_directed(result.p, result.direction > 0))
        details.append(f"{row_name(row, rows)}: {result.mean_b:.3f} vs {result.mean_a:.3f}, {result.describe()}")
    if not judged:
        return Verdict("", "", "inconclusive", f"no row has both {selector.label} and {than.label}")
    p_for, p_against = zip(*judged)
    verdict, p = every_unit(p_for, p_against)
    passed = sum(q < SIGNIFICANCE for q in p_for)
    return Verdict("", "", verdict, f"{passed} of {len(judged)} rows significantly below {than.label}", details, p=p)


def check_drift(results: list[DriftResult], sign: str) -> Verdict:
    """Does each model variant's relative drop trend with lambda in ``sign`` (positive or negative) over its
    inputs: Wilcoxon's signed-rank test of the per-input Spearman rhos against 0 (two-sided, p < 0.05)?"""
    if not results:
        return Verdict("", "", "inconclusive", "no drift results")
    judged = [
        (math.nan, math.nan)
        if result.over_inputs is None
        else _directed(result.over_inputs.p, result.over_inputs.direction == (1 if sign == "positive" else -1))
        for result in results
    ]
    verdict, p = every_unit(*zip(*judged))
    evidence = "; ".join(f"{r.model} · {r.variant}: {r.describe(sign)}" for r in results)
    return Verdict("", "", verdict, f"Spearman(lambda, relative drop) per input: {evidence}", p=p)


def check_replicates(rows: list[ReplicateRow], every: list[ReplicateRow], within: float, improves: bool) -> Verdict:
    """Is each of ``rows`` significantly above its baseline's mean minus ``within`` (non-inferiority), or with
    ``improves`` above the baseline's mean itself (superiority)? A one-sided t-test of the difference of the means
    with its standard error (:func:`replicate_difference`) per group; the groups together by :func:`every_unit`."""
    by_group = {row.group: row for row in every}
    compared = [(row, by_group[row.baseline]) for row in rows if row.baseline in by_group]
    if not compared:
        return Verdict("", "", "inconclusive", "no group has a baseline")
    differences = [replicate_difference(row, base) for row, base in compared]
    p_for, p_against = zip(*(d.one_sided(0.0 if improves else -within) for d in differences))
    verdict, p = every_unit(p_for, p_against)
    lines = [
        f"{row.group} − {base.group}: {d.describe(signed=True)}, p = {q:.2g}"
        for (row, base), d, q in zip(compared, differences, p_for)
    ]
    goal = "above their baseline" if improves else f"above their baseline minus {within:g} (non-inferiority)"
    head = f"{sum(q < SIGNIFICANCE for q in p_for)} of {len(compared)} groups significantly {goal}"
    return Verdict("", "", verdict, _summary(head, lines, p_for), lines if len(lines) > 1 else [], p=p)
