"""Per-component attribution maps of an embedding with respect to a probe layer.

For every embedding component ``z_d`` the saliency method gives ``R_d`` (C×h×w) and the channel
aggregator reduces it to an h×w map. All D components are computed in chunks of ``chunk_size``
through ``torch.func.vmap`` over one ``vjp`` (one forward per batch, one batched backward per chunk),
and channels are aggregated inside each chunk, so memory holds D×h×w maps, never D×C×h×w.

``precision`` runs the network under ``torch.autocast`` (bfloat16 or float16); the maps are always
float32. ``components`` restricts the engine to some of the D components (see ``engine.estimate``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..config import DEFAULT_MEMORY_BUDGET, STRATEGIES, Smoothing
from .probe import Probe, as_feature_map

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Aggregator, Network, SaliencyMethod


def perturb(smoothing: Smoothing, inputs: Tensor, seed: int) -> Tensor:
    """The smoothing samples of ``inputs``: [B, ...] -> [B * samples, ...], sample-major within each input."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    repeated = inputs.repeat_interleave(smoothing.samples, dim=0)
    noise = torch.randn(repeated.shape, generator=generator).to(repeated)
    scale_shape = (repeated.shape[0],) + (1,) * (repeated.dim() - 1)
    if smoothing.random_scale:
        scale = torch.rand(scale_shape, generator=generator).to(repeated)
    else:
        scale = torch.ones(scale_shape, dtype=repeated.dtype, device=repeated.device)
    return scale * (repeated + smoothing.sigma * noise)


#: Largest chunk per device type. Each batched pass has a fixed cost (kernel set-up, weight
#: re-layout), which dominates when rows are cheap: on 2 CPU cores, 1,024 AlexNet components at 64²
#: take 2.7 s in chunks of 32 rows and 0.7 s in chunks of 512 (timm resnet18 at 64²: 3.8 s and 2.0 s).
MAX_CHUNK = {"cpu": 512, "cuda": 512}
#: On CPU a chunk's transient memory also stays within this working set (cache-friendlier; resnet18
#: at 224² gets ~50 rows, as fast as 128), but never below 32 rows unless the budget forces it.
CPU_WORKING_SET = 1024**3
#: Network precisions: float32 runs as is; the others run the forward and backward passes under
#: ``torch.autocast`` of that dtype (CPU autocast supports both on torch >= 2.3).
PRECISIONS = ("float32", "bfloat16", "float16")


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
    with torch.set_grad_enabled(create_graph), precision_context(precision, inputs.device):
        batch = inputs.shape[0]
        if smoothing.active:
            inputs = perturb(smoothing, inputs, seed)
        with _activation_bytes() as forward_bytes:
            activation, embedding = probe.capture(network, inputs, keep_graph=create_graph)
        if embedding.dim() != 2:
            raise ValueError(f"the embedding must be [B, D]; got shape {tuple(embedding.shape)}")
        feature_map = as_feature_map(activation, probe.spec)
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
        finish = _Finisher(method, channel_aggregator, feature_map, batch)
        tail = probe.tail(network, inputs)
        if chosen == "reverse":
            if index is None:
                index = torch.arange(dim, device=embedding.device)
            chunks = _reverse(tail, activation, feature_map, index, chunk_size, finish)
        else:
            chunks = _forward(
                tail, activation, feature_map, chunk_size, finish, method.gradient == "spatial_mean", index
            )
        return torch.cat(chunks).transpose(0, 1)  # [B, D or k, h, w]


@contextmanager
def precision_context(precision: str, device: torch.device):
    """Run the block at ``precision``: nothing for float32, else ``torch.autocast`` to that dtype with
    normalisation layers in float32. Raises ValueError where this torch cannot autocast to it."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        yield
        return
    device_type = torch.device(device).type
    with warnings.catch_warnings(record=True) as caught:  # torch disables an unsupported autocast with a warning
        warnings.simplefilter("always")
        context = torch.autocast(device_type=device_type, dtype=getattr(torch, precision))
    if not getattr(context, "_enabled", True) or any("not supported" in str(w.message) for w in caught):
        raise ValueError(
            f"autocast to {precision} is not supported on {device_type} by torch {torch.__version__}; "
            "use precision 'bfloat16' on CPU, or a CUDA device for 'float16'"
        )
    with context, _NormsInFloat32():
        yield


class _NormsInFloat32(TorchFunctionMode):
    """Feed normalisation layers float32 inputs (their weights are float32 already): functorch cannot
    batch the backward of a mixed-dtype batch or layer norm (CUDA autocast keeps layer norm in float32 too)."""

    NORMS = {F.batch_norm, torch.batch_norm, F.instance_norm, torch.instance_norm, F.layer_norm, torch.layer_norm,
             F.group_norm, torch.group_norm, F.rms_norm, torch.rms_norm}  # fmt: skip

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func in self.NORMS
            and args
            and isinstance(args[0], Tensor)
            and args[0].dtype in (torch.bfloat16, torch.float16)
        ):
            args = (args[0].float(), *args[1:])
        return func(*args, **kwargs)


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
    with torch.set_grad_enabled(create_graph):
        batch = inputs.shape[0]
        if smoothing.active:
            inputs = perturb(smoothing, inputs, seed)
        activation, _ = probe.capture(network, inputs)
        # torch annotates vjp's result as a 2- or 3-tuple (no overload on has_aux): without aux it is 2.
        embedding, pullback = torch.func.vjp(probe.tail(network, inputs), activation)  # type: ignore[misc]
        (gradient,) = pullback(torch.full_like(embedding, 1.0 / embedding.shape[1]))
        feature_map = as_feature_map(activation, probe.spec)
        finish = _Finisher(method, _channel_mean, feature_map, batch)
        return finish(gradient.reshape(1, *feature_map.shape))[0]


def _channel_mean(values: Tensor, dim: int) -> Tensor:
    return values.mean(dim=dim)


def choose_strategy(method: SaliencyMethod, dim: int, feature_shape) -> str:
    """The mode that needs fewer passes: D backward passes, or one forward pass per input direction."""
    channels, height, width = feature_shape[1:]
    directions = channels if method.gradient == "spatial_mean" else channels * height * width
    return "forward" if directions < dim else "reverse"


#: Transient memory of one row of a batched pass, as a fraction of the bytes of one full forward
#: (measured on timm resnet18: about 0.25; rounded up for safety).
ROW_COST = 0.5


def chunk_for_budget(forward_bytes: int, budget: int, device: torch.device, minimum: int = 1) -> int:
    """Rows per batched pass that fit ``budget``: at least ``minimum`` (forward mode wastes a primal
    pass per call) unless the budget forbids it, at most the device's cap (on CPU: the working set)."""
    row_bytes = max(1.0, ROW_COST * forward_bytes)
    fitting = int(budget // row_bytes)
    device_type = torch.device(device).type
    cap = MAX_CHUNK.get(device_type, 32)
    if device_type == "cpu":
        cap = min(cap, max(32, int(CPU_WORKING_SET // row_bytes)))
    return max(1, min(cap, max(minimum, fitting) if fitting >= minimum else fitting))


def jacobian_bytes(method: SaliencyMethod, dim: int, feature_shape, element_size: int = 4) -> int:
    """Memory of the Jacobian that forward mode holds: directions × samples × D values."""
    samples, channels, height, width = feature_shape
    directions = channels if method.gradient == "spatial_mean" else channels * height * width
    return directions * samples * dim * element_size


@contextmanager
def _activation_bytes():
    """Count the bytes of every module output produced inside the block (a one-element list)."""
    total = [0]

    def count(_module, _inputs, output):
        if isinstance(output, Tensor):
            total[0] += output.numel() * output.element_size()

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        yield total
    finally:
        handle.remove()


class _Finisher:
    """Gradients of a chunk of components -> their channel-aggregated maps [k, B, h, w]."""

    def __init__(self, method: SaliencyMethod, channel_aggregator, feature_map: Tensor, batch: int):
        self.method, self.channel_aggregator = method, channel_aggregator
        self.feature_map, self.batch = feature_map, batch
        self.samples = feature_map.shape[0] // batch

    def __call__(self, gradient: Tensor) -> Tensor:  # [k, B*S, C, h, w] (or [k, B*S, C, 1, 1])
        method = self.method
        gradient = gradient.to(self.feature_map.dtype)
        if method.gradient == "spatial_mean" and gradient.shape[-2:] != (1, 1):
            gradient = gradient.mean(dim=(-2, -1), keepdim=True)
        attribution = method.attribute(self.feature_map, gradient)
        if self.samples > 1:
            rows = attribution.shape[0]
            attribution = attribution.reshape(rows, self.batch, self.samples, *attribution.shape[2:]).mean(dim=2)
        if method.spatial:
            return attribution
        scale = attribution.detach().abs().flatten(2).amax(dim=-1)  # [k, B]
        return zero_rounding_noise(self.channel_aggregator(attribution, dim=2), scale)


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


#: A channel-aggregated map whose magnitude is below this fraction of its raw attribution's magnitude
#: is rounding noise (e.g. channel means that cancel exactly before a LayerNorm). It is set to exactly 0,
#: so normalisation cannot blow the noise up into a fake map; scores count such maps as degenerate.
NEAR_ZERO_RTOL = 1e-5


def zero_rounding_noise(maps: Tensor, raw_scale: Tensor) -> Tensor:
    """Zero every [h, w] map of ``maps`` [k, B, h, w] that is negligible next to ``raw_scale`` [k, B]."""
    magnitude = maps.detach().abs().flatten(2).amax(dim=-1)
    negligible = magnitude <= NEAR_ZERO_RTOL * raw_scale
    return maps.masked_fill(negligible[..., None, None], 0.0)
