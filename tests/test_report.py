"""Reports: correlations (Spearman as scipy computes it), drift, replicates, claims, the Markdown with plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from repreval.analysis import correlate, drift, replicates
from repreval.api import ReprevalError
from repreval.claims import parse_report
from repreval.comparisons import check_greater
from repreval.config import Drift, MetricSelector
from repreval.data import apply_drift
from repreval.store import ScoreRecord


def record(
    model="m",
    variant="trained",
    layer="l1",
    layer_index=0,
    score="noise_score",
    saliency="gradients",
    channels="abs",
    components="mean",
    dataset="d",
    value=None,
    values=(0.5,),
    extras=None,
) -> ScoreRecord:
    values = list(values)
    return ScoreRecord(
        unit_id=f"{model}{variant}{layer}{score}{dataset}{saliency}",
        suite="s",
        model=model,
        model_spec="x:y",
        variant=variant,
        layer=layer,
        layer_index=layer_index,
        saliency=saliency,
        channel_aggregator=channels,
        embedding_aggregator=components,
        score=score,
        higher_is_better=True,
        value=float(np.mean(values)) if value is None else value,
        values=values,
        dataset=dataset,
        extras=extras or {},
    )


def test_spearman_over_variants_matches_scipy_on_the_same_numbers():
    rng = np.random.default_rng(0)
    noise = rng.random(12)
    accuracy = noise + 0.3 * rng.random(12)
    records = []
    for i in range(12):  # a two-layer noise-score curve per variant and one accuracy value
        records += [
            record(variant=f"v{i}", layer="l1", layer_index=0, value=noise[i] - 0.1),
            record(variant=f"v{i}", layer="l2", layer_index=1, value=noise[i] + 0.1),
            record(
                variant=f"v{i}",
                layer="(embedding)",
                score="classifier_accuracy[dataset=h].top1",
                saliency=None,
                channels=None,
                components=None,
                dataset=None,
                value=accuracy[i],
            ),
        ]
    result = correlate(records, MetricSelector("noise_score", "gradients"), MetricSelector("classifier_accuracy.top1"))
    expected = spearmanr(noise, accuracy)
    assert len(result.points) == 12
    assert result.rho == pytest.approx(expected.statistic, abs=1e-12)
    assert result.p == pytest.approx(expected.pvalue, rel=1e-9)


def test_a_selector_matching_two_different_scores_is_refused():
    records = [record(channels="abs"), record(channels="mean", variant="random")]
    with pytest.raises(ReprevalError, match="matches 2 different scores"):
        correlate(records, MetricSelector("noise_score"), MetricSelector("noise_score"))


def test_drift_relative_drop_and_its_correlation_with_lambda():
    clean = [0.4, 0.5, 0.8]
    records = [record(dataset="clean", values=clean)]
    strengths = {"clean": 0.0}
    for i, strength in enumerate((0.1, 0.2, 0.3), start=1):
        records.append(record(dataset=f"drift{i}", values=[v * (1 - strength) for v in clean]))
        strengths[f"drift{i}"] = strength
    (result,) = drift(records, MetricSelector("noise_score", layer="l1"), strengths)
    assert result.lambdas == [0.0, 0.1, 0.2, 0.3]
    assert result.relative[0.2] == pytest.approx([0.2, 0.2, 0.2])
    # per input, over the drifted lambdas (lambda = 0 is the reference, left out): every drop rises with lambda
    assert result.input_rhos == pytest.approx([1.0, 1.0, 1.0]) and result.count("positive") == 3


def test_drift_transform_is_seeded_clipped_and_scaled():
    images = torch.rand(4, 1, 8, 8)
    small, large = apply_drift(Drift(0.1, seed=3), images), apply_drift(Drift(0.5, seed=3), images)
    assert torch.equal(apply_drift(Drift(0.0, seed=3), images), images)
    assert torch.equal(small, apply_drift(Drift(0.1, seed=3), images))  # same seed, same eps
    assert small.min() >= 0 and large.max() <= 1
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(small, (images + 0.1 * eps).clamp(0, 1))
    assert (large - images).abs().mean() > (small - images).abs().mean()


def test_replicates_mean_std_and_time_ratio():
    records = [
        record(model=f"base@{s}", score="acc.top1", value=v, extras={"train_seconds": 10.0})
        for s, v in enumerate((0.8, 0.9))
    ] + [
        record(model=f"ns@{s}", score="acc.top1", value=v, extras={"train_seconds": 15.0})
        for s, v in enumerate((0.7, 0.9))
    ]
    groups = {"base@0": "base", "base@1": "base", "ns@0": "ns", "ns@1": "ns"}
    rows = replicates(records, MetricSelector("acc.top1"), groups, {"base": None, "ns": "base"})
    by_group = {row.group: row for row in rows}
    assert by_group["base"].mean == pytest.approx(0.85) and by_group["base"].std == pytest.approx(0.05)
    assert by_group["ns"].time_ratio == pytest.approx(1.5) and by_group["base"].time_ratio is None


def test_greater_claims_use_a_significance_test_per_layer():
    rng = np.random.default_rng(1)
    high, low = rng.normal(1.0, 0.1, 30), rng.normal(0.5, 0.1, 30)
    same = rng.normal(0.5, 0.1, 30)
    records = [
        record(variant="trained", values=high),
        record(variant="random", values=low),
        record(variant="trained", layer="l2", layer_index=1, values=same),
        record(variant="random", layer="l2", layer_index=1, values=low),
    ]
    selector = MetricSelector("noise_score")
    assert check_greater(records, selector, "trained", "random", "shallowest").verdict == "agrees"
    assert check_greater(records, selector, "trained", "random", "every").verdict == "inconclusive"
    same = check_greater(records, selector, "trained", "random", "deepest", expect="same")
    assert same.verdict == "inconclusive" and "state margin: to test equivalence" in same.evidence  # no chance level
    with_margin = check_greater(records, selector, "trained", "random", "deepest", expect="same", margin=0.1)
    assert with_margin.verdict == "agrees"
    assert check_greater(records, selector, "random", "trained", "shallowest").verdict == "disagrees"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"colorations": []}, "unknown key 'colorations'"),
        ({"correlations": [{"x": "noise_score"}]}, "each correlation is"),
        ({"claims": [{"claim": "c", "correlation": {"index": 0, "sign": "positive"}}]}, "no correlation number 0"),
        (
            {
                "claims": [
                    {"claim": "c", "greater": {"metric": "noise_score", "higher": "a", "lower": "b", "layers": "all"}}
                ]
            },
            "unknown layers 'all'",
        ),
        ({"drift": {"metric": {"score": "noise_score", "colour": "red"}}}, "unknown metric key 'colour'"),
    ],
)
def test_malformed_report_sections_fail_with_their_key(spec, message):
    with pytest.raises(ReprevalError, match=message):
        parse_report(spec, "suite.yaml: report")


def test_welch_p_value_matches_scipy_ttest():
    import numpy as np
    from scipy.stats import ttest_ind

    from repreval.statistics import welch_p as _welch

    rng = np.random.default_rng(0)
    for _ in range(200):
        na, nb = rng.integers(2, 40, 2)
        a = rng.normal(0, rng.uniform(0.01, 2), na)
        b = rng.normal(rng.uniform(-1, 1), rng.uniform(0.01, 2), nb)
        assert _welch(list(a), list(b)) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert _welch([1.0, 1.0], [2.0, 2.0]) == 0.0  # scipy: t = inf
    assert np.isnan(_welch([1.0, 1.0], [1.0, 1.0])) and np.isnan(_welch([1.0], [2.0, 3.0]))


def test_leaderboard_ties_rank_in_name_order_whatever_the_record_order():
    from repreval.leaderboard import build_leaderboards
    from repreval.store import ScoreRecord

    def record(variant, value):
        return ScoreRecord(
            unit_id=variant, suite="s", model="m", model_spec="x:m", higher_is_better=True, variant=variant, layer="(embedding)", layer_index=0,
            score="accuracy", saliency=None, channel_aggregator=None, embedding_aggregator=None,
            value=value, values=[value], status="ok",
        )  # fmt: skip

    records = [record("b", 0.5), record("a", 0.5), record("c", 0.7)]
    for order in (records, records[::-1]):
        (board,) = build_leaderboards(order)
        assert [row.variant for row in board.rows] == ["c", "a", "b"]


def test_each_board_says_how_to_read_it_against_chance():
    from repreval.leaderboard import build_leaderboards

    def at(variant, value, chance):
        r = record(variant=variant, values=[value])
        r.reference, r.reference_values = chance, [chance]
        return r

    (board,) = build_leaderboards([at("random", 0.19, 0.15), at("trained", 0.15, 0.10)])
    assert [row.variant for row in board.rows] == ["random", "trained"]  # raw ranking as before
    assert board.rows[1].above_chance == pytest.approx(0.05)
    sentence = board.interpretation()
    assert "m · random ranks first on the raw score, m · trained above chance (+0.050 against +0.040)" in sentence
    (board,) = build_leaderboards([at("random", 0.1, 0.15), at("trained", 0.1, 0.12)])
    assert board.interpretation().startswith("No row beats its own chance level")
    (board,) = build_leaderboards([at("random", 0.205, 0.2), at("trained", 0.19, 0.18)])
    assert board.interpretation().startswith("Every row is within 10% of its chance level (largest gap +0.010")
    (board,) = build_leaderboards([record(variant="a", score="acc", values=[0.5]), record(variant="b", score="acc")])
    assert board.interpretation() == ""  # no chance level, nothing to say


@pytest.mark.parametrize(
    "greater, message",
    [
        ({"test": "mann_whitney"}, "unknown test 'mann_whitney'"),
        ({"readings": ["raw", "log"]}, "readings must be a non-empty list"),
        ({"lower": []}, "lower must name a variant"),
        ({"metric": {"score": "noise_score", "reading": "relative"}}, "unknown reading 'relative'"),
    ],
)
def test_malformed_paired_claims_fail_with_their_key(greater, message):
    claim = {"metric": "noise_score", "higher": "trained", "lower": "random"} | greater
    with pytest.raises(ReprevalError, match=message):
        parse_report({"claims": [{"claim": "c", "greater": claim}]}, "suite.yaml: report")


def test_reading_a_score_without_chance_level_relative_to_chance_is_refused(plugins):
    from conftest import digits_suite

    from repreval.suite import parse_suite

    suite = digits_suite()
    suite["evaluation"]["scores"] = ["noise_score", {"classifier_accuracy": {"dataset": "held"}}]
    suite["report"] = {
        "correlations": [{"x": "noise_score", "y": {"score": "classifier_accuracy.top1", "reading": "minus_chance"}}]
    }
    with pytest.raises(ReprevalError, match="has no chance level"):
        parse_suite(suite, plugins)


def test_a_run_where_everything_failed_draws_no_plots(tmp_path):
    from repreval.render.report import write_report
    from repreval.store import ResultStore, ScoreRecord

    store = ResultStore(tmp_path)
    for index, layer in enumerate(("block1", "block2")):
        store.write(
            ScoreRecord(
                unit_id=f"u{index}", suite="s", model="m", model_spec="x:y", variant="random", layer=layer,
                layer_index=index, saliency="gradients", channel_aggregator="abs", embedding_aggregator="mean",
                score="noise_score", higher_is_better=True, status="failed", error="RuntimeError: boom",
            )
        )  # fmt: skip
    text = write_report(tmp_path).read_text()
    assert "failed" in text and not list((tmp_path / "plots").glob("*.png"))
