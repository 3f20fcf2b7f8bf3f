"""Report-level statistics: Holm across a report's claims, drift tested over inputs, thresholds and replicates
with their standard errors; scipy and hand-computed cases as the oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, spearmanr, ttest_1samp, ttest_ind, ttest_rel, wilcoxon
from test_report import record

from repreval.analysis import (
    Verdict,
    check_above,
    check_below,
    check_correlation,
    check_drift,
    check_replicates,
    correlate,
    drift,
    replicates,
)
from repreval.api import ReprevalError
from repreval.claims import parse_report
from repreval.config import MetricSelector
from repreval.findings import SuiteFacts, build_findings, correct_across_claims
from repreval.render.report import report_markdown

# ---------------------------------------------------------------------------------------------
# Holm across the claims of a report


def _verdicts(*pairs: tuple[str, float | None]) -> list[Verdict]:
    return [Verdict(f"c{i}", "", verdict, "e", p=p) for i, (verdict, p) in enumerate(pairs)]


def test_holm_across_claims_turns_the_4_2_correlations_inconclusive():
    # 4.2: top-5 p 0.044, abs top-5 0.028, cascading top-1 0.041. By hand: 0.028 * 3 = 0.084, then
    # max(0.084, 0.041 * 2 = 0.082) = 0.084, then max(0.084, 0.044 * 1) = 0.084
    verdicts = _verdicts(("agrees", 0.044), ("agrees", 0.028), ("agrees", 0.041), ("agrees", None))
    correct_across_claims(verdicts)
    assert [v.p_report for v in verdicts[:3]] == pytest.approx([0.084, 0.084, 0.084])
    assert [v.verdict for v in verdicts] == ["inconclusive"] * 3 + ["agrees"]  # no p: no part in the family
    assert verdicts[3].p_report is None
    assert verdicts[0].evidence == "e; agrees at p 0.044, but Holm across 3 claims 0.084"


def test_holm_across_claims_keeps_what_survives_and_downgrades_disagreements_too():
    # sorted 0.001, 0.01, 0.03, 0.2 -> 0.004, 0.03, 0.06, 0.2 (by hand)
    verdicts = _verdicts(("disagrees", 0.03), ("agrees", 0.001), ("inconclusive", 0.2), ("agrees", 0.01))
    correct_across_claims(verdicts)
    assert [v.p_report for v in verdicts] == pytest.approx([0.06, 0.004, 0.2, 0.03])
    assert [v.verdict for v in verdicts] == ["inconclusive", "agrees", "inconclusive", "agrees"]
    assert "Holm across 4 claims 0.06" in verdicts[0].evidence and verdicts[2].evidence == "e"


def test_robustness_compares_the_checks_with_the_verdict_before_the_correction_across_claims():
    from repreval.analysis import Robustness

    verdicts = _verdicts(("agrees", 0.03), ("agrees", 0.04))
    verdicts[0].checks = [Robustness("random", reading, "agrees", [0.1], [0.03]) for reading in ("raw", "minus_chance")]
    correct_across_claims(verdicts)
    assert verdicts[0].verdict == "inconclusive" and verdicts[0].robust is True
    assert verdicts[0].robustness == "robust (2 of 2, agrees before the correction across claims)"


def test_a_nan_p_takes_no_part():
    verdicts = _verdicts(("agrees", 0.02), ("inconclusive", math.nan))
    correct_across_claims(verdicts)
    assert verdicts[0].p_report == 0.02 and verdicts[0].verdict == "agrees" and verdicts[1].p_report is None


def _correlation_records(rng, rows: int) -> list:
    """Three metrics a, b, c over ``rows`` variants, b and c weakly tied to a."""
    a = rng.random(rows)
    b, c = a + 1.2 * rng.random(rows), a + 1.5 * rng.random(rows)
    records = []
    for i in range(rows):
        for score, value in (("a", a[i]), ("b", b[i]), ("c", c[i])):
            records.append(record(variant=f"v{i}", score=score, value=float(value), values=[float(value)]))
    return records


def test_a_report_applies_holm_across_its_claims_and_prints_both_p_values(tmp_path):
    records = _correlation_records(np.random.default_rng(3), 12)
    report = {
        "correlations": [{"x": "a", "y": "b"}, {"x": "a", "y": "c"}, {"x": "b", "y": "c"}],
        "claims": [{"claim": f"claim {i}", "correlation": {"index": i, "sign": "positive"}} for i in range(3)],
    }
    findings = build_findings(records, SuiteFacts(name="s", report=report))
    values = {score: [r.value for r in sorted(records, key=lambda r: r.variant) if r.score == score] for score in "abc"}
    expected = [spearmanr(values[x], values[y]).pvalue for x, y in ("ab", "ac", "bc")]
    assert [v.p for v in findings.verdicts] == pytest.approx(expected, rel=1e-9)
    order = sorted(range(3), key=lambda i: expected[i])
    holm, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):  # Holm by hand
        running = max(running, min(1.0, (3 - rank) * expected[i]))
        holm[i] = running
    assert [v.p_report for v in findings.verdicts] == pytest.approx(holm, rel=1e-9)
    text = report_markdown(findings, [], tmp_path / "plots")
    assert "| p (Holm across 3 claims) |" in text and "across the report's 3 claims" in text
    assert f"| {expected[0]:.2g} ({holm[0]:.2g}) |" in text


def test_a_correlation_verdict_rests_on_spearmans_p():
    records = _correlation_records(np.random.default_rng(0), 10)
    correlation = correlate(records, MetricSelector("a"), MetricSelector("b"))
    verdict = check_correlation(correlation, "positive")
    assert verdict.p == correlation.p and verdict.verdict == ("agrees" if correlation.p < 0.05 else "inconclusive")


# ---------------------------------------------------------------------------------------------
# Drift: the inputs are the replicates


def _drift_records(drops: np.ndarray, lambdas: list[float]) -> tuple[list, dict[str, float]]:
    """Records whose relative drop of input i at lambdas[k] is drops[i, k] (lambda 0 first, drop 0)."""
    clean = np.linspace(0.5, 1.0, drops.shape[0])
    records, strengths = [], {}
    for k, strength in enumerate(lambdas):
        values = clean * (1 - drops[:, k])
        records.append(record(dataset=f"d{k}", values=[float(v) for v in values]))
        strengths[f"d{k}"] = strength
    return records, strengths


def test_many_lambdas_per_input_make_a_tiny_pooled_p_but_the_inputs_decide():
    """The 4.4 situation, extreme: 5 inputs × 40 lambdas, each input's drop rising. Pooling the 200 (lambda,
    input) pairs as independent gives p ~ 1e-60; over 5 inputs a two-sided signed-rank test cannot go below
    2 / 2^5 = 0.0625, so the claim is inconclusive."""
    rng = np.random.default_rng(0)
    lambdas = [0.0] + [0.02 * k for k in range(1, 41)]
    drops = np.array([[0.0] + [s * (1 + 0.1 * rng.standard_normal()) for s in lambdas[1:]] for _ in range(5)])
    records, strengths = _drift_records(drops, lambdas)
    (result,) = drift(records, MetricSelector("noise_score", layer="l1"), strengths)
    relative = np.array([result.relative[s] for s in lambdas[1:]]).T  # inputs × drifted lambdas
    pooled = spearmanr(np.tile(lambdas[1:], 5), relative.ravel())
    assert pooled.pvalue < 1e-40  # what drift reported before
    rhos = [spearmanr(lambdas[1:], row).statistic for row in relative]
    assert result.input_rhos == pytest.approx(rhos)
    assert result.over_inputs is not None
    assert result.over_inputs.p == pytest.approx(wilcoxon(rhos).pvalue) == 0.0625
    verdict = check_drift([result], "positive")
    assert verdict.verdict == "inconclusive" and verdict.p == pytest.approx(0.0625)
    assert "holds in 5 of 5 inputs" in verdict.evidence


def test_per_input_trends_tested_over_64_inputs_as_scipy_does():
    rng = np.random.default_rng(1)
    lambdas = [0.0] + [0.1 * k for k in range(1, 10)]
    slopes = rng.normal(0.05, 0.1, 64)  # most inputs drop more with lambda, some less
    steps = np.array(lambdas)[None, :] * slopes[:, None] + 0.02 * rng.standard_normal((64, 10))
    steps[:, 0] = 0.0
    records, strengths = _drift_records(steps, lambdas)
    (result,) = drift(records, MetricSelector("noise_score", layer="l1"), strengths)
    relative = np.array([result.relative[s] for s in lambdas[1:]]).T
    rhos = np.array([spearmanr(lambdas[1:], row).statistic for row in relative])
    assert result.over_inputs is not None
    assert result.over_inputs.p == pytest.approx(wilcoxon(rhos).pvalue, rel=1e-9)
    assert result.count("positive") == (rhos > 0).sum() and result.count("negative") == (rhos < 0).sum()
    positive, negative = check_drift([result], "positive"), check_drift([result], "negative")
    assert positive.p == pytest.approx(wilcoxon(rhos).pvalue) and positive.verdict == "agrees"
    assert negative.verdict == "disagrees" and f"holds in {(rhos < 0).sum()} of 64 inputs" in negative.evidence


def test_drift_without_three_drifted_lambdas_is_inconclusive():
    records, strengths = _drift_records(np.array([[0.0, 0.1, 0.2]] * 4), [0.0, 0.1, 0.2])
    (result,) = drift(records, MetricSelector("noise_score", layer="l1"), strengths)
    assert result.over_inputs is None and result.defined == 0
    verdict = check_drift([result], "positive")
    assert verdict.verdict == "inconclusive" and verdict.p is None


# ---------------------------------------------------------------------------------------------
# Thresholds with their standard errors


def test_a_row_above_a_threshold_by_its_standard_error_over_inputs():
    values = list(np.random.default_rng(2).normal(0.55, 0.1, 40))
    selector = MetricSelector("noise_score")
    verdict = check_above([record(values=values)], selector, 0.5)
    expected = ttest_1samp(values, 0.5, alternative="greater").pvalue
    assert verdict.p == pytest.approx(expected, rel=1e-9) and verdict.verdict == "agrees"
    se = np.std(values, ddof=1) / np.sqrt(40)
    assert f"{np.mean(values):.4g} ± {se:.2g} (SE, 40 inputs)" in verdict.evidence
    below = check_above([record(values=values)], selector, 0.6)  # mean 0.55: significantly below 0.6
    assert below.verdict == "disagrees"
    assert below.p == pytest.approx(ttest_1samp(values, 0.6, alternative="less").pvalue, rel=1e-9)


def test_the_accuracy_drop_within_two_points_is_inconclusive_at_one_standard_error_from_it():
    drop = [0.0] * 979 + [1.0] * 21  # 0.021 ± 0.0045
    verdict = check_below([record(score="parts.accuracy_drop", values=drop)], MetricSelector("parts.accuracy_drop"),
                          0.02, None, 0)  # fmt: skip
    assert verdict.verdict == "inconclusive"
    assert verdict.p == pytest.approx(ttest_1samp(drop, 0.02, alternative="less").pvalue, rel=1e-9)
    assert "0.021 ± 0.0045 (SE, 1000 inputs)" in verdict.evidence


def test_a_curve_row_is_judged_on_each_inputs_mean_over_its_layers():
    rng = np.random.default_rng(3)
    first, second = rng.normal(0.3, 0.05, 30), rng.normal(0.2, 0.05, 30)
    records = [record(values=first), record(layer="l2", layer_index=1, values=second)]
    verdict = check_above(records, MetricSelector("noise_score"), 0.24)
    means = (first + second) / 2
    assert verdict.p == pytest.approx(ttest_1samp(means, 0.24, alternative="greater").pvalue, rel=1e-9)


def test_an_accuracy_stored_as_one_fraction_uses_the_binomial_error():
    accuracy = record(score="acc.top1", values=[0.9], dataset=None)
    accuracy.bound, accuracy.n_inputs = 1.0, 2000
    verdict = check_above([accuracy], MetricSelector("acc.top1"), 0.89)
    se = math.sqrt(0.9 * 0.1 / 2000)
    assert verdict.p == pytest.approx(norm.sf((0.9 - 0.89) / se), rel=1e-9)
    assert "binomial, n = 2000" in verdict.evidence
    accuracy.n_inputs = 1  # the fraction alone: no standard error, no verdict
    unknown = check_above([accuracy], MetricSelector("acc.top1"), 0.5)
    assert unknown.verdict == "inconclusive" and unknown.p is None and "no standard error" in unknown.evidence


def test_several_rows_all_must_pass_and_one_significantly_wrong_row_disagrees_after_holm():
    rng = np.random.default_rng(4)
    high, higher = rng.normal(0.6, 0.1, 50), rng.normal(0.7, 0.1, 50)
    records = [record(variant="a", values=high), record(variant="b", values=higher)]
    verdict = check_above(records, MetricSelector("noise_score"), 0.55)
    ps = [ttest_1samp(v, 0.55, alternative="greater").pvalue for v in (high, higher)]
    assert verdict.verdict == "agrees" and verdict.p == pytest.approx(max(ps), rel=1e-9)  # intersection-union
    assert len(verdict.details) == 2
    low = rng.normal(0.45, 0.1, 50)
    records.append(record(variant="c", values=low))
    verdict = check_above(records, MetricSelector("noise_score"), 0.55)
    against = [ttest_1samp(v, 0.55, alternative="less").pvalue for v in (high, higher, low)]
    smallest = sorted(against)
    holm_min = min(1.0, 3 * smallest[0])  # the first adjusted p (by hand)
    assert verdict.verdict == "disagrees" and verdict.p == pytest.approx(holm_min, rel=1e-9)
    assert "2 of 3 rows significantly above 0.55" in verdict.evidence and "not: c " in verdict.evidence


# ---------------------------------------------------------------------------------------------
# Replicates: the seeds are the replicates


def _groups(values: dict[str, dict[int, float]], **per_input) -> tuple[list, dict[str, str]]:
    records, groups = [], {}
    for group, seeds in values.items():
        for seed, value in seeds.items():
            model = f"{group}@{seed}"
            inputs = per_input.get(group, [value])
            records.append(record(model=model, score="acc.top1", dataset=None, value=value, values=inputs))
            groups[model] = group
    return records, groups


def test_non_inferiority_over_unpaired_seeds_is_welchs_one_sided_test():
    base, ns = {0: 0.80, 1: 0.83, 2: 0.81}, {3: 0.80, 4: 0.82}
    records, groups = _groups({"base": base, "ns": ns})
    rows = replicates(records, MetricSelector("acc.top1"), groups, {"base": None, "ns": "base"})
    verdict = check_replicates([rows[1]], rows, 0.02, improves=False)
    a, b = np.array(list(ns.values())), np.array(list(base.values()))
    expected = ttest_ind(a + 0.02, b, equal_var=False, alternative="greater").pvalue
    assert verdict.p == pytest.approx(expected, rel=1e-9) and "Welch over 2 and 3 seeds" in verdict.evidence
    assert verdict.verdict == ("agrees" if expected < 0.05 else "inconclusive")


def test_seeds_both_groups_ran_pair_and_improves_tests_the_mean_itself():
    base, ns = {0: 0.800, 1: 0.830, 2: 0.810, 3: 0.790}, {0: 0.806, 1: 0.834, 2: 0.817, 3: 0.795}
    records, groups = _groups({"base": base, "ns": ns})
    rows = replicates(records, MetricSelector("acc.top1"), groups, {"base": None, "ns": "base"})
    a, b = np.array(list(ns.values())), np.array(list(base.values()))
    keeps = check_replicates([rows[1]], rows, 0.02, improves=False)
    assert keeps.p == pytest.approx(ttest_rel(a + 0.02, b, alternative="greater").pvalue, rel=1e-9)
    improves = check_replicates([rows[1]], rows, 0.0, improves=True)
    assert improves.p == pytest.approx(ttest_rel(a, b, alternative="greater").pvalue, rel=1e-9)
    assert improves.verdict == "agrees" and "significantly above their baseline:" in improves.evidence
    assert "+0.0055 ± 0.00065 (SE, 4 seeds, paired)" in improves.evidence
    worse = check_replicates([rows[0]], [rows[0], rows[1]], 0.0, improves=True)  # no baseline for base
    assert worse.verdict == "inconclusive" and worse.p is None


def test_a_group_significantly_worse_than_the_margin_disagrees():
    base, ns = {0: 0.80, 1: 0.83, 2: 0.81}, {0: 0.70, 1: 0.72, 2: 0.71}
    records, groups = _groups({"base": base, "ns": ns})
    rows = replicates(records, MetricSelector("acc.top1"), groups, {"base": None, "ns": "base"})
    verdict = check_replicates([rows[1]], rows, 0.02, improves=False)
    a, b = np.array(list(ns.values())), np.array(list(base.values()))
    assert verdict.verdict == "disagrees"
    assert verdict.p == pytest.approx(ttest_rel(a + 0.02, b, alternative="less").pvalue, rel=1e-9)


def test_one_seed_per_group_takes_its_error_from_the_per_input_values():
    rng = np.random.default_rng(5)
    mine, theirs = rng.binomial(1, 0.86, 500).astype(float), rng.binomial(1, 0.85, 400).astype(float)
    records, groups = _groups(
        {"base": {0: float(theirs.mean())}, "ns": {0: float(mine.mean())}}, base=list(theirs), ns=list(mine)
    )
    rows = replicates(records, MetricSelector("acc.top1"), groups, {"base": None, "ns": "base"})
    verdict = check_replicates([rows[1]], rows, 0.02, improves=False)
    expected = ttest_ind(mine + 0.02, theirs, equal_var=False, alternative="greater").pvalue
    assert verdict.p == pytest.approx(expected, rel=1e-9) and "one network per group" in verdict.evidence


@pytest.mark.parametrize(
    "options, message",
    [({"improves": "yes"}, "improves must be true or false"), ({"improves": True, "within": 0.1}, "no within")],
)
def test_improves_is_a_boolean_without_within(options, message):
    report = {"replicates": {"metric": "acc.top1"}, "claims": [{"claim": "c", "replicates": options}]}
    with pytest.raises(ReprevalError, match=message):
        parse_report(report, "suite.yaml: report")
    report["claims"] = [{"claim": "c", "replicates": {"improves": True}}]
    (claim,) = parse_report(report, "suite.yaml: report").claims
    assert claim.improves is True


def test_the_report_shows_the_trend_over_inputs_and_each_groups_difference_with_its_error(tmp_path):
    lambdas = [0.0, 0.1, 0.2, 0.3, 0.4]
    drops = np.array([[0.0, 0.01, 0.02, 0.03, 0.04], [0.0, 0.03, 0.02, 0.01, 0.0], [0.0, 0.02, 0.02, 0.02, 0.02]])
    records, strengths = _drift_records(drops, lambdas)
    more, groups = _groups({"base": {0: 0.80, 1: 0.83}, "ns": {0: 0.81, 1: 0.835}})
    report = {
        "drift": {"metric": {"score": "noise_score", "layer": "l1"}},
        "replicates": {"metric": "acc.top1"},
        "claims": [{"claim": "drift", "drift": {"sign": "positive"}}],
    }
    facts = SuiteFacts(name="s", report=report, strengths=strengths, groups=groups,
                       baselines={"base": None, "ns": "base"})  # fmt: skip
    text = report_markdown(build_findings(records + more, facts), [], tmp_path / "plots")
    assert "rho > 0 in 1, < 0 in 1 of 3 inputs (1 without a trend)" in text
    assert "| ns | 2 | 0.823 ± 0.012 | +0.0075 ± 0.0025 (SE, 2 seeds, paired) |" in text
    assert "| drift |  | Spearman(lambda, relative drop) per input: m · trained: holds in 1 of 2 inputs" in text


def test_a_dead_network_keeps_the_minus_chance_reading():
    from dataclasses import replace

    from repreval.analysis import readings_of

    alive = replace(record(variant="random[seed=0]", values=(0.2, 0.3)), reference=0.1)
    dead = replace(record(variant="random[seed=4]", values=(0.0, 0.0)), reference=0.0)
    assert readings_of([alive]) == ("raw", "minus_chance", "over_chance")
    assert readings_of([alive, dead]) == ("raw", "minus_chance")
    assert readings_of([record(values=(0.2, 0.3))]) == ("raw",)
