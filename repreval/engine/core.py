"""What every engine path shares: smoothing samples, precision, chunk sizing from a memory budget, and
turning gradients into channel-aggregated maps."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..config import Smoothing

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import SaliencyMethod


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


def channel_mean(values: Tensor, dim: int) -> Tensor:
    """The signed mean over ``dim``: the channel aggregation of the one-backward mean maps."""
    return values.mean(dim=dim)


class _Finisher:
    """Gradients of a chunk of components -> their channel-aggregated maps [k, B, h, w]."""

    def __init__(
        self, method: SaliencyMethod, channel_aggregator, feature_map: Tensor, batch: int, input_shape: tuple[int, ...]
    ):
        self.method, self.channel_aggregator = method, channel_aggregator
        self.feature_map, self.batch = feature_map, batch
        self.samples = feature_map.shape[0] // batch
        self.input_shape = (batch, *input_shape[1:])

    def __call__(self, gradient: Tensor) -> Tensor:  # [k, B*S, C, h, w] (or [k, B*S, C, 1, 1])
        return self.finish(self.method.attribute(self.feature_map, self.gradient(gradient)))

    def gradient(self, gradient: Tensor) -> Tensor:
        """``gradient`` [..., C, h, w] as the method reads it: the feature map's dtype, spatial means if asked."""
        gradient = gradient.to(self.feature_map.dtype)
        if self.method.gradient == "spatial_mean" and gradient.shape[-2:] != (1, 1):
            gradient = gradient.mean(dim=(-2, -1), keepdim=True)
        return gradient

    def finish(self, attribution: Tensor) -> Tensor:
        """Attributions [k, B*S, ...] -> maps [k, B, h, w]: smoothing samples averaged, channels aggregated."""
        method = self.method
        if self.samples > 1:
            rows = attribution.shape[0]
            attribution = attribution.reshape(rows, self.batch, self.samples, *attribution.shape[2:]).mean(dim=2)
        if method.spatial:
            return method.finish_maps(attribution, self.input_shape)
        flat = attribution.detach().flatten(2)
        scale = torch.maximum(flat.amax(dim=-1), -flat.amin(dim=-1))  # [k, B]: the largest magnitude (no |.| copy)
        maps = zero_rounding_noise(self.channel_aggregator(attribution, dim=2), scale)
        return method.finish_maps(maps, self.input_shape)


#: A channel-aggregated map whose magnitude is below this fraction of its raw attribution's magnitude
#: is rounding noise (e.g. channel means that cancel exactly before a LayerNorm). It is set to exactly 0,
#: so normalisation cannot blow the noise up into a fake map; scores count such maps as degenerate.
NEAR_ZERO_RTOL = 1e-5


def zero_rounding_noise(maps: Tensor, raw_scale: Tensor) -> Tensor:
    """Zero every [h, w] map of ``maps`` [k, B, h, w] that is negligible next to ``raw_scale`` [k, B]."""
    magnitude = maps.detach().abs().flatten(2).amax(dim=-1)
    negligible = magnitude <= NEAR_ZERO_RTOL * raw_scale
    return maps.masked_fill(negligible[..., None, None], 0.0)
