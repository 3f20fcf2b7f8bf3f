"""Plain per-component loops: the ground truth the engine is tested (and benchmarked) against.

They share nothing with the engine's mechanism: an unmodified forward pass with a graph, the probed tensor
captured by a hook, and ``torch.autograd.grad`` with respect to it (so through every consumer of it).

``rerun_forward=False``: one forward, then one backward per component (how a careful user would
write it). ``rerun_forward=True``: a fresh forward for every component (how per-target attribution
libraries are usually called). Both are slow on purpose; never use them for real work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .core import zero_rounding_noise
from .probe import Probe, as_feature_map, first_tensor, gradient_feature_map, input_leaf, no_tensor, probe_layout

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Aggregator, Network, SaliencyMethod


def _probed_forward(network: Network, probe: Probe, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """One unmodified forward pass with a graph; returns (the probed tensor as the network computed it, the
    embedding). Nothing is substituted: gradients with respect to the tensor flow through all its consumers.
    Raises ValueError when an in-place operation later changes the tensor (autograd would then differentiate
    with respect to the changed one)."""
    seen: list[tuple[Tensor, int]] = []

    def keep(value) -> None:
        tensor = first_tensor(value)  # a module returning a tuple or a ModelOutput: its first tensor
        if tensor is None:
            raise no_tensor(probe.spec, value)
        if not seen:
            seen.append((tensor, tensor._version))

    module = probe.module(network)
    if probe.side == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: keep(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _a, output: keep(output))
    try:
        with torch.enable_grad():
            leaf = input_leaf(inputs)
            embedding = network.embed(leaf)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"layer {probe.spec!r} is not used when computing the embedding")
    activation, version = seen[0]
    if activation._version != version:
        raise ValueError(
            f"an in-place operation modifies the tensor at {probe.spec!r} after it is read: plain autograd cannot "
            "take gradients with respect to it (use the engine, or a network without in-place ops there)"
        )
    return activation, embedding


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
        layout = probe_layout(network, probe)
        feature_map = as_feature_map(activation.detach(), probe.spec, layout)
        gradient = gradient_feature_map(gradient[None], probe.spec, layout)
        if method.gradient == "spatial_mean":
            gradient = gradient.mean(dim=(-2, -1), keepdim=True)
        attribution = method.attribute(feature_map, gradient)
        if not method.spatial:
            if channel_aggregator is None:
                raise ValueError(f"saliency method {method.name!r} needs a channel aggregator")
            scale = attribution.abs().flatten(2).amax(dim=-1)
            attribution = zero_rounding_noise(channel_aggregator(attribution, dim=2), scale)
        maps.append(method.finish_maps(attribution, tuple(inputs.shape))[0])
    return torch.stack(maps, dim=1)
