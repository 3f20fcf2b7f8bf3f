"""Saliency methods that take gradients at points of their own (Integrated Gradients, SmoothGrad, expected
gradients), checked against Captum's LayerIntegratedGradients and NoiseTunnel on the unmodified network, against
IG's completeness, and against plain autograd on a head the test writes itself; on a network with branches (a
residual block, parallel convolutions and a shortcut that skips over the probed layer)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, LayerIntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from repreval.api import InputSpec, Layout, Network, component_maps
from repreval.engine.maps import points_generator
from repreval.plugins import load_plugins

D = 5


class Branched(nn.Module):
    """stem → block1 (conv-relu-conv + identity) → two parallel convolutions + identity, plus a shortcut from the
    stem that skips over block1 → mean pool → linear, D outputs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.block1 = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 3, padding=1))
        self.wide, self.narrow = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
        self.skip = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6, D)

    def forward(self, x):
        stem = torch.tanh(self.stem(x))
        return self.rest(self.block1(stem) + stem, stem)

    def rest(self, a, stem):
        """Everything after block1's sum, as the test's own head: a -> embedding (``stem`` fixed)."""
        b = torch.tanh(self.wide(a) + self.narrow(a) + a) + self.skip(stem)
        return self.fc(b.mean(dim=(-2, -1)))


class Probed(Branched):
    """The same network with block1's sum as a module of its own, so it can be probed (Captum's layer too)."""

    def __init__(self):
        super().__init__()
        self.sum = Add()

    def forward(self, x):
        stem = torch.tanh(self.stem(x))
        return self.rest(self.sum(self.block1(stem), stem), stem)


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    module = Probed().double().eval()
    network = Network(module, InputSpec(3, 8, 8), (), embed=module, layout=Layout())
    inputs = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    return module, network, inputs


def _method(name, **options):
    return load_plugins().saliency.create(name, options)


def _per_channel(network, probe, inputs, method):
    """Per-channel attributions [B, D, C, h, w] through the engine: the signed mean over one channel at a time
    (masking the others is exact for a per-element attribution)."""
    from repreval.api import Aggregator

    class Only(Aggregator):
        name = "only"

        def __init__(self, channel):
            self.channel = channel

        def __call__(self, values, dim):
            return values.select(dim, self.channel)

    channels = network.module.stem.out_channels
    maps = [component_maps(network, probe, inputs, method, Only(c), strategy="reverse") for c in range(channels)]
    return torch.stack(maps, dim=2)


@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_layer_integrated_gradients_equal_captums_and_are_complete(setting, quadrature):
    module, network, inputs = setting
    method = _method("integrated_gradients", baseline="blank", steps=24, quadrature=quadrature)
    ours = _per_channel(network, "sum", inputs, method)  # [B, D, C, h, w]
    captum = LayerIntegratedGradients(module, module.sum)
    for d in range(D):
        theirs = captum.attribute(inputs, torch.zeros_like(inputs), target=d, n_steps=24, method=quadrature)
        if quadrature == "riemann_trapezoid":  # Captum's trapezoid weights sum to (n - 1) / n, not 1
            theirs = theirs * 24 / 23
        assert torch.allclose(ours[:, d], theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())
    # completeness: the attributions of z_d sum to z_d(x) - z_d(baseline), up to the quadrature's error
    stem_blank = torch.tanh(module.stem(torch.zeros_like(inputs[:1])))
    blank = module.sum(module.block1(stem_blank), stem_blank)
    stem = torch.tanh(module.stem(inputs))
    gap = module(inputs) - module.rest(blank.expand(len(inputs), -1, -1, -1), stem)
    error = {"gausslegendre": 1e-6, "riemann_middle": 1e-3, "riemann_trapezoid": 2e-3}[quadrature]
    assert torch.allclose(ours.sum(dim=(2, 3, 4)), gap, atol=error * gap.abs().max().item())


def test_zero_and_channel_mean_baselines_are_complete_and_differ(setting):
    module, network, inputs = setting
    stem = torch.tanh(module.stem(inputs))
    a = module.sum(module.block1(stem), stem)
    for baseline, a0 in (("zero", torch.zeros_like(a)), ("channel_mean", a.mean(dim=(-2, -1), keepdim=True))):
        method = _method("integrated_gradients", baseline=baseline, steps=16)
        ours = _per_channel(network, "sum", inputs, method)
        gap = module.rest(a, stem) - module.rest(a0.expand_as(a), stem)
        assert torch.allclose(ours.sum(dim=(2, 3, 4)), gap, atol=1e-6 * gap.abs().max().item())


@pytest.mark.parametrize(("of", "base"), [("gradients", Saliency), ("activations_x_gradients", InputXGradient)])
def test_smoothgrad_equals_captums_noise_tunnel_with_the_same_noise(setting, monkeypatch, of, base):
    module, network, inputs = setting
    samples = 6
    method = _method("smoothgrad", samples=samples, sigma=0.2, of=of)
    ours = _per_channel(network, "sum", inputs, method)
    # the noise the engine draws for this call (seed 0): replayed into Captum's draw
    stem = torch.tanh(module.stem(inputs)).detach()
    a = module.sum(module.block1(stem), stem).detach()
    at = method.points(a, None, points_generator(0, "sum", "smoothgrad")).at  # [S, B, C, h, w]
    noise = (at - a).transpose(0, 1).reshape(len(inputs) * samples, *a.shape[1:])  # Captum's order: per input
    monkeypatch.setattr(torch, "normal", lambda mean, std, **_: noise.to(std.dtype) if torch.is_tensor(std) else noise)
    tunnel = NoiseTunnel(base(lambda activation: module.rest(activation, stem.repeat_interleave(samples, dim=0))))
    for d in range(D):
        signed = {"abs": False} if base is Saliency else {}  # Captum's Saliency takes |gradient| by default
        theirs = tunnel.attribute(a, nt_type="smoothgrad", nt_samples=samples, stdevs=1.0, target=d, **signed)
        assert torch.allclose(ours[:, d], theirs, rtol=1e-5, atol=1e-6 * theirs.abs().max().item())


def test_expected_gradients_equal_their_definition_by_plain_autograd(setting):
    module, network, inputs = setting
    method = _method("expected_gradients", samples=5, references=3)
    ours = _per_channel(network, "sum", inputs, method)
    stem = torch.tanh(module.stem(inputs)).detach()
    a = module.sum(module.block1(stem), stem).detach()
    generator = points_generator(0, "sum", "expected_gradients")
    references = method.reference_inputs(inputs, generator)
    reference_stem = torch.tanh(module.stem(references))
    reference = module.sum(module.block1(reference_stem), reference_stem).detach()
    chosen = torch.randint(3, (5, len(inputs)), generator=generator)  # the draws, in the method's documented order
    alphas = torch.rand((5, len(inputs)), generator=generator).double()
    expected = torch.zeros(len(inputs), D, *a.shape[1:], dtype=torch.float64)
    for s in range(5):
        for b in range(len(inputs)):
            baseline = reference[chosen[s, b]]
            point = (baseline + alphas[s, b] * (a[b] - baseline)).requires_grad_(True)
            z = module.rest(point[None], stem[b : b + 1])[0]
            for d in range(D):
                (gradient,) = torch.autograd.grad(z[d], point, retain_graph=True)
                expected[b, d] += (a[b] - baseline) * gradient / 5
    assert torch.allclose(ours, expected, rtol=1e-6, atol=1e-9)


def test_point_methods_are_seeded_and_refuse_forward_mode(setting):
    from repreval.errors import ReprevalError

    _, network, inputs = setting
    method = _method("integrated_gradients", steps=4)
    with pytest.raises(ReprevalError, match="forward mode: saliency method 'integrated_gradients'"):
        component_maps(network, "sum", inputs, method, _method_aggregator(), strategy="forward")
    # the same seed gives the same maps, another seed other SmoothGrad maps
    smooth = _method("smoothgrad", samples=3)
    first = component_maps(network, "sum", inputs, smooth, _method_aggregator(), seed=1)
    assert torch.equal(first, component_maps(network, "sum", inputs, smooth, _method_aggregator(), seed=1))
    assert not torch.equal(first, component_maps(network, "sum", inputs, smooth, _method_aggregator(), seed=2))


def _method_aggregator():
    return load_plugins().aggregator.create("abs")


def test_integrated_gradients_on_a_vit_are_complete_with_the_class_token_held(plugins):
    """Token layout: the grid tokens go from their mean (the channel_mean baseline; a zero baseline makes
    LayerNorm's derivative blow up near 0) to their value, the class token keeps its own; the attributions sum
    to z(x) - z(grid tokens replaced by their mean), computed here by a plain hook on the unmodified model."""
    from repreval.config import ModelConfig
    from repreval.models import Model

    config = ModelConfig(id="vit", spec="timm:vit_tiny_patch16_224", options={"input_size": [3, 32, 32]})
    network = Model(config, plugins.model_source.create("timm")).untrained(0)
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    method = _method("integrated_gradients", baseline="channel_mean", steps=16)
    some = torch.tensor([0, 7, 50, 191])
    maps = component_maps(network, "blocks.4", inputs, method, plugins.aggregator.create("mean"), components=some)
    block = dict(network.module.named_modules())["blocks.4"]
    handle = block.register_forward_hook(
        lambda _m, _a, out: torch.cat([out[:, :1], out[:, 1:].mean(dim=1, keepdim=True).expand_as(out[:, 1:])], 1)
    )
    with torch.no_grad():
        baseline = network.embed(inputs)
    handle.remove()
    with torch.no_grad():
        gap = (network.embed(inputs) - baseline)[:, some]
    channels = network.module.embed_dim
    assert torch.allclose(maps.sum(dim=(-2, -1)) * channels, gap, atol=2e-3 * gap.abs().max().item())


def test_a_suite_runs_point_methods_reproducibly_and_validate_refuses_them_in_forward_mode(tmp_path, capsys):
    import yaml
    from conftest import digits_suite

    from repreval.cli import main

    suite = digits_suite()
    suite["variants"] = ["random"]
    suite["evaluation"]["saliency"] = [{"integrated_gradients": {"steps": 4}}, {"smoothgrad": {"samples": 3}}]
    suite["evaluation"]["scores"] = ["noise_score"]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    values = []
    for out in ("a", "b"):
        assert main(["run", str(path), "--out", str(tmp_path / out)]) == 0
        records = sorted((tmp_path / out / "records").glob("*.json"))
        values.append([yaml.safe_load(record.read_text())["values"] for record in records])
    assert len(values[0]) == 2 and values[0] == values[1]  # one unit per method, equal in both runs
    suite["evaluation"]["strategy"] = "forward"
    path.write_text(yaml.safe_dump(suite))
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "evaluation.saliency[0]: saliency method 'integrated_gradients[steps=4]' needs gradients at points" in err


@pytest.mark.parametrize(("name", "options"), [("integrated_gradients", {"steps": 5}), ("smoothgrad", {"samples": 4})])
def test_points_that_do_not_fit_the_memory_budget_go_in_parts_with_the_same_maps(setting, name, options):
    _, network, inputs = setting
    method, aggregator = _method(name, **options), _method_aggregator()
    whole = component_maps(network, "sum", inputs, method, aggregator, seed=3)
    parts = component_maps(network, "sum", inputs, method, aggregator, seed=3, memory_budget=1)  # one point a pass
    assert torch.allclose(parts, whole, rtol=1e-10, atol=1e-12 * whole.abs().max().item())
