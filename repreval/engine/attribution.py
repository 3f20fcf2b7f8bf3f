"""Per-component attribution maps of an embedding with respect to a probe layer.

For every embedding component ``z_d`` the saliency method gives ``R_d`` (C×h×w) and the channel
aggregator reduces it to an h×w map. All D components are computed in chunks of ``chunk_size``
through ``torch.func.vmap`` over one ``vjp`` (one forward per batch, one batched backward per chunk),
and channels are aggregated inside each chunk, so memory holds D×h×w maps, never D×C×h×w.

``precision`` runs the network under ``torch.autocast`` (bfloat16 or float16); the maps are always
float32. ``components`` restricts the engine to some of the D components (see ``engine.estimate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import DEFAULT_MEMORY_BUDGET, STRATEGIES, Smoothing
from .core import (
    _activation_bytes,
    _Finisher,
    channel_mean,
    chunk_for_budget,
    perturb,
    precision_context,
)
from .probe import Probe, as_feature_map, probe_layout
from .sweep import MapRequest, sweep_maps, sweep_mean_maps

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
    """Maps [B, D, h, w] of every embedding component for a batch of preprocessed inputs.

    ``channel_aggregator`` is ignored (may be None) for spatial methods such as Grad-CAM.
    ``strategy``: ``reverse`` (one batched backward per chunk of components), ``forward`` (one batched
    forward-mode pass per chunk of input directions: C channel directions when the method reads only the
    spatial-mean gradient, as Grad-CAM does, else C·h·w), or ``auto``: whichever needs fewer passes.
    ``chunk_size`` (rows per batched pass) defaults to what fits ``memory_budget`` bytes; ``auto`` also
    avoids forward mode when its Jacobian (directions × B × D floats) would take over half the budget.
    ``create_graph``: keep the maps differentiable w.r.t. the parameters (scores as training losses);
    otherwise no graph is recorded, which saves time and keeps memory at one chunk.
    ``precision``: one of PRECISIONS; below float32 the network runs under autocast, with its
    normalisation layers in float32 (functorch cannot batch their mixed-dtype backward).
    ``components`` (indices into D): only these maps, [B, k, h, w] in that order; ``auto`` then
    compares k backward passes with the forward-mode directions (which always give all D columns).
    """
    if not method.spatial and channel_aggregator is None:
        raise ValueError(f"saliency method {method.name!r} needs a channel aggregator")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    swept = {"components": components, "chunk_size": chunk_size, "memory_budget": memory_budget,
             "smoothing": smoothing, "seed": seed, "precision": precision}  # fmt: skip
    request = MapRequest(probe, method, channel_aggregator)
    other_layout = probe_layout(network, probe).kind != "channels_first"  # only the sweep reads those
    if not create_graph and (strategy == "reverse" or (strategy == "auto" and other_layout)):
        return sweep_maps(network, [request], inputs, **swept)[request]  # type: ignore[arg-type]
    original = inputs
    with torch.set_grad_enabled(create_graph), precision_context(precision, inputs.device):
        batch = inputs.shape[0]
        if smoothing.active:
            inputs = perturb(smoothing, inputs, seed)
        with _activation_bytes() as forward_bytes:
            activation, embedding = probe.capture(network, inputs, keep_graph=create_graph)
        if embedding.dim() != 2:
            raise ValueError(f"the embedding must be [B, D]; got shape {tuple(embedding.shape)}")
        feature_map = _channels_first(network, probe, activation)
        dim = embedding.shape[1]
        index = _component_index(components, dim, embedding.device)
        rows = dim if index is None else len(index)
        chosen = choose_strategy(method, rows, feature_map.shape) if strategy == "auto" else strategy
        if (
            strategy == "auto"
            and chosen == "forward"
            and jacobian_bytes(method, dim, feature_map.shape) > memory_budget // 2
        ):
            chosen = "reverse"  # forward mode holds the whole Jacobian; reverse mode stays within the budget
        if chunk_size is None:
            chunk_size = chunk_for_budget(
                forward_bytes[0], memory_budget, inputs.device, minimum=32 if chosen == "forward" else 1
            )
        if precision != "float32":  # attribution arithmetic and the maps in float32
            feature_map = feature_map.float()
        finish = _Finisher(method, channel_aggregator, feature_map, batch, tuple(original.shape))
        tail = probe.tail(network, inputs)
        if chosen == "reverse" and not create_graph:
            return sweep_maps(network, [request], original, **swept)[request]  # type: ignore[arg-type]
        if chosen == "reverse":
            if index is None:
                index = torch.arange(dim, device=embedding.device)
            chunks = _reverse(tail, activation, feature_map, index, chunk_size, finish)
        else:
            chunks = _forward(
                tail, activation, feature_map, chunk_size, finish, method.gradient == "spatial_mean", index
            )
        return torch.cat(chunks).transpose(0, 1)  # [B, D or k, h, w]


def _component_index(components: Tensor | None, dim: int, device) -> Tensor | None:
    if components is None:
        return None
    index = torch.as_tensor(components, dtype=torch.long).flatten().to(device)
    if len(index) == 0 or index.min() < 0 or index.max() >= dim:
        raise ValueError(f"components must be non-empty indices in [0, {dim}); got {len(index)} indices")
    return index


def mean_map(
    network: Network,
    probe: Probe,
    inputs: Tensor,
    method: SaliencyMethod,
    *,
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    create_graph: bool = False,
) -> Tensor:
    """``mean_d mean_c R_d`` [B, h, w] with ONE backward pass, for a method linear in the gradient.

    Exact: mean_d mean_c attribute(a, g_d) = mean_c attribute(a, mean_d g_d) = mean_c attribute(a, d(mean_d z_d)/da).
    """
    if not method.linear_in_gradient or method.spatial:
        raise ValueError(f"saliency method {method.name!r} is not linear in the gradient")
    if not create_graph:
        request = MapRequest(probe, method)
        return sweep_mean_maps(network, [request], inputs, smoothing=smoothing, seed=seed)[request]
    with torch.set_grad_enabled(create_graph):
        batch = inputs.shape[0]
        if smoothing.active:
            inputs = perturb(smoothing, inputs, seed)
        activation, _ = probe.capture(network, inputs)
        # torch annotates vjp's result as a 2- or 3-tuple (no overload on has_aux): without aux it is 2.
        embedding, pullback = torch.func.vjp(probe.tail(network, inputs), activation)  # type: ignore[misc]
        (gradient,) = pullback(torch.full_like(embedding, 1.0 / embedding.shape[1]))
        feature_map = _channels_first(network, probe, activation)
        finish = _Finisher(method, channel_mean, feature_map, batch, tuple(inputs.shape))
        return finish(gradient.reshape(1, *feature_map.shape))[0]


def _channels_first(network: Network, probe: Probe, activation: Tensor) -> Tensor:
    """The probe's feature map for the per-probe paths (forward mode, differentiable maps): channels-first or
    vectors only; other layouts go through the sweep (reverse mode)."""
    if activation.dim() != 2 and probe_layout(network, probe).kind != "channels_first":
        raise ValueError(
            f"probe {probe.spec!r}: forward mode and differentiable maps read channels-first tensors only; "
            "use strategy reverse"
        )
    return as_feature_map(activation, probe.spec)


def choose_strategy(method: SaliencyMethod, dim: int, feature_shape) -> str:
    """The mode that needs fewer passes: D backward passes, or one forward pass per input direction."""
    channels, height, width = feature_shape[1:]
    directions = channels if method.gradient == "spatial_mean" else channels * height * width
    return "forward" if directions < dim else "reverse"


def jacobian_bytes(method: SaliencyMethod, dim: int, feature_shape, element_size: int = 4) -> int:
    """Memory of the Jacobian that forward mode holds: directions × samples × D values."""
    samples, channels, height, width = feature_shape
    directions = channels if method.gradient == "spatial_mean" else channels * height * width
    return directions * samples * dim * element_size


def _reverse(tail, activation, feature_map, index: Tensor, chunk_size, finish) -> list[Tensor]:
    """One forward, then vmap over the pullback: ``chunk_size`` components per batched backward, for
    the components ``index`` in order."""
    # torch annotates vjp's result as a 2- or 3-tuple (no overload on has_aux): without aux it is 2.
    embedding, pullback = torch.func.vjp(tail, activation)  # type: ignore[misc]
    batched_pullback = torch.func.vmap(pullback)
    chunks = []
    for start in range(0, len(index), chunk_size):
        selected = index[start : start + chunk_size]
        rows = len(selected)
        # Cotangents: row r selects component selected[r] for every input of the batch.
        cotangents = torch.zeros(rows, *embedding.shape, dtype=embedding.dtype, device=embedding.device)
        cotangents[torch.arange(rows), :, selected] = 1.0
        (gradient,) = batched_pullback(cotangents)
        chunks.append(finish(gradient.reshape(rows, *feature_map.shape)))
    return chunks


def _forward(
    tail, activation, feature_map, chunk_size, finish, spatial_mean: bool, index: Tensor | None = None
) -> list[Tensor]:
    """Forward mode: push input directions through the tail; each gives one column of the Jacobian
    for every component at once. With ``spatial_mean`` the C directions are whole channels (weight
    1/(h·w)), whose columns are the spatial-mean gradients; otherwise the C·h·w single activations.
    ``index``: keep only these components' rows of the Jacobian."""
    activation = activation.to(feature_map.dtype)  # float32 tangents under autocast: 1/(h·w) stays exact
    samples, channels, height, width = feature_map.shape
    count = channels if spatial_mean else channels * height * width

    def push(direction):
        return torch.func.jvp(tail, (activation,), (direction.reshape(activation.shape),))[1]

    batched_push = torch.func.vmap(push)
    jacobian = None  # [directions, B*S, D], filled chunk by chunk
    for start in range(0, count, chunk_size):
        stop = min(count, start + chunk_size)
        rows = torch.arange(stop - start, device=feature_map.device)
        directions = torch.zeros(
            stop - start, samples, channels * height * width, dtype=feature_map.dtype, device=feature_map.device
        )
        if spatial_mean:
            view = directions.view(stop - start, samples, channels, height * width)
            view[rows, :, torch.arange(start, stop, device=rows.device)] = 1.0 / (height * width)
        else:
            directions[rows, :, torch.arange(start, stop, device=rows.device)] = 1.0
        columns = batched_push(directions)  # [k, B*S, D]
        if index is not None:
            columns = columns[..., index]
        if jacobian is None:
            jacobian = columns.new_empty(count, *columns.shape[1:])
        jacobian[start:stop] = columns
    assert jacobian is not None  # count >= 1: a feature map has at least one channel and pixel
    kept = jacobian.shape[-1]  # D, or len(index)
    shape = (channels, 1, 1) if spatial_mean else (channels, height, width)
    block = max(1, chunk_size)
    # Block by block: only one block of the transposed Jacobian [k, B*S, C, h', w'] is copied at a time.
    return [
        finish(jacobian[..., start : start + block].permute(2, 1, 0).reshape(-1, samples, *shape))
        for start in range(0, kept, block)
    ]
