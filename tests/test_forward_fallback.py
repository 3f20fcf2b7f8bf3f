"""Forward mode meets an operation without a forward-AD rule (CPU's fused attention kernel): ``auto`` computes
those maps by the reverse sweep and says so, explicit ``forward`` fails in one line. Oracle: plain autograd on
the unmodified forward pass, tensors laid out by the test."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import hooked_forward
from torch import nn

from repreval.api import InputSpec, Network, component_maps
from repreval.cli import main
from repreval.config import ModelConfig
from repreval.engine import MapRequest, compute_maps
from repreval.engine.probe import Probe
from repreval.errors import ReprevalError
from repreval.models import Model

ONE_LINE = re.compile(r"forward mode: \S*scaled_dot_product\S* has no forward-AD rule; use strategy reverse or auto")


class _Attention(nn.Module):
    """A conv stem (8 channels, 4×4) -> 16 tokens -> fused attention (2 heads) -> mean token -> D = 256."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.qkv = nn.Linear(8, 24)
        self.head = nn.Linear(8, 256)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # [B, 16, 8]
        q, k, v = self.qkv(tokens).reshape(x.shape[0], 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape[0], 16, 8)
        return self.head(torch.tanh(mixed).mean(dim=1))


def _oracle(network: Network, layer: str, image: torch.Tensor, components) -> dict[str, torch.Tensor]:
    """Maps [1, k, h, w] by plain autograd of the [1, C, h, w] tensor probe ``layer`` (``NAME`` or
    ``NAME:input``) reads on the unmodified forward pass: gradients (channel |.| mean) and Grad-CAM."""
    tensor, embedding = hooked_forward(network, layer, image)
    gradients = torch.stack(
        [torch.autograd.grad(embedding[:, d].sum(), tensor, retain_graph=True)[0] for d in components.tolist()],
        dim=1,
    )
    weights = gradients.mean(dim=(-2, -1), keepdim=True)
    return {
        "gradients": gradients.abs().mean(dim=2),
        "grad_cam": (weights * tensor.detach()[:, None]).sum(dim=2).relu(),
    }


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and float((got - expected).abs().max() / expected.abs().max()) <= 1e-5


@pytest.fixture
def attention():
    torch.manual_seed(0)
    module = _Attention().eval()
    return Network(module, InputSpec(3, 8, 8), ("stem",), embed=module), torch.rand(1, 3, 8, 8)


def test_the_fused_attention_kernel_has_no_forward_ad_rule(attention):
    """The premise: torch's own JVP of the model fails."""
    network, image = attention
    with pytest.raises(NotImplementedError, match="forward AD"):
        torch.func.jvp(network.module, (image,), (torch.ones_like(image),))


def test_auto_falls_back_to_the_reverse_sweep(plugins, attention, one_thread):
    """At the stem (8 channels; 128 directions for gradients, 8 for Grad-CAM, 256 components) ``auto`` picks
    forward mode; both requests are computed by the reverse sweep instead, with the same numbers as ``reverse``
    and autograd's, and each is reported once."""
    network, image = attention
    abs_mean = plugins.aggregator.create("abs")
    requests = {
        "gradients": MapRequest(Probe.parse("stem"), plugins.saliency.create("gradients"), abs_mean),
        "grad_cam": MapRequest(Probe.parse("stem"), plugins.saliency.create("grad_cam")),
    }
    fallen: list[tuple[MapRequest, str]] = []
    both = list(requests.values())
    auto = compute_maps(network, both, image, batched=True, on_fallback=lambda *seen: fallen.append(seen))
    reverse = compute_maps(network, both, image, strategy="reverse", batched=True)
    expected = _oracle(network, "stem", image, torch.arange(256))
    for name, request in requests.items():
        assert torch.equal(auto[request], reverse[request]), name
        assert _close(auto[request], expected[name]), name
    assert sorted(request.method.name for request, _ in fallen) == ["grad_cam", "gradients"]
    assert all("scaled_dot_product" in operation for _, operation in fallen)


def test_explicit_forward_fails_in_one_line(plugins, attention):
    network, image = attention
    with pytest.raises(ReprevalError) as caught:
        component_maps(network, "stem", image, plugins.saliency.create("grad_cam"), None, strategy="forward")
    assert ONE_LINE.fullmatch(str(caught.value)), str(caught.value)


@pytest.fixture(scope="module")
def vit(plugins):
    config = ModelConfig(id="vit", spec="timm:vit_tiny_patch16_224", options={"input_size": [3, 64, 64]})
    network = Model(config, plugins.model_source.create("timm")).untrained(0)
    network.module.eval()
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        components = network.embed(image)[0].abs().topk(8).indices
    return network, image, components


def test_vit_falls_back_at_its_input(plugins, vit, one_thread):
    """Grad-CAM at the patch embedding's input (3 directions, 4.5 rows < 8 components): ``auto`` chooses forward mode, the
    fused attention sends it to the reverse sweep; the maps equal ``reverse``'s (bit for bit: the same passes,
    batched alike) and autograd's; explicit
    ``forward`` fails in one line."""
    network, image, components = vit
    method = plugins.saliency.create("grad_cam")
    fallen: list[str] = []
    options = {"components": components, "batched": True}  # one way of batching: bit-identical maps
    probe = "patch_embed.proj:input"
    auto = component_maps(network, probe, image, method, None, on_fallback=lambda _r, op: fallen.append(op), **options)
    reverse = component_maps(network, probe, image, method, None, strategy="reverse", **options)
    assert torch.equal(auto, reverse)
    expected = _oracle(network, "patch_embed.proj:input", image, components)["grad_cam"]
    assert _close(auto, expected)
    assert len(fallen) == 1 and "scaled_dot_product" in fallen[0]
    with pytest.raises(ReprevalError) as caught:
        component_maps(network, probe, image, method, None, strategy="forward", **options)
    assert ONE_LINE.fullmatch(str(caught.value)), str(caught.value)


def test_the_record_says_forward_fell_back(tmp_path, capsys):
    """A run whose maps fell back carries ``forward_fallback`` 1.0 in its records' extras."""
    out = tmp_path / "out"
    code = main(
        [
            "eval", "timm:vit_tiny_patch16_224", "--option", "input_size=[3,64,64]", "--limit", "1",
            "--layers", "patch_embed.proj:input", "--saliency", "grad_cam", "--scores", "noise_score",
            "--sample-components", "8", "--out", str(out), "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    records = [json.loads(path.read_text()) for path in (out / "records").glob("*.json")]
    assert records and all(r["status"] == "ok" and r["extras"]["forward_fallback"] == 1.0 for r in records), records
