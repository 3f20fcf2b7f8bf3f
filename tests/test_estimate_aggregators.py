"""Estimates from sampled components with every default component aggregator: the biased variance over all D
components (``var``) from a sample without replacement, checked by enumeration, against the exact score on real
models, and through ``eval``; aggregators without an estimate are refused before a run."""

from __future__ import annotations

import json
import statistics
from itertools import combinations

import pytest
import torch
from conftest import needs_shared
from engine_helpers import component_maps

from repreval.api import normalize_maps
from repreval.cli import main
from repreval.config import ModelConfig
from repreval.data import noise_inputs, normalize
from repreval.engine.estimate import sample_components
from repreval.engine.probe import Probe
from repreval.models import Model
from repreval_builtins.scores.estimates import estimate_noise_score, sampled_aggregate


def exact_noise_score(real: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The noise score with the biased variance over all components, by hand."""

    def aggregated(maps: torch.Tensor) -> torch.Tensor:
        return normalize_maps(maps.var(dim=1, correction=0))

    return (aggregated(real) - aggregated(noise)).abs().flatten(1).mean(dim=1)


def test_the_variance_estimate_is_unbiased_over_every_sample(plugins):
    """Averaged over all C(7, 3) samples, the estimate equals the biased variance of the 7 components; each
    sample's estimate is statistics.variance (k - 1 denominator) · (D - 1)/D."""
    dim, k = 7, 3
    maps = torch.rand(2, dim, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5 + 100
    var = plugins.aggregator.create("var")
    whole = torch.full((1, k), 1.0 / k)
    estimates = []
    for subset in combinations(range(dim), k):
        estimate = sampled_aggregate(var, maps[:, list(subset)], dim)(whole, k)[:, 0]  # [N, h, w]
        column = [float(v) for v in maps[1, list(subset), 1, 2]]
        assert float(estimate[1, 1, 2]) == pytest.approx(statistics.variance(column) * (dim - 1) / dim, rel=1e-5)
        estimates.append(estimate.double())
    average = torch.stack(estimates).mean(dim=0)
    assert torch.allclose(average, maps.var(dim=1, correction=0), rtol=1e-5)


def test_all_components_give_the_exact_variance_score_with_zero_error(plugins):
    maps = torch.rand(2, 12, 5, 5, generator=torch.Generator().manual_seed(1)) ** 3
    real, noise = maps[:1], maps[1:]
    for method in ("bootstrap", "jackknife"):
        value, se = estimate_noise_score(real, noise, 12, plugins.aggregator.create("var"), method=method)
        assert torch.allclose(value, exact_noise_score(real, noise), atol=1e-6) and float(se.max()) == 0.0


def _calibration(real, noise, aggregator, k: int, method: str, seeds: int = 12) -> tuple[float, torch.Tensor]:
    """Over ``seeds`` samples of k components: the fraction of estimates within 3 SE of the exact score, and
    per input the mean SE over the spread of the estimates (1: calibrated)."""
    dim, exact = real.shape[1], exact_noise_score(real, noise)
    values, errors = [], []
    for seed in range(seeds):
        index = sample_components(dim, k, seed)
        value, se = estimate_noise_score(real[:, index], noise[:, index], dim, aggregator, method=method, seed=seed)
        values.append(value)
        errors.append(se)
    value, se = torch.stack(values), torch.stack(errors)
    return ((value - exact).abs() <= 3 * se).float().mean().item(), se.mean(dim=0) / value.std(dim=0)


@pytest.fixture(scope="module")
def resnet18_grad_cam(plugins) -> list[torch.Tensor]:
    """Random-init timm resnet18 at 64×64 (D = 512), layer2, Grad-CAM: the maps of 2 random and 2 noise inputs."""
    network = Model(
        ModelConfig(id="t", spec="timm:resnet18", options={"input_size": [3, 64, 64]}),
        plugins.model_source.create("timm"),
    ).untrained(0)
    spec = network.input_spec
    grad_cam = plugins.saliency.create("grad_cam")
    return [
        component_maps(network, Probe.parse("layer2"), normalize(noise_inputs(2, spec, seed), spec), grad_cam, None)
        for seed in (10, 11)
    ]


@pytest.mark.parametrize("method", ["bootstrap", "jackknife"])
def test_var_estimates_of_a_resnet18_are_within_their_errors(resnet18_grad_cam, plugins, method):
    """64 of the 512 components, 12 samples."""
    real, noise = resnet18_grad_cam
    covered, ratio = _calibration(real, noise, plugins.aggregator.create("var"), 64, method)
    assert covered >= 0.9 and ((ratio > 0.5) & (ratio < 2.5)).all(), (covered, ratio)


@needs_shared
def test_var_estimates_of_the_trained_resnet20_are_within_their_errors(plugins):
    """Trained CIFAR-10 ResNet20 (D = 64), layer2, activations × gradients with abs over channels (as `eval`),
    4 CIFAR images, 32 of 64 components."""
    from test_engine_estimate import trained_resnet20_inputs

    network, real, noise = trained_resnet20_inputs(plugins)
    method, absolute = plugins.saliency.create("activations_x_gradients"), plugins.aggregator.create("abs")
    real, noise = (component_maps(network, Probe.parse("layer2"), x, method, absolute) for x in (real, noise))
    for method_name in ("bootstrap", "jackknife"):
        covered, ratio = _calibration(real, noise, plugins.aggregator.create("var"), 32, method_name)
        assert covered >= 0.9 and ((ratio > 0.5) & (ratio < 2.5)).all(), (method_name, covered, ratio)


def test_eval_with_sampled_components_estimates_every_default_aggregator(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "eval", "ae:classifier", "--data", "digits", "--limit", "2", "--layers", "encoder.block2",
            "--saliency", "grad_cam", "--sample-components", "4", "--out", str(out), "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    records = [json.loads(path.read_text()) for path in (out / "records").glob("*.json")]
    aggregators = {r["embedding_aggregator"] for r in records if r["score"] == "noise_score"}
    assert aggregators == {"mean", "var"}, records
    assert all(r["status"] == "ok" and r["extras"]["sampled_components"] == 4 for r in records), records
    assert all(r["extras"]["standard_error"] > 0 for r in records), records


def test_validate_refuses_an_aggregator_without_an_estimate_in_one_line(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: sampled-max\n"
        "datasets: {d: {kind: digits, limit: 2}}\n"
        "models: {m: {model: 'ae:classifier', layers: [encoder.block2]}}\n"
        "variants: [random]\n"
        "evaluation: {dataset: d, saliency: [gradients], embedding_aggregators: [mean, var, max],\n"
        "             scores: [noise_score, variance_score], sample_components: 4}\n"
    )
    assert main(["validate", str(suite)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "evaluation.sample_components" in error, error
    assert "'max' has no estimate from sampled components" in error and "remove sample_components" in error, error
