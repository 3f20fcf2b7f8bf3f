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
        - claim: gradients separate trained from 20 random networks (networks as the replicates)
          greater: {metric: {...}, higher: trained, lower: ["random[seeds=20]", "random[init=pytorch]"]}
        - claim: early act×grad maps do not tell trained from random (equivalence, TOST)
          greater: {metric: {...}, higher: trained, lower: random, layers: shallowest, expect: same, margin: 0.01}
        - claim: adversarial training changes the maps (two models of the suite: MODEL/VARIANT)
          greater: {metric: {score: noise_score}, higher: lenet_adv/trained, lower: lenet/trained}
        - claim: the variance score stays near its 1/4 bound
          above: {metric: {score: variance_score, saliency: gradients}, threshold: 0.2}
        - claim: the noise score falls as drift grows
          drift: {sign: positive}       # of Spearman(lambda, relative drop)
        - claim: constraints cost no accuracy
          replicates: {within: 0.02, match: "_ns$"}   # groups (regex) whose mean >= baseline's - within
        - claim: constraints improve accuracy
          replicates: {improves: true, match: "_ns$"}  # groups whose mean > baseline's

How each kind is judged (p < 0.05 throughout; each verdict keeps the p-value it rests on):

* ``greater``: see :mod:`repreval.comparisons`;
* ``above`` / ``below`` a threshold: each row (model · variant · dataset) is its value with its standard error
  over inputs (a curve: each input's mean over the layers; an accuracy stored as one fraction of n inputs:
  sqrt(p (1 - p) / n)), tested one-sided with Student's t;
* ``below`` ``than``: Welch's t-test per row against the other metric;
* ``correlation``: Spearman's two-sided p;
* ``drift``: per input, Spearman(lambda, relative drop) over the drifted lambdas; Wilcoxon's signed-rank test
  of those rhos against 0 over the inputs (the inputs are the replicates, not the (lambda, input) pairs);
* ``replicates``: per group, its mean minus its baseline's with the standard error over the seeds (paired by
  seed when both ran the same seeds, else Welch; one seed: the networks' errors over inputs); ``within: W`` is
  a non-inferiority test (difference > -W), ``improves: true`` a superiority test (difference > 0).

A claim over several units (rows, groups, model variants) agrees when every unit passes (an intersection-union
test: the largest p decides) and disagrees when some unit is significantly on the wrong side (Holm across the
units). Then Holm's correction runs across every claim of the report that has a p-value (``Verdict.p_report``):
an agreement or disagreement that is not significant after it becomes inconclusive.

``repreval run`` and ``repreval leaderboard DIR --format markdown`` write ``DIR/report.md`` and ``DIR/plots/``.
"""

from __future__ import annotations

import json
import math
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
    check_drift,
    check_replicates,
    correlate,
    drift,
    readings_of,
    replicates,
    selected,
)
from .claims import parse_report
from .comparisons import check_greater
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
from .groups import canonical, is_group
from .statistics import holm
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
    variant_groups: list[str] = field(default_factory=list)  # seed groups the suite declares (random[seeds=20])

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
            variant_groups=sorted({
                canonical(choice.label)
                for choices in (suite.variants, *suite.model_variants.values())
                for choice in choices
                if is_group(choice.label)
            }),
        )  # fmt: skip

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
    seed = records[0].seed if records else 0  # the bootstrap's: the same values, the same interval
    drift_results = drift(records, config.drift, facts.strengths, seed) if config.drift else []
    replicate_rows = replicates(records, config.replicates, facts.groups, facts.baselines) if config.replicates else []
    verdicts = []
    for claim in config.claims:
        verdict = _verdict(claim, records, config, drift_results, replicate_rows, seed)
        verdict.claim, verdict.paper = claim.claim, claim.paper
        verdicts.append(verdict)
    correct_across_claims(verdicts)
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
                test=claim.test, readings=claim.readings, margin=claim.margin, seed=seed,
            )  # fmt: skip
        case AboveClaim():
            return check_above(records, claim.metric, float(claim.threshold))
        case BelowClaim():
            threshold = None if claim.threshold is None else float(claim.threshold)
            return check_below(records, claim.metric, threshold, claim.than, seed)
        case CorrelationClaim():
            return _correlation_verdict(records, config.correlations[claim.index], claim.sign)
        case DriftClaim():
            return check_drift(drift_results, claim.sign)
        case ReplicatesClaim():
            chosen = [row for row in replicate_rows if re.search(claim.match, row.group)]
            return check_replicates(chosen, replicate_rows, float(claim.within), claim.improves)
    raise TypeError(f"no check for {type(claim).__name__}")  # every claim of CLAIM_TYPES has its case


def _correlation_verdict(records: list[ScoreRecord], pair: tuple[MetricSelector, MetricSelector], sign: str) -> Verdict:
    """The correlation's verdict, re-checked with each metric read every way it can be (raw, above chance)."""
    x, y = pair
    verdict = check_correlation(correlate(records, x, y), sign)
    x_readings = readings_of(selected(records, x))
    y_readings = readings_of(selected(records, y))
    for x_reading in x_readings:
        for y_reading in y_readings:
            again = correlate(records, replace(x, reading=x_reading), replace(y, reading=y_reading))
            reading = x_reading if len(y_readings) == 1 else f"{x_reading} / {y_reading}"
            verdict.checks.append(
                Robustness("", reading, check_correlation(again, sign).verdict, [again.rho], [again.p])
            )
    return verdict


def correct_across_claims(verdicts: list[Verdict]) -> None:
    """Holm's correction across the report's claims: set each verdict's ``p_report`` (its ``p`` adjusted over
    every claim that has one), and make inconclusive a verdict that rested on significance (agrees, disagrees)
    and is no longer significant after it, saying so in its evidence."""
    tested = [(v, v.p) for v in verdicts if v.p is not None and not math.isnan(v.p)]
    for (verdict, _), adjusted in zip(tested, holm([p for _, p in tested])):
        verdict.p_report = adjusted
        if verdict.verdict != "inconclusive" and adjusted >= SIGNIFICANCE:
            verdict.evidence += (
                f"; {verdict.verdict} at p {verdict.p:.2g}, but Holm across {len(tested)} claims {adjusted:.2g}"
            )
            verdict.uncorrected, verdict.verdict = verdict.verdict, "inconclusive"
