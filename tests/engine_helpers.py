"""Helpers only the engine tests use: the one-backward mean map of one request, maps of sampled components,
and the deviation of maps at a lower precision from float32 maps."""

from __future__ import annotations

import torch
from torch import Tensor

from repreval.bench import map_deviation
from repreval.config import Smoothing
from repreval.engine import MapRequest, compute_mean_maps
from repreval.engine.attribution import component_maps
from repreval.engine.core import PRECISIONS
from repreval.engine.estimate import sample_components
from repreval.engine.probe import Probe


def mean_map(
    network, probe: Probe, inputs: Tensor, method, *, smoothing: Smoothing = Smoothing(), seed: int = 0,
    create_graph: bool = False,
) -> Tensor:  # fmt: skip
    """``mean_d mean_c R_d`` [B, h, w] of one probe and method, with one backward pass."""
    request = MapRequest(probe, method)
    return compute_mean_maps(network, [request], inputs, smoothing=smoothing, seed=seed, create_graph=create_graph)[
        request
    ]


def sampled_component_maps(
    network, probe: Probe, inputs: Tensor, method, channel_aggregator, k: int, *, seed: int = 0, **engine_kwargs
) -> tuple[Tensor, Tensor, int]:
    """Maps [B, k, h, w] of ``k`` components sampled with ``seed``; returns (maps, indices, D)."""
    with torch.no_grad():
        dim = network.embed(inputs[:1]).shape[1]
    index = sample_components(dim, k, seed)
    maps = component_maps(network, probe, inputs, method, channel_aggregator, components=index, **engine_kwargs)
    return maps, index, dim


def precision_deviation(
    network, probe: Probe, inputs: Tensor, method, channel_aggregator, precision: str, **engine_kwargs
) -> dict:
    """Maps at float32 and at ``precision`` on the same inputs: ``{"precision": ..., **map_deviation(...)}``.
    At float32 every difference is exactly 0 (the engine is deterministic)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    engine_kwargs.pop("precision", None)
    reference = component_maps(network, probe, inputs, method, channel_aggregator, **engine_kwargs)
    maps = component_maps(network, probe, inputs, method, channel_aggregator, precision=precision, **engine_kwargs)
    return {"precision": precision, **map_deviation(reference, maps)}
