"""Helpers only the engine tests use: the maps of one request (``component_maps``) or of many in reverse mode
(``sweep_maps``), the one-backward mean map of one request, maps of sampled components, and the deviation of
maps at a lower precision from float32 maps. Each is a thin call of :func:`repreval.engine.compute_maps`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from repreval.api import Aggregator, Network, SaliencyMethod
from repreval.bench import map_deviation
from repreval.config import DEFAULT_MEMORY_BUDGET, Smoothing
from repreval.engine import MapRequest, compute_maps, compute_mean_maps
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


def component_maps(
    network: Network,
    probe: Probe,
    inputs: Tensor,
    method: SaliencyMethod,
    channel_aggregator: Aggregator | None,
    *,
    chunk_size: int | None = None,
    strategy: str = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    create_graph: bool = False,
    precision: str = "float32",
    components: Tensor | None = None,
) -> Tensor:
    """Maps [B, D, h, w] (or [B, k, h, w] of ``components``) of every embedding component at ``probe``.

    ``channel_aggregator`` is ignored (may be None) for spatial methods such as Grad-CAM; the options are
    :func:`~repreval.engine.maps.compute_maps`'s."""
    request = MapRequest(probe, method, channel_aggregator)
    return compute_maps(
        network, [request], inputs, strategy=strategy, create_graph=create_graph, components=components,
        precision=precision, smoothing=smoothing, seed=seed, memory_budget=memory_budget, chunk_size=chunk_size,
    )[request]  # fmt: skip


def sweep_maps(
    network: Network,
    requests: Sequence[MapRequest],
    inputs: Tensor,
    *,
    components: Tensor | None = None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    precision: str = "float32",
    batched: bool | None = None,
    on_chunk=None,
) -> dict[MapRequest, Tensor]:
    """``compute_maps(..., strategy="reverse")``: every request from one forward and the backward passes of the
    components (see :func:`~repreval.engine.maps.compute_maps` for the options)."""
    return compute_maps(
        network, requests, inputs, strategy="reverse", components=components, chunk_size=chunk_size,
        memory_budget=memory_budget, smoothing=smoothing, seed=seed, precision=precision, batched=batched,
        on_chunk=on_chunk,
    )  # fmt: skip
