"""The runner's names for :func:`~repreval.engine.maps.compute_maps` in reverse mode and for the one-backward
mean maps. The tap pass and its backward passes live in ``engine.taps``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from ..config import DEFAULT_MEMORY_BUDGET, Smoothing
from .maps import MapRequest, compute_maps, compute_mean_maps

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Network

__all__ = ["MapRequest", "sweep_maps", "sweep_mean_maps"]


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


def sweep_mean_maps(
    network: Network,
    requests: Sequence[MapRequest],
    inputs: Tensor,
    *,
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    precision: str = "float32",
) -> dict[MapRequest, Tensor]:
    """:func:`~repreval.engine.maps.compute_mean_maps`: ``mean_d mean_c R_d`` [B, h, w] per request, one backward."""
    return compute_mean_maps(network, requests, inputs, smoothing=smoothing, seed=seed, precision=precision)
