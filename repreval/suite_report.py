"""The suite's ``report:`` section -> :class:`repreval.config.ReportConfig`, checked completely, so that a bad
claim fails at ``repreval validate`` and not after the run. Pure parsing: no plugins, no records.

The format is documented in :mod:`repreval.report`.
"""

from __future__ import annotations

import re
from typing import Any

from .config import CLAIM_KINDS, LAYER_MODES, READINGS, Claim, MetricSelector, ReportConfig
from .errors import ReprevalError, suggest

REPORT_KEYS = ("title", "correlations", "drift", "replicates", "curves", "claims")


def parse_metric(spec: Any, where: str) -> MetricSelector:
    """``noise_score`` or ``{score: noise_score, saliency: gradients, ...}`` -> a selector."""
    if isinstance(spec, str):
        spec = {"score": spec}
    if not isinstance(spec, dict) or "score" not in spec:
        raise ReprevalError(
            "a metric is a mapping with at least 'score'",
            where=where,
            fix="e.g. {score: noise_score, saliency: gradients}",
        )
    unknown = [key for key in spec if key not in MetricSelector.KEYS]
    if unknown:
        raise ReprevalError(
            f"unknown metric key {unknown[0]!r}", where=where, fix="use " + ", ".join(MetricSelector.KEYS)
        )
    if spec.get("reading", "raw") not in READINGS:
        raise ReprevalError(
            f"unknown reading {str(spec['reading'])[:40]!r}", where=f"{where}.reading", fix="use " + ", ".join(READINGS)
        )
    return MetricSelector(**{key: str(value) for key, value in spec.items()})


def parse_report(spec: Any, where: str) -> ReportConfig:
    """The ``report:`` section (None: leaderboards and default curves only)."""
    if spec is None:
        return ReportConfig()
    if not isinstance(spec, dict):
        raise ReprevalError("report must be a mapping", where=where)
    for key in spec:
        if key not in REPORT_KEYS:
            raise ReprevalError(f"unknown key {key!r}", where=where, fix=suggest(key, REPORT_KEYS))
    config = ReportConfig(title=str(spec.get("title", "")))
    for i, pair in enumerate(spec.get("correlations") or []):
        at = f"{where}.correlations[{i}]"
        if not isinstance(pair, dict) or set(pair) != {"x", "y"}:
            raise ReprevalError("each correlation is {x: METRIC, y: METRIC}", where=at)
        config.correlations.append((parse_metric(pair["x"], f"{at}.x"), parse_metric(pair["y"], f"{at}.y")))
    if spec.get("drift") is not None:
        config.drift = _metric_section(spec["drift"], f"{where}.drift", allowed={"metric"})
    if spec.get("replicates") is not None:
        config.replicates = _metric_section(spec["replicates"], f"{where}.replicates", allowed={"metric", "also"})
        also = spec["replicates"].get("also") or []
        config.replicates_also = [parse_metric(m, f"{where}.replicates.also[{i}]") for i, m in enumerate(also)]
    if spec.get("curves") is not None:
        config.curves = [parse_metric(item, f"{where}.curves[{i}]") for i, item in enumerate(spec["curves"])]
    claims = spec.get("claims") or []
    if not isinstance(claims, list):
        raise ReprevalError("claims must be a list of claims", where=f"{where}.claims")
    for i, item in enumerate(claims):
        config.claims.append(parse_claim(item, f"{where}.claims[{i}]", config))
    return config


def _metric_section(section: Any, where: str, allowed: set[str]) -> MetricSelector:
    """``{metric: METRIC}`` (``drift``), or with ``also: [METRIC, ...]`` (``replicates``)."""
    if not isinstance(section, dict) or "metric" not in section or not set(section) <= allowed:
        extra = ", also: [METRIC, ...]" if "also" in allowed else ""
        raise ReprevalError(f"{where.rsplit('.', 1)[-1]} is {{metric: METRIC{extra}}}", where=where)
    return parse_metric(section["metric"], f"{where}.metric")


def parse_claim(item: Any, where: str, config: ReportConfig) -> Claim:
    """One claim: ``{claim: TEXT, paper: TEXT, KIND: {options}}``, its options checked by kind."""
    if not isinstance(item, dict) or "claim" not in item:
        raise ReprevalError(
            "a claim is {claim: TEXT, paper: TEXT, KIND: {...}}",
            where=where,
            fix="KIND is one of " + ", ".join(CLAIM_KINDS),
        )
    unknown = [key for key in item if key not in (*CLAIM_KINDS, "claim", "paper")]
    if unknown:
        raise ReprevalError(
            f"unknown key {unknown[0]!r}", where=where, fix=suggest(unknown[0], (*CLAIM_KINDS, "claim", "paper"))
        )
    kinds = [key for key in item if key in CLAIM_KINDS]
    if len(kinds) != 1:
        raise ReprevalError("a claim needs exactly one check", where=where, fix="one of " + ", ".join(CLAIM_KINDS))
    kind = kinds[0]
    if not isinstance(item[kind] or {}, dict):
        raise ReprevalError(f"the {kind} check takes a mapping of options", where=f"{where}.{kind}")
    options = dict(item[kind] or {})
    _CLAIM_CHECKS[kind](options, f"{where}.{kind}", config)
    return Claim(str(item["claim"]), str(item.get("paper", "")), kind, options)


GREATER_KEYS = ("metric", "higher", "lower", "layers", "expect", "test", "readings")


def _check_greater(options: dict, where: str, config: ReportConfig) -> None:
    """``higher``: a variant; ``lower``: a variant or a list of them (the first decides the verdict, the others
    are the random copies it must hold for to be robust); ``test``: one of TESTS; ``readings``: the readings
    it must also hold under (default: every reading the metric has)."""
    from .statistics import TESTS

    for key in ("metric", "higher", "lower"):
        if key not in options:
            raise ReprevalError(f"missing {key!r}", where=where)
    unknown = [key for key in options if key not in GREATER_KEYS]
    if unknown:
        raise ReprevalError(f"unknown key {str(unknown[0])[:40]!r}", where=where, fix="use " + ", ".join(GREATER_KEYS))
    if isinstance(options["lower"], list) and options["lower"]:
        options["lower"] = list(options["lower"])
    elif isinstance(options["lower"], str):
        options["lower"] = [options["lower"]]
    else:
        options["lower"] = [options["lower"]]  # checked below: not a variant name
    for key, names in (("higher", [options["higher"]]), ("lower", options["lower"])):
        for name in names if isinstance(names, list) else [names]:
            if not isinstance(name, str) or not name:
                raise ReprevalError(
                    f"{key} must name a variant{' or list variants' if key == 'lower' else ''}, got {str(name)[:40]!r}",
                    where=f"{where}.{key}",
                )
    options["metric"] = parse_metric(options["metric"], f"{where}.metric")
    options.setdefault("layers", "every")
    options.setdefault("expect", "higher")
    options.setdefault("test", "wilcoxon")
    if options["layers"] not in LAYER_MODES:
        raise ReprevalError(
            f"unknown layers {options['layers']!r}", where=f"{where}.layers", fix="use " + ", ".join(LAYER_MODES)
        )
    if options["expect"] not in ("higher", "same"):
        raise ReprevalError(f"unknown expect {options['expect']!r}", where=f"{where}.expect", fix="use higher or same")
    if options["test"] not in TESTS:
        raise ReprevalError(
            f"unknown test {str(options['test'])[:40]!r}", where=f"{where}.test", fix="use " + ", ".join(TESTS)
        )
    readings = options.get("readings")
    if readings is not None and (
        not isinstance(readings, list) or not readings or any(r not in READINGS for r in readings)
    ):
        raise ReprevalError("readings must be a non-empty list of " + ", ".join(READINGS), where=f"{where}.readings")


def _check_above(options: dict, where: str, config: ReportConfig) -> None:
    if "metric" not in options or not isinstance(options.get("threshold"), (int, float)):
        raise ReprevalError("above needs metric and a numeric threshold", where=where)
    options["metric"] = parse_metric(options["metric"], f"{where}.metric")


def _check_below(options: dict, where: str, config: ReportConfig) -> None:
    """``{metric, threshold: NUMBER}`` or ``{metric, than: METRIC}`` (the other metric of the same rows)."""
    if "metric" not in options or ("threshold" in options) == ("than" in options):
        raise ReprevalError("below needs metric and either a numeric threshold or than: METRIC", where=where)
    unknown = [key for key in options if key not in ("metric", "threshold", "than")]
    if unknown:
        raise ReprevalError(f"unknown key {str(unknown[0])[:40]!r}", where=where, fix="use metric, threshold, than")
    if "threshold" in options and not isinstance(options["threshold"], (int, float)):
        raise ReprevalError("threshold must be a number", where=f"{where}.threshold")
    options["metric"] = parse_metric(options["metric"], f"{where}.metric")
    if "than" in options:
        options["than"] = parse_metric(options["than"], f"{where}.than")


def _check_sign(options: dict, where: str) -> None:
    if options.get("sign") not in ("positive", "negative"):
        raise ReprevalError("sign must be positive or negative", where=f"{where}.sign")


def _check_correlation(options: dict, where: str, config: ReportConfig) -> None:
    index = options.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(config.correlations):
        raise ReprevalError(
            f"no correlation number {index}",
            where=f"{where}.index",
            fix="declare it under report.correlations (counted from 0)",
        )
    _check_sign(options, where)


def _check_drift(options: dict, where: str, config: ReportConfig) -> None:
    _check_sign(options, where)
    if config.drift is None:
        raise ReprevalError("a drift claim needs report.drift", where=where)


def _check_replicates(options: dict, where: str, config: ReportConfig) -> None:
    if config.replicates is None:
        raise ReprevalError("a replicates claim needs report.replicates", where=where)
    if not isinstance(options.get("within", 0.0), (int, float)):
        raise ReprevalError("within must be a number", where=f"{where}.within")
    try:
        re.compile(str(options.get("match", "")))
    except re.error as exc:
        raise ReprevalError(f"match is not a regular expression ({exc})", where=f"{where}.match") from None


_CLAIM_CHECKS = {
    "greater": _check_greater,
    "above": _check_above,
    "below": _check_below,
    "correlation": _check_correlation,
    "drift": _check_drift,
    "replicates": _check_replicates,
}
