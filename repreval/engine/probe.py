"""Probe layers: read a module's activation and treat the rest of the network as a function of it.

A probe is addressed by module name (``layer1``, ``encoder.conv2``) and reads the module's output,
or its input with the suffix ``:input`` (``layer2.0.conv1:input``, as the paper's reference code).
The tail ``a -> z`` re-runs the network with a hook that swaps in ``a``: this works for any model,
and the head's result is simply ignored.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import UnknownNameError, suggest

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Network

INPUT_SUFFIX = ":input"


@dataclass(frozen=True)
class Probe:
    module_name: str
    side: str = "output"  # "output" or "input"

    @classmethod
    def parse(cls, spec: str) -> "Probe":
        if spec.endswith(INPUT_SUFFIX):
            return cls(spec[: -len(INPUT_SUFFIX)], "input")
        return cls(spec, "output")

    @property
    def spec(self) -> str:
        return self.module_name + (INPUT_SUFFIX if self.side == "input" else "")

    def module(self, network: Network) -> nn.Module:
        modules = dict(network.module.named_modules())
        if self.module_name not in modules or not self.module_name:
            raise UnknownNameError(
                f"no layer {self.module_name!r} in this model",
                fix=suggest(self.module_name, [n for n in modules if n]) + " (`repreval layers MODEL` lists them)",
            )
        return modules[self.module_name]

    @contextmanager
    def hooked(self, network: Network, on_value):
        """Call ``on_value(tensor)`` at the probe; its return value (if not None) replaces the tensor."""
        module = self.module(network)
        if self.side == "output":

            def hook(_module, _args, output):
                return on_value(output)

            handle = module.register_forward_hook(hook)
        else:

            def hook(_module, args):
                replaced = on_value(args[0])
                return None if replaced is None else (replaced, *args[1:])

            handle = module.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def capture(self, network: Network, inputs: Tensor, keep_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Run the network once; return (activation at the probe, embedding), detached unless ``keep_graph``
        (then the activation stays differentiable w.r.t. the parameters before the probe)."""
        seen: list[Tensor] = []

        def keep(value):
            if not isinstance(value, Tensor):
                raise TypeError(f"probe {self.spec!r} sees a {type(value).__name__}, not a tensor")
            seen.append(value.clone() if keep_graph else value.detach().clone())  # clone: later in-place ops

        with torch.set_grad_enabled(keep_graph), self.hooked(network, keep):
            embedding = network.embed(inputs)
        if not seen:
            raise UnknownNameError(
                f"layer {self.spec!r} is not used when computing the embedding",
                fix="probe a layer between the input and the embedding (`repreval layers MODEL`)",
            )
        return seen[0], embedding if keep_graph else embedding.detach()

    def tail(self, network: Network, inputs: Tensor):
        """The function ``a -> z``: the embedding with the probe's activation replaced by ``a``."""

        def run(activation: Tensor) -> Tensor:
            used = []

            def swap(_value):
                if used:  # a module called twice: only its first call is probed
                    return None
                used.append(True)
                return activation.clone()

            with self.hooked(network, swap):
                return network.embed(inputs)

        return run


def as_feature_map(activation: Tensor, spec: str) -> Tensor:
    """[B, C, h, w] view of an activation; vectors [B, F] become [B, F, 1, 1]."""
    if activation.dim() == 4:
        return activation
    if activation.dim() == 2:
        return activation[:, :, None, None]
    raise ValueError(
        f"probe {spec!r} gives a tensor of shape {tuple(activation.shape)}; "
        "repreval reads conv feature maps [B, C, h, w] or vectors [B, F]"
    )
