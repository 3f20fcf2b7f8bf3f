"""``repreval bench --estimates`` (repreval.rank_agreement): its arithmetic against scipy and hand cases, and the
quick benchmark end to end through the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from repreval.cli import main
from repreval.rank_agreement import (
    COMPONENT_COUNTS,
    MEASURED_TAU_MIN,
    Comparison,
    RunTiming,
    covered,
    expected_tau,
    kendall_tau,
    recommended_components,
    score_row,
    standardized_error,
    time_ratios,
)
from repreval.runs import read_results


def test_kendall_tau_by_hand_and_against_scipy():
    # one pair of six swapped (2 and 3): (5 concordant - 1 discordant) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    exact = rng.normal(size=12)
    estimates = exact + rng.normal(scale=0.5, size=12)
    assert kendall_tau(list(exact), list(estimates)) == pytest.approx(kendalltau(exact, estimates).statistic)
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1.0, 2.0], [3.0, 3.0]) is None  # a constant side: undefined


def test_coverage_and_standardized_error_by_hand():
    assert not covered(1.0, 1.1, 0.05)  # 0.1 > 1.96 * 0.05 = 0.098
    assert covered(1.0, 1.1, 0.06)  # 0.1 <= 0.1176
    assert covered(2.0, 2.0, 0.0)
    assert standardized_error(1.0, 0.7, 0.2) == pytest.approx(1.5)
    assert standardized_error(1.0, 1.0, 0.0) is None


def test_expected_tau_by_hand_and_by_simulation():
    # two cells 1 apart, combined SE sqrt(0.6² + 0.8²) = 1: kept with Φ(1), swapped with Φ(-1): 2 Φ(1) - 1
    assert expected_tau([0.0, 1.0], [0.6, 0.8]) == pytest.approx(math.erf(1 / math.sqrt(2)))
    assert expected_tau([0.0, 1.0, 2.0], [0.0, 0.0, 0.0]) == 1.0
    assert expected_tau([1.0], [0.1]) is None
    values, errors = np.array([0.0, 0.3, 0.5, 1.2, 1.3]), np.array([0.2, 0.1, 0.3, 0.25, 0.05])
    rng = np.random.default_rng(1)
    draws = values + rng.normal(size=(20000, 5)) * errors
    signs = np.sign(values[:, None] - values[None, :]) * np.sign(draws[:, :, None] - draws[:, None, :])
    upper, lower = np.triu_indices(5, 1)
    simulated = signs[:, upper, lower].mean()  # tau-a over the 10 pairs, averaged over draws
    assert expected_tau(list(values), list(errors)) == pytest.approx(simulated, abs=0.01)


def test_score_row_by_hand():
    cells = [("m", "trained", f"l{i}") for i in range(4)]
    rows = [  # seed 0 ranks all four right; seed 1 swaps the first two
        *(Comparison(0, cell, "noise_score", float(i), float(i) + 0.1, 0.1) for i, cell in enumerate(cells)),
        *(
            Comparison(1, cell, "noise_score", float(i), e, 0.5)
            for i, (cell, e) in enumerate(zip(cells, [1.2, 0.1, 2, 3]))
        ),
    ]
    row = score_row(rows)
    assert row["tau_per_seed"] == pytest.approx([1.0, 4 / 6])
    assert (row["tau_mean"], row["tau_min"]) == (pytest.approx(5 / 6), pytest.approx(4 / 6))
    # |error| / SE: seed 0 four times 0.1/0.1 = 1; seed 1: 1.2/0.5, 0.9/0.5, 0, 0 -> covered 1.96 SE = 0.98: 3 of 4
    assert row["mean_error_over_se"] == pytest.approx((4 + 2.4 + 1.8) / 8)
    assert row["coverage"] == pytest.approx(7 / 8)
    assert row["zero_se"] == 0


def test_time_ratios_compare_the_same_models():
    runs = [RunTiming("a", seed, None, 100.0, {"small": 10.0, "large": 90.0}, 4, 0) for seed in (0, 1)] + [
        RunTiming("a", 0, 64, 30.0, {"large": 9.0}, 2, 0),  # the small model (D <= 64) is not run at k = 64
        RunTiming("a", 1, 64, 20.0, {"large": 9.0}, 2, 0),
        RunTiming("a", 0, 16, 50.0, {"small": 5.0, "large": 3.0}, 4, 0),  # first seed: no wall ratio
        RunTiming("a", 1, 16, 25.0, {"small": 5.0, "large": 3.0}, 4, 0),
    ]
    at_64 = time_ratios(runs, 64)
    assert at_64["compute_ratio"] == pytest.approx(18 / 180)
    assert at_64["wall_ratio"] is None  # no run at 64 holds every model of its exact run
    at_16 = time_ratios(runs, 16)
    assert at_16["compute_ratio"] == pytest.approx(16 / 200)
    assert at_16["wall_ratio"] == pytest.approx(25 / 100)
    resumed = [*runs[:-1], RunTiming("a", 1, 16, 0.5, {"small": 5.0, "large": 3.0}, 0, 4)]  # records kept seconds
    assert time_ratios(resumed, 16)["compute_ratio"] == pytest.approx(16 / 200)
    assert time_ratios(resumed, 16)["wall_ratio"] is None


def test_recommended_components_follows_the_measured_table():
    for k in COMPONENT_COUNTS:
        target = MEASURED_TAU_MIN[k]
        smallest = next(c for c in COMPONENT_COUNTS if MEASURED_TAU_MIN[c] >= target)
        assert recommended_components(4096, target) == smallest
        assert recommended_components(2 * smallest + 1, target) == smallest
        assert recommended_components(2 * smallest, target) is None  # half of D or more: sampling saves nothing
    assert recommended_components(4096, 1.0) is None  # no measured k ranked every cell right in every seed
    assert recommended_components(1280) == 32 and recommended_components(64) is None  # the documented rule
    with pytest.raises(ValueError):
        recommended_components(0)
    with pytest.raises(ValueError):
        recommended_components(512, 1.5)


def test_quick_benchmark_end_to_end(tmp_path, capsys):
    code = main(["bench", "--estimates", "--quick", "--json", "--out", str(tmp_path / "runs")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and not report["failures"]
    assert {run["k"] for run in report["runs"]} == {None, *COMPONENT_COUNTS}
    exact = {  # the exact run's records, read back from its folder
        (r.model, r.variant, r.layer, r.score): r.value
        for r in read_results(tmp_path / "runs" / "digits" / "seed0" / "exact").records
    }
    assert [row["k"] for row in report["rows"]] == list(COMPONENT_COUNTS)
    for row in report["rows"]:
        # the random cnn:small (D = 64, 4 layers) is exact from k = 64 on: left out, never counted as an estimate
        assert (row["cells"], row["exact_cells"]) == ((8, 0) if row["k"] < 64 else (4, 4))
        assert row["compute_ratio"] > 0
        for score in ("noise_score", "variance_score"):
            chosen = [c for c in report["comparisons"] if c["k"] == row["k"] and c["score"] == score]
            assert len(chosen) == row["cells"] == row["scores"][score]["comparisons"]
            assert all(c["exact"] == exact[(*c["cell"], score)] and c["standard_error"] > 0 for c in chosen)
            figures = row["scores"][score]  # against plain code and scipy (one seed)
            hits = [abs(c["estimate"] - c["exact"]) <= 1.959964 * c["standard_error"] for c in chosen]
            assert figures["coverage"] == pytest.approx(sum(hits) / len(hits))
            tau = kendalltau([c["exact"] for c in chosen], [c["estimate"] for c in chosen]).statistic
            assert figures["tau_min"] == pytest.approx(tau)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["bench", "--estimates", "--seeds", "0"]) == 2
    monkeypatch.setenv("REPREVAL_DATA", str(tmp_path / "absent"))
    assert main(["bench", "--estimates", "--out", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "--seeds" in lines[0] and "real data not found" in lines[1] and "REPREVAL_DATA" in lines[1]
    assert not (tmp_path / "runs").exists()  # refused before anything ran
