"""Tracing an arbitrary ``nn.Module``: one forward pass on zeros, and the default probe layers it suggests.
Model sources that take any module (``torch:``, :func:`repreval.evaluate`) share these."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import ReprevalError

if TYPE_CHECKING:
    from torch import nn

    from .api import InputSpec


def trial_forward(module: nn.Module, spec: InputSpec) -> tuple[object, list[tuple[str, tuple[int, ...]]]]:
    """Run one zero input in eval mode; return the output and (name, shape) of every module call, in order."""
    import torch
    from torch import Tensor

    calls: list[tuple[str, tuple[int, ...]]] = []

    def record(name: str, output) -> None:
        calls.append((name, tuple(output.shape) if isinstance(output, Tensor) else ()))

    handles = [
        child.register_forward_hook(lambda _m, _i, output, name=name: record(name, output))
        for name, child in module.named_modules()
        if name
    ]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            output = module(torch.zeros(1, *spec.shape))
    except Exception as exc:
        raise ReprevalError(
            f"the model fails on a {list(spec.shape)} input: {type(exc).__name__}: {exc}",
            fix="set input_size to what the model expects",
        ) from None
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return output, calls


def stage_layers(module: nn.Module, calls: list[tuple[str, tuple[int, ...]]]) -> tuple[str, ...]:
    """ResNet-style ``layer<k>`` children, else one module per resolution stage.

    Modules are grouped by nesting depth; at each depth, consecutive calls that output feature maps of
    the same h×w form a run, represented by its last module. The shallowest depth that sees the most
    distinct sizes wins (for VGG, DenseNet and EfficientNet: the children of ``features``).
    """
    numbered = [name for name, _ in module.named_children() if re.fullmatch(r"layer\d+", name)]
    if numbered:
        return tuple(numbered)
    runs_by_depth: dict[int, list[tuple[tuple[int, ...], str]]] = {}
    for name, shape in calls:
        if len(shape) != 4 or shape[-2:] == (1, 1):
            continue
        runs = runs_by_depth.setdefault(name.count("."), [])
        if runs and runs[-1][0] == shape[-2:]:
            runs[-1] = (shape[-2:], name)
        else:
            runs.append((shape[-2:], name))
    if not runs_by_depth:
        return ()
    best_depth = max(sorted(runs_by_depth), key=lambda depth: len({size for size, _ in runs_by_depth[depth]}))
    return tuple(name for _, name in runs_by_depth[best_depth])
