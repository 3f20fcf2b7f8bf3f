"""Linear probe and classifier accuracy as scores, on real CIFAR-10 images and the trained ResNet20."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED, needs_shared

from repreval.api import ReprevalError
from repreval.plan import make_plan
from repreval.runner import run_suite
from repreval.store import ResultStore
from repreval.suite import parse_suite
from repreval_builtins.scores.downstream import top_k_accuracy

WEIGHTS = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"


def _suite(tmp_path, scores, models=None) -> dict:
    cifar = {"kind": "image_folder", "options": {"path": str(SHARED / "cifar10-test")}, "seed": 5}
    return {
        "name": "downstream",
        "output": str(tmp_path / "out"),
        "datasets": {"train": {**cifar, "limit": 600}, "test": {**cifar, "limit": 300, "skip": 600}},
        "models": models or {"r20": {"model": "cifar:resnet20", "weights": str(WEIGHTS), "layers": ["layer3"]}},
        "variants": ["trained", "random"],
        "evaluation": {"dataset": "test", "scores": scores},
    }


def test_top_k_accuracy_counts_labels_among_the_k_best_classes():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    classes = np.array([3, 5, 7])
    labels = np.array([5, 7, 3])
    assert top_k_accuracy(scores, classes, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, classes, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(scores, classes, labels, 3) == 1.0


@needs_shared
def test_probe_and_classifier_on_trained_resnet20_are_far_above_chance(tmp_path, plugins):
    suite = parse_suite(
        _suite(
            tmp_path,
            [{"linear_probe": {"train": "train", "test": "test"}}, {"classifier_accuracy": {"dataset": "test"}}],
        ),
        plugins,
    )
    report = run_suite(suite, plugins)
    assert not report.failures and report.computed == 8
    values = {
        (r.variant, r.score.split("[")[0] + "." + r.score.rsplit(".", 1)[1]): r.value
        for r in ResultStore(suite.output).records()
    }
    assert values[("trained", "linear_probe.top1")] > 0.6  # chance: 0.1
    assert values[("trained", "classifier_accuracy.top1")] > 0.7  # 81 % on the whole JPEG test set
    assert values[("random", "classifier_accuracy.top1")] < 0.2
    assert values[("trained", "linear_probe.top1")] > values[("random", "linear_probe.top1")] + 0.2
    for variant in ("trained", "random"):
        assert values[(variant, "linear_probe.top5")] >= values[(variant, "linear_probe.top1")]
    # deterministic: the same suite and seed give the same numbers
    again = parse_suite(_suite(tmp_path / "again", [{"linear_probe": {"train": "train", "test": "test"}}]), plugins)
    run_suite(again, plugins)
    for record in ResultStore(again.output).records():
        key = (record.variant, "linear_probe." + record.score.rsplit(".", 1)[1])
        assert record.value == values[key]


@needs_shared
def test_unknown_probe_dataset_fails_before_running(tmp_path, plugins):
    suite = parse_suite(_suite(tmp_path, [{"linear_probe": {"train": "train", "test": "tset"}}]), plugins)
    with pytest.raises(ReprevalError, match="unknown dataset 'tset'") as error:
        make_plan(suite, plugins)
    assert "did you mean 'test'" in error.value.one_line()


def test_classifier_accuracy_without_a_classifier_is_a_failed_record(tmp_path, plugins):
    suite = _suite(tmp_path, [{"classifier_accuracy": {"dataset": "digits"}}], models={"ae": {"model": "ae:drift"}})
    suite["datasets"] = {"digits": {"kind": "digits", "limit": 8}}
    suite["evaluation"]["dataset"] = "digits"
    suite["variants"] = ["random"]
    parsed = parse_suite(suite, plugins)
    report = run_suite(parsed, plugins)
    assert report.failures and "has no classifier" in report.failures[0][1]
    assert {r.status for r in ResultStore(parsed.output).records()} == {"failed"}
