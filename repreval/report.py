"""The Markdown report of a results directory: leaderboards, score curves, correlations, drift,
replicates and the paper's claims checked against the numbers, with matplotlib plots.

What a report shows beyond the leaderboards is declared in the suite's ``report:`` section::

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

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .analysis import (
    Correlation,
    DriftResult,
    MetricSelector,
    ReplicateRow,
    Verdict,
    check_above,
    check_correlation,
    check_greater,
    correlate,
    drift,
    replicates,
)
from .errors import ReprevalError
from .leaderboard import build_leaderboards
from .registry import suggest
from .store import ResultStore, ScoreRecord, write_atomic

CLAIM_KINDS = ("greater", "above", "correlation", "drift", "replicates")
LAYER_MODES = ("every", "curve", "deepest", "shallowest")


@dataclass
class Claim:
    claim: str
    paper: str
    kind: str
    options: dict


@dataclass
class ReportConfig:
    title: str = ""
    correlations: list[tuple[MetricSelector, MetricSelector]] = field(default_factory=list)
    drift: MetricSelector | None = None
    replicates: MetricSelector | None = None
    replicates_also: list[MetricSelector] = field(default_factory=list)  # extra columns of the replicates table
    curves: list[MetricSelector] | None = None  # None: every multi-layer attribution board
    claims: list[Claim] = field(default_factory=list)


def parse_report(spec: Any, where: str) -> ReportConfig:
    """The ``report:`` section, checked completely (bad keys fail at ``repreval validate``)."""
    if spec is None:
        return ReportConfig()
    if not isinstance(spec, dict):
        raise ReprevalError("report must be a mapping", where=where)
    known = ("title", "correlations", "drift", "replicates", "curves", "claims")
    for key in spec:
        if key not in known:
            raise ReprevalError(f"unknown key {key!r}", where=where, fix=suggest(key, known))
    config = ReportConfig(title=str(spec.get("title", "")))
    for i, pair in enumerate(spec.get("correlations") or []):
        at = f"{where}.correlations[{i}]"
        if not isinstance(pair, dict) or set(pair) != {"x", "y"}:
            raise ReprevalError("each correlation is {x: METRIC, y: METRIC}", where=at)
        config.correlations.append((MetricSelector.parse(pair["x"], f"{at}.x"), MetricSelector.parse(pair["y"], f"{at}.y")))
    for key in ("drift", "replicates"):
        if spec.get(key) is not None:
            section = spec[key]
            allowed = {"metric", "also"} if key == "replicates" else {"metric"}
            if not isinstance(section, dict) or "metric" not in section or not set(section) <= allowed:
                raise ReprevalError(f"{key} is {{metric: METRIC{', also: [METRIC, ...]' if key == 'replicates' else ''}}}", where=f"{where}.{key}")
            setattr(config, key, MetricSelector.parse(section["metric"], f"{where}.{key}.metric"))
    if config.replicates is not None:
        also = spec["replicates"].get("also") or []
        config.replicates_also = [MetricSelector.parse(m, f"{where}.replicates.also[{i}]") for i, m in enumerate(also)]
    if spec.get("curves") is not None:
        config.curves = [MetricSelector.parse(item, f"{where}.curves[{i}]") for i, item in enumerate(spec["curves"])]
    for i, item in enumerate(spec.get("claims") or []):
        config.claims.append(_parse_claim(item, f"{where}.claims[{i}]", config))
    return config


def _parse_claim(item: Any, where: str, config: ReportConfig) -> Claim:
    if not isinstance(item, dict) or "claim" not in item:
        raise ReprevalError("a claim is {claim: TEXT, paper: TEXT, KIND: {...}}", where=where, fix="KIND is one of " + ", ".join(CLAIM_KINDS))
    kinds = [key for key in item if key in CLAIM_KINDS]
    unknown = [key for key in item if key not in (*CLAIM_KINDS, "claim", "paper")]
    if unknown:
        raise ReprevalError(f"unknown key {unknown[0]!r}", where=where, fix=suggest(unknown[0], (*CLAIM_KINDS, "claim", "paper")))
    if len(kinds) != 1:
        raise ReprevalError("a claim needs exactly one check", where=where, fix="one of " + ", ".join(CLAIM_KINDS))
    kind = kinds[0]
    options = dict(item[kind] or {})
    at = f"{where}.{kind}"
    if kind == "greater":
        for key in ("metric", "higher", "lower"):
            if key not in options:
                raise ReprevalError(f"missing {key!r}", where=at)
        options["metric"] = MetricSelector.parse(options["metric"], f"{at}.metric")
        options.setdefault("layers", "every")
        options.setdefault("expect", "higher")
        if options["layers"] not in LAYER_MODES:
            raise ReprevalError(f"unknown layers {options['layers']!r}", where=f"{at}.layers", fix="use " + ", ".join(LAYER_MODES))
        if options["expect"] not in ("higher", "same"):
            raise ReprevalError(f"unknown expect {options['expect']!r}", where=f"{at}.expect", fix="use higher or same")
    elif kind == "above":
        if "metric" not in options or not isinstance(options.get("threshold"), (int, float)):
            raise ReprevalError("above needs metric and a numeric threshold", where=at)
        options["metric"] = MetricSelector.parse(options["metric"], f"{at}.metric")
    elif kind == "correlation":
        index = options.get("index", 0)
        if not isinstance(index, int) or not 0 <= index < len(config.correlations):
            raise ReprevalError(f"no correlation number {index}", where=f"{at}.index", fix="declare it under report.correlations (counted from 0)")
    if kind in ("correlation", "drift") and options.get("sign") not in ("positive", "negative"):
        raise ReprevalError("sign must be positive or negative", where=f"{at}.sign")
    if kind == "drift" and config.drift is None:
        raise ReprevalError("a drift claim needs report.drift", where=at)
    if kind == "replicates":
        if config.replicates is None:
            raise ReprevalError("a replicates claim needs report.replicates", where=at)
        if not isinstance(options.get("within", 0.0), (int, float)):
            raise ReprevalError("within must be a number", where=f"{at}.within")
        try:
            re.compile(str(options.get("match", "")))
        except re.error as exc:
            raise ReprevalError(f"match is not a regular expression ({exc})", where=f"{at}.match") from None
    return Claim(str(item["claim"]), str(item.get("paper", "")), kind, options)


# ---------------------------------------------------------------------------------------------
# Building


@dataclass
class Report:
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
    """What the report needs from the stored suite: its report section, drift strengths, model groups."""

    name: str = ""
    description: str = ""
    config: ReportConfig = field(default_factory=ReportConfig)
    strengths: dict[str, float] = field(default_factory=dict)  # dataset -> drift lambda (0 if none)
    groups: dict[str, str] = field(default_factory=dict)  # model id -> replicate group
    baselines: dict[str, str | None] = field(default_factory=dict)  # group -> baseline group


def suite_facts(directory: Path, plugins) -> SuiteFacts:
    """Read ``DIR/suite.yaml`` (written by the run); a directory without one gets leaderboards only."""
    from .suite import parse_suite

    path = directory / "suite.yaml"
    if not path.is_file():
        return SuiteFacts(name=directory.name)
    suite = parse_suite(yaml.safe_load(path.read_text()), plugins, path=path, check_files=False)
    strengths = {name: (config.drift.strength if config.drift else 0.0) for name, config in suite.datasets.items() if name in suite.evaluation.datasets}
    return SuiteFacts(
        name=suite.name,
        description=suite.description,
        config=suite.report,
        strengths=strengths,
        groups={model_id: config.group or model_id for model_id, config in suite.models.items()},
        baselines={config.group or model_id: config.baseline for model_id, config in suite.models.items()},
    )


def build_report(records: list[ScoreRecord], facts: SuiteFacts) -> Report:
    config = facts.config
    correlations = [correlate(records, x, y) for x, y in config.correlations]
    drift_results = drift(records, config.drift, facts.strengths) if config.drift else []
    replicate_rows = replicates(records, config.replicates, facts.groups, facts.baselines) if config.replicates else []
    verdicts = []
    for claim in config.claims:
        details: list[str] = []
        if claim.kind == "greater":
            o = claim.options
            verdict, evidence, details = check_greater(records, o["metric"], str(o["higher"]), str(o["lower"]), o["layers"], o["expect"])
        elif claim.kind == "above":
            verdict, evidence = check_above(records, claim.options["metric"], float(claim.options["threshold"]))
        elif claim.kind == "correlation":
            verdict, evidence = check_correlation(correlations[claim.options.get("index", 0)], claim.options["sign"])
        elif claim.kind == "drift":
            verdict, evidence = _drift_verdict(drift_results, claim.options["sign"])
        else:
            chosen = [row for row in replicate_rows if re.search(str(claim.options.get("match", "")), row.group)]
            verdict, evidence = _replicates_verdict(chosen, replicate_rows, float(claim.options.get("within", 0.0)))
        verdicts.append(Verdict(claim.claim, claim.paper, verdict, evidence, details))
    return Report(
        title=config.title or facts.name,
        description=facts.description,
        records=records,
        correlations=correlations,
        drift=drift_results,
        drift_metric=config.drift,
        replicates=replicate_rows,
        replicates_metric=config.replicates,
        replicates_also=[(m, {r.group: r for r in replicates(records, m, facts.groups, facts.baselines)}) for m in config.replicates_also],
        verdicts=verdicts,
        curve_metrics=config.curves,
    )


def _drift_verdict(results: list[DriftResult], sign: str) -> tuple[str, str]:
    if not results:
        return "inconclusive", "no drift results"
    verdicts = []
    for result in results:
        right = result.rho > 0 if sign == "positive" else result.rho < 0
        verdicts.append("agrees" if right and result.p < 0.05 else "disagrees" if result.p < 0.05 else "inconclusive")
    evidence = "; ".join(f"{r.model} · {r.variant}: rho = {r.rho:.3f} (p = {r.p:.2g})" for r in results)
    verdict = "agrees" if all(v == "agrees" for v in verdicts) else "disagrees" if "disagrees" in verdicts else "inconclusive"
    return verdict, evidence


def _replicates_verdict(rows: list[ReplicateRow], every: list[ReplicateRow], within: float) -> tuple[str, str]:
    """Is each of ``rows`` at least its baseline's mean minus ``within``?"""
    by_group = {row.group: row for row in every}
    compared = [(row, by_group[row.baseline]) for row in rows if row.baseline in by_group]
    if not compared:
        return "inconclusive", "no group has a baseline"
    worse = [f"{row.group}: {row.mean:.3f} vs {base.mean:.3f}" for row, base in compared if row.mean < base.mean - within]
    evidence = f"{len(compared) - len(worse)} of {len(compared)} groups within {within} of their baseline or above"
    return ("agrees" if not worse else "disagrees"), evidence + ("; below: " + ", ".join(worse) if worse else "")


def write_report(directory: str | Path, plugins) -> Path:
    """Write ``DIR/report.md`` and its plots under ``DIR/plots/``; return the report's path."""
    from .render.report import report_markdown

    directory = Path(directory)
    records = ResultStore(directory).records()
    report = build_report(records, suite_facts(directory, plugins))
    text = report_markdown(report, build_leaderboards(records), directory / "plots")
    path = directory / "report.md"
    write_atomic(path, text)
    return path
