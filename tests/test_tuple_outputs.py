"""Blocks that return tuples, mappings or model-output objects: a probe reads their first tensor, and the maps
equal plain autograd with respect to that tensor on the unmodified forward pass (picked out of the output by
the test itself), in reverse and forward mode, where the other elements also feed the embedding."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from engine_helpers import sweep_maps
from torch import Tensor, nn

from repreval.api import InputSpec, Network
from repreval.engine import MapRequest, compute_maps
from repreval.engine.probe import Probe, first_tensor, with_first_tensor
from repreval.errors import ReprevalError


@dataclass
class BlockOutput:
    """A model-output object: the hidden states first, a side tensor after them."""

    hidden: Tensor
    side: Tensor
    note: str = "block"


class TupleBlock(nn.Module):
    """``(hidden, extra)``: ``extra`` comes from the block's input and is read downstream too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.side = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return torch.tanh(self.conv(x)) + x, self.side(x)


class DictBlock(nn.Module):
    """``{"hidden": ..., "gate": ...}`` after a non-tensor entry: the first tensor is the hidden states."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gate = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return {"scale": 0.5, "hidden": torch.tanh(self.conv(x)), "gate": torch.sigmoid(self.gate(x))}


class DataclassBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return BlockOutput(torch.tanh(self.conv(x)), x.flip(-1))


class SkipBlock(nn.Module):
    """``(hidden, (skip, hidden))``: the hidden states appear twice (a U-Net block's skip outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        hidden = torch.tanh(self.conv(x))
        return hidden, (x * 0.5, hidden)


class Shape(nn.Module):
    def forward(self, x):
        return tuple(x.shape)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.pair, self.mapping, self.output, self.skip = TupleBlock(), DictBlock(), DataclassBlock(), SkipBlock()
        self.shape = Shape()
        self.head = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        hidden, extra = self.pair(self.stem(x))
        out = self.mapping(hidden)
        hidden = out["hidden"] * out["gate"] + out["scale"] * extra
        result = self.output(hidden)
        hidden, (shortcut, again) = self.skip(result.hidden + torch.sin(result.side))
        batch, *_ = self.shape(hidden)
        return self.head((hidden * again + shortcut).reshape(batch, -1))


#: probe layer -> how the test picks the probed tensor out of the module's output
PICK = {
    "pair": lambda out: out[0],
    "mapping": lambda out: out["hidden"],
    "output": lambda out: out.hidden,
    "skip": lambda out: out[0],
}
METHODS = ("gradients", "activations_x_gradients", "grad_cam")


@pytest.fixture(scope="module")
def network() -> Network:
    torch.manual_seed(0)
    module = Net().eval()
    return Network(module, InputSpec(3, 6, 6), tuple(PICK), embed=module)


def _oracle(network: Network, layer: str, inputs: Tensor, method: str) -> Tensor:
    """[B, D, h, w] maps by plain autograd w.r.t. the tensor the test picks from the unmodified forward pass."""
    seen: list = []
    handle = dict(network.module.named_modules())[layer].register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.enable_grad():
            embedding = network.embed(inputs.clone().requires_grad_(True))
    finally:
        handle.remove()
    activation = PICK[layer](seen[0])
    gradients = torch.stack(
        [torch.autograd.grad(embedding[:, d].sum(), activation, retain_graph=True)[0] for d in range(5)], dim=1
    )
    activation = activation.detach()[:, None]
    if method == "gradients":
        return gradients.abs().mean(dim=2)
    if method == "activations_x_gradients":
        return (activation * gradients).abs().mean(dim=2)
    return (gradients.mean(dim=(-2, -1), keepdim=True) * activation).sum(dim=2).relu()


@pytest.mark.parametrize("strategy", ["reverse", "auto"])
def test_maps_at_blocks_returning_containers_equal_plain_autograd(network, plugins, strategy, one_thread):
    inputs = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    abs_mean = plugins.aggregator.create("abs")
    requests = {
        (layer, name): MapRequest(Probe(layer), method, None if method.spatial else abs_mean)
        for layer in PICK
        for name, method in ((m, plugins.saliency.create(m)) for m in METHODS)
    }
    if strategy == "reverse":
        maps = sweep_maps(network, list(requests.values()), inputs)
    else:
        maps = compute_maps(network, list(requests.values()), inputs, strategy="auto")  # containers: reverse
    for (layer, method), request in requests.items():
        expected = _oracle(network, layer, inputs, method)
        assert maps[request].shape == expected.shape == (2, 5, 6, 6), (layer, method)
        scale = expected.abs().max()
        assert scale > 0 and (maps[request] - expected).abs().max() <= 1e-6 * scale, (layer, method)


def test_a_block_whose_output_holds_no_tensor_is_refused_in_one_line(network, plugins):
    inputs = network.input_spec.example()
    request = MapRequest(Probe("shape"), plugins.saliency.create("grad_cam"))
    for run in (lambda: sweep_maps(network, [request], inputs), lambda: Probe("shape").capture(network, inputs)):
        with pytest.raises(ReprevalError) as caught:
            run()
        assert caught.value.problem == "layer 'shape' returns a tuple with no tensor"
        assert "repreval layers" in str(caught.value.fix)


def test_the_first_tensor_is_replaced_and_everything_else_handed_through():
    a, b, new = torch.ones(1), torch.zeros(1), torch.full((1,), 2.0)
    output = (None, [a, b], {"again": a})
    assert first_tensor(output) is a and first_tensor((1, "x", {"k": None})) is None
    replaced = with_first_tensor(output, new)
    assert replaced[1][0] is new and replaced[1][1] is b and replaced[2]["again"] is new
    assert output[1][0] is a and output[2]["again"] is a  # the original is left as it was
    dataclass_output = with_first_tensor(BlockOutput(a, b), new)
    assert isinstance(dataclass_output, BlockOutput) and dataclass_output.hidden is new and dataclass_output.side is b


def test_a_transformers_model_output_keeps_its_class():
    outputs = pytest.importorskip("transformers.modeling_outputs")
    hidden, attentions, new = torch.ones(1, 2, 3), (torch.zeros(1, 1, 2, 2),), torch.zeros(1, 2, 3)
    output = outputs.BaseModelOutput(last_hidden_state=hidden, attentions=attentions)
    assert first_tensor(output) is hidden
    replaced = with_first_tensor(output, new)
    assert type(replaced) is type(output) and replaced.last_hidden_state is new and replaced[0] is new
    assert replaced.attentions is attentions and output.last_hidden_state is hidden


def test_forward_mode_refuses_a_block_returning_a_container(network, plugins):
    """Forward mode would substitute the first tensor alone; a block's other elements computed from it would not
    follow (0.40 relative off autograd on a block returning (h, f(h))): refused in one line, auto goes reverse."""
    request = MapRequest(
        Probe(next(iter(PICK))), plugins.saliency.create("gradients"), plugins.aggregator.create("abs")
    )
    with pytest.raises(ReprevalError, match="forward mode: layer .* returns a tuple or an output object"):
        compute_maps(network, [request], torch.rand(1, 3, 6, 6), strategy="forward")
