"""dz/da at a probe, checked against oracles that share nothing with the engine: plain autograd on the
unmodified forward pass (the probed tensor captured by a hook, differentiated with torch.autograd.grad),
captum's layer attributions, and a hand-computed case, on networks with branches (residual shortcuts,
concatenations, in-place ReLUs)."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED, hooked_forward, needs_shared
from engine_helpers import component_maps, mean_map
from torch import nn

from repreval.api import InputSpec, Network
from repreval.config import ModelConfig
from repreval.data import fit_to_input, normalize
from repreval.engine.probe import Probe
from repreval.engine.reference import component_maps_loop
from repreval.errors import ReprevalError
from repreval.models import Model, seeded

TOLERANCE = 1e-5


def _network(module: nn.Module, shape=(3, 8, 8)) -> Network:
    module.eval()
    return Network(module, InputSpec(*shape), (), embed=lambda x: module(x).mean(dim=(-2, -1)))


def autograd_oracle(network: Network, layer: str, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activation [B, C, h, w], gradients [B, D, C, h, w]) by plain autograd on the unmodified forward."""
    activation, embedding = hooked_forward(network, layer, inputs)
    gradients = [
        torch.autograd.grad(embedding[:, d].sum(), activation, retain_graph=True)[0] for d in range(embedding.shape[1])
    ]
    return activation.detach(), torch.stack(gradients, dim=1)


def oracle_maps(activation: torch.Tensor, gradients: torch.Tensor, method: str) -> torch.Tensor:
    """Channel-mean maps [B, D, h, w] (Grad-CAM: its own map) from the oracle's tensors."""
    if method == "gradients":
        return gradients.mean(dim=2)
    if method == "activations_x_gradients":
        return (activation[:, None] * gradients).mean(dim=2)
    weights = gradients.mean(dim=(-2, -1), keepdim=True)
    return (weights * activation[:, None]).sum(dim=2).relu()


class Residual(nn.Module):
    """``a = pre(x); return conv(a) + a``: the shortcut reads the probe's tensor too."""

    def __init__(self, zero_conv: bool = False):
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        if zero_conv:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        a = self.pre(x)
        return self.conv(a) + a


class Dense(nn.Module):
    """DenseNet-style: the stem's output is concatenated with what is computed from it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        a = self.stem(x)
        c = torch.cat([a, torch.tanh(self.conv1(a))], dim=1)
        return torch.cat([c, self.conv2(c)], dim=1)


class InPlace(nn.Module):
    """torchvision's BasicBlock pattern: in-place ReLUs and an in-place shortcut add."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        x = self.relu(self.stem(x))
        identity = x
        out = self.bn(self.conv1(x))
        if self.inplace:
            out += identity
        else:
            out = out + identity
        out = self.relu(out)
        return self.conv2(out)

    def out_of_place(self) -> InPlace:
        """The same function without in-place ops: the oracle's twin (autograd cannot differentiate with
        respect to a tensor that is changed in place after it is read)."""
        twin = InPlace(inplace=False)
        twin.load_state_dict(self.state_dict())
        return twin


def test_the_hand_computed_shortcut_case():
    """conv zeroed, z = spatial mean of conv(a) + a: dz_d/da is 1/(h·w) at channel d, so the channel mean of
    the gradient map is 1/(C·h·w) everywhere. Substituting only where conv reads ``a`` gave 0."""
    with seeded(0):
        network = _network(Residual(zero_conv=True))
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    method = _method("gradients")
    for strategy in ("reverse", "forward"):
        maps = component_maps(network, Probe.parse("conv:input"), inputs, method, _mean(), strategy=strategy)
        assert torch.allclose(maps, torch.full_like(maps, 1 / (4 * 8 * 8))), strategy
    loop = component_maps_loop(network, Probe.parse("conv:input"), inputs, method, _mean())
    assert torch.allclose(loop, torch.full_like(loop, 1 / (4 * 8 * 8)))
    one = mean_map(network, Probe.parse("conv:input"), inputs, method)
    assert torch.allclose(one, torch.full_like(one, 1 / (4 * 8 * 8)))


@pytest.mark.parametrize(
    "make, layers",
    [
        (Residual, ["conv:input", "pre", "conv"]),
        (Dense, ["conv1:input", "conv2:input", "stem", "conv1"]),
        (InPlace, ["conv1:input", "conv2:input", "bn", "stem"]),
    ],
)
@pytest.mark.parametrize("method", ["gradients", "activations_x_gradients", "grad_cam"])
def test_engine_equals_plain_autograd_on_branching_networks(make, layers, method):
    with seeded(1):
        module = make()
    network = _network(module)
    oracle = _network(module.out_of_place()) if isinstance(module, InPlace) else network
    inputs = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for layer in layers:
        expected = oracle_maps(*autograd_oracle(oracle, layer, inputs), method)
        probe = Probe.parse(layer)
        for strategy in ("reverse", "forward"):
            maps = component_maps(network, probe, inputs, _method(method), _mean(), strategy=strategy)
            assert torch.allclose(maps, expected, atol=TOLERANCE), (layer, strategy)
        loop = component_maps_loop(oracle, probe, inputs, _method(method), _mean())
        assert torch.allclose(loop, expected, atol=TOLERANCE), (layer, "loop")
        if method != "grad_cam":
            one = mean_map(network, probe, inputs, _method(method))
            assert torch.allclose(one, expected.mean(dim=1), atol=TOLERANCE), (layer, "mean_map")


def test_an_input_probe_whose_tensor_cannot_be_identified_is_refused():
    class ReadsAParameter(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.rand(1, 4, 8, 8))
            self.conv = nn.Conv2d(4, 4, 1)
            self.stem = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.stem(x) + self.conv(self.table)

    network = _network(ReadsAParameter())
    with pytest.raises(ReprevalError, match="conv:input"):
        component_maps(network, Probe.parse("conv:input"), torch.rand(1, 3, 8, 8), _method("gradients"), _mean())


@pytest.fixture(scope="module")
def resnet20(plugins):
    from test_engine import _cifar_images

    weights = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"
    network = Model(
        ModelConfig(id="r20", spec="cifar:resnet20", weights=str(weights)), plugins.model_source.create("cifar")
    ).trained()
    inputs = normalize(fit_to_input(_cifar_images(2), network.input_spec), network.input_spec)
    return network, inputs


@needs_shared
@pytest.mark.parametrize("layer", ["layer3.0.conv1:input", "layer2.1.conv1:input", "layer2"])
def test_trained_resnet20_input_probes_equal_autograd_and_captum(resnet20, layer):
    """The issue's case: ``layer3.0.conv1:input`` is read by the block's conv and by its shortcut."""
    from captum.attr import LayerGradCam, LayerGradientXActivation

    network, inputs = resnet20
    activation, gradients = autograd_oracle(network, layer, inputs)
    name, _, side = layer.partition(":")
    module = dict(network.module.named_modules())[name]
    embed = network.embed  # captum calls it as the forward function
    probe = Probe.parse(layer)
    for method in ("gradients", "activations_x_gradients", "grad_cam"):
        maps = component_maps(network, probe, inputs, _method(method), _mean())
        assert torch.allclose(maps, oracle_maps(activation, gradients, method), atol=TOLERANCE), method
    by_input = side == "input"
    for d in (0, 17, 63):
        captum_axg = LayerGradientXActivation(embed, module).attribute(
            inputs, target=d, attribute_to_layer_input=by_input
        )
        maps = component_maps(network, probe, inputs, _method("activations_x_gradients"), _mean())
        assert torch.allclose(maps[:, d], captum_axg.mean(dim=1), atol=TOLERANCE), d
        captum_cam = LayerGradCam(embed, module).attribute(
            inputs, target=d, attribute_to_layer_input=by_input, relu_attributions=True
        )
        cam = component_maps(network, probe, inputs, _method("grad_cam"), None)
        assert torch.allclose(cam[:, d], captum_cam[:, 0], atol=TOLERANCE), d


def _method(name: str):
    from repreval_builtins.saliency import ActivationsTimesGradients, GradCAM, Gradients

    return {"gradients": Gradients, "activations_x_gradients": ActivationsTimesGradients, "grad_cam": GradCAM}[name]()


def _mean():
    from repreval_builtins.aggregators import Mean

    return Mean()


def test_the_reference_loop_refuses_a_tensor_changed_in_place_after_it_is_read():
    with seeded(1):
        network = _network(InPlace())
    with pytest.raises(ValueError, match="in-place"):
        component_maps_loop(network, Probe.parse("bn"), torch.rand(1, 3, 8, 8), _method("gradients"), _mean())


def _by_hand(value: torch.Tensor, kind: str, prefix: int = 0, grid=(0, 0)) -> torch.Tensor:
    """The oracle's own [.., C, h, w] view of a channels-last or token tensor (leading dims kept)."""
    if kind == "channels_last":
        return value.movedim(-1, -3)
    tokens = value[..., prefix:, :]
    return tokens.reshape(*tokens.shape[:-2], *grid, tokens.shape[-1]).movedim(-1, -3)


@pytest.mark.parametrize(
    "name, kwargs, size, layers",
    [
        # the residual stream: read by the attention branch (through norm1) and by the shortcut
        (
            "vit_tiny_patch16_224",
            {"img_size": 32, "embed_dim": 24, "depth": 2, "num_heads": 2},
            32,
            ["blocks.0", "blocks.1.norm1:input", "patch_embed.proj"],
        ),
        (
            "swin_tiny_patch4_window7_224",
            {"img_size": 64, "window_size": 2, "embed_dim": 8, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
            64,
            ["layers.1", "layers.2.blocks.0"],
        ),
    ],
)
def test_token_and_channels_last_probes_equal_plain_autograd(plugins, name, kwargs, size, layers):
    """Transformers: prefix tokens set aside, patch tokens read on their grid; Swin's NHWC maps read as such
    (before, they were read channels-first with exit 0). The oracle converts the layouts by hand."""
    network = plugins.model_source.create("timm").build(name, {"kwargs": kwargs, "input_size": [3, size, size]}, 0)
    network.module.eval()
    layout = network.layout
    inputs = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    for layer in layers:
        activation, gradients = autograd_oracle(network, layer, inputs)
        if activation.dim() == 3:
            activation, gradients = (
                _by_hand(v, "tokens", layout.prefix_tokens, layout.grid) for v in (activation, gradients)
            )
        elif layout.kind == "channels_last" and not layer.startswith("patch_embed.proj"):
            activation, gradients = (_by_hand(v, "channels_last") for v in (activation, gradients))
        for method in ("gradients", "activations_x_gradients", "grad_cam"):
            maps = component_maps(network, Probe.parse(layer), inputs, _method(method), _mean())
            expected = oracle_maps(activation, gradients, method)
            assert maps.shape == expected.shape and torch.allclose(maps, expected, atol=1e-5), (layer, method)


class Tokens(nn.Module):
    """A channels-first network (the default layout) whose ``mix`` layer gives [B, N, C] tokens."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.mix = nn.Linear(4, 4)

    def forward(self, x):
        return self.mix(self.stem(x).flatten(2).transpose(1, 2)).mean(dim=1)


def test_a_tensor_that_does_not_fit_the_declared_layout_is_refused_at_validate(plugins):
    """Tokens in a network that declares no token layout: refused, at validate and in the engine, not guessed."""
    from repreval.plan import make_plan
    from repreval.suite import parse_suite
    from repreval.trust import Trust, trusting

    module = Tokens()
    network = Network(module, InputSpec(3, 8, 8), (), embed=module)
    with pytest.raises(ReprevalError, match=r"probe 'mix' gives a tensor of shape \(1, 64, 4\)"):
        component_maps(network, Probe.parse("mix"), torch.rand(1, 3, 8, 8), _method("gradients"), _mean())
    data = {
        "name": "tokens",
        "datasets": {"d": {"kind": "digits", "limit": 2}},
        "models": {"m": {"model": "torch:test_probe_oracles:Tokens", "options": {"input_size": [3, 8, 8]},
                         "layers": ["stem", "mix"]}},
        "variants": ["random"],
        "evaluation": {"dataset": "d", "saliency": ["gradients"], "scores": ["noise_score"]},
    }  # fmt: skip
    with (
        trusting(Trust(modules=("test_probe_oracles",))),
        pytest.raises(
            ReprevalError,
            match=r"models\.m\.layers\[1\]: layer 'mix' cannot be read: probe 'mix' gives a tensor of shape",
        ),
    ):
        make_plan(parse_suite(data, plugins), plugins)


class Strided(nn.Module):
    """A stride-2 stem and a residual block: the probe's maps are half the input's size."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(4, 5, 3, padding=1)
        self.skip = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        a = self.stem(x)
        return torch.relu(self.conv(a)) + self.skip(a)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_reference_style_grad_cam_normalises_each_component_map_then_upsamples(plugins, interpolation):
    """The paper's code: each component's Grad-CAM map min-max normalised, then resized to the input."""
    with seeded(3):
        module = Strided()
    network = _network(module)
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    method = plugins.saliency.create("grad_cam", {"style": "reference", "interpolation": interpolation})
    for layer in ("stem", "conv"):
        cam = oracle_maps(*autograd_oracle(network, layer, inputs), "grad_cam")  # [B, D, 4, 4]
        low = cam.amin(dim=(-2, -1), keepdim=True)
        high = cam.amax(dim=(-2, -1), keepdim=True)
        normalized = (cam - low) / (high - low + 1e-12)
        expected = torch.nn.functional.interpolate(normalized, size=(8, 8), mode=interpolation)
        for strategy in ("reverse", "forward"):
            maps = component_maps(network, Probe.parse(layer), inputs, method, None, strategy=strategy)
            assert maps.shape == (2, 5, 8, 8)
            assert torch.allclose(maps, expected, atol=TOLERANCE), (layer, strategy)
        loop = component_maps_loop(network, Probe.parse(layer), inputs, method, None)
        assert torch.allclose(loop, expected, atol=TOLERANCE), layer
    with pytest.raises(ReprevalError, match="style must be one of layer, reference"):
        plugins.saliency.create("grad_cam", {"style": "paper"})
