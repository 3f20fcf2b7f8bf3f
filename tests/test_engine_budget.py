"""The engine at an AlexNet-sized embedding, D = 9216: it completes, stays within its memory budget
and still equals one plain backward per component."""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torchvision
from engine_helpers import component_maps

from repreval.api import InputSpec, Network
from repreval.bench import PeakMemory
from repreval.engine import core
from repreval.engine import maps as maps_module
from repreval.engine.core import chunk_for_budget
from repreval.engine.probe import Probe
from repreval.engine.reference import component_maps_loop
from repreval.models import seeded

BUDGET = 4 * 1024**3
TOLERANCE = 1e-5
DIM = 256 * 6 * 6


@pytest.fixture(scope="module")
def alexnet() -> tuple[Network, torch.Tensor]:
    """Random-init torchvision AlexNet; z = flatten(avgpool(features(x))), 256×6×6 = 9216. At 64×64 the
    features end at 1×1, which AdaptiveAvgPool2d(6) repeats: every channel gives 36 equal components."""
    with seeded(0):
        module = torchvision.models.alexnet(weights=None).eval()
    network = Network(
        module=module,
        input_spec=InputSpec(3, 64, 64),
        default_layers=("features.3",),
        embed=lambda x: torch.flatten(module.avgpool(module.features(x)), 1),
    )
    inputs = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return network, inputs


def _loop(network: Network, index: torch.Tensor, probe, inputs, method, aggregator) -> torch.Tensor:
    """One plain backward per component in ``index``, on a copy without AlexNet's in-place ReLUs (the
    loop's leaf at the probe must not be modified in place; the engine clones it)."""
    module = copy.deepcopy(network.module)
    for layer in module.modules():
        if isinstance(layer, torch.nn.ReLU):
            layer.inplace = False
    embed = lambda x: torch.flatten(module.avgpool(module.features(x)), 1)[:, index]
    return component_maps_loop(
        Network(module, network.input_spec, network.default_layers, embed), probe, inputs, method, aggregator
    )


def _subset(count: int = 8) -> torch.Tensor:
    return torch.randperm(DIM, generator=torch.Generator().manual_seed(1))[:count]


def test_all_9216_components_within_a_4_gib_budget(alexnet, plugins):
    network, inputs = alexnet
    probe = Probe.parse("features.3")  # 192×7×7: 9408 directions > D, so reverse mode
    method, aggregator = plugins.saliency.create("gradients"), plugins.aggregator.create("abs")
    with PeakMemory(torch.device("cpu")) as memory:
        started = time.perf_counter()
        maps = component_maps(network, probe, inputs, method, aggregator, memory_budget=BUDGET)
        seconds = time.perf_counter() - started
    print(f"D = {DIM}: {seconds:.1f} s, peak RSS growth {memory.mb:.0f} MB")
    assert maps.shape == (1, DIM, 7, 7)
    assert memory.mb * 2**20 < BUDGET
    assert (maps.flatten(2).amax(dim=-1) > 0).float().mean() > 0.5, "most maps of a random AlexNet are non-zero"
    index = _subset()
    slow = _loop(network, index, probe, inputs, method, aggregator)
    assert (maps[:, index] - slow).abs().max().item() <= TOLERANCE


def test_forward_mode_at_9216_and_its_jacobian_respects_the_budget(alexnet, plugins, monkeypatch):
    """Grad-CAM reads 192 channel directions < 9216: forward mode, unless its Jacobian does not fit."""
    network, inputs = alexnet
    probe = Probe.parse("features.3")
    method = plugins.saliency.create("grad_cam")
    chosen = []

    def recorded(mode: str, name: str):
        run = getattr(maps_module, name)

        def wrapper(batch, requests, *args, **kwargs):
            if requests:
                chosen.append(mode)
            return run(batch, requests, *args, **kwargs)

        return wrapper

    for mode, name in (("forward", "_forward_maps"), ("reverse", "_reverse_maps")):
        monkeypatch.setattr(maps_module, name, recorded(mode, name))
    maps = component_maps(network, probe, inputs, method, None, memory_budget=BUDGET)
    assert chosen == ["forward"] and maps.shape == (1, DIM, 7, 7)
    index = _subset()
    slow = _loop(network, index, probe, inputs, method, None)
    assert (maps[:, index] - slow).abs().max().item() <= TOLERANCE
    # 1000 of the components: still forward mode (192 directions), unless the Jacobian (192 × 9216
    # floats, 7 MB: forward mode computes every column) is over half the budget; then reverse.
    many = _subset(1000)
    sampled = component_maps(network, probe, inputs, method, None, memory_budget=BUDGET, components=many)
    assert chosen[-1] == "forward" and (sampled - maps[:, many]).abs().max().item() <= TOLERANCE
    sampled = component_maps(network, probe, inputs, method, None, memory_budget=8 * 2**20, components=many)
    assert chosen[-1] == "reverse" and (sampled - maps[:, many]).abs().max().item() <= TOLERANCE


def test_chunks_follow_the_budget():
    """Chunks shrink with the budget and never pass the CPU cap; the CPU working set sets the cap."""
    forward = 2 * 2**20  # bytes of one forward
    assert chunk_for_budget(forward, BUDGET, torch.device("cpu")) == core.MAX_CHUNK["cpu"]
    assert chunk_for_budget(forward, 10 * 2**20, torch.device("cpu")) == 10
    assert chunk_for_budget(forward, 10, torch.device("cpu")) == 1
    resnet18_224 = 40 * 2**20  # ~40 MB a forward: 51 rows of 20 MiB fit the 1 GiB working set
    assert chunk_for_budget(resnet18_224, BUDGET, torch.device("cpu")) == 51
    assert chunk_for_budget(2**30, BUDGET, torch.device("cpu")) == 8  # 32 rows at least, but the budget wins
