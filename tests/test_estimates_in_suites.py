"""sample_components: estimated scores with standard errors in a suite, checked against the exact run."""

from __future__ import annotations

import pytest
from conftest import SHARED, needs_shared

from repreval.api import ReprevalError
from repreval.runner import run_suite
from repreval.store import ResultStore
from repreval.suite import parse_suite


def _suite(tmp_path, name, sample=None, scores=("noise_score", "variance_score"), components="abs"):
    evaluation = {
        "dataset": "cifar",
        "saliency": ["gradients"],
        "channel_aggregators": ["abs"],
        "embedding_aggregators": [components],
        "scores": list(scores),
    }
    if sample:
        evaluation["sample_components"] = sample
    return {
        "name": name,
        "output": str(tmp_path / name),
        "datasets": {"cifar": {"kind": "image_folder", "options": {"path": str(SHARED / "cifar10-test")}, "limit": 6}},
        "models": {
            "r20": {
                "model": "cifar:resnet20",
                "weights": str(SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"),
                "layers": ["layer2"],
            }
        },
        "variants": ["trained"],
        "evaluation": evaluation,
    }


@needs_shared
def test_sampled_estimates_are_within_a_few_standard_errors_of_the_exact_scores(tmp_path, plugins):
    results = {}
    for name, sample in (("exact", None), ("sampled", 32)):
        suite = parse_suite(_suite(tmp_path, name, sample), plugins)
        assert not run_suite(suite, plugins).failures
        results[name] = {r.score: r for r in ResultStore(suite.output).records()}
    for score in ("noise_score", "variance_score"):
        exact, sampled = results["exact"][score], results["sampled"][score]
        assert "standard_error" not in exact.extras
        error = sampled.extras["standard_error"]
        assert sampled.extras["sampled_components"] == 32 and sampled.extras["components"] == 64
        assert 0 < error < 0.5 * exact.value
        assert abs(sampled.value - exact.value) <= 4 * error, (score, sampled.value, exact.value, error)


@needs_shared
def test_an_aggregator_without_an_estimate_is_refused_before_the_run(tmp_path, plugins):
    suite = parse_suite(_suite(tmp_path, "max", 32, scores=("noise_score",), components="max"), plugins)
    with pytest.raises(ReprevalError, match="'max' has no estimate from sampled components"):
        run_suite(suite, plugins)
    assert not (tmp_path / "max").exists()


def test_too_few_sampled_components_are_refused(tmp_path, plugins):
    data = _suite(tmp_path, "few", 2)
    data["datasets"] = {"cifar": {"kind": "digits", "limit": 2}}
    data["models"]["r20"].pop("weights")  # no shared data needed: the evaluation section is what fails
    with pytest.raises(ReprevalError, match="sample_components must be at least 3"):
        parse_suite(data, plugins)
