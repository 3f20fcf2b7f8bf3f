"""The layout check by measurement (``repreval.layouts``): a reading that puts values at the wrong positions
(scrambled order, rows and columns swapped, a prefix token too few) is refused whatever the declaration says; the
right one is verified and its maps equal plain autograd laid out by the test; layers whose positions never reach
the embedding are left out of the defaults with a note."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repreval.api import InputSpec, Layout, Network
from repreval.cli import main
from repreval.config import ModelConfig
from repreval.engine.probe import Probe
from repreval.layouts import check_layouts, verify_layers
from repreval.models import Model
from repreval.plan import model_layers

SIDE, PATCH, PREFIX = 32, 4, 2
GRID = SIDE // PATCH


class Tokens(nn.Module):
    """Patch tokens (8×8 grid) after ``PREFIX`` learned tokens, in the order ``order`` (a permutation of the grid's
    row-major cells), through a residual MLP block, mean-pooled."""

    def __init__(self, order: torch.Tensor) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, PATCH, stride=PATCH)
        self.prefix = nn.Parameter(torch.randn(1, PREFIX, 16))
        self.block = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16), nn.GELU())
        self.register_buffer("order", order)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)[:, self.order]
        tokens = torch.cat([self.prefix.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.block(tokens)
        return tokens[:, PREFIX:].mean(dim=1)


def _network(order: torch.Tensor, layout: Layout) -> Network:
    torch.manual_seed(0)
    module = Tokens(order).eval()
    return Network(module, InputSpec(3, SIDE, SIDE), ("block",), embed=module, layout=layout)


def _verdict(network: Network, layer: str = "block"):
    return verify_layers(network, [Probe(layer)])[Probe(layer)]


def test_a_scrambled_sequence_read_row_major_is_refused_and_read_in_its_order_is_verified():
    order = torch.randperm(GRID * GRID, generator=torch.Generator().manual_seed(1))
    wrong = _verdict(_network(order, Layout("tokens", PREFIX, (GRID, GRID))))
    assert wrong.status == "refused" and "does not follow where the input changed" in wrong.reason
    # ``order`` of the Layout: for each grid cell, the token holding it (the inverse permutation)
    holding = tuple(int(i) for i in torch.argsort(order))
    right = _verdict(_network(order, Layout("tokens", PREFIX, (GRID, GRID), order=holding)))
    assert right.status == "verified" and right.reach == "uniform"  # mean-pooled right after


def test_the_verified_order_gives_maps_equal_to_plain_autograd_laid_out_by_hand(plugins):
    from engine_helpers import sweep_maps

    from repreval.engine import MapRequest

    order = torch.randperm(GRID * GRID, generator=torch.Generator().manual_seed(1))
    network = _network(order, Layout("tokens", PREFIX, (GRID, GRID), order=tuple(int(i) for i in torch.argsort(order))))
    image = torch.rand(1, 3, SIDE, SIDE)
    request = MapRequest(Probe("block"), plugins.saliency.create("gradients"), plugins.aggregator.create("abs"))
    got = sweep_maps(network, [request], image, components=torch.tensor([0, 5]))[request]
    seen = []
    handle = network.module.block.register_forward_hook(lambda _m, _a, out: seen.append(out))
    embedding = network.embed(image.requires_grad_(True))
    handle.remove()
    # the test's own layout: token PREFIX + k holds patch order[k]; put it back at cell order[k]
    expected = []
    for component in (0, 5):
        gradient = torch.autograd.grad(embedding[0, component], seen[0], retain_graph=True)[0][0, PREFIX:]
        cells = torch.zeros_like(gradient)
        cells[order] = gradient
        expected.append(cells.abs().mean(dim=1).reshape(GRID, GRID))
    assert torch.allclose(got[0], torch.stack(expected), rtol=1e-5, atol=1e-8)


def test_a_prefix_token_too_few_or_rows_and_columns_swapped_is_refused():
    identity = torch.arange(GRID * GRID)
    assert _verdict(_network(identity, Layout("tokens", PREFIX, (GRID, GRID)))).status == "verified"
    shifted = _verdict(_network(identity, Layout("tokens", PREFIX - 1, (GRID, GRID))))
    assert shifted.status == "refused"  # 65 tokens do not make an 8×8 grid: the shape check says so
    transposed = torch.arange(GRID * GRID).reshape(GRID, GRID).T.flatten()
    swapped = _verdict(_network(transposed, Layout("tokens", PREFIX, (GRID, GRID))))
    assert swapped.status == "refused" and "does not follow where the input changed" in swapped.reason


def test_one_prefix_token_too_few_on_a_grid_that_still_fits_is_refused():
    """3 prefix tokens declared where there are 2: the remaining 63 tokens fit a 7×9 grid, and every value lands
    one token off and on the wrong rows: refused by measurement, not by shape."""
    identity = torch.arange(GRID * GRID)
    verdict = _verdict(_network(identity, Layout("tokens", PREFIX + 1, (7, 9))))
    assert verdict.status == "refused"


def test_vit_default_layers_leave_out_the_last_block_with_a_note(plugins):
    config = ModelConfig(id="vit", spec="timm:vit_tiny_patch16_224", options={"input_size": [3, 64, 64]})
    model = Model(config, plugins.model_source.create("timm"))
    network = model.untrained(0)
    notes: list[str] = []
    layers = model_layers(model, network, "models.vit", notes)
    assert "blocks.11" not in layers and "blocks.10" in layers
    assert notes == [
        "models.vit: default layer 'blocks.11' left out: its positions never reach the embedding: every "
        "gradient-based map of it is 0"
    ]
    # asked for explicitly: kept, with the same reason
    explicit = Model(
        ModelConfig(id="vit", spec=config.spec, options=config.options, layers=("blocks.11",)), model.source
    )
    notes = []
    assert model_layers(explicit, network, "models.vit", notes) == ("blocks.11",)
    assert notes and "never reach the embedding" in notes[0]
    # attention internals: refused by measurement
    problems = check_layouts(network, [Probe("blocks.3.attn.q_norm")])
    assert "cannot be read" in problems[Probe("blocks.3.attn.q_norm")].problem


def test_a_malformed_input_size_is_one_line(capsys):
    code = main(["layers", "timm:resnet18", "--option", "input_size=[3,64]"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "input_size must be [channels, height, width]" in err


@pytest.mark.parametrize(("name", "layer"), [("hiera_tiny_224", "blocks.2"), ("twins_svt_small", "blocks.1.1")])
def test_hiera_is_read_in_its_own_order_and_twins_stages_are_found(plugins, name, layer):
    config = ModelConfig(id=name, spec=f"timm:{name}", options={"input_size": [3, 64, 64]})
    network = Model(config, plugins.model_source.create("timm")).untrained(0)
    assert layer in network.default_layers
    assert _verdict(network, layer).status == "verified"


def test_an_explicitly_requested_layer_that_never_reaches_the_embedding_is_marked_on_every_board(tmp_path, capsys):
    out = tmp_path / "vit"
    args = ["eval", "timm:vit_tiny_patch16_224", "--option", "input_size=[3,64,64]", "--layers", "blocks.5,blocks.11"]
    args += ["--limit", "2", "--saliency", "gradients", "--scores", "noise_score", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "layer 'blocks.11': its positions never reach the embedding" in err
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| 1 ")]
    assert rows and all(row.endswith("∅ |") and row.count("∅") == 1 for row in rows)  # blocks.11 only, last column
    assert "∅ = every map at that layer was exactly 0" in report
