"""The suite's ``report:`` section -> :class:`repreval.config.ReportConfig` (its correlations and, above all, its
claims, one typed :class:`repreval.config.Claim` each), checked completely, so that a bad claim fails at
``repreval validate`` and not after the run. Pure parsing: no plugins, no records.

The format is documented in :mod:`repreval.findings`, which checks the claims against the records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from .config import (
    CLAIM_KINDS,
    CLAIM_TYPES,
    LAYER_MODES,
    READINGS,
    BelowClaim,
    Claim,
    CorrelationClaim,
    GreaterClaim,
    MetricSelector,
    ReplicatesClaim,
    ReportConfig,
    defaults,
)
from .errors import ReprevalError, suggest
from .groups import MAX_SEEDS, SEEDS, is_group, split_label

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
    config = ReportConfig(
        title=str(spec.get("title", defaults(ReportConfig)["title"])),
        correlations=_correlations(spec.get("correlations") or [], f"{where}.correlations"),
    )
    if spec.get("drift") is not None:
        config.drift = _metric_section(spec["drift"], f"{where}.drift", allowed={"metric"})
    if spec.get("replicates") is not None:
        config.replicates = _metric_section(spec["replicates"], f"{where}.replicates", allowed={"metric", "also"})
        also = spec["replicates"].get("also") or []
        config.replicates_also = [parse_metric(m, f"{where}.replicates.also[{i}]") for i, m in enumerate(also)]
    if spec.get("curves") is not None:
        config.curves = [parse_metric(item, f"{where}.curves[{i}]") for i, item in enumerate(spec["curves"])]
    config.claims = _claims(spec.get("claims") or [], f"{where}.claims", config)
    return config


def _correlations(pairs: Any, where: str) -> list[tuple[MetricSelector, MetricSelector]]:
    """``correlations: [{x: METRIC, y: METRIC}, ...]``."""
    correlations = []
    for i, pair in enumerate(pairs):
        at = f"{where}[{i}]"
        if not isinstance(pair, dict) or set(pair) != {"x", "y"}:
            raise ReprevalError("each correlation is {x: METRIC, y: METRIC}", where=at)
        correlations.append((parse_metric(pair["x"], f"{at}.x"), parse_metric(pair["y"], f"{at}.y")))
    return correlations


def _metric_section(section: Any, where: str, allowed: set[str]) -> MetricSelector:
    """``{metric: METRIC}`` (``drift``), or with ``also: [METRIC, ...]`` (``replicates``)."""
    if not isinstance(section, dict) or "metric" not in section or not set(section) <= allowed:
        extra = ", also: [METRIC, ...]" if "also" in allowed else ""
        raise ReprevalError(f"{where.rsplit('.', 1)[-1]} is {{metric: METRIC{extra}}}", where=where)
    return parse_metric(section["metric"], f"{where}.metric")


def _claims(claims: Any, where: str, config: ReportConfig) -> list[Claim]:
    """``claims: [CLAIM, ...]``, checked against the rest of the report section (``config``)."""
    if not isinstance(claims, list):
        raise ReprevalError("claims must be a list of claims", where=where)
    return [parse_claim(item, f"{where}[{i}]", config) for i, item in enumerate(claims)]


def parse_claim(item: Any, where: str, config: ReportConfig) -> Claim:
    """One claim: ``{claim: TEXT, paper: TEXT, KIND: {options}}``, its options checked by kind."""
    kind = _claim_kind(item, where)
    if not isinstance(item[kind] or {}, dict):
        raise ReprevalError(f"the {kind} check takes a mapping of options", where=f"{where}.{kind}")
    options = _CLAIM_OPTIONS[kind](dict(item[kind] or {}), f"{where}.{kind}", config)
    paper = item.get("paper", defaults(Claim)["paper"])
    return CLAIM_TYPES[kind](claim=str(item["claim"]), paper=str(paper), **options)


def _claim_kind(item: Any, where: str) -> str:
    """The kind of check of the claim ``item``: its one key besides ``claim`` and ``paper``."""
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
    return kinds[0]


def _reject_unknown(options: dict, claim: type[Claim], where: str) -> None:
    """Every key of ``options`` is an option of ``claim``."""
    known = claim.option_names()
    unknown = [key for key in options if key not in known]
    if unknown:
        raise ReprevalError(f"unknown key {str(unknown[0])[:40]!r}", where=where, fix="use " + ", ".join(known))


def _option_defaults(claim: type[Claim]) -> dict[str, Any]:
    """The options of ``claim`` that have a default, with it."""
    return {key: value for key, value in defaults(claim).items() if key in claim.option_names()}


def _greater(options: dict, where: str, config: ReportConfig) -> dict[str, Any]:
    """``higher``: a side; ``lower``: a side or a list of them (the first decides the verdict, the others are
    the random copies it must hold for to be robust), each side a variant, ``MODEL/VARIANT`` or a seed group
    (:func:`split_side`); ``test``: one of TESTS; ``readings``: the readings it must also hold under (default:
    every reading the metric has); ``margin``: a positive number, for ``expect: same`` only."""
    for key in ("metric", "higher", "lower"):
        if key not in options:
            raise ReprevalError(f"missing {key!r}", where=where)
    _reject_unknown(options, GreaterClaim, where)
    options = _option_defaults(GreaterClaim) | options
    lower = options["lower"]
    options["lower"] = list(lower) if isinstance(lower, list) and lower else [lower]  # checked next
    _check_variants(options["higher"], options["lower"], where)
    options["metric"] = parse_metric(options["metric"], f"{where}.metric")
    _check_judging(options, where)
    if options["margin"] is not None:
        options["margin"] = _margin(options, where)
    return options


def split_side(name: str) -> tuple[str | None, str]:
    """A side of a ``greater`` claim -> (model, variant): ``lenet_adv/trained`` -> (``lenet_adv``, ``trained``);
    a plain variant (``trained``, ``random[seeds=20]``) has no model of its own (None: the metric's)."""
    match = re.fullmatch(r"([^\[\]/]+)/(.+)", name)
    return (match[1], match[2]) if match else (None, name)


def _check_variants(higher: Any, lower: list, where: str) -> None:
    """``higher`` and each of ``lower`` name a side: a variant, ``MODEL/VARIANT`` or a seed group."""
    for key, names in (("higher", [higher]), ("lower", lower)):
        for name in names:
            if not isinstance(name, str) or not name:
                raise ReprevalError(
                    f"{key} must name a variant{' or list variants' if key == 'lower' else ''}, got {str(name)[:40]!r}",
                    where=f"{where}.{key}",
                )
            variant = split_side(name)[1]
            parts = split_label(variant)
            if parts is not None and SEEDS in parts[1] and not is_group(variant):
                raise ReprevalError(
                    f"{key} {name[:60]!r}: seeds must be a whole number from 1 to {MAX_SEEDS}",
                    where=f"{where}.{key}",
                )


def _margin(options: dict, where: str) -> float:
    """``margin``: a positive number, and only where equivalence is tested (``expect: same``)."""
    margin = _finite(options, "margin", where)
    if margin <= 0:
        raise ReprevalError(f"margin must be positive, got {margin:g}", where=f"{where}.margin")
    if options["expect"] != "same":
        raise ReprevalError(
            "margin is the equivalence margin of expect: same", where=f"{where}.margin", fix="add expect: same"
        )
    return margin


def _check_judging(options: dict, where: str) -> None:
    """How a ``greater`` claim is judged: ``layers``, ``expect``, ``test`` and ``readings``."""
    from .statistics import TESTS

    if options["layers"] not in LAYER_MODES:
        raise ReprevalError(
            f"unknown layers {_shown(options['layers'])}", where=f"{where}.layers", fix="use " + ", ".join(LAYER_MODES)
        )
    if options["expect"] not in ("higher", "same"):
        raise ReprevalError(
            f"unknown expect {_shown(options['expect'])}", where=f"{where}.expect", fix="use higher or same"
        )
    if options["test"] not in TESTS:
        raise ReprevalError(
            f"unknown test {str(options['test'])[:40]!r}", where=f"{where}.test", fix="use " + ", ".join(TESTS)
        )
    readings = options["readings"]
    if readings is not None and (
        not isinstance(readings, list) or not readings or any(r not in READINGS for r in readings)
    ):
        raise ReprevalError("readings must be a non-empty list of " + ", ".join(READINGS), where=f"{where}.readings")


def _finite(options: dict, key: str, where: str) -> float:
    """``options[key]``: a finite number (NaN would make "above" and "below" both hold)."""
    value = options[key]
    if not (isinstance(value, float) and math.isfinite(value)) and not (
        isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    ):
        raise ReprevalError(f"{key} must be a finite number, got {_shown(value)}", where=f"{where}.{key}")
    return float(value)


def _shown(value: Any) -> str:
    """``value`` as an error message quotes it: short."""
    try:
        return repr(value)[:40]
    except ValueError:  # an integer of more than 4,300 digits
        return "a huge integer"


def _above(options: dict, where: str, config: ReportConfig) -> dict[str, Any]:
    if "metric" not in options or "threshold" not in options:
        raise ReprevalError("above needs metric and a numeric threshold", where=where)
    return {
        "metric": parse_metric(options["metric"], f"{where}.metric"),
        "threshold": _finite(options, "threshold", where),
    }


def _below(options: dict, where: str, config: ReportConfig) -> dict[str, Any]:
    """``{metric, threshold: NUMBER}`` or ``{metric, than: METRIC}`` (the other metric of the same rows)."""
    if "metric" not in options or ("threshold" in options) == ("than" in options):
        raise ReprevalError("below needs metric and either a numeric threshold or than: METRIC", where=where)
    _reject_unknown(options, BelowClaim, where)
    metric = parse_metric(options["metric"], f"{where}.metric")
    if "than" in options:
        return {"metric": metric, "than": parse_metric(options["than"], f"{where}.than")}
    return {"metric": metric, "threshold": _finite(options, "threshold", where)}


def _sign(options: dict, where: str) -> str:
    if options.get("sign") not in ("positive", "negative"):
        raise ReprevalError("sign must be positive or negative", where=f"{where}.sign")
    return options["sign"]


def _correlation(options: dict, where: str, config: ReportConfig) -> dict[str, Any]:
    index = options.get("index", _option_defaults(CorrelationClaim)["index"])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(config.correlations):
        raise ReprevalError(
            f"no correlation number {_shown(index)}",
            where=f"{where}.index",
            fix="declare it under report.correlations (counted from 0)",
        )
    return {"index": index, "sign": _sign(options, where)}


def _drift(options: dict, where: str, config: ReportConfig) -> dict[str, Any]:
    sign = _sign(options, where)
    if config.drift is None:
        raise ReprevalError("a drift claim needs report.drift", where=where)
    return {"sign": sign}


def _replicates(options: dict, where: str, config: ReportConfig) -> dict[str, Any]:
    if config.replicates is None:
        raise ReprevalError("a replicates claim needs report.replicates", where=where)
    if not isinstance(options.get("improves", False), bool):
        raise ReprevalError(f"improves must be true or false, got {_shown(options['improves'])}", where=where)
    if options.get("improves") and "within" in options:
        raise ReprevalError("improves tests the mean itself: no within", where=where, fix="drop within")
    options = _option_defaults(ReplicatesClaim) | options
    within = _finite(options, "within", where)
    match = str(options["match"])
    try:
        re.compile(match)
    except re.error as exc:
        raise ReprevalError(f"match is not a regular expression ({exc})", where=f"{where}.match") from None
    return {"within": within, "match": match, "improves": options["improves"]}


#: Each kind of claim's options, checked: ``(options, where, report section) -> the claim's fields``
_CLAIM_OPTIONS: dict[str, Callable[[dict, str, ReportConfig], dict[str, Any]]] = {
    "greater": _greater,
    "above": _above,
    "below": _below,
    "correlation": _correlation,
    "drift": _drift,
    "replicates": _replicates,
}
