"""A suite's findings, computed from its records and the facts the run stored (``report_facts.json``): the
correlations, drift, replicates and the paper's claims checked against the numbers. :mod:`repreval.render.report`
writes them, with the leaderboards and plots, as ``report.md``.

What the report shows beyond the leaderboards is declared in the suite's ``report:`` section (parsed and
checked by :mod:`repreval.claims`)::

    report:
      title: Downstream performance (paper 4.2)
      correlations:                     # Spearman across the rows (model · variant · dataset)
        - x: {score: noise_score, saliency: gradients, channels: abs, components: mean}
          y: classifier_accuracy.top1
      drift: {metric: {score: noise_score, saliency: gradients, layer: encoder.block2}}
      replicates: {metric: {score: classifier_accuracy.top1, variant: trained}, also: [noise_score]}
      curves: [{score: noise_score}]    # default: every attribution score with two or more layers
      claims:
        - claim: predictive variants have higher noise scores
          paper: '"very strong" rank correlation'
          correlation: {index: 0, sign: positive}
        - claim: gradients separate trained from random at every layer
          greater: {metric: {score: noise_score, saliency: gradients}, higher: trained, lower: random, layers: every}
        - claim: early act×grad maps do not tell trained from random
          greater: {metric: {...}, higher: trained, lower: random, layers: shallowest, expect: same}
        - claim: the variance score stays near its 1/4 bound
          above: {metric: {score: variance_score, saliency: gradients}, threshold: 0.2}
        - claim: the noise score falls as drift grows
          drift: {sign: positive}       # of Spearman(lambda, relative drop)
        - claim: constraints cost no accuracy
          replicates: {within: 0.02, match: "_ns$"}   # groups (regex) whose mean >= baseline's - within

``repreval run`` and ``repreval leaderboard DIR --format markdown`` write ``DIR/report.md`` and ``DIR/plots/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from .analysis import (
    SIGNIFICANCE,
    Correlation,
    DriftResult,
    ReplicateRow,
    Robustness,
    Verdict,
    check_above,
    check_below,
    check_correlation,
    check_greater,
    correlate,
    drift,
    readings_of,
    replicates,
    selected,
)
from .claims import parse_report
from .config import (
    AboveClaim,
    BelowClaim,
    Claim,
    CorrelationClaim,
    DriftClaim,
    GreaterClaim,
    MetricSelector,
    ReplicatesClaim,
    ReportConfig,
    Suite,
)
from .store import ScoreRecord

#: Written next to the records at run time: everything a report needs besides them.
FACTS_FILE = "report_facts.json"


# ---------------------------------------------------------------------------------------------
# Building


@dataclass
class Findings:
    """What a suite's records show: the records, and the analyses and claim verdicts computed from them
    (everything ``report.md`` shows)."""

    title: str
    description: str
    records: list[ScoreRecord]
    correlations: list[Correlation]
    drift: list[DriftResult]
    drift_metric: MetricSelector | None
    replicates: list[ReplicateRow]
    replicates_metric: MetricSelector | None
    replicates_also: list[tuple[MetricSelector, dict[str, ReplicateRow]]]  # extra columns, rows by group
    verdicts: list[Verdict]
    curve_metrics: list[MetricSelector] | None


@dataclass
class SuiteFacts:
    """What the findings need from the suite: its report section, drift strengths, model groups.

    Stored as ``DIR/report_facts.json`` by the run, so a results folder renders on any machine, without the
    suite's datasets or plugins."""

    name: str = ""
    description: str = ""
    report: dict | None = None  # the suite's ``report:`` mapping, as validated when the suite was parsed
    strengths: dict[str, float] = field(default_factory=dict)  # dataset -> drift lambda (0 if none)
    groups: dict[str, str] = field(default_factory=dict)  # model id -> replicate group
    baselines: dict[str, str | None] = field(default_factory=dict)  # group -> baseline group
    source: str = ""  # the suite file the run read, as given on the command line ("" for one built in memory)

    @classmethod
    def of(cls, suite: Suite) -> SuiteFacts:
        """The facts of ``suite``, as a run stores them."""
        return cls(
            name=suite.name,
            description=suite.description,
            report=suite.raw.get("report"),
            strengths={
                name: (config.drift.strength if config.drift else 0.0)
                for name, config in suite.datasets.items()
                if name in suite.evaluation.datasets
            },
            groups={model_id: config.group or model_id for model_id, config in suite.models.items()},
            baselines={config.group or model_id: config.baseline for model_id, config in suite.models.items()},
            source=str(suite.path) if suite.path else "",
        )

    @property
    def config(self) -> ReportConfig:
        """The ``report:`` section parsed (an empty :class:`ReportConfig` when there is none)."""
        return parse_report(self.report, f"{FACTS_FILE}: report")

    def to_json(self) -> str:
        """These facts as the JSON of ``report_facts.json``."""
        return json.dumps(vars(self), indent=1, sort_keys=True, default=str)


def build_findings(records: list[ScoreRecord], facts: SuiteFacts) -> Findings:
    """Compute the correlations, drift, replicates and claim verdicts that ``facts.config`` asks for."""
    config = facts.config
    correlations = [correlate(records, x, y) for x, y in config.correlations]
    drift_results = drift(records, config.drift, facts.strengths) if config.drift else []
    replicate_rows = replicates(records, config.replicates, facts.groups, facts.baselines) if config.replicates else []
    seed = records[0].seed if records else 0  # the bootstrap's: the same values, the same interval
    verdicts = []
    for claim in config.claims:
        verdict = _verdict(claim, records, config, drift_results, replicate_rows, seed)
        verdict.claim, verdict.paper = claim.claim, claim.paper
        verdicts.append(verdict)
    return Findings(
        title=config.title or facts.name,
        description=facts.description,
        records=records,
        correlations=correlations,
        drift=drift_results,
        drift_metric=config.drift,
        replicates=replicate_rows,
        replicates_metric=config.replicates,
        replicates_also=[
            (m, {r.group: r for r in replicates(records, m, facts.groups, facts.baselines)})
            for m in config.replicates_also
        ],
        verdicts=verdicts,
        curve_metrics=config.curves,
    )


def _verdict(
    claim: Claim,
    records: list[ScoreRecord],
    config: ReportConfig,
    drift_results: list[DriftResult],
    replicate_rows: list[ReplicateRow],
    seed: int,
) -> Verdict:
    """The verdict on one claim (its ``claim`` and ``paper`` left empty), checked as its kind says."""
    match claim:
        case GreaterClaim():
            return check_greater(
                records, claim.metric, claim.higher, claim.lower, claim.layers, claim.expect,
                test=claim.test, readings=claim.readings, seed=seed,
            )  # fmt: skip
        case AboveClaim():
            return Verdict("", "", *check_above(records, claim.metric, float(claim.threshold)))
        case BelowClaim():
            threshold = None if claim.threshold is None else float(claim.threshold)
            return check_below(records, claim.metric, threshold, claim.than, seed)
        case CorrelationClaim():
            return _correlation_verdict(records, config.correlations[claim.index], claim.sign)
        case DriftClaim():
            return Verdict("", "", *_drift_verdict(drift_results, claim.sign))
        case ReplicatesClaim():
            chosen = [row for row in replicate_rows if re.search(claim.match, row.group)]
            return Verdict("", "", *_replicates_verdict(chosen, replicate_rows, float(claim.within)))
    raise TypeError(f"no check for {type(claim).__name__}")  # every claim of CLAIM_TYPES has its case


def _correlation_verdict(records: list[ScoreRecord], pair: tuple[MetricSelector, MetricSelector], sign: str) -> Verdict:
    """The correlation's verdict, re-checked with each metric read every way it can be (raw, above chance)."""
    x, y = pair
    verdict = Verdict("", "", *check_correlation(correlate(records, x, y), sign))
    x_readings = readings_of(selected(records, x))
    y_readings = readings_of(selected(records, y))
    for x_reading in x_readings:
        for y_reading in y_readings:
            again = correlate(records, replace(x, reading=x_reading), replace(y, reading=y_reading))
            reading = x_reading if len(y_readings) == 1 else f"{x_reading} / {y_reading}"
            verdict.checks.append(Robustness("", reading, check_correlation(again, sign)[0], [again.rho], [again.p]))
    return verdict


def _drift_verdict(results: list[DriftResult], sign: str) -> tuple[str, str]:
    if not results:
        return "inconclusive", "no drift results"
    verdicts = []
    for result in results:
        right = result.rho > 0 if sign == "positive" else result.rho < 0
        significant = result.p < SIGNIFICANCE
        verdicts.append("agrees" if right and significant else "disagrees" if significant else "inconclusive")
    evidence = "; ".join(f"{r.model} · {r.variant}: rho = {r.rho:.3f} (p = {r.p:.2g})" for r in results)
    verdict = (
        "agrees" if all(v == "agrees" for v in verdicts) else "disagrees" if "disagrees" in verdicts else "inconclusive"
    )
    return verdict, evidence


def _replicates_verdict(rows: list[ReplicateRow], every: list[ReplicateRow], within: float) -> tuple[str, str]:
    """Is each of ``rows`` at least its baseline's mean minus ``within``?"""
    by_group = {row.group: row for row in every}
    compared = [(row, by_group[row.baseline]) for row in rows if row.baseline in by_group]
    if not compared:
        return "inconclusive", "no group has a baseline"
    worse = [
        f"{row.group}: {row.mean:.3f} vs {base.mean:.3f}" for row, base in compared if row.mean < base.mean - within
    ]
    evidence = f"{len(compared) - len(worse)} of {len(compared)} groups within {within} of their baseline or above"
    return ("agrees" if not worse else "disagrees"), evidence + ("; below: " + ", ".join(worse) if worse else "")
