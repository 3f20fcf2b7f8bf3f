"""Claim statistics against oracles that do not share their mechanism: exact sign-flip enumeration for
Wilcoxon, the incomplete beta function for the paired t-test, Holm's step-down rejection rule, hand-made
records for the paired claims, chance-relative readings and robustness across random copies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import betainc

from repreval.analysis import embedding_twins, read_values
from repreval.api import ReprevalError
from repreval.comparisons import check_greater, judge, side
from repreval.config import MetricSelector
from repreval.statistics import bootstrap_interval, compare, holm, welch_p
from repreval.store import ScoreRecord

NS = MetricSelector("noise_score")


def record(variant, values, *, layer="l1", index=0, chance=None, signature=(), score="noise_score") -> ScoreRecord:
    chance_values = list(chance) if chance is not None else []
    return ScoreRecord(
        unit_id=f"{variant}-{layer}", suite="s", model="m", model_spec="x:y", variant=variant, layer=layer,
        layer_index=index, saliency="gradients", channel_aggregator="abs", embedding_aggregator="mean",
        score=score, higher_is_better=True, value=float(np.mean(values)), values=list(values),
        reference=float(np.mean(chance_values)) if chance_values else None, reference_values=chance_values,
        embedding_signature=list(signature), dataset="d",
    )  # fmt: skip


def exact_wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided p by enumerating all 2^n sign assignments of the ranks (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    extreme = sum(
        abs(sum(r for r, s in zip(ranks, signs) if s) - centre) >= abs(observed - centre) - 1e-9
        for signs in itertools.product((0, 1), repeat=len(d))
    )
    return extreme / 2 ** len(d)


def test_wilcoxon_p_equals_exact_sign_flip_enumeration():
    rng = np.random.default_rng(0)
    for n in (6, 9, 12):
        for shift in (0.0, 0.4, 1.0):
            a = rng.normal(0, 1, n)
            b = a - shift - rng.normal(0, 0.5, n)
            result = compare(a, b, "wilcoxon")
            assert result.p == pytest.approx(exact_wilcoxon_p(a - b), rel=1e-9)


def test_paired_t_p_equals_the_incomplete_beta_form_and_d_z_by_hand():
    rng = np.random.default_rng(1)
    for n in (3, 8, 30):
        a, b = rng.normal(1, 1, n), rng.normal(0.7, 1, n)
        d = a - b
        t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
        df = n - 1
        result = compare(a, b, "paired_t")
        assert result.p == pytest.approx(betainc(df / 2, 0.5, df / (df + t * t)), rel=1e-9)
        assert result.effect == pytest.approx(d.mean() / d.std(ddof=1))


def test_paired_tests_see_what_an_unpaired_test_misses():
    """A constant shift of 0.01 on inputs that vary by 1: every input is higher, Welch cannot tell."""
    base = np.linspace(0, 1, 20)
    shifted = base + 0.01
    assert compare(shifted, base, "welch").p > 0.9
    assert compare(shifted, base, "wilcoxon").p < 1e-4
    assert compare(shifted, base, "paired_t").p < 1e-10  # (almost) no spread in the differences
    assert compare(shifted, base, "wilcoxon").effect == 1.0  # rank-biserial: every pair higher


def test_rank_biserial_by_hand_and_zero_differences():
    # |d| ranks 1, 2, 3; positive ranks 1 + 2, negative 3: r = (3 - 3) / 6
    assert compare([1.0, 2.0, -3.0], [0.0, 0.0, 0.0], "wilcoxon").effect == 0.0
    tied = compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "wilcoxon")
    assert tied.p == 1.0 and tied.effect == 0.0 and (tied.low, tied.high) == (0.0, 0.0)


def test_holm_matches_the_step_down_rejection_rule():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 8))
        adjusted = holm(list(p))
        for alpha in (0.01, 0.05):
            order = np.argsort(p)
            rejected = set()
            for step, i in enumerate(order):  # reject while p_(i) <= alpha / (m - i)
                if p[i] > alpha / (len(p) - step):
                    break
                rejected.add(i)
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == rejected
    assert math.isnan(holm([0.01, math.nan])[1]) and holm([0.01, math.nan])[0] == 0.01


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1, 40)
    low, high = bootstrap_interval((d,), seed=5)
    assert low < d.mean() < high and (low, high) == bootstrap_interval((d,), seed=5)
    assert (low, high) != bootstrap_interval((d,), seed=6)
    # about 95 % of intervals cover the true mean
    covered = sum(
        bootstrap_interval((x,), seed=i)[0] <= 0.2 <= bootstrap_interval((x,), seed=i)[1]
        for i, x in enumerate(rng.normal(0.2, 1, (100, 30)))
    )
    assert 88 <= covered <= 100


def test_readings_subtract_each_inputs_chance_or_divide_by_the_mean_chance():
    r = record("trained", [0.3, 0.5], chance=[0.1, 0.3])
    assert read_values(r, "raw") == [0.3, 0.5]
    assert read_values(r, "minus_chance") == pytest.approx([0.2, 0.2])
    assert read_values(r, "over_chance") == pytest.approx([1.5, 2.5])
    with pytest.raises(ReprevalError, match="no chance level"):
        read_values(record("trained", [0.3]), "minus_chance")


def test_chance_relative_reading_can_reverse_a_raw_verdict():
    """The issue's case: random scores higher raw only because its chance level is higher."""
    rng = np.random.default_rng(4)
    inputs = rng.normal(0, 0.01, 24)
    records = [
        record("trained", 0.14 + inputs, chance=0.11 + rng.normal(0, 0.002, 24)),
        record("random", 0.19 + inputs + rng.normal(0, 0.002, 24), chance=0.16 + rng.normal(0, 0.002, 24)),
    ]
    raw = check_greater(records, NS, "trained", "random", "shallowest", expect="same")
    assert raw.verdict == "disagrees"
    above = check_greater(records, MetricSelector("noise_score", reading="minus_chance"), "trained", "random",
                          "shallowest", expect="same")  # fmt: skip
    assert above.verdict == "agrees"
    assert {(c.reading, c.verdict) for c in raw.checks} >= {("raw", "disagrees"), ("minus_chance", "agrees")}
    assert raw.robust is False and raw.robustness.startswith("not robust")


def test_holm_applies_across_the_layers_of_one_claim():
    rng = np.random.default_rng(5)
    base = rng.normal(0, 1, 12)
    records = []
    for index, layer in enumerate(("a", "b", "c")):
        records += [record("trained", base + 0.3, layer=layer, index=index)]
        records += [record("random", base + rng.normal(0, 0.5, 12), layer=layer, index=index)]
    every = judged(records, "every")
    assert every[0].p == pytest.approx(compare(base + 0.3, records[1].values).p)
    assert [j.p_adjusted for j in every] == pytest.approx(holm([j.p for j in every]))
    single = judged(records, "deepest")
    assert [j.layer for j in single] == ["c"] and single[0].p_adjusted is None


def judged(records, layers, higher="trained", lower="random"):
    """The judged layers of ``higher`` against ``lower`` (expect: higher, Wilcoxon, raw)."""
    return judge(side(records, NS, higher), side(records, NS, lower), layers, "higher").judged


def test_a_claim_is_robust_only_when_every_random_copy_agrees():
    rng = np.random.default_rng(6)
    base = rng.normal(0.2, 0.02, 16)
    records = [
        record("trained", base + 0.05),
        record("random", base),
        record("random[seed=1]", base + rng.normal(0, 0.001, 16)),
        record("random[init=pytorch]", base + 0.1),
    ]
    both = check_greater(records, NS, "trained", ["random", "random[seed=1]"], "shallowest")
    assert both.verdict == "agrees" and both.robust and both.robustness == "robust (2 of 2)"
    three = check_greater(records, NS, "trained", ["random", "random[seed=1]", "random[init=pytorch]"], "shallowest")
    assert three.verdict == "agrees" and not three.robust
    assert [c.lower for c in three.checks if c.verdict == "disagrees"] == ["random[init=pytorch]"]
    assert len(three.details) == 1 and three.details[0].startswith("l1:")  # only the judged layer


def test_the_curve_pairs_each_inputs_mean_over_layers():
    rng = np.random.default_rng(7)
    records = []
    means_t, means_r = np.zeros(10), np.zeros(10)
    for index in range(3):
        t, r = rng.normal(0.3, 0.05, 10), rng.normal(0.25, 0.05, 10)
        means_t, means_r = means_t + t / 3, means_r + r / 3
        records += [
            record("trained", t, layer=f"l{index}", index=index),
            record("random", r, layer=f"l{index}", index=index),
        ]
    (curve,) = judged(records, "curve")
    assert curve.layer == "curve" and curve.difference == pytest.approx(np.mean(means_t - means_r))
    assert curve.p == pytest.approx(compare(means_t, means_r, "wilcoxon").p)


def test_values_that_do_not_pair_are_compared_by_welch_and_the_evidence_says_so():
    records = [record("trained", [0.1, 0.2, 0.3]), record("random", [0.1, 0.2])]
    verdict = check_greater(records, NS, "trained", "random", "every")
    assert verdict.verdict == "inconclusive" and "Welch t, as the values do not pair" in verdict.evidence
    assert verdict.p == pytest.approx(welch_p([0.1, 0.2, 0.3], [0.1, 0.2]))
    assert "do not pair" not in check_greater(records, NS, "trained", "random", "every", test="welch").evidence


def test_variants_that_embed_alike_are_twins_and_left_out_of_correlations():
    from repreval.analysis import correlate

    signature = [0.5, -1.25, 3.0]
    records = []
    for i, variant in enumerate(["trained", "randomize_layer[layer=fc]", "randomize_layer[layer=conv1]", "random"]):
        moved = signature if i < 2 else [v + i for v in signature]
        records.append(record(variant, [0.1 * (4 - i)], signature=moved))
        records.append(
            ScoreRecord(
                unit_id=f"acc-{variant}",
                suite="s",
                model="m",
                model_spec="x:y",
                variant=variant,
                layer="(embedding)",
                layer_index=0,
                saliency=None,
                channel_aggregator=None,
                embedding_aggregator=None,
                score="acc.top1",
                higher_is_better=True,
                value=0.9 - 0.2 * i,
                values=[0.9 - 0.2 * i],
                embedding_signature=moved,
            )  # fmt: skip
        )
    assert embedding_twins(records) == {("m", "randomize_layer[layer=fc]"): "trained"}
    result = correlate(records, NS, MetricSelector("acc.top1"))
    assert len(result.points) == 3 and result.left_out == ["m · randomize_layer[layer=fc] (embeds as trained)"]


def test_a_wilcoxon_verdict_follows_the_ranks_not_a_mean_pulled_by_a_few_large_pairs():
    from repreval.analysis import outcome as _outcome

    lower = [1.0] * 45
    higher = [1.0 - 0.01] * 40 + [1.0 + 1.0] * 5  # 40 pairs slightly below, 5 far above: mean difference > 0
    result = compare(higher, lower, "wilcoxon")
    assert result.difference > 0 and result.effect < 0 and result.p < 0.05
    assert result.direction == -1 and _outcome(result) == "disagrees"
    assert compare(higher, lower, "paired_t").direction == 1  # the t-test reads the mean


def test_below_a_threshold_or_another_metric_of_the_same_rows():
    from repreval.analysis import check_below

    drop = record("trained", [0.0] * 30 + [1.0] * 10, score="parts.accuracy_drop")  # mean 0.25, SE 0.069
    assert check_below([drop], MetricSelector("parts.accuracy_drop"), 0.5, None, 0).verdict == "agrees"
    assert check_below([drop], MetricSelector("parts.accuracy_drop"), 0.2, None, 0).verdict == "inconclusive"
    assert check_below([drop], MetricSelector("parts.accuracy_drop"), 0.02, None, 0).verdict == "disagrees"
    generator = np.random.default_rng(0)
    stable = record("trained", list(0.10 + 0.01 * generator.standard_normal(30)), score="parts.location_instability")
    own = record(
        "trained", list(0.13 + 0.01 * generator.standard_normal(50)), score="parts.performer_location_instability"
    )
    mine, theirs = MetricSelector("parts.location_instability"), MetricSelector("parts.performer_location_instability")
    below = check_below([stable, own], mine, None, theirs, 0)
    assert below.verdict == "agrees" and "Welch" in below.details[0]
    assert check_below([stable, own], theirs, None, mine, 0).verdict == "disagrees"
