"""The engine's entry: per-component attribution maps for many (probe, saliency method, channel aggregator)
requests of one batch, from one tap pass.

For every embedding component ``z_d`` a saliency method gives ``R_d`` (C×h×w) and the channel aggregator
reduces it to an h×w map; channels are aggregated chunk by chunk, so memory holds D×h×w maps, never D×C×h×w.

One forward pass taps every requested probe (``engine.taps``); its shapes decide each request's mode, and the
same pass then serves both modes: reverse-mode requests share the backward passes over its graph (one per
chunk of components, gradients at every probe at once), and forward-mode requests push input directions
through the probe's tail starting from its tapped tensor (``engine.forward``). No pass is run only to decide.
Under ``auto`` the forward requests go first, while the tap pass's graph is still there: a probe whose tail has an
operation without a forward-AD rule (CPU's fused attention) joins the reverse sweep instead, at no extra pass.

:func:`compute_mean_maps` is the separate one-backward shortcut for ``mean_d mean_c R_d`` (methods linear in
the gradient): it returns [B, h, w] per request, not [B, D, h, w], so it is an entry of its own, not a flag.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import DEFAULT_MEMORY_BUDGET, STRATEGIES, Smoothing
from ..errors import ReprevalError
from .core import _Finisher, channel_mean, chunk_for_budget, perturb, precision_context
from .costs import FORWARD_WEIGHT, cheapest_modes, counting_work, tail_costs
from .forward import directions, finish_jacobian, jacobian, jacobian_bytes, missing_forward_rule
from .probe import Probe, as_feature_map, from_feature_map, gradient_feature_map, probe_layout
from .taps import Tapped, component_gradients, component_index, tap_forward, used

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Aggregator, Layout, Network, Points, SaliencyMethod


@dataclass(frozen=True)
class MapRequest:
    """One kind of map to compute: a probe, a saliency method and (unless spatial) a channel aggregator."""

    probe: Probe
    method: SaliencyMethod
    channel: Aggregator | None = None


def compute_maps(
    network: Network,
    requests: Sequence[MapRequest],
    inputs: Tensor,
    *,
    strategy: str = "auto",
    create_graph: bool = False,
    components: Tensor | None = None,
    precision: str = "float32",
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
    batched: bool | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    on_fallback: Callable[[MapRequest, str], None] | None = None,
) -> dict[MapRequest, Tensor]:
    """Maps [B, D, h, w] (or [B, k, h, w]) for every request, from one tap pass over the preprocessed ``inputs``.

    ``strategy``: ``reverse`` (backward passes over the tap pass's graph, ``chunk_size`` components per batched
    pass, shared by all reverse requests), ``forward`` (per probe and gradient kind, batched JVPs of input
    directions through the probe's tail), or ``auto``: the mode with fewer passes for the whole call (a request
    that :func:`auto_strategy` sends forward goes forward only when every request does and their directions
    together are fewer than the components; otherwise all share the reverse sweep).
    ``create_graph``: the maps stay differentiable w.r.t. the parameters (scores as training losses); otherwise
    no graph is kept past the backward passes. ``components`` (indices into D): only these maps, in that order.
    ``precision``: one of PRECISIONS; below float32 the network runs under autocast (normalisation layers in
    float32); the maps are float32. ``smoothing``: each input's maps are the mean over its noisy samples (drawn
    from ``seed``). ``chunk_size`` (rows per batched pass) defaults to what fits ``memory_budget`` bytes.
    ``batched`` (reverse mode): one vmapped backward per chunk, or (False) one plain backward per component;
    default: vmapped on GPUs, on CPUs whichever a timed trial of the first rows finds faster.
    ``on_chunk(done, total)`` is called after each chunk of the reverse passes (progress within a long sweep).
    ``on_fallback(request, operation)`` is called for each request that ``auto`` sent forward but the reverse
    sweep computed, because ``operation`` has no forward-AD rule (the maps are the same); with ``forward`` such an
    operation is a ReprevalError.
    """
    requests = _checked_requests(requests, strategy)
    if not requests:
        return {}
    with torch.set_grad_enabled(create_graph), precision_context(precision, inputs.device):
        graph = create_graph or strategy != "forward"  # auto: the pass that decides must serve reverse mode too
        batch = _tap(network, requests, inputs, smoothing, seed, precision, create_graph, graph)
        batch.memory_budget, batch.chunk_size = memory_budget, chunk_size
        if components is not None:
            batch.index = component_index(components, batch.dim)
        at_points = [r for r in requests if r.method.uses_points]
        others = [r for r in requests if not r.method.uses_points]
        modes = _modes(batch, others, strategy)
        maps, fallen = _forward_maps(batch, [r for r in others if modes[r] == "forward"], strategy == "auto")
        if on_fallback is not None:
            for request, operation in fallen.items():
                on_fallback(request, operation)
        reverse = [r for r in others if modes[r] == "reverse" or r in fallen]
        maps |= _reverse_maps(batch, reverse, batched, on_chunk)
        maps |= _point_maps(batch, at_points, batched, seed)
    return {request: maps[request] for request in requests}


def _point_maps(batch: _Batch, requests: list[MapRequest], batched: bool | None, seed: int) -> dict:
    """Maps of the requests whose method needs gradients at points of its own (``uses_points``): per probe and
    method, a forward pass with the inputs repeated once per point and the probe's tensor replaced by the points
    (laid out back as the layer lays it out), then the chunked backward sweep over those rows; the method
    combines the gradients. Where the forward of all points would not fit half the memory budget and the method
    sums over its points (the default ``combine``), the points go in parts, each component chunk's attributions
    summed over the parts. Randomness: :func:`points_generator` of ``seed``, the probe and the method."""
    groups: dict[tuple[Probe, SaliencyMethod], list[MapRequest]] = {}
    for request in requests:
        groups.setdefault((request.probe, request.method), []).append(request)
    maps: dict[MapRequest, Tensor] = {}
    for (probe, method), members in groups.items():
        layout = probe_layout(batch.network, probe)
        activation = batch.feature_map(probe, layout)
        generator = points_generator(seed, probe.spec, method.name)
        reference = _reference(batch, probe, method, generator)
        points = _checked_points(method, method.points(activation, reference, generator), activation)
        finishers = {r: batch.finisher(r, activation) for r in members}
        index = component_index(batch.index, batch.dim)
        parts = _point_parts(batch, method, points.at.shape[0])
        chunks: dict[MapRequest, list[Tensor]] = {r: [] for r in members}
        per_part = parts[0].stop - parts[0].start
        for selected in [index] if len(parts) == 1 else index.split(max(1, batch.chunk() // per_part)):
            sums: dict[MapRequest, Tensor] = {}
            for part in parts:
                share = type(points)(points.at[part], points.weights.expand(points.at.shape)[part])
                for gradients in _gradients_at(batch, probe, layout, share.at, selected, batched):
                    for request, finish in finishers.items():
                        combined = method.combine(share, finish.gradient(gradients))
                        if len(parts) == 1:
                            chunks[request].append(finish.finish(combined))
                        else:
                            sums[request] = combined if request not in sums else sums[request] + combined
            for request, total in sums.items():
                chunks[request].append(finishers[request].finish(total))
        maps |= {request: torch.cat(found).transpose(0, 1) for request, found in chunks.items()}
    return maps


def _point_parts(batch: _Batch, method: SaliencyMethod, count: int) -> list[slice]:
    """The points of one forward pass each: all at once, or (a method summing over points with the default
    ``combine``) as many as fit half the memory budget, at least one."""
    fitting = max(1, batch.memory_budget // 2 // max(1, batch.tapped.forward_bytes))
    if fitting >= count or type(method).combine.__qualname__ != "SaliencyMethod.combine":
        return [slice(0, count)]
    return [slice(start, min(count, start + fitting)) for start in range(0, count, fitting)]


def _gradients_at(batch: _Batch, probe: Probe, layout: Layout, at: Tensor, index: Tensor, batched: bool | None):
    """Gradients [k, S, B, C, h, w] of the ``index`` components at the points ``at`` [S, B, C, h, w], chunk by
    chunk: one forward with the probe's tensor replaced by the points, then the backward sweep over its rows."""
    count = at.shape[0]
    with torch.enable_grad():
        tap = batch.tapped.taps[probe]
        substituted = from_feature_map(
            at.flatten(0, 1), tap if batch.create_graph else tap.detach(), probe.spec, layout
        )
        if not substituted.requires_grad:
            substituted.requires_grad_(True)
        repeated = batch.inputs.repeat(count, *(1,) * (batch.inputs.dim() - 1))
        embedding = probe.tail(batch.network, repeated)(substituted)
    key = (type(batch.network.module), tuple(repeated.shape), probe, "points", torch.get_num_threads(),
           batch.create_graph)  # fmt: skip
    for _selected, (gradient,) in component_gradients(
        embedding, [substituted], index, max(1, batch.chunk() // count), batched, key, batch.create_graph
    ):
        yield gradient_feature_map(used(gradient, probe), probe.spec, layout).unflatten(1, at.shape[:2])


def points_generator(seed: int, probe: str, method: str) -> torch.Generator:
    """The generator a points method draws from at ``probe`` in a call seeded ``seed`` (CPU)."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{probe}/{method}".encode()))


def _reference(batch: _Batch, probe: Probe, method: SaliencyMethod, generator: torch.Generator) -> Tensor | None:
    """The probe's activations [R, C, h, w] of the method's reference inputs (no graph), or None."""
    inputs = method.reference_inputs(batch.inputs, generator)
    if inputs is None:
        return None
    with torch.no_grad():
        activation, _ = probe.capture(batch.network, inputs.to(batch.inputs.device))
    value = as_feature_map(activation, probe.spec, probe_layout(batch.network, probe))
    return value if batch.precision == "float32" else value.float()


def _checked_points(method: SaliencyMethod, points: Points, activation: Tensor) -> Points:
    """``points`` with ``at`` [S, B, C, h, w] for ``activation`` [B, C, h, w], or a ReprevalError naming the
    method."""
    at = getattr(points, "at", None)
    if not isinstance(at, Tensor) or at.dim() != 5 or tuple(at.shape[1:]) != tuple(activation.shape):
        shape = tuple(at.shape) if isinstance(at, Tensor) else type(points).__name__
        raise ReprevalError(
            f"saliency method {method.name!r}: points() gave {shape}, not Points.at [S, "
            f"{', '.join(map(str, activation.shape))}]",
            fix="return repreval.api.Points(at, weights) with the points stacked along a new first dimension",
        )
    return type(points)(at.to(activation.dtype), points.weights.to(activation.dtype))


def _modes(batch: _Batch, requests: list[MapRequest], strategy: str) -> dict[MapRequest, str]:
    """Each request's mode. ``auto`` predicts the work of the whole call (:func:`.costs.cheapest_modes`): the
    reverse sweep's backward rows serve every reverse request at once down to its earliest probe, forward mode
    pays per Jacobian (probe and gradient kind) and direction through that probe's tail; so requests at early
    probes whose directions are few (Grad-CAM: one per channel) go forward when that spares the sweep the deep
    part of the network. The tails' work was counted during the tap pass (its first for this network and shape)."""
    if strategy != "auto":
        return {request: batch.mode(request, strategy) for request in requests}
    capable = {request: batch.forward_capable(request) for request in requests}
    if not any(capable.values()):
        return dict.fromkeys(requests, "reverse")
    count = {
        (r.probe, r.method.gradient == "spatial_mean"): directions(r.method, batch.feature_map(r.probe, None).shape)
        for r in requests
        if capable[r]
    }
    probes = list(dict.fromkeys(request.probe for request in requests))
    tails = tail_costs(batch.network, probes, batch.inputs)
    assert tails is not None  # counted around the first tap pass of these probes and this input shape
    return cheapest_modes(capable, tails, batch.rows, count)


def auto_strategy(
    method: SaliencyMethod, feature_shape, dim: int, rows: int, memory_budget: int, layout: str = "channels_first"
) -> str:
    """``auto``'s mode for one request alone whose probe gives a feature map [samples, C, h, w] laid out as
    ``layout`` (a Layout kind), for ``rows`` of the ``dim`` components: ``forward`` when its input directions (C
    for a method reading only the spatial-mean gradient, else C·h·w) cost less than ``rows`` backward rows (each
    direction :data:`.costs.FORWARD_WEIGHT` rows), its Jacobian (directions × samples × D floats: forward mode
    computes every column) fits half of ``memory_budget``, and the layout is channels-first; otherwise
    ``reverse``."""
    if not forward_fits(method, feature_shape, dim, memory_budget, layout):
        return "reverse"
    return "forward" if FORWARD_WEIGHT * directions(method, feature_shape) < rows else "reverse"


def forward_fits(method: SaliencyMethod, feature_shape, dim: int, memory_budget: int, layout: str) -> bool:
    """Whether forward mode can serve the request: a channels-first layout and a Jacobian within half the
    memory budget."""
    return layout == "channels_first" and jacobian_bytes(method, dim, feature_shape) <= memory_budget // 2


def compute_mean_maps(
    network: Network,
    requests: Sequence[MapRequest],
    inputs: Tensor,
    *,
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    precision: str = "float32",
    create_graph: bool = False,
) -> dict[MapRequest, Tensor]:
    """``mean_d mean_c R_d`` [B, h, w] for every request (methods linear in the gradient) with ONE backward pass
    of ``mean_d z_d``; ``request.channel`` is ignored (the channel aggregation is the signed mean).

    Exact: mean_d mean_c attribute(a, g_d) = mean_c attribute(a, d(mean_d z_d)/da)."""
    for request in requests:
        if not request.method.linear_in_gradient or request.method.spatial or request.method.uses_points:
            raise ValueError(f"saliency method {request.method.name!r} is not linear in the gradient")
    if not requests:
        return {}
    probes = list(dict.fromkeys(request.probe for request in requests))
    with torch.set_grad_enabled(create_graph), precision_context(precision, inputs.device):
        batch = _tap(network, requests, inputs, smoothing, seed, precision, create_graph)
        shape, embedding = batch.input_shape, batch.tapped.embedding
        cotangent = torch.full_like(embedding, 1.0 / embedding.shape[1])
        gradients = torch.autograd.grad(
            embedding, [batch.tapped.taps[p] for p in probes], cotangent, create_graph=create_graph, allow_unused=True
        )
        by_probe = dict(zip(probes, gradients, strict=True))
        maps = {}
        for request in requests:
            probe, layout = request.probe, probe_layout(network, request.probe)
            finish = _Finisher(request.method, channel_mean, batch.feature_map(probe, layout), shape[0], shape)
            gradient = used(by_probe[probe], probe)[None]
            maps[request] = finish(gradient_feature_map(gradient, probe.spec, layout))[0]
        return maps


def _tap(
    network: Network,
    requests: Sequence[MapRequest],
    inputs: Tensor,
    smoothing: Smoothing,
    seed: int,
    precision: str,
    create_graph: bool,
    graph: bool = True,
) -> _Batch:
    """One tap pass over ``inputs`` (each input's noisy samples when smoothing) at every requested probe, as the
    batch the requests share (its graph goes when the batch lets it go)."""
    shape = tuple(inputs.shape)
    if smoothing.active:
        inputs = perturb(smoothing, inputs, seed)
    probes = list(dict.fromkeys(request.probe for request in requests))
    tapped = tap_forward(network, probes, inputs, graph=graph, around=counting_work(network, probes, inputs))
    return _Batch(network, inputs, shape, tapped, None, precision, create_graph)


def _checked_requests(requests: Sequence[MapRequest], strategy: str) -> list[MapRequest]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    for request in requests:
        if not request.method.spatial and request.channel is None:
            raise ValueError(f"saliency method {request.method.name!r} needs a channel aggregator")
        if request.method.uses_points and strategy == "forward":
            raise ReprevalError(
                f"forward mode: saliency method {request.method.name!r} needs gradients at points of its own, "
                "which only the reverse sweep evaluates",
                fix="use strategy reverse or auto",
            )
    return list(dict.fromkeys(requests))


@dataclass
class _Batch:
    """What the requests of one call share: the tap pass over ``inputs`` (smoothing samples included), the
    caller's input shape, the components and the settings."""

    network: Network
    inputs: Tensor
    input_shape: tuple[int, ...]
    tapped: Tapped
    index: Tensor | None  # the components asked for; None: all D
    precision: str
    create_graph: bool
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    chunk_size: int | None = None

    @property
    def dim(self) -> int:
        """D, the embedding's components."""
        return self.tapped.embedding.shape[1]

    @property
    def rows(self) -> int:
        """The components asked for: D, or the sampled ones."""
        return self.dim if self.index is None else len(self.index)

    def mode(self, request: MapRequest, strategy: str) -> str:
        """The request's mode under ``reverse`` or ``forward`` (a ReprevalError where forward mode cannot serve it)."""
        if request.probe in self.tapped.containers and strategy == "forward":
            raise ReprevalError(
                f"forward mode: layer {request.probe.spec!r} returns a tuple or an output object whose other "
                "elements may be computed from the probed tensor; substituting that tensor alone would miss them",
                fix="use strategy reverse or auto",
            )
        return strategy

    def forward_capable(self, request: MapRequest) -> bool:
        """Whether ``auto`` may send the request forward: a single-tensor, channels-first probe whose Jacobian
        fits half the memory budget."""
        if request.probe in self.tapped.containers or request.method.uses_points:
            return False
        layout = probe_layout(self.network, request.probe).kind
        if layout != "channels_first":  # no feature map is needed to refuse forward mode
            return False
        shape = self.feature_map(request.probe, None).shape
        return forward_fits(request.method, shape, self.dim, self.memory_budget, layout)

    def feature_map(self, probe: Probe, layout: Layout | None) -> Tensor:
        """The probe's tapped tensor as [samples, C, h, w] (detached unless the maps must stay differentiable;
        float32 whatever the network's precision)."""
        tap = self.tapped.taps[probe]
        value = as_feature_map(tap if self.create_graph else tap.detach(), probe.spec, layout)
        return value if self.precision == "float32" else value.float()

    def finisher(self, request: MapRequest, feature_map: Tensor) -> _Finisher:
        """Gradients of a chunk of components -> the request's maps [k, B, h, w]."""
        return _Finisher(request.method, request.channel, feature_map, self.input_shape[0], self.input_shape)

    def chunk(self, minimum: int = 1) -> int:
        """Rows per batched pass: ``chunk_size``, or what fits the memory budget."""
        if self.chunk_size is not None:
            return self.chunk_size
        return chunk_for_budget(self.tapped.forward_bytes, self.memory_budget, self.inputs.device, minimum=minimum)


def _reverse_maps(batch: _Batch, requests: list[MapRequest], batched: bool | None, on_chunk) -> dict:
    """Maps of every reverse-mode request from the same backward passes: each chunk of components gives the
    gradients at all their probes, from which every request's maps of that chunk are made."""
    if not requests:
        return {}
    probes = list(dict.fromkeys(request.probe for request in requests))
    layouts = {probe: probe_layout(batch.network, probe) for probe in probes}
    finishers = {r: batch.finisher(r, batch.feature_map(r.probe, layouts[r.probe])) for r in requests}
    embedding = batch.tapped.embedding
    index = component_index(batch.index, batch.dim)
    key = (type(batch.network.module), tuple(batch.inputs.shape), tuple(probes), torch.get_num_threads(),
           batch.create_graph)  # fmt: skip
    tapped = [batch.tapped.taps[probe] for probe in probes]
    chunks: dict[MapRequest, list[Tensor]] = {request: [] for request in requests}
    for _selected, gradients in component_gradients(
        embedding, tapped, index, batch.chunk(), batched, key, batch.create_graph
    ):
        by_probe = dict(zip(probes, gradients, strict=True))
        for request, finish in finishers.items():
            probe = request.probe
            gradient = gradient_feature_map(used(by_probe[probe], probe), probe.spec, layouts[probe])
            chunks[request].append(finish(gradient))
        if on_chunk:
            on_chunk(sum(len(part) for part in chunks[requests[0]]), len(index))
    return {request: torch.cat(parts).transpose(0, 1) for request, parts in chunks.items()}


def _forward_maps(batch: _Batch, requests: list[MapRequest], fallback: bool) -> tuple[dict, dict[MapRequest, str]]:
    """Maps of every forward-mode request: one Jacobian per probe and gradient kind (full, or spatial mean),
    pushed through the probe's tail from its tapped tensor, finished for each request that reads it. With
    ``fallback`` the requests of a probe whose tail has an operation without a forward-AD rule get no maps but
    come back in the second dict, with that operation's name."""
    groups: dict[tuple[Probe, bool], list[MapRequest]] = {}
    for request in requests:
        groups.setdefault((request.probe, request.method.gradient == "spatial_mean"), []).append(request)
    tails: dict[Probe, Callable[[Tensor], Tensor]] = {}
    missing: dict[Probe, str] = {}  # probes whose tail forward mode cannot push through
    chunk = batch.chunk(minimum=32)  # each batched JVP also pays for a primal pass
    maps = {}
    for (probe, spatial_mean), members in groups.items():
        if probe in missing:
            continue
        activation = _channels_first_tap(batch, probe)
        feature_map = batch.feature_map(probe, None)
        if probe not in tails:
            tails[probe] = probe.tail(batch.network, batch.inputs)
        try:
            columns = jacobian(tails[probe], activation, feature_map, chunk, spatial_mean, batch.index)
        except NotImplementedError as error:
            missing[probe] = _missing_rule(error, fallback)
            continue
        for request in members:
            maps[request] = finish_jacobian(columns, batch.finisher(request, feature_map), spatial_mean, chunk)
    return maps, {request: missing[request.probe] for request in requests if request.probe in missing}


def _missing_rule(error: NotImplementedError, fallback: bool) -> str:
    """The operation without a forward-AD rule that ``error`` names, when the caller falls back to reverse mode;
    any other error propagates, and without ``fallback`` (strategy forward) it is one line."""
    operation = missing_forward_rule(error)
    if operation is None:
        raise error
    if not fallback:
        raise ReprevalError(
            f"forward mode: {operation} has no forward-AD rule", fix="use strategy reverse or auto"
        ) from None
    return operation


def _channels_first_tap(batch: _Batch, probe: Probe) -> Tensor:
    """The tapped tensor forward mode starts from: channels-first or vectors only (other layouts: reverse)."""
    tap = batch.tapped.taps[probe]
    if tap.dim() != 2 and probe_layout(batch.network, probe).kind != "channels_first":
        raise ValueError(
            f"probe {probe.spec!r}: forward mode reads channels-first tensors only; use strategy reverse or auto"
        )
    return tap if batch.create_graph else tap.detach()
