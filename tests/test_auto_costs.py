"""``strategy: auto``'s cost model (repreval/engine/costs.py): the work it counts equals a hand count, and in one
call it sends forward exactly the requests that spare the reverse sweep the deep part of the network, with maps
equal to the reverse sweep's and to plain autograd's (tests/test_engine_maps.oracle_maps), on a residual network."""

from __future__ import annotations

import pytest
import torch
from test_engine_maps import _request, _resnet8, oracle_maps
from torch import nn

from repreval.api import InputSpec, Network
from repreval.engine import compute_maps
from repreval.engine import maps as maps_module
from repreval.engine.costs import ELEMENT_COST, PASS_FLOOR, cheapest_modes, tail_costs
from repreval.engine.probe import Probe


def test_counted_tail_work_equals_a_hand_count():
    """conv(3→4, 3×3) on 6×6, ReLU, conv(4→5, 1×1), mean: the work after each probe by hand."""
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1)).eval()
    network = Network(module, InputSpec(3, 6, 6), (), embed=lambda x: module(x).mean(dim=(-2, -1)))
    inputs = torch.rand(2, 3, 6, 6)
    probes = [Probe.parse("0"), Probe.parse("1")]
    compute_maps(network, [_request(p.spec, "gradients") for p in probes], inputs, strategy="reverse")
    first = 2 * (2 * 4 * 36) * 27  # 2 × output elements × fan-in (3·3·3)
    relu = ELEMENT_COST * 2 * 4 * 36
    last = 2 * (2 * 5 * 36) * 4
    floor = PASS_FLOOR * (first + relu + last)
    assert tail_costs(network, probes, inputs) == pytest.approx(
        {probes[0]: relu + last + floor, probes[1]: last + floor}
    )


def _recorded_modes(monkeypatch) -> dict[str, list[str]]:
    """The probes compute_maps hands to each mode."""
    chosen: dict[str, list[str]] = {"forward": [], "reverse": []}
    for mode, name in (("forward", "_forward_maps"), ("reverse", "_reverse_maps")):
        run = getattr(maps_module, name)

        def recorded(batch, requests, *args, run=run, mode=mode, **kwargs):
            chosen[mode] += [f"{r.probe.spec}/{r.method.name}" for r in requests]
            return run(batch, requests, *args, **kwargs)

        monkeypatch.setattr(maps_module, name, recorded)
    return chosen


@pytest.mark.parametrize(
    "requested, forward",
    [
        # Grad-CAM at the stem (16 channel directions, 24 rows < 64 components) goes forward: the sweep stops at layer3
        ([("conv1", "grad_cam"), ("layer3", "gradients")], ["conv1/grad_cam"]),
        # gradients at the stem keep the sweep deep: Grad-CAM there rides along for free
        ([("conv1", "grad_cam"), ("conv1", "gradients"), ("layer3", "gradients")], []),
        # Grad-CAM alone at two early probes: 2 × 16 directions (48 rows) < 64 rows through the stem's tail
        ([("conv1", "grad_cam"), ("layer1", "grad_cam")], ["conv1/grad_cam", "layer1/grad_cam"]),
        # at layer3 Grad-CAM's 64 channels cost more than the 64 rows: reverse
        ([("layer3", "grad_cam")], []),
    ],
)
def test_auto_sends_forward_what_spares_the_sweep(monkeypatch, requested, forward):
    network, inputs = _resnet8()
    chosen = _recorded_modes(monkeypatch)
    requests = [_request(layer, method) for layer, method in requested]
    auto = compute_maps(network, requests, inputs)
    assert sorted(chosen["forward"]) == forward
    reverse = compute_maps(network, requests, inputs, strategy="reverse")
    for request in requests:
        expected = oracle_maps(network, request.probe.spec, inputs, request.method.name).detach().double()
        scale = max(1.0, float(expected.abs().max()))
        assert float((auto[request] - reverse[request]).abs().max()) <= 1e-5 * scale
        assert float((auto[request].double() - expected).abs().max()) <= 1e-5 * scale


def test_cheapest_modes_weighs_depth_against_directions():
    """The rule on its own: forward wins where its directions through the early tail cost less than the rows the
    sweep would spend below its next probe; ties stay reverse."""

    class Request:
        def __init__(self, probe, spatial_mean=True):
            self.probe = probe
            self.method = type("M", (), {"gradient": "spatial_mean" if spatial_mean else "full"})()

    early, late = Request("early"), Request("late", spatial_mean=False)
    tails = {"early": 100.0, "late": 10.0}
    both = {early: True, late: False}
    # reverse alone: 64 rows × 100 = 6400; early forward: 64 × 10 + 1.5 × 16 × 100 = 3040
    assert cheapest_modes(both, tails, 64, {("early", True): 16}) == {early: "forward", late: "reverse"}
    # 40 directions: 64 × 10 + 1.5 × 40 × 100 = 6640 > 6400
    assert cheapest_modes(both, tails, 64, {("early", True): 40}) == {early: "reverse", late: "reverse"}
    alone = {early: True}
    assert cheapest_modes(alone, tails, 24, {("early", True): 16}) == {early: "reverse"}  # 1.5 × 16 = 24: a tie
