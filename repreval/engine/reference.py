"""Plain per-component loops: the ground truth the engine is tested (and benchmarked) against.

``rerun_forward=False``: one forward, then one backward per component (how a careful user would
write it). ``rerun_forward=True``: a fresh forward for every component (how per-target attribution
libraries are usually called). Both are slow on purpose; never use them for real work.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..api import Aggregator, Network, SaliencyMethod
from .attribution import zero_rounding_noise
from .probe import Probe, as_feature_map


def _probed_forward(network: Network, probe: Probe, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """One forward pass; the probe's activation becomes a leaf that gradients are taken with respect to."""
    leaves: list[Tensor] = []

    def make_leaf(value: Tensor) -> Tensor | None:
        if leaves:
            return None
        leaves.append(value.detach().clone().requires_grad_(True))
        return leaves[0]

    with probe.hooked(network, make_leaf):
        embedding = network.embed(inputs)
    return leaves[0], embedding


def component_maps_loop(
    network: Network,
    probe: Probe,
    inputs: Tensor,
    method: SaliencyMethod,
    channel_aggregator: Aggregator | None,
    *,
    rerun_forward: bool = False,
) -> Tensor:
    """[B, D, h, w] maps, one autograd backward per embedding component."""
    activation, embedding = _probed_forward(network, probe, inputs)
    maps = []
    for component in range(embedding.shape[1]):
        if rerun_forward and component > 0:
            activation, embedding = _probed_forward(network, probe, inputs)
        (gradient,) = torch.autograd.grad(embedding[:, component].sum(), activation, retain_graph=not rerun_forward)
        feature_map = as_feature_map(activation.detach(), probe.spec)
        gradient = gradient.reshape(1, *feature_map.shape)
        if method.gradient == "spatial_mean":
            gradient = gradient.mean(dim=(-2, -1), keepdim=True)
        attribution = method.attribute(feature_map, gradient)
        if not method.spatial:
            scale = attribution.abs().flatten(2).amax(dim=-1)
            attribution = zero_rounding_noise(channel_aggregator(attribution, dim=2), scale)
        maps.append(attribution[0])
    return torch.stack(maps, dim=1)
