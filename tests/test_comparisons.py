"""``greater`` claims with the right replicates, against oracles that do not share their mechanism: the rank p
and the gap by hand, scipy's one-sided tests and an exact sign-flip enumeration for the equivalence tests, a
simulation for the prediction-interval test; sides naming any model, seed groups, identical copies counted
once, the p a verdict rests on, suite validation, and the negative control on real records."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import scipy.stats
from conftest import ROOT, digits_suite

from repreval.api import ReprevalError
from repreval.claims import parse_report
from repreval.comparisons import check_greater, judge, margin_for, side
from repreval.config import MetricSelector
from repreval.statistics import (
    copies_needed,
    equivalence_p,
    prediction_equivalence_p,
    prediction_p,
    rank_p,
)
from repreval.store import ScoreRecord

NS = MetricSelector("noise_score")


def record(variant, values, *, model="m", layer="l1", index=0, chance=None, signature=(), dataset="d") -> ScoreRecord:
    chance_values = [chance] * len(values) if isinstance(chance, float) else list(chance or [])
    return ScoreRecord(
        unit_id=f"{model}-{variant}-{layer}", suite="s", model=model, model_spec="x:y", variant=variant, layer=layer,
        layer_index=index, saliency="gradients", channel_aggregator="abs", embedding_aggregator="mean",
        score="noise_score", higher_is_better=True, value=float(np.mean(values)), values=[float(v) for v in values],
        reference=float(np.mean(chance_values)) if chance_values else None, reference_values=chance_values,
        embedding_signature=list(signature), dataset=dataset,
    )  # fmt: skip


def group(values_per_copy, *, name="random", layer="l1", index=0, chance=None, inputs=8) -> list[ScoreRecord]:
    """One record per copy ``random[seed=i]``, its inputs spread around the copy's value (mean exact)."""
    spread = np.linspace(-0.01, 0.01, inputs)
    return [
        record(f"{name}[seed={i}]", value + spread, layer=layer, index=index, chance=chance)
        for i, value in enumerate(values_per_copy)
    ]


# ---------------------------------------------------------------------------------------------
# Networks as the replicates


def test_rank_p_by_hand_with_four_copies():
    copies = [0.1, 0.2, 0.3, 0.4]
    assert rank_p(0.5, copies) == (pytest.approx(1 / 5), pytest.approx(5 / 5))  # above all four
    assert rank_p(0.35, copies) == (pytest.approx(2 / 5), pytest.approx(4 / 5))  # one copy >= it, three <= it
    assert rank_p(0.3, copies) == (pytest.approx(3 / 5), pytest.approx(4 / 5))  # a tie counts on both sides
    assert rank_p(0.0, copies) == (pytest.approx(5 / 5), pytest.approx(1 / 5))
    assert copies_needed(0.05) == 20 and 1 / 21 < 0.05 <= 1 / 20  # K = 19 allows p = 0.05 at best: not below
    assert copies_needed(0.05, tests=3) == 60


def test_a_network_against_a_group_of_four_is_judged_by_rank_and_cannot_reach_significance():
    copies = [0.1, 0.2, 0.3, 0.4]
    records = [record("trained", 0.5 + np.linspace(-0.01, 0.01, 8)), *group(copies)]
    verdict = check_greater(records, NS, "trained", "random[seeds=4]", "every")
    assert verdict.verdict == "inconclusive" and verdict.p == pytest.approx(1 / 5)
    gap = (0.5 - np.mean(copies)) / np.std(copies, ddof=1)  # 1.94 SD
    assert f"gap {gap:+.2f} SD" in verdict.evidence and "rank p = 0.2 (higher), 1 (lower)" in verdict.evidence
    assert "the smallest p 4 copies allow: 0.2" in verdict.evidence
    assert "alpha 0.05 needs at least 20 copies" in verdict.evidence and "cannot be better than inconclusive" in (
        verdict.evidence
    )
    # within-network evidence: the per-input test against each copy, labelled so
    (within,) = [d for d in verdict.details if d.startswith("within-network (inputs as replicates)")]
    assert "against each of 4 copies, Wilcoxon: 4 higher" in within
    # the mirror: the group claimed higher than the network
    mirrored = check_greater(records, NS, "random[seeds=4]", "trained", "every")
    assert "rank p = 1 (higher), 0.2 (lower)" in mirrored.evidence and mirrored.verdict == "inconclusive"


def test_with_enough_copies_a_network_above_all_of_them_agrees_and_below_disagrees():
    copies = list(np.linspace(0.1, 0.3, 20))
    above = check_greater([record("trained", [0.5] * 4 + [0.6] * 4), *group(copies)], NS, "trained",
                          "random[seeds=20]", "every")  # fmt: skip
    assert above.verdict == "agrees" and above.p == pytest.approx(1 / 21)
    assert "needs at least" not in above.evidence
    below = check_greater([record("trained", [0.0] * 4 + [0.05] * 4), *group(copies)], NS, "trained",
                          "random[seeds=20]", "every")  # fmt: skip
    assert below.verdict == "disagrees" and below.p == pytest.approx(1 / 21)
    # a group with options, named with them in any order
    pytorch = [record(f"random[init=pytorch,seed={i}]", [v] * 8) for i, v in enumerate(copies)]
    renamed = check_greater([record("trained", [0.5] * 8), *pytorch], NS, "trained", "random[seeds=20,init=pytorch]",
                            "every")  # fmt: skip
    assert renamed.verdict == "agrees" and "20 networks" in renamed.evidence


def test_agreement_at_every_layer_is_an_intersection_union_test_and_disagreement_takes_holm():
    copies = list(np.linspace(0.1, 0.3, 20))
    records = []
    for index, layer in enumerate(("a", "b")):
        records += [record("trained", [0.5] * 8, layer=layer, index=index), *group(copies, layer=layer, index=index)]
    # above all 20 copies at both layers: each rank p 1/21 < 0.05, and agreeing at every layer needs no correction
    verdict = check_greater(records, NS, "trained", "random[seeds=20]", "every")
    assert verdict.verdict == "agrees" and verdict.p == pytest.approx(1 / 21)
    # below all 20 at one layer only: disagreeing at some layer is corrected (Holm: 2 x 1/21 > 0.05)
    records = [record("trained", [0.5] * 8, layer="a", index=0), *group(copies, layer="a", index=0)]
    records += [record("trained", [0.05] * 8, layer="b", index=1), *group(copies, layer="b", index=1)]
    verdict = check_greater(records, NS, "trained", "random[seeds=20]", "every")
    assert verdict.verdict == "inconclusive" and verdict.p == pytest.approx(2 / 21)


def test_two_groups_compare_their_network_values_by_welch():
    records = group([0.1, 0.2, 0.3, 0.4]) + group([0.5, 0.6, 0.65, 0.7], name="other")
    verdict = check_greater(records, NS, "other[seeds=4]", "random[seeds=4]", "every")
    expected = scipy.stats.ttest_ind([0.5, 0.6, 0.65, 0.7], [0.1, 0.2, 0.3, 0.4], equal_var=False).pvalue
    assert verdict.p == pytest.approx(expected) and verdict.verdict == "agrees"
    assert "Welch t over networks, networks as replicates" in verdict.evidence


def test_the_prediction_t_test_holds_its_level_and_its_tost_equals_a_rescaled_one_sample_t():
    rng = np.random.default_rng(0)
    draws = rng.normal(0, 1, (4000, 21))  # 21 exchangeable networks: one against the other 20
    rejected = np.mean([prediction_p(row[0], list(row[1:])) < 0.05 for row in draws])
    assert 0.04 < rejected < 0.06
    value, others, margin = 0.3, list(rng.normal(0.2, 0.1, 12)), 0.15
    low, high = prediction_equivalence_p(value, others, margin)
    scale = math.sqrt(len(others) + 1)  # t_prediction = -t_one_sample / sqrt(K + 1)
    t_low = -scipy.stats.ttest_1samp(others, value + margin).statistic / scale
    t_high = -scipy.stats.ttest_1samp(others, value - margin).statistic / scale
    assert low == pytest.approx(scipy.stats.t.sf(t_low, len(others) - 1))
    assert high == pytest.approx(scipy.stats.t.cdf(t_high, len(others) - 1))


# ---------------------------------------------------------------------------------------------
# Equivalence (expect: same)


def exact_one_sided_signed_rank(d: np.ndarray) -> float:
    """P(W+ >= observed) over all 2^n sign assignments of the ranks (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[d > 0].sum()
    totals = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    return float(np.mean([t >= observed - 1e-9 for t in totals]))


def test_tost_equals_scipys_one_sided_tests_and_an_exact_enumeration():
    rng = np.random.default_rng(3)
    a, b, margin = rng.normal(0.5, 0.1, 11), rng.normal(0.48, 0.1, 11), 0.05
    d = a - b
    low, high = equivalence_p(a, b, "paired_t", margin)
    assert low == pytest.approx(scipy.stats.ttest_1samp(d + margin, 0, alternative="greater").pvalue)
    assert high == pytest.approx(scipy.stats.ttest_1samp(d - margin, 0, alternative="less").pvalue)
    low, high = equivalence_p(a, b, "welch", margin)
    assert low == pytest.approx(scipy.stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater").pvalue)
    assert high == pytest.approx(scipy.stats.ttest_ind(a - margin, b, equal_var=False, alternative="less").pvalue)
    low, high = equivalence_p(a, b, "wilcoxon", margin)
    assert low == pytest.approx(exact_one_sided_signed_rank(d + margin))
    assert high == pytest.approx(exact_one_sided_signed_rank(-(d - margin)))  # P(W- >= observed W-)


def test_same_needs_equivalence_within_a_margin_not_just_no_significant_difference():
    rng = np.random.default_rng(5)
    inputs = rng.normal(0.2, 0.02, 40)
    close = [record("trained", inputs + rng.normal(0, 0.002, 40), chance=0.1), record("random", inputs, chance=0.1)]
    verdict = check_greater(close, NS, "trained", "random", "every", expect="same")
    assert verdict.verdict == "agrees" and "equivalence margin ±0.01 (10% of the chance level)" in verdict.evidence
    assert "TOST p = " in verdict.evidence and verdict.p < 0.05
    # few noisy inputs: no significant difference, and no equivalence either
    noisy = [record("trained", [0.1, 0.3, 0.2, 0.25], chance=0.1), record("random", [0.2, 0.1, 0.3, 0.15], chance=0.1)]
    unsure = check_greater(noisy, NS, "trained", "random", "every", expect="same")
    assert unsure.verdict == "inconclusive" and "1 neither shown" in unsure.evidence
    # a clear difference outside the margin disagrees
    apart = [record("trained", inputs + 0.05, chance=0.1), record("random", inputs, chance=0.1)]
    assert check_greater(apart, NS, "trained", "random", "every", expect="same").verdict == "disagrees"
    # a stated margin replaces the default; without a chance level there is no default
    wide = check_greater(apart, NS, "trained", "random", "every", expect="same", margin=0.1)
    assert wide.verdict == "agrees" and "margin ±0.1 (stated)" in wide.evidence
    bare = [record("trained", inputs + rng.normal(0, 0.002, 40)), record("random", inputs)]
    none = check_greater(bare, NS, "trained", "random", "every", expect="same")
    assert none.verdict == "inconclusive" and "state margin: to test equivalence" in none.evidence


def test_same_against_a_group_uses_the_prediction_interval():
    copies = list(np.linspace(0.19, 0.21, 20))  # networks spread 0.0063 SD: a margin of 0.05 is wide
    records = [record("trained", [0.2] * 8, chance=0.5), *group(copies, chance=0.5)]
    verdict = check_greater(records, NS, "trained", "random[seeds=20]", "every", expect="same")
    low, high = prediction_equivalence_p(0.2, copies, 0.05)
    assert verdict.verdict == "agrees" and verdict.p == pytest.approx(max(low, high))
    far = [record("trained", [0.5] * 8, chance=0.5), *group(copies, chance=0.5)]
    assert check_greater(far, NS, "trained", "random[seeds=20]", "every", expect="same").verdict == "disagrees"


def test_a_stated_margin_converts_between_readings_and_the_default_follows_the_chance_level():
    assert margin_for(None, "raw", "raw", 0.2) == pytest.approx(0.02)
    assert margin_for(None, "raw", "minus_chance", 0.2) == pytest.approx(0.02)
    assert margin_for(None, "raw", "over_chance", 0.2) == pytest.approx(0.1)
    assert margin_for(0.01, "raw", "over_chance", 0.2) == pytest.approx(0.05)
    assert margin_for(0.05, "over_chance", "raw", 0.2) == pytest.approx(0.01)
    assert margin_for(0.01, "raw", "raw", None) == 0.01 and margin_for(None, "raw", "raw", None) is None


def test_margin_is_checked_where_the_claim_is_parsed():
    claim = {"metric": "noise_score", "higher": "trained", "lower": "random"}
    for options, message in (
        ({"margin": 0.01}, "margin is the equivalence margin of expect: same"),
        ({"margin": -1, "expect": "same"}, "margin must be positive"),
        ({"margin": "wide", "expect": "same"}, "margin must be a finite number"),
        ({"lower": "random[seeds=0]"}, "seeds must be a whole number from 1 to 1000"),
    ):
        with pytest.raises(ReprevalError, match=re.escape(message)):
            parse_report({"claims": [{"claim": "c", "greater": claim | options}]}, "suite.yaml: report")


# ---------------------------------------------------------------------------------------------
# The p a verdict rests on


def test_each_verdict_keeps_the_p_it_rests_on():
    rng = np.random.default_rng(7)
    base = rng.normal(0.2, 0.02, 30)
    records = []
    for index, (layer, shift) in enumerate((("a", 0.03), ("b", 0.01), ("c", 0.0))):
        records += [
            record("trained", base + shift + rng.normal(0, 0.004, 30), layer=layer, index=index, chance=0.1),
            record("random", base, layer=layer, index=index, chance=0.1),
        ]

    def adjusted(chosen, unadjusted=False):
        judged = judge(side(chosen, NS, "trained"), side(chosen, NS, "random"), "every", "higher").judged
        return {j.layer: j.p if unadjusted else j.p_used for j in judged}

    ps = adjusted(records)
    assert check_greater(records, NS, "trained", "random", "shallowest").verdict == "agrees"
    first_two = [r for r in records if r.layer != "c"]
    two = check_greater(first_two, NS, "trained", "random", "every")
    # agreeing at every layer: the largest unadjusted p (an intersection-union test)
    assert two.verdict == "agrees" and two.p == pytest.approx(max(adjusted(first_two, unadjusted=True).values()))
    every = check_greater(records, NS, "trained", "random", "every")
    assert every.verdict == "inconclusive" and every.p == pytest.approx(min(ps.values()))  # the smallest seen
    flipped = check_greater(records, NS, "random", "trained", "every")
    assert flipped.verdict == "disagrees"
    assert flipped.p == pytest.approx(min(p for layer, p in ps.items() if layer != "c"))  # of the disagreeing ones
    same = check_greater(records, NS, "trained", "random", "deepest", expect="same")
    assert same.verdict == "agrees" and same.p < 0.05 and f"TOST p = {same.p:.2g}" in same.evidence


# ---------------------------------------------------------------------------------------------
# Sides naming any model


def test_claims_compare_variants_of_two_models_paired_when_they_saw_the_same_inputs():
    rng = np.random.default_rng(8)
    inputs = rng.normal(0.2, 0.02, 30)
    records = [
        record("trained", inputs + 0.01 + rng.normal(0, 0.002, 30), model="lenet_adv"),
        record("trained", inputs, model="lenet"),
        record("random", inputs - 0.05, model="lenet"),
    ]
    metric = MetricSelector("noise_score", model="lenet")
    verdict = check_greater(records, metric, "lenet_adv/trained", "trained", "every")  # plain: the metric's model
    wilcoxon = scipy.stats.wilcoxon(records[0].values, records[1].values).pvalue
    assert verdict.verdict == "agrees" and verdict.p == pytest.approx(wilcoxon)
    assert "lenet_adv/trained vs trained (each layer, Wilcoxon)" in verdict.evidence
    # another dataset (or another number of inputs): Welch, and the evidence says why
    records[0] = record("trained", inputs[:20] + 0.01, model="lenet_adv", dataset="other")
    unpaired = check_greater(records, metric, "lenet_adv/trained", "lenet/trained", "every")
    welch = scipy.stats.ttest_ind(records[0].values, records[1].values, equal_var=False).pvalue
    assert unpaired.p == pytest.approx(welch) and "Welch t, as the values do not pair" in unpaired.evidence


# ---------------------------------------------------------------------------------------------
# Identical copies counted once


def test_identical_copies_count_once_in_a_group_and_among_the_lower_sides():
    copies = [0.1, 0.2, 0.3, 0.4]
    records = [record("trained", [0.5] * 8), *group(copies)]
    twin = record("random[seed=3]", records[-1].values)  # a fifth copy identical to seed 3, under another name
    records.append(record("random[seed=4]", records[-1].values))
    records.append(record("random[init=pytorch]", twin.values))
    verdict = check_greater(records, NS, "trained", ["random[seeds=5]", "random[init=pytorch]"], "every")
    assert "4 networks" in verdict.evidence and "random[seed=4] (= random[seed=3]) of random[seeds=5]" in (
        verdict.evidence
    )
    assert "random[init=pytorch] (= random[seed=3])" in verdict.evidence
    assert {check.lower for check in verdict.checks} == {"random[seeds=5]"}  # the twin is not a second copy
    # two lower entries that are one network: checked once
    pair = [record("trained", [0.5] * 8, signature=(1.0, 2.0)), record("random", [0.1] * 8, signature=(3.0, 4.0)),
            record("random[init=pytorch]", [0.1] * 8, signature=(3.0, 4.0))]  # fmt: skip
    robust = check_greater(pair, NS, "trained", ["random", "random[init=pytorch]"], "every", test="welch")
    assert [c.lower for c in robust.checks] == ["random"] and "random[init=pytorch] (= random)" in robust.evidence
    # two dead networks (all-zero embedding, every score 0) are two draws, not one
    dead = [record("trained", [0.5] * 8), *group([0.0, 0.0, 0.3, 0.4])]
    for r in dead[1:3]:
        r.values, r.embedding_signature = [0.0] * 8, [0.0, 0.0]
    assert "4 networks" in check_greater(dead, NS, "trained", "random[seeds=4]", "every").evidence


# ---------------------------------------------------------------------------------------------
# Validation: the sides a suite runs


@pytest.mark.parametrize(
    ("variants", "models", "side_name", "message"),
    [
        (None, None, "nosuch/trained", "claim compares model 'nosuch', which the suite does not have; models: ae"),
        (None, None, "ae/traned", "variant 'traned', which the suite does not run for model 'ae'; did you mean"),
        ([{"random": {"seeds": 3}}], None, "random[seeds=5]", "group 'random[seeds=5]', which the suite does not"),
        (["trained"], None, "random[seeds=3]", "declare it: {random: {seeds: K}}"),
    ],
)
def test_claims_naming_what_the_suite_does_not_run_fail_at_validate(plugins, variants, models, side_name, message):
    from repreval.suite import parse_suite

    data = digits_suite()
    if variants is not None:
        data["variants"] = ["trained", *variants]
    data["report"] = {"claims": [{"claim": "c", "greater": {"metric": "noise_score", "higher": side_name,
                                                              "lower": "random"}}]}  # fmt: skip
    with pytest.raises(ReprevalError, match=re.escape(message)) as caught:
        parse_suite(data, plugins)
    assert "report.claims[0].greater.higher" in str(caught.value) and "\n" not in str(caught.value)


def test_claims_may_name_other_models_replicates_and_groups_in_any_option_order(plugins):
    from repreval.suite import parse_suite

    data = digits_suite()
    data["models"]["ae"]["seeds"] = [0, 1]
    data["models"]["wide"] = {**data["models"]["ae"], "options": {"bottleneck": 6}}
    data["variants"] = ["trained", {"random": {"seeds": 3, "init": "pytorch"}}]
    claims = [
        {"higher": "wide@1/trained", "lower": "ae@0/trained"},
        {"higher": "trained", "lower": ["random[seeds=3,init=pytorch]", "random[init=pytorch,seed=1]"]},
    ]
    metric = {"score": "noise_score", "saliency": "gradients"}
    data["report"] = {"claims": [{"claim": "c", "greater": {"metric": metric, **c}} for c in claims]}
    suite = parse_suite(data, plugins)
    assert suite.report.claims[1].lower[0] == "random[seeds=3,init=pytorch]"


# ---------------------------------------------------------------------------------------------
# The negative control, on real records


def test_negative_control_a_random_network_is_not_above_twenty_random_networks(tmp_path, monkeypatch, one_thread):
    """benchmarks_yaml/controls/negative-control.yaml: the quickstart's untrained ae:classifier, Grad-CAM noise
    score at encoder.block2, 64 held-out digits. random[seed=100] against the 20 networks of random[seeds=20] is
    inconclusive; against random[seed=1] alone, the per-input Wilcoxon test calls it significant."""
    import repreval
    from repreval.findings import build_findings
    from repreval.folders import read_facts

    monkeypatch.chdir(tmp_path)
    result = repreval.run(ROOT / "benchmarks_yaml" / "controls" / "negative-control.yaml", out="results/control")
    assert result.ok and result.computed == 21
    metric = MetricSelector("noise_score", saliency="grad_cam")
    networks = check_greater(result.records, metric, "random[seed=100]", "random[seeds=20]", "every")
    one = check_greater(result.records, metric, "random[seed=100]", "random[seed=1]", "every")
    assert networks.verdict == "inconclusive" and networks.p > 0.2 and "20 networks" in networks.evidence
    assert one.verdict == "disagrees" and one.p < 1e-6 and "Wilcoxon" in one.evidence
    within = next(d for d in networks.details if d.startswith("within-network"))
    assert "against each of 20 copies, Wilcoxon" in within
    findings = build_findings(result.records, read_facts(result.folder))
    assert [v.verdict for v in findings.verdicts] == ["inconclusive", "disagrees"]
