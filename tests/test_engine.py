"""The batched attribution engine against plain per-component loops, on real models and images."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED, needs_shared
from engine_helpers import component_maps

from repreval.api import Network, normalize_maps
from repreval.config import ModelConfig, Smoothing
from repreval.data import fit_to_input, normalize
from repreval.engine.core import perturb
from repreval.engine.probe import Probe
from repreval.engine.reference import component_maps_loop
from repreval.errors import ReprevalError
from repreval.models import Model

METHODS = ["gradients", "activations_x_gradients", "grad_cam"]
TOLERANCE = 1e-5


def _cifar_images(count: int) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF
    from PIL import Image

    files = sorted((SHARED / "foolbox-samples").glob("cifar10_*.png"))[:count]
    return torch.stack(
        [TF.to_dtype(TF.to_image(Image.open(f).convert("RGB")), torch.float32, scale=True) for f in files]
    )


@pytest.fixture(scope="module")
def resnet20(plugins) -> tuple[Network, torch.Tensor]:
    """The trained CIFAR-10 ResNet20 and three real CIFAR-10 test images, preprocessed."""
    weights = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"
    config = ModelConfig(id="r20", spec="cifar:resnet20", weights=str(weights))
    network = Model(config, plugins.model_source.create("cifar")).trained()
    inputs = normalize(fit_to_input(_cifar_images(3), network.input_spec), network.input_spec)
    return network, inputs


@needs_shared
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", ["layer1", "layer3", "layer2.0.conv1:input"])
@pytest.mark.parametrize("channel", ["mean", "abs", "var"])
def test_engine_matches_per_component_loop(resnet20, plugins, method, layer, channel):
    """Reverse mode (batched backward), forward mode (batched JVPs) and the automatic choice all agree
    with one plain backward per component."""
    network, inputs = resnet20
    saliency = plugins.saliency.create(method)
    aggregator = plugins.aggregator.create(channel)
    probe = Probe.parse(layer)
    slow = component_maps_loop(network, probe, inputs, saliency, aggregator)
    channels, height, width = probe.capture(network, inputs[:1])[0].shape[1:]
    directions = channels if saliency.gradient == "spatial_mean" else channels * height * width
    strategies = ("auto", "reverse", "forward") if directions <= 1024 else ("auto", "reverse")
    for strategy in strategies:
        chunk = 7 if strategy == "reverse" else None  # forward mode: chunks sized by the memory budget
        fast = component_maps(network, probe, inputs, saliency, aggregator, chunk_size=chunk, strategy=strategy)
        assert fast.shape == slow.shape == (3, 64, *fast.shape[-2:])
        assert fast.abs().max() > 0, "maps of a trained network must not vanish"
        assert (fast - slow).abs().max().item() <= TOLERANCE, strategy


@needs_shared
def test_loop_that_reruns_the_forward_agrees(resnet20, plugins):
    network, inputs = resnet20
    saliency, aggregator = plugins.saliency.create("gradients"), plugins.aggregator.create("abs")
    probe = Probe.parse("layer2")
    reuse = component_maps_loop(network, probe, inputs[:1], saliency, aggregator)
    rerun = component_maps_loop(network, probe, inputs[:1], saliency, aggregator, rerun_forward=True)
    assert torch.allclose(reuse, rerun, atol=TOLERANCE)


@needs_shared
def test_every_component_is_attributed_not_only_the_first(resnet20, plugins):
    """The reference code's defect: only z_0 was explained. Different components differ."""
    network, inputs = resnet20
    maps = component_maps(
        network,
        Probe.parse("layer2"),
        inputs[:1],
        plugins.saliency.create("gradients"),
        plugins.aggregator.create("abs"),
    )
    flat = maps[0].flatten(1)
    assert not torch.allclose(flat[0], flat[1])
    assert (flat.std(dim=0) > 0).any()


@needs_shared
def test_grad_cam_follows_its_definition(resnet20, plugins):
    network, inputs = resnet20
    probe = Probe.parse("layer3")
    activation, _ = probe.capture(network, inputs[:1])
    activation.requires_grad_(True)
    embedding = probe.tail(network, inputs[:1])(activation)
    (gradient,) = torch.autograd.grad(embedding[0, 5], activation)
    alpha = gradient.mean(dim=(2, 3), keepdim=True)
    expected = (alpha * activation.detach()).sum(dim=1).relu()[0]
    maps = component_maps(network, probe, inputs[:1], plugins.saliency.create("grad_cam"), None)
    assert torch.allclose(maps[0, 5], expected, atol=1e-6)


@needs_shared
def test_smoothing_averages_attributions_over_perturbed_inputs(resnet20, plugins):
    network, inputs = resnet20
    probe = Probe.parse("layer2")
    saliency, aggregator = plugins.saliency.create("gradients"), plugins.aggregator.create("mean")
    smoothing = Smoothing(samples=3, sigma=0.5, random_scale=True)
    smoothed = component_maps(network, probe, inputs[:2], saliency, aggregator, smoothing=smoothing, seed=4)
    # By hand: gradients are linear, so mean-over-channels of the mean over samples is the mean of the maps.
    perturbed = perturb(smoothing, inputs[:2], seed=4)
    per_sample = component_maps_loop(network, probe, perturbed, saliency, aggregator)
    expected = per_sample.reshape(2, 3, *per_sample.shape[1:]).mean(dim=1)
    assert torch.allclose(smoothed, expected, atol=TOLERANCE)
    again = component_maps(network, probe, inputs[:2], saliency, aggregator, smoothing=smoothing, seed=4)
    assert torch.equal(smoothed, again)
    plain = component_maps(network, probe, inputs[:2], saliency, aggregator)
    assert not torch.allclose(smoothed, plain)


def test_timm_backbone_matches_loop_and_batch_is_independent(plugins):
    """A timm backbone in eval mode: BatchNorm couples no samples, so a batch equals its parts."""
    network = Model(
        ModelConfig(id="t", spec="timm:resnet18", options={"input_size": [3, 32, 32]}),
        plugins.model_source.create("timm"),
    ).untrained(3)
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    saliency, aggregator = plugins.saliency.create("activations_x_gradients"), plugins.aggregator.create("abs")
    probe = Probe.parse("layer3")
    both = component_maps(network, probe, inputs, saliency, aggregator, chunk_size=64)
    first = component_maps(network, probe, inputs[:1], saliency, aggregator, chunk_size=64)
    assert torch.allclose(both[:1], first, atol=TOLERANCE)
    slow = component_maps_loop(network, probe, inputs, saliency, aggregator)
    assert (both - slow).abs().max().item() <= TOLERANCE


def test_unknown_layer_suggests_a_close_name(plugins):
    network = Model(
        ModelConfig(id="t", spec="timm:resnet18", options={"input_size": [3, 32, 32]}),
        plugins.model_source.create("timm"),
    ).untrained(0)
    with pytest.raises(ReprevalError, match="layer3"):
        Probe.parse("layer_3").module(network)


def test_normalisation_never_gives_nan():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 7.0), torch.arange(16.0).reshape(4, 4)])
    normalized = normalize_maps(maps)
    assert not normalized.isnan().any()
    assert torch.equal(normalized[0], torch.zeros(4, 4)) and torch.equal(normalized[1], torch.zeros(4, 4))
    assert normalized[2].min() == 0 and torch.isclose(normalized[2].max(), torch.tensor(1.0))


@needs_shared
@pytest.mark.parametrize("method", ["gradients", "activations_x_gradients"])
@pytest.mark.parametrize("layer", ["layer1", "layer2.0.conv1:input"])
def test_one_backward_mean_map_equals_mean_of_component_maps(resnet20, plugins, method, layer):
    """mean over components of channel-mean maps, from one backward of mean_d z_d, is exact."""
    from engine_helpers import mean_map

    network, inputs = resnet20
    saliency, mean = plugins.saliency.create(method), plugins.aggregator.create("mean")
    probe = Probe.parse(layer)
    components = component_maps(network, probe, inputs, saliency, mean)
    fast = mean_map(network, probe, inputs, saliency)
    assert fast.shape == components.shape[:1] + components.shape[2:]
    assert (fast - components.mean(dim=1)).abs().max().item() <= TOLERANCE
    with pytest.raises(ValueError, match="not linear"):
        mean_map(network, probe, inputs, plugins.saliency.create("grad_cam"))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 64])
def test_the_cpu_trial_of_plain_and_vmapped_passes_works_at_any_chunk_size(chunk_size):
    """The trial times both ways on the first rows; a memory budget that allows one row per chunk once made it
    time zero rows. Every way gives the same maps."""
    from engine_helpers import sweep_maps
    from torch import nn

    from repreval.api import InputSpec, Network
    from repreval.engine import MapRequest, taps
    from repreval.engine.probe import Probe
    from repreval.plugins import load_plugins

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 40, 3, padding=1)).eval()
    network = Network(module, InputSpec(3, 6, 6), ("0",), embed=lambda x: module(x).mean(dim=(-2, -1)))
    plugins = load_plugins()
    requests = [MapRequest(Probe("0"), plugins.saliency.create("gradients"), plugins.aggregator.create("abs"))]
    inputs = torch.rand(2, 3, 6, 6)
    taps._decisions.clear()
    tried = sweep_maps(network, requests, inputs, chunk_size=chunk_size)[requests[0]]
    plain = sweep_maps(network, requests, inputs, chunk_size=chunk_size, batched=False)[requests[0]]
    assert tried.shape == (2, 40, 6, 6)
    assert torch.equal(tried, plain)
