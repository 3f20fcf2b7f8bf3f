"""Per-component attribution maps of one (probe, saliency method, channel aggregator): a single request of
:func:`~repreval.engine.maps.compute_maps`, which holds the engine's documentation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from ..config import DEFAULT_MEMORY_BUDGET, Smoothing
from .maps import MapRequest, compute_maps
from .probe import Probe

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Aggregator, Network, SaliencyMethod


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
