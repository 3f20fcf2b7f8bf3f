"""Forward mode: Jacobian columns of the embedding from batched JVPs through the probe's tail ``a -> z``.

Each input direction at the probe gives one column of dz/da for every component at once. A method that reads
only the spatial-mean gradient (Grad-CAM) needs the C channel directions (weight 1/(h·w)); any other method
the C·h·w single activations. So forward mode pays off when there are fewer directions than components, and
it holds the whole Jacobian (directions × samples × D values), which ``jacobian_bytes`` measures.
Some operations have no forward-AD rule in torch (CPU's fused attention kernel): :func:`missing_forward_rule`
recognises torch's error for them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .core import _Finisher

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import SaliencyMethod


#: torch's error for an operation without a forward-AD rule: an aten operator (named), or a custom
#: autograd.Function without a ``jvp``
_NO_RULE = re.compile(
    r"Trying to use forward AD with (\S+) that does not support it"
    r"|You must implement the jvp function for custom autograd\.Function"
)


def missing_forward_rule(error: BaseException) -> str | None:
    """The operation that ``error`` says has no forward-AD rule, or None for any other error."""
    match = _NO_RULE.search(str(error)) if isinstance(error, NotImplementedError) else None
    if match is None:
        return None
    return match.group(1) or "a custom autograd.Function without jvp"


def directions(method: SaliencyMethod, feature_shape) -> int:
    """Input directions forward mode pushes for ``method`` at a feature map [samples, C, h, w]."""
    channels, height, width = feature_shape[1:]
    return channels if method.gradient == "spatial_mean" else channels * height * width


def jacobian_bytes(method: SaliencyMethod, dim: int, feature_shape, element_size: int = 4) -> int:
    """Memory of the Jacobian that forward mode holds: directions × samples × D values."""
    return directions(method, feature_shape) * feature_shape[0] * dim * element_size


def jacobian(
    tail, activation: Tensor, feature_map: Tensor, chunk_size: int, spatial_mean: bool, index: Tensor | None = None
) -> Tensor:
    """The Jacobian [directions, samples, D (or k)] of ``tail`` at ``activation``, ``chunk_size`` directions per
    vmapped JVP. With ``spatial_mean`` the C directions are whole channels (weight 1/(h·w)), whose columns are the
    spatial-mean gradients; otherwise the C·h·w single activations. ``index``: keep only these components."""
    activation = activation.to(feature_map.dtype)  # float32 tangents under autocast: 1/(h·w) stays exact
    samples, channels, height, width = feature_map.shape
    count = channels if spatial_mean else channels * height * width
    if index is not None:
        index = index.to(feature_map.device)

    def push(direction):
        return torch.func.jvp(tail, (activation,), (direction.reshape(activation.shape),))[1]

    batched_push = torch.func.vmap(push)
    columns_of: Tensor | None = None  # [directions, samples, D], filled chunk by chunk
    for start in range(0, count, chunk_size):
        stop = min(count, start + chunk_size)
        rows = torch.arange(stop - start, device=feature_map.device)
        chosen = torch.arange(start, stop, device=feature_map.device)
        tangents = torch.zeros(
            stop - start, samples, channels * height * width, dtype=feature_map.dtype, device=feature_map.device
        )
        if spatial_mean:
            tangents.view(stop - start, samples, channels, height * width)[rows, :, chosen] = 1.0 / (height * width)
        else:
            tangents[rows, :, chosen] = 1.0
        columns = batched_push(tangents)  # [rows, samples, D]
        if index is not None:
            columns = columns[..., index]
        if columns_of is None:
            columns_of = columns.new_empty(count, *columns.shape[1:])
        columns_of[start:stop] = columns
    assert columns_of is not None  # count >= 1: a feature map has at least one channel and pixel
    return columns_of


def finish_jacobian(columns: Tensor, finish: _Finisher, spatial_mean: bool, block: int) -> Tensor:
    """The maps [B, D (or k), h, w] of a :func:`jacobian`, ``block`` components at a time (only one block of
    the transposed Jacobian [block, samples, C, h', w'] is copied at once)."""
    samples, channels, height, width = finish.feature_map.shape
    shape = (channels, 1, 1) if spatial_mean else (channels, height, width)
    kept = columns.shape[-1]  # D, or len(index)
    block = max(1, block)
    chunks = [
        finish(columns[..., start : start + block].permute(2, 1, 0).reshape(-1, samples, *shape))
        for start in range(0, kept, block)
    ]
    return torch.cat(chunks).transpose(0, 1)
