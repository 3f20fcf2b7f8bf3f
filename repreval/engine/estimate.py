"""Sampled components for very large D (opt-in ``evaluation.sample_components``): ``sample_components``
draws k of the D component indices (seeded) and ``sampled_component_maps`` runs the engine on those
components only (reverse mode: k backward rows instead of D). Scores turn the k maps into estimates with
standard errors (``AttributionScore.estimate``; the built-in scores' estimators are in their plugin).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..api import Aggregator, Network, SaliencyMethod
from .attribution import component_maps
from .probe import Probe


def sample_components(dim: int, k: int, seed: int = 0) -> Tensor:
    """``k`` distinct indices of ``dim`` components, uniformly at random from a seeded generator, sorted."""
    if not 1 <= k <= dim:
        raise ValueError(f"sample between 1 and {dim} components, not {k}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(dim, generator=generator)[:k].sort().values


def sampled_component_maps(
    network: Network,
    probe: Probe,
    inputs: Tensor,
    method: SaliencyMethod,
    channel_aggregator: Aggregator | None,
    k: int,
    *,
    seed: int = 0,
    **engine_kwargs,
) -> tuple[Tensor, Tensor, int]:
    """Maps [B, k, h, w] of ``k`` components sampled with ``seed``; returns (maps, indices, D)."""
    with torch.no_grad():
        dim = network.embed(inputs[:1]).shape[1]
    index = sample_components(dim, k, seed)
    maps = component_maps(network, probe, inputs, method, channel_aggregator, components=index, **engine_kwargs)
    return maps, index, dim
