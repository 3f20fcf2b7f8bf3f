"""Estimated scores from k sampled components against the exact scores over all D, on real models."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED, needs_shared
from engine_helpers import component_maps, sampled_component_maps

from repreval.api import normalize_maps
from repreval.config import ModelConfig
from repreval.data import fit_to_input, noise_inputs, normalize
from repreval.engine.estimate import sample_components
from repreval.engine.probe import Probe
from repreval.models import Model
from repreval_builtins.scores.estimates import estimate_noise_score, estimate_variance_score


def exact_variance_score(maps: torch.Tensor) -> torch.Tensor:
    return normalize_maps(maps).var(dim=1, correction=0).flatten(1).mean(dim=1)


def exact_noise_score(real: torch.Tensor, noise: torch.Tensor, aggregator) -> torch.Tensor:
    return (
        (normalize_maps(aggregator(real, dim=1)) - normalize_maps(aggregator(noise, dim=1)))
        .abs()
        .flatten(1)
        .mean(dim=1)
    )


@pytest.fixture(scope="module")
def resnet18_maps(plugins):
    """Random-init timm resnet18 at 64×64 (D = 512), layer2, gradients with signed channel means:
    all component maps of 2 random inputs and 2 noise inputs, plus the network for engine calls."""
    network = Model(
        ModelConfig(id="t", spec="timm:resnet18", options={"input_size": [3, 64, 64]}),
        plugins.model_source.create("timm"),
    ).untrained(0)
    spec = network.input_spec
    real = normalize(noise_inputs(2, spec, 10), spec)
    noise = normalize(noise_inputs(2, spec, 11), spec)
    method, aggregator = plugins.saliency.create("gradients"), plugins.aggregator.create("mean")
    probe = Probe.parse("layer2")
    maps = [component_maps(network, probe, x, method, aggregator) for x in (real, noise)]
    return network, real, *maps


def trained_resnet20_inputs(plugins, count: int = 4):
    """The trained CIFAR-10 ResNet20 (D = 64) with ``count`` CIFAR test images and as many noise inputs,
    preprocessed for it."""
    from test_engine import _cifar_images

    config = ModelConfig(
        id="r20", spec="cifar:resnet20", weights=str(SHARED / "cifar10-resnets" / "resnet20-12fca82f.th")
    )
    network = Model(config, plugins.model_source.create("cifar")).trained()
    spec = network.input_spec
    return (
        network,
        normalize(fit_to_input(_cifar_images(count), spec), spec),
        normalize(noise_inputs(count, spec, 1), spec),
    )


@pytest.fixture(scope="module")
def resnet20_maps(plugins):
    """Trained CIFAR-10 ResNet20 (D = 64), layer2, gradients with signed channel means, 4 CIFAR images."""
    network, real, noise = trained_resnet20_inputs(plugins)
    method, aggregator = plugins.saliency.create("gradients"), plugins.aggregator.create("mean")
    probe = Probe.parse("layer2")
    return [component_maps(network, probe, x, method, aggregator) for x in (real, noise)]


def test_sampled_components_are_distinct_sorted_and_seeded():
    index = sample_components(9216, 64, seed=3)
    assert index.shape == (64,) and len(index.unique()) == 64 and torch.equal(index, index.sort().values)
    assert torch.equal(index, sample_components(9216, 64, seed=3))
    assert not torch.equal(index, sample_components(9216, 64, seed=4))
    assert torch.equal(sample_components(10, 10), torch.arange(10))
    with pytest.raises(ValueError, match="between 1 and 10"):
        sample_components(10, 11)


def test_engine_on_sampled_components_equals_the_full_maps(resnet18_maps, plugins):
    """`components` in reverse mode (k = 64 rows) and, for Grad-CAM with k > C, forward mode."""
    network, real, full, _ = resnet18_maps
    method, aggregator = plugins.saliency.create("gradients"), plugins.aggregator.create("mean")
    maps, index, dim = sampled_component_maps(network, Probe.parse("layer2"), real, method, aggregator, 64, seed=5)
    assert dim == 512 and maps.shape == (2, 64, *full.shape[2:])
    assert torch.equal(index, sample_components(512, 64, seed=5))
    assert (maps - full[:, index]).abs().max().item() <= 1e-6
    grad_cam, probe = plugins.saliency.create("grad_cam"), Probe.parse("layer3")  # 256 channel directions
    many = sample_components(512, 300, seed=6)
    every = component_maps(network, probe, real[:1], grad_cam, None, strategy="reverse")
    sampled = component_maps(network, probe, real[:1], grad_cam, None, components=many)  # auto: forward
    assert (sampled - every[:, many]).abs().max().item() <= 1e-5


def _check_estimates(real, noise, aggregators, k: int, seed: int = 0) -> list[str]:
    """Estimates from k components sampled with `seed` lie within 4 SE of the exact scores; SE > 0."""
    dim = real.shape[1]
    index = sample_components(dim, k, seed)
    lines = []
    checks = [("VS", exact_variance_score(real), estimate_variance_score(real[:, index], dim, seed=seed))]
    for aggregator in aggregators:
        exact = exact_noise_score(real, noise, aggregator)
        checks.append(
            (
                f"NS[{aggregator.name}]",
                exact,
                estimate_noise_score(real[:, index], noise[:, index], dim, aggregator, seed=seed),
            )
        )
    for name, exact, (value, se) in checks:
        lines.append(f"{name} D={dim} k={k}: exact {exact.tolist()}, estimate {value.tolist()}, SE {se.tolist()}")
        assert (se > 0).all(), lines[-1]
        assert ((value - exact).abs() <= 4 * se).all(), lines[-1]
    return lines


def _standard_errors(real, noise, aggregator, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SE over 5 samples of k components: (variance score, noise score)."""
    dim = real.shape[1]
    vs, ns = [], []
    for seed in range(5):
        index = sample_components(dim, k, seed)
        vs.append(estimate_variance_score(real[:, index], dim, seed=seed).standard_error)
        ns.append(estimate_noise_score(real[:, index], noise[:, index], dim, aggregator, seed=seed).standard_error)
    return torch.stack(vs).mean(), torch.stack(ns).mean()


def test_estimates_of_resnet18_scores_from_64_of_512_components(resnet18_maps, plugins):
    _, _, real, noise = resnet18_maps
    aggregators = [plugins.aggregator.create(name) for name in ("mean", "abs")]
    print("\n".join(_check_estimates(real, noise, aggregators, k=64)))
    small, large = _standard_errors(real, noise, aggregators[1], 32), _standard_errors(real, noise, aggregators[1], 128)
    assert large[0] < small[0] and large[1] < small[1]


def _calibration(
    real, noise, aggregator, k: int, method: str, seeds: int = 20
) -> dict[str, tuple[float, torch.Tensor]]:
    """Per score: the fraction of `seeds` samples of k components within 2 SE of the exact score, and
    the mean SE over the spread of the estimates (per input; 1 when the SE is calibrated)."""
    dim = real.shape[1]
    exact = {"vs": exact_variance_score(real), "ns": exact_noise_score(real, noise, aggregator)}
    values, errors = {"vs": [], "ns": []}, {"vs": [], "ns": []}
    for seed in range(seeds):
        index = sample_components(dim, k, seed)
        for name, (value, se) in {
            "vs": estimate_variance_score(real[:, index], dim, method=method, seed=seed),
            "ns": estimate_noise_score(real[:, index], noise[:, index], dim, aggregator, method=method, seed=seed),
        }.items():
            values[name].append(value)
            errors[name].append(se)
    result = {}
    for name in exact:
        value, se = torch.stack(values[name]), torch.stack(errors[name])
        result[name] = (
            ((value - exact[name]).abs() <= 2 * se).float().mean().item(),
            se.mean(dim=0) / value.std(dim=0),
        )
    return result


@pytest.mark.parametrize("method", ["bootstrap", "jackknife"])
def test_variance_score_standard_errors_are_calibrated(resnet18_maps, plugins, method):
    """Over 20 samples of 64 of 512 components, ~95% of the estimates lie within 2 SE (at least 80%
    here) and the SE matches the spread of the estimates within a factor 2."""
    _, _, real, noise = resnet18_maps
    covered, ratio = _calibration(real, noise, plugins.aggregator.create("abs"), 64, method)["vs"]
    assert covered >= 0.8 and ((ratio > 0.5) & (ratio < 2)).all(), (covered, ratio)


def test_all_components_give_the_exact_score_with_zero_error(resnet18_maps, plugins):
    _, _, real, noise = resnet18_maps
    dim, aggregator = real.shape[1], plugins.aggregator.create("mean")
    value, se = estimate_variance_score(real, dim)
    assert torch.allclose(value, exact_variance_score(real), rtol=1e-5) and (se == 0).all()
    value, se = estimate_noise_score(real, noise, dim, aggregator, method="jackknife")
    assert torch.allclose(value, exact_noise_score(real, noise, aggregator)) and (se == 0).all()
    with pytest.raises(ValueError, match="'max' has no estimate"):
        estimate_noise_score(real, noise, dim, plugins.aggregator.create("max"))


@needs_shared
def test_estimates_of_trained_resnet20_scores_from_32_of_64_components(resnet20_maps, plugins):
    real, noise = resnet20_maps
    aggregators = [plugins.aggregator.create(name) for name in ("mean", "abs")]
    print("\n".join(_check_estimates(real, noise, aggregators, k=32)))
    small, large = _standard_errors(real, noise, aggregators[1], 16), _standard_errors(real, noise, aggregators[1], 48)
    assert large[0] < small[0] and large[1] < small[1]


@needs_shared
def test_noise_score_standard_errors_are_calibrated_on_the_trained_resnet20(resnet20_maps, plugins):
    """The noise score's estimate is biased up by O(1/k) (|.| of a noisier map); on a trained network
    that bias is small next to the SE: ~90% of the estimates lie within 2 SE (at least 80% here)."""
    real, noise = resnet20_maps
    for method in ("bootstrap", "jackknife"):
        covered, ratio = _calibration(real, noise, plugins.aggregator.create("abs"), 32, method)["ns"]
        assert covered >= 0.8 and ((ratio > 0.5) & (ratio < 2)).all(), (method, covered, ratio)


# ---------------------------------------------------------------------------------------------
# The sparsity-aware variance score


def _variance_score(maps, **options):
    from repreval.api import AttributionMaps
    from repreval_builtins.scores import VarianceScore

    return VarianceScore(**options).compute(AttributionMaps(maps, maps), None).values


def test_sparsity_aware_variance_score_reaches_one_at_its_ceiling_and_zero_for_copies():
    # binary maps, 8 components on 4 × 4 pixels: at every pixel exactly 2 of 8 components are on (f = 1/4),
    # each map with a different pattern; normalisation keeps 0/1 maps as they are
    maps = torch.zeros(1, 8, 4, 4)
    for pixel in range(16):
        for component in ((pixel % 4) * 2, (pixel % 4) * 2 + 1):
            maps[0, component, pixel // 4, pixel % 4] = 1.0
    plain = _variance_score(maps, binarize=True)
    assert float(plain) == pytest.approx(0.25 * 0.75)  # f(1 - f), below Popoviciu's 1/4
    assert float(_variance_score(maps, binarize=True, sparsity_aware=True)) == pytest.approx(1.0)
    copies = maps[:, :1].expand(1, 8, 4, 4).clone()  # every component the same map: no variance
    assert float(_variance_score(copies, binarize=True, sparsity_aware=True)) == 0.0


def test_variance_score_never_exceeds_the_sparsity_ceiling():
    generator = torch.Generator().manual_seed(0)
    for trial in range(50):
        sparsity = 0.02 + 0.9 * torch.rand((), generator=generator)
        maps = (torch.rand(3, 16, 6, 6, generator=generator) < sparsity).float() * torch.rand(
            3, 16, 6, 6, generator=generator
        )
        for binarize in (False, True):
            relative = _variance_score(maps, binarize=binarize, sparsity_aware=True)
            assert bool(((relative >= 0) & (relative <= 1 + 1e-6)).all()), (trial, binarize)


def test_sparsity_aware_estimate_from_all_components_is_exact():
    from repreval_builtins.scores.estimates import estimate_variance_score

    maps = torch.rand(2, 12, 5, 5, generator=torch.Generator().manual_seed(1)) ** 3
    exact = _variance_score(maps, binarize=True, sparsity_aware=True)
    estimate = estimate_variance_score(maps, 12, binarize=True, sparsity_aware=True)
    assert torch.allclose(estimate.value, exact, atol=1e-6) and float(estimate.standard_error.max()) == 0.0
