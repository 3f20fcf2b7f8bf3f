"""compute_maps, the engine's one entry: differentiable maps (``create_graph``) and their parameter gradients
against plain autograd on the unmodified forward pass (an oracle that shares no code with the engine), one
forward pass per call whatever ``auto`` decides, and auto = forward = reverse, on networks with branches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import hooked_forward
from torch import nn

from repreval.api import InputSpec, Network
from repreval.config import Smoothing
from repreval.engine import MapRequest, auto_strategy, compute_maps, compute_mean_maps
from repreval.engine import maps as maps_module
from repreval.engine.probe import Probe
from repreval.engine.reference import component_maps_loop
from repreval.models import seeded

METHODS = ("gradients", "activations_x_gradients", "grad_cam")


class SmoothResidual(nn.Module):
    """stem -> tanh -> a residual block whose shortcut reads the block's input -> head; smooth activations, so
    the maps' parameter gradients also run through non-zero second derivatives. D = 8 components; the feature
    maps have 4 channels: Grad-CAM needs 4 forward directions (each 1.5 rows: 6 < 8, auto picks forward), the other methods
    4·h·w (auto picks reverse mode)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, dim, 1)

    def forward(self, x):
        a = torch.tanh(self.stem(x))
        b = self.conv2(F.softplus(self.conv1(a))) + a
        return self.head(F.softplus(b))


def _smooth_residual(dtype=torch.float64) -> tuple[Network, torch.Tensor]:
    with seeded(0):
        module = SmoothResidual().to(dtype).eval()
    network = Network(module, InputSpec(3, 6, 6), (), embed=lambda x: module(x).mean(dim=(-2, -1)))
    inputs = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    return network, inputs


def _resnet8() -> tuple[Network, torch.Tensor]:
    """The cifar_resnets plugin's CIFAR ResNet at one block per stage (D = 64), random init, on 16×16 inputs:
    ``layer2.0`` downsamples, its option-A shortcut reads the block's input beside ``conv1``."""
    from repreval_builtins.cifar_resnets.networks import CifarResNet

    with seeded(0):
        module = CifarResNet(blocks_per_stage=1).eval()
    network = Network(module, InputSpec(3, 16, 16), (), embed=module.forward_features)
    return network, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def _method(name: str):
    from repreval_builtins.saliency import ActivationsTimesGradients, GradCAM, Gradients

    return {"gradients": Gradients, "activations_x_gradients": ActivationsTimesGradients, "grad_cam": GradCAM}[name]()


def _request(layer: str, method: str) -> MapRequest:
    from repreval_builtins.aggregators import AbsMean

    saliency = _method(method)
    return MapRequest(Probe.parse(layer), saliency, None if saliency.spatial else AbsMean())


def oracle_maps(network: Network, layer: str, inputs: torch.Tensor, method: str) -> torch.Tensor:
    """Maps [B, D, h, w] by plain autograd on the unmodified forward: the probed tensor captured by a hook,
    one ``torch.autograd.grad(create_graph=True)`` per component, the method written out by hand (channels:
    mean of |.|). Differentiable w.r.t. the parameters."""
    a, embedding = hooked_forward(network, layer, inputs)
    g = torch.stack(
        [torch.autograd.grad(embedding[:, d].sum(), a, create_graph=True)[0] for d in range(embedding.shape[1])],
        dim=1,
    )  # [B, D, C, h, w]
    if method == "gradients":
        return g.abs().mean(dim=2)
    if method == "activations_x_gradients":
        return (a[:, None] * g).abs().mean(dim=2)
    return (g.mean(dim=(-2, -1), keepdim=True) * a[:, None]).sum(dim=2).relu()


def _parameter_gradients(network: Network, maps: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
    """d(sum(maps · weights))/dθ for every parameter θ (zeros where the maps do not depend on it)."""
    parameters = list(network.module.parameters())
    found = torch.autograd.grad((maps * weights).sum(), parameters, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, found)]


def _assert_close(got: list[torch.Tensor], expected: list[torch.Tensor], rtol: float, what) -> None:
    scale = max(float(e.detach().abs().max()) for e in expected)
    assert scale > 0, what
    worst = max(float((g - e).detach().abs().max()) for g, e in zip(got, expected))
    assert worst <= rtol * scale, (what, worst, scale)


@pytest.mark.parametrize("method", METHODS)
def test_differentiable_maps_and_their_parameter_gradients_equal_plain_autograd(method):
    """create_graph in every mode, in float64 (a wrong second-order path would show far above rounding): the maps
    equal the oracle's and so do the gradients of a weighted sum of them w.r.t. every parameter, the stem's (before
    the probe: through the activation) and the head's (after it: through dz/da) included."""
    network, inputs = _smooth_residual()
    for layer in ("conv1:input", "stem", "conv1"):  # conv1:input: read by conv1 and by the shortcut
        request = _request(layer, method)
        expected = oracle_maps(network, layer, inputs, method)
        weights = torch.rand(expected.shape, generator=torch.Generator().manual_seed(3), dtype=expected.dtype)
        expected_gradients = _parameter_gradients(network, expected, weights)
        assert float(expected_gradients[0].abs().max()) > 0 and float(expected_gradients[-2].abs().max()) > 0
        for strategy in ("reverse", "forward", "auto"):
            maps = compute_maps(network, [request], inputs, strategy=strategy, create_graph=True)[request]
            assert maps.requires_grad and maps.dtype == torch.float64, (layer, strategy)
            _assert_close([maps], [expected], 1e-12, (layer, strategy, "values"))
            _assert_close(
                _parameter_gradients(network, maps, weights), expected_gradients, 1e-10, (layer, strategy, "grads")
            )


def test_differentiable_maps_of_a_cifar_resnet_equal_plain_autograd():
    """The cifar_resnets plugin's ResNet (ReLUs, batch norms, an option-A shortcut), float32, reverse mode as
    constrained training calls it: all three methods in one call, values and parameter gradients."""
    network, inputs = _resnet8()
    layer = "layer2.0.conv1:input"
    requests = {method: _request(layer, method) for method in METHODS}
    maps = compute_maps(network, list(requests.values()), inputs, strategy="reverse", create_graph=True)
    for method, request in requests.items():
        expected = oracle_maps(network, layer, inputs, method)
        weights = torch.rand(expected.shape, generator=torch.Generator().manual_seed(4))
        _assert_close([maps[request]], [expected], 1e-5, (method, "values"))
        got = _parameter_gradients(network, maps[request], weights)
        _assert_close(got, _parameter_gradients(network, expected, weights), 1e-4, (method, "grads"))


def test_differentiable_one_backward_mean_maps_equal_plain_autograd():
    network, inputs = _smooth_residual()
    for layer in ("conv1:input", "conv1"):
        for method in ("gradients", "activations_x_gradients"):
            request = MapRequest(Probe.parse(layer), _method(method))
            mean = compute_mean_maps(network, [request], inputs, create_graph=True)[request]
            # the signed channel mean commutes with the mean over components: the oracle's own, by hand
            name, _, side = layer.partition(":")
            expected = _signed_mean_oracle(network, name, side, inputs, method)
            weights = torch.rand(expected.shape, generator=torch.Generator().manual_seed(5), dtype=expected.dtype)
            _assert_close([mean], [expected], 1e-12, (layer, method, "values"))
            got = _parameter_gradients(network, mean, weights)
            _assert_close(got, _parameter_gradients(network, expected, weights), 1e-10, (layer, method, "grads"))


def _signed_mean_oracle(network, name, side, inputs, method) -> torch.Tensor:
    a, embedding = hooked_forward(network, f"{name}:{side}" if side else name, inputs)
    g = torch.stack(
        [torch.autograd.grad(embedding[:, d].sum(), a, create_graph=True)[0] for d in range(embedding.shape[1])],
        dim=1,
    )
    values = g if method == "gradients" else a[:, None] * g
    return values.mean(dim=(1, 2))


def _counting(network: Network, monkeypatch) -> tuple[list[int], list[int]]:
    """(calls of the network's first module, runs of a probe's tail: forward mode's own JVP passes)."""
    stem_calls, tail_runs = [0], [0]
    network.module.stem.register_forward_hook(lambda *_: stem_calls.__setitem__(0, stem_calls[0] + 1))
    original = Probe.tail

    def counted_tail(self, network, inputs):
        run = original(self, network, inputs)

        def counted(activation):
            tail_runs[0] += 1
            return run(activation)

        return counted

    monkeypatch.setattr(Probe, "tail", counted_tail)
    return stem_calls, tail_runs


def _modes(monkeypatch) -> list[str]:
    """The modes compute_maps runs, in order (recorded where it hands requests to each)."""
    chosen: list[str] = []
    for mode, name in (("forward", "_forward_maps"), ("reverse", "_reverse_maps")):
        run = getattr(maps_module, name)

        def recorded(batch, requests, *args, run=run, mode=mode, **kwargs):
            chosen.extend([mode] * len(requests))
            return run(batch, requests, *args, **kwargs)

        monkeypatch.setattr(maps_module, name, recorded)
    return chosen


@pytest.mark.parametrize(
    "methods, modes",
    [(["gradients"], ["reverse"]), (["grad_cam"], ["forward"]), (["grad_cam", "gradients"], ["reverse", "reverse"])],
)
def test_auto_decides_from_the_pass_it_uses(monkeypatch, methods, modes):
    """The network's first module runs exactly once per call outside forward mode's own tail passes (one JVP
    pass per chunk of directions; here one chunk): the pass whose shapes decide is the pass the maps come from,
    whether the call resolves to reverse mode or to forward mode. With a request that needs the reverse sweep
    anyway, Grad-CAM rides along on its passes instead of adding forward ones."""
    network, inputs = _smooth_residual(torch.float32)
    stem_calls, tail_runs = _counting(network, monkeypatch)
    chosen = _modes(monkeypatch)
    requests = [_request("conv1", method) for method in methods]
    maps = compute_maps(network, requests, inputs)
    assert chosen == modes
    assert tail_runs[0] == (1 if "forward" in modes else 0)
    assert stem_calls[0] == 1 + tail_runs[0]
    assert all(maps[r].shape == (2, 8, 6, 6) for r in requests)


def test_auto_strategy_follows_passes_budget_and_layout():
    grad_cam, gradients = _method("grad_cam"), _method("gradients")
    shape = (2, 4, 6, 6)
    assert auto_strategy(grad_cam, shape, 8, 8, 2**30) == "forward"  # 4 channel directions (6 rows) < 8 components
    assert auto_strategy(grad_cam, shape, 6, 6, 2**30) == "reverse"  # 6 rows: not fewer
    assert auto_strategy(gradients, shape, 6, 6, 2**30) == "reverse"  # 144 directions
    assert auto_strategy(gradients, shape, 300, 300, 2**30) == "forward"  # 144 directions: 216 rows < 300
    assert auto_strategy(gradients, shape, 300, 300, 2 * 144 * 2 * 300 * 4 - 1) == "reverse"  # Jacobian > budget/2
    assert auto_strategy(grad_cam, shape, 6, 6, 2**30, "channels_last") == "reverse"


@pytest.mark.parametrize("smoothing", [Smoothing(), Smoothing(samples=2, sigma=0.3)])
def test_auto_forward_and_reverse_agree_on_branched_networks(smoothing):
    """All requests in one call equal each request alone, in every mode, and the per-component loop."""
    for network, inputs, layers in (
        (*_smooth_residual(torch.float32), ("conv1:input", "stem", "conv2")),
        (*_resnet8(), ("layer2.0.conv1:input", "layer1")),
    ):
        requests = [_request(layer, method) for layer in layers for method in METHODS]
        together = {
            strategy: compute_maps(network, requests, inputs, strategy=strategy, smoothing=smoothing, seed=3)
            for strategy in ("auto", "forward", "reverse")
        }
        for request in requests:
            reverse = together["reverse"][request]
            tolerance = 1e-5 * max(1.0, float(reverse.abs().max()))
            alone = compute_maps(network, [request], inputs, smoothing=smoothing, seed=3)[request]
            for name, maps in (("auto", together["auto"][request]), ("forward", together["forward"][request]),
                               ("alone", alone)):  # fmt: skip
                assert (maps - reverse).abs().max().item() <= tolerance, (request.probe.spec, request.method.name, name)
            if not smoothing.active:
                loop = component_maps_loop(network, request.probe, inputs, request.method, request.channel)
                assert (loop - reverse).abs().max().item() <= tolerance, (request.probe.spec, request.method.name)


def test_components_select_the_same_maps_in_every_mode():
    network, inputs = _smooth_residual(torch.float32)
    requests = [_request("conv1:input", method) for method in METHODS]
    index = torch.tensor([4, 0, 2])
    full = compute_maps(network, requests, inputs, strategy="reverse")
    for strategy in ("auto", "forward", "reverse"):
        sampled = compute_maps(network, requests, inputs, strategy=strategy, components=index)
        for request in requests:
            assert torch.allclose(sampled[request], full[request][:, index], atol=1e-6), strategy
