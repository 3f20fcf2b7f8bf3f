"""Coverage matrix: one architecture per timm family (random init, a small input where the model allows)
builds, lists its layers with layouts and map shapes, runs `repreval eval` on one image at two layers with
all three saliency methods (finite scores), and gives per-component maps equal to plain autograd on the
unmodified forward pass, whose tensors this test lays out by hand from what the layers are (a token
grid, channels-last), not through the engine's layout code.

The slow half (big models) carries the ``slow`` marker; CI runs it all the same."""

from __future__ import annotations

import json
import math

import pytest
import torch
from engine_helpers import sweep_maps

from repreval.cli import main
from repreval.config import ModelConfig
from repreval.engine import MapRequest
from repreval.engine.probe import Probe, probe_layout
from repreval.models import Model, layer_table

#: family representative: (input size, two probe layers, how the oracle reads each layer's tensor); at 64×64 the
#: 2×2 last stages of random ResNet-18, EfficientNet-B0, MobileNetV3 and MobileViT do not follow where the input
#: changes and are refused by the layout check (tests/test_layouts.py), so their 4×4 stages stand in
#: reading: "chw" [B, C, h, w]; "hwc" [B, h, w, C]; ("tokens", prefix) [B, prefix + h*w, C] on a square grid
FAMILIES = {
    "resnet18": (64, ("layer2", "layer3"), ("chw", "chw")),
    "efficientnet_b0": (64, ("blocks.2", "blocks.4"), ("chw", "chw")),
    "mobilenetv3_small_050": (64, ("blocks.1", "blocks.3"), ("chw", "chw")),
    "convnext_atto": (64, ("stages.1", "stages.3"), ("chw", "chw")),
    "regnetx_002": (64, ("s2", "s4"), ("chw", "chw")),
    "densenet121": (64, ("features.denseblock2", "features.norm5"), ("chw", "chw")),
    "vgg11": (64, ("features.10", "features.20"), ("chw", "chw")),
    "inception_v3": (96, ("Mixed_5d", "Mixed_7c"), ("chw", "chw")),
    "ghostnet_050": (64, ("blocks.3", "blocks.9"), ("chw", "chw")),
    "vit_tiny_patch16_224": (64, ("blocks.3", "blocks.11"), (("tokens", 1), ("tokens", 1))),
    "deit_tiny_distilled_patch16_224": (64, ("blocks.3", "blocks.11"), (("tokens", 2), ("tokens", 2))),
    "swin_tiny_patch4_window7_224": (112, ("layers.1", "layers.3"), ("hwc", "hwc")),
    "beit_base_patch16_224": (64, ("blocks.3", "blocks.11"), (("tokens", 1), ("tokens", 1))),
    "eva02_tiny_patch14_224": (56, ("blocks.3", "blocks.11"), (("tokens", 1), ("tokens", 1))),
    "levit_128s": (64, ("stages.0", "stages.2"), (("tokens", 0), ("tokens", 0))),
    "mobilevit_xxs": (64, ("stages.2", "stages.3"), ("chw", "chw")),
    "efficientformer_l1": (224, ("stages.2", "stages.3"), ("chw", ("tokens", 0))),
    "coatnet_nano_rw_224": (64, ("stages.1", "stages.3"), ("chw", "chw")),
    "maxvit_nano_rw_256": (64, ("stages.1", "stages.3"), ("chw", "chw")),
    "poolformer_s12": (64, ("stages.1", "stages.3"), ("chw", "chw")),
    "resnetv2_50": (64, ("stages.1", "stages.3"), ("chw", "chw")),
    "xcit_nano_12_p16_224": (64, ("blocks.3", "blocks.11"), (("tokens", 0), ("tokens", 0))),
}
SLOW = {"densenet121", "vgg11", "inception_v3", "beit_base_patch16_224", "resnetv2_50", "efficientformer_l1"}


def _params() -> list:
    return [
        pytest.param(name, *case, id=name, marks=[pytest.mark.slow] if name in SLOW else [])
        for name, case in FAMILIES.items()
    ]


def _network(plugins, name: str, size: int):
    config = ModelConfig(id=name, spec=f"timm:{name}", options={"input_size": [3, size, size]})
    return Model(config, plugins.model_source.create("timm")).untrained(0)


def _oracle(network, layer, reading, image, components) -> tuple[torch.Tensor, torch.Tensor]:
    """(activation [1, C, h, w], gradients [1, k, C, h, w]) for ``components`` by plain autograd, laid out by
    hand."""
    module = dict(network.module.named_modules())[layer]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.enable_grad():
            embedding = network.embed(image.clone().requires_grad_(True))
    finally:
        handle.remove()
    activation = seen[0]
    gradients = torch.stack(
        [torch.autograd.grad(embedding[:, d].sum(), activation, retain_graph=True)[0] for d in components.tolist()],
        dim=1,
    )
    activation = activation.detach()[:, None]
    if reading == "hwc":
        return activation.permute(0, 1, 4, 2, 3)[:, 0], gradients.permute(0, 1, 4, 2, 3)
    if isinstance(reading, tuple):
        prefix = reading[1]
        side = math.isqrt(activation.shape[2] - prefix)

        def grid(tensor):
            tokens = tensor[:, :, prefix:]
            return tokens.reshape(*tokens.shape[:2], side, side, tokens.shape[-1]).permute(0, 1, 4, 2, 3)

        return grid(activation)[:, 0], grid(gradients)
    return activation[:, 0], gradients


def _oracle_map(activation, gradients, method: str) -> torch.Tensor:
    """[1, k, h, w] channel-abs-mean maps (Grad-CAM: its own map), from the oracle's tensors."""
    if method == "gradients":
        return gradients.abs().mean(dim=2)
    if method == "activations_x_gradients":
        return (activation[:, None] * gradients).abs().mean(dim=2)
    weights = gradients.mean(dim=(-2, -1), keepdim=True)
    return (weights * activation[:, None]).sum(dim=2).relu()


@pytest.mark.parametrize(("name", "size", "layers", "readings"), _params())
def test_timm_family(name, size, layers, readings, plugins, tmp_path, one_thread, capsys):
    torch.manual_seed(0)
    network = _network(plugins, name, size)
    network.module.eval()

    # repreval layers: both probe layers listed with a map shape
    rows = {row.name: row for row in layer_table(network)[0]}
    for layer in layers:
        assert rows[layer].map_shape is not None, (layer, rows[layer])

    # per-component maps against plain autograd
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():  # three live components (a random ReLU head leaves many at exactly 0)
        components = network.embed(image)[0].abs().topk(3).indices
    abs_mean = plugins.aggregator.create("abs")
    methods = {m: plugins.saliency.create(m) for m in ("gradients", "activations_x_gradients", "grad_cam")}
    requests = {
        (layer, m): MapRequest(Probe.parse(layer), method, None if method.spatial else abs_mean)
        for layer in layers
        for m, method in methods.items()
    }
    maps = sweep_maps(network, list(requests.values()), image, components=components)
    for (layer, method), request in requests.items():
        reading = readings[layers.index(layer)]
        expected = _oracle_map(*_oracle(network, layer, reading, image, components), method)
        got = maps[request]
        assert got.shape == expected.shape, (layer, method, got.shape, expected.shape)
        assert torch.isfinite(got).all()
        scale = expected.abs().max().clamp_min(1e-12)
        assert ((got - expected).abs().max() / scale) <= 1e-5, (layer, method)
        if method == "gradients" and layer == layers[0]:  # an early gradient map varies over the map (later
            # ones need not: before global pooling it is constant, and a class token leaves patch tokens at 0)
            assert got.amax() > got.amin(), (layer, "a constant gradient map")

    # the command users run: one image, the two layers, all three methods, finite scores
    out = tmp_path / "out"
    code = main(
        [
            "eval", f"timm:{name}", "--option", f"input_size=[3,{size},{size}]", "--limit", "1",
            "--layers", ",".join(layers), "--saliency", "gradients,activations_x_gradients,grad_cam",
            "--scores", "noise_score", "--sample-components", "4", "--out", str(out), "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    records = [json.loads(path.read_text()) for path in (out / "records").glob("*.json")]
    assert records and all(r["status"] == "ok" and math.isfinite(r["value"]) for r in records), records


def test_swin_stages_are_declared_channels_last(plugins):
    """The case that once gave wrong numbers with exit 0: Swin's NHWC stages are read as [B, h, w, C]."""
    network = _network(plugins, "swin_tiny_patch4_window7_224", 112)
    for stage in ("layers.0", "layers.3"):
        assert probe_layout(network, Probe.parse(stage)).kind == "channels_last"


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("convnext_tiny", "stages.1.blocks.0.norm"),  # ConvNeXt permutes to NHWC for its LayerNorm and MLP
        ("convnext_tiny", "stages.1.blocks.0.mlp.fc1"),
        ("maxvit_nano_rw_256", "stages.1.blocks.0.attn_block.norm1"),  # MaxViT's attention blocks run NHWC
        ("maxvit_nano_rw_256", "stages.1.blocks.0.attn_block.mlp.act"),
    ],
)
def test_channels_last_layers_inside_channels_first_models(plugins, name, layer, one_thread):
    """Layers a CNN runs channels-last inside its blocks are read as [B, h, w, C]: maps equal autograd's."""
    torch.manual_seed(0)
    network = _network(plugins, name, 64)
    network.module.eval()
    assert probe_layout(network, Probe.parse(layer)).kind == "channels_last"
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        components = network.embed(image)[0].abs().topk(2).indices
    method = plugins.saliency.create("activations_x_gradients")
    request = MapRequest(Probe.parse(layer), method, plugins.aggregator.create("abs"))
    got = sweep_maps(network, [request], image, components=components)[request]
    expected = _oracle_map(*_oracle(network, layer, "hwc", image, components), "activations_x_gradients")
    assert got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()) <= 1e-5


@pytest.mark.parametrize(
    ("name", "layer", "why"),
    [
        ("convnext_tiny", "stages.1.blocks.0.drop_path", "does not declare how this layer's tensor is laid out"),
        (
            "maxvit_nano_rw_256",
            "stages.1.blocks.0.attn_block.attn.qkv",
            "windows or heads folded into the first dimension",
        ),
    ],
)
def test_layers_without_a_map_per_input_are_refused_at_validate(plugins, name, layer, why):
    from repreval.layouts import check_layouts

    network = _network(plugins, name, 64)
    problems = check_layouts(network, [Probe.parse(layer)])
    assert why in str(problems[Probe.parse(layer)])
