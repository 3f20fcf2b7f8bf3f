"""Probe layers: read a tensor of the forward pass and treat the rest of the network as a function of it.

A probe is addressed by module name (``layer1``, ``encoder.conv2``) and reads the module's output,
or its input with the suffix ``:input`` (``layer2.0.conv1:input``, as the paper's reference code).
The tail ``a -> z`` re-runs the network with ``a`` substituted where the probed tensor is *produced*, so
every consumer of it sees ``a`` and dz/da is the derivative through all of them (a residual shortcut that
reads the same tensor as the probed module included):

* an output probe replaces the module's return value (what every consumer receives);
* an input probe finds the torch call that produced the tensor the module reads (a forward pass numbers
  every torch call) and replaces that call's result; the network input itself is replaced directly. An
  input whose producer cannot be identified (e.g. a parameter) is refused.

A module that returns a tuple, a list, a mapping or a model-output object (a transformers ``ModelOutput``) is
read at its first tensor, depth first (``(hidden_states, attentions)``: the hidden states); substituting it
replaces that element only and hands the rest of the output through unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import ReprevalError, UnknownNameError, suggest

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Layout, Network

INPUT_SUFFIX = ":input"


def first_tensor(value: Any) -> Tensor | None:
    """The tensor a probe reads in a module's output: the tensor itself, else the first tensor (depth first) of a
    tuple, list, mapping or dataclass (a transformers ``ModelOutput``: its first field set); None if none."""
    if isinstance(value, Tensor):
        return value
    for _, item in _items(value):
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def with_first_tensor(value: Any, tensor: Tensor) -> Any:
    """``value`` with its :func:`first_tensor` replaced by ``tensor`` wherever that very tensor appears in it
    (a block that also returns it among its skip outputs): the same types (a tuple stays a tuple, a
    ``ModelOutput`` its class), every other element the same object; ``value`` itself is left unchanged."""
    old = first_tensor(value)
    if old is None:
        raise ValueError(f"a {type(value).__name__} with no tensor in it")
    return _swapped(value, old, tensor)


def _items(value: Any) -> list[tuple[Any, Any]]:
    """The (key, element) pairs of a container a module may return, in order; none for anything else."""
    if isinstance(value, (tuple, list)):
        return list(enumerate(value))
    if isinstance(value, Mapping):  # before dataclasses: a ModelOutput is both, its mapping skips unset fields
        return list(value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(field.name, getattr(value, field.name)) for field in dataclasses.fields(value)]
    return []


def _swapped(value: Any, old: Tensor, new: Tensor) -> Any:
    """``value`` with every occurrence of the tensor ``old`` replaced by ``new``; containers copied where changed."""
    if value is old:
        return new
    changes = {}
    for key, item in _items(value):
        swapped = _swapped(item, old, new)
        if swapped is not item:
            changes[key] = swapped
    if not changes:
        return value
    if isinstance(value, (tuple, list)):
        items = [changes.get(i, item) for i, item in enumerate(value)]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # a named tuple: fields
    if isinstance(value, Mapping):
        changed = copy.copy(value)
        for key, item in changes.items():  # item by item: a ModelOutput refuses ``update``
            changed[key] = item  # type: ignore[index]
        return changed
    return dataclasses.replace(value, **changes)


def no_tensor(spec: str, value: Any) -> ReprevalError:
    """The error for a probe whose module output (or input) holds no tensor to read."""
    verb = "reads" if spec.endswith(INPUT_SUFFIX) else "returns"
    return ReprevalError(
        f"layer {spec!r} {verb} a {type(value).__name__} with no tensor",
        fix="probe a module that returns a tensor, e.g. one inside it (`repreval layers MODEL`)",
    )


@dataclass(frozen=True)
class Probe:
    """Where the engine reads a layer: the output of ``module_name`` or, with ``NAME:input``, its input."""

    module_name: str
    side: str = "output"  # "output" or "input"

    @classmethod
    def parse(cls, spec: str) -> Probe:
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

            def output_hook(_module, _args, output):
                tensor = first_tensor(output)
                if tensor is None:
                    raise no_tensor(self.spec, output)
                replaced = on_value(tensor)
                return None if replaced is None else with_first_tensor(output, replaced)

            handle = module.register_forward_hook(output_hook)
        else:

            def input_hook(_module, args):
                replaced = on_value(args[0])
                return None if replaced is None else (replaced, *args[1:])

            handle = module.register_forward_pre_hook(input_hook)
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
                raise no_tensor(self.spec, value)
            seen.append(value.clone() if keep_graph else value.detach().clone())  # clone: later in-place ops

        with torch.set_grad_enabled(keep_graph), self.hooked(network, keep):
            embedding = network.embed(inputs)
        if not seen:
            raise UnknownNameError(
                f"layer {self.module_name!r} is not called when computing the embedding",
                fix="probe a layer between the input and the embedding (`repreval layers MODEL`)",
            )
        return seen[0], embedding if keep_graph else embedding.detach()

    def tail(self, network: Network, inputs: Tensor):
        """The function ``a -> z``: the embedding with the probed tensor replaced by ``a`` where it is produced."""
        if self.side == "input":
            return self._input_tail(network, inputs)

        def run(activation: Tensor) -> Tensor:
            used: list[bool] = []

            def swap(_value):
                if used:  # a module called twice: only its first call is probed
                    return None
                used.append(True)
                return activation.clone()

            with self.hooked(network, swap):
                return network.embed(inputs)

        return run

    def _input_tail(self, network: Network, inputs: Tensor):
        producer = self.producer(network, inputs)
        module = self.module(network)

        def run(activation: Tensor) -> Tensor:
            if producer is None:  # the module reads the network input itself
                return network.embed(activation.clone())
            substitution = _Substitution(*producer, activation)
            received: list[bool] = []

            def check(_module, args):
                if not received:
                    received.append(args[0] is substitution.value)

            handle = module.register_forward_pre_hook(check)
            try:
                with substitution:
                    embedding = network.embed(inputs)
            finally:
                handle.remove()
            if received != [True]:
                raise self._unidentified("its input is not the tensor its producer returned")
            return embedding

        return run

    def producer(self, network: Network, inputs: Tensor) -> tuple[int, int | None] | None:
        """(torch call number, position in its result) of the call that produces this input probe's tensor;
        None when the module reads the network input itself."""
        return locate_producers(network, [self], inputs)[self]

    def _unidentified(self, why: str) -> ReprevalError:
        return ReprevalError(
            f"cannot tell which tensor probe {self.spec!r} reads: {why}",
            fix=f"probe the output of the module that produces it, or {self.module_name!r} itself",
        )


def locate_producers(
    network: Network, probes: list[Probe], inputs: Tensor, instrument: AbstractContextManager | None = None
) -> dict[Probe, tuple[int, int | None] | None]:
    """For each input probe, the torch call (number, position in its result) producing the tensor its module
    reads, or None for the network input itself. ``instrument`` wraps the forward pass exactly as the real run
    will be wrapped (hooks that call torch functions shift the numbering)."""
    log = _ProducerLog()
    found: dict[Probe, tuple[int, int | None] | None] = {}
    leaf = inputs.detach().clone()
    handles = []
    for probe in probes:

        def locate(_module, args, probe=probe):
            if probe in found:
                return
            value = args[0] if args else None
            if value is leaf:
                found[probe] = None
            elif not isinstance(value, Tensor):
                raise no_tensor(probe.spec, value)
            elif id(value) in log.producer:
                found[probe] = log.producer[id(value)]
            else:
                raise probe._unidentified("no torch call of the forward pass produced its input")

        handles.append(probe.module(network).register_forward_pre_hook(locate))
    try:
        with torch.enable_grad(), instrument or nullcontext(), log:
            network.embed(leaf)
    finally:
        for handle in handles:
            handle.remove()
    for probe in probes:
        if probe not in found:
            raise UnknownNameError(
                f"layer {probe.module_name!r} is not called when computing the embedding",
                fix="probe a layer between the input and the embedding (`repreval layers MODEL`)",
            )
    return found


class _ProducerLog(TorchFunctionMode):
    """Numbers every torch call of a forward pass and remembers which call produced each tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.producer: dict[int, tuple[int, int | None]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.calls += 1
        if isinstance(result, Tensor):
            self.producer[id(result)] = (self.calls, None)
        elif isinstance(result, (tuple, list)):
            for position, item in enumerate(result):
                if isinstance(item, Tensor):
                    self.producer[id(item)] = (self.calls, position)
        return result


class _Substitution(TorchFunctionMode):
    """Replaces the result of torch call number ``call`` (element ``position`` of a tuple) by ``activation``."""

    def __init__(self, call: int, position: int | None, activation: Tensor) -> None:
        super().__init__()
        self.call, self.position = call, position
        self.value = activation.clone()  # a clone: in-place ops downstream must not touch the caller's tensor
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.calls += 1
        if self.calls != self.call:
            return result
        if self.position is None:
            return self.value
        items = list(result)
        items[self.position] = self.value
        return tuple(items) if isinstance(result, tuple) else items


#: Module types whose inputs and outputs are channels-first whatever the network's declared layout.
CHANNELS_FIRST_MODULES = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def probe_layout(network: Network, probe: Probe) -> Layout:
    """The layout of the tensor ``probe`` reads: channels-first at modules that only work so, else that of the
    innermost stage declared around the module (``Network.stage_layouts``), else the network's."""
    if isinstance(probe.module(network), CHANNELS_FIRST_MODULES):
        return type(network.layout)()  # the default Layout: channels-first
    name = probe.module_name
    stages = [stage for stage in network.stage_layouts if name == stage or name.startswith(stage + ".")]
    return network.stage_layouts[max(stages, key=len)] if stages else network.layout


def as_feature_map(activation: Tensor, spec: str, layout: Layout | None = None) -> Tensor:
    """[B, C, h, w] view of a probe's tensor laid out as ``layout`` (default channels-first); vectors [B, F]
    become [B, F, 1, 1]. A tensor that does not fit its layout is refused, never reinterpreted."""
    kind = layout.kind if layout is not None else "channels_first"
    if kind == "undeclared":
        raise ReprevalError(
            f"probe {spec!r}: the model does not declare how this layer's tensor is laid out (channels-first and "
            "channels-last tensors mix around it)",
            fix="probe the enclosing block or a stage (`repreval layers MODEL` shows the readable layers)",
        )
    if not activation.is_floating_point():
        raise ReprevalError(
            f"probe {spec!r} gives {activation.dtype} values (token ids?), not activations",
            fix="probe a layer after the embedding lookup (`repreval layers MODEL`)",
        )
    if activation.dim() == 2:
        return activation[:, :, None, None]
    if activation.dim() == 4 and kind == "channels_first":
        return activation
    if activation.dim() == 4 and kind == "channels_last":
        return activation.permute(0, 3, 1, 2)
    if activation.dim() == 3 and kind == "tokens" and layout is not None:
        mapped = _token_grid(activation, layout)
        if mapped is not None:
            return mapped
    expected = {"channels_first": "[B, C, h, w]", "channels_last": "[B, h, w, C]", "tokens": "[B, N, C] tokens"}
    grid = ""
    if kind == "tokens" and layout is not None:
        grid = f" ({layout.prefix_tokens} prefix tokens + " + (
            f"a {layout.grid} grid)" if layout.grid else "a sequence)"
        )
    raise ReprevalError(
        f"probe {spec!r} gives a tensor of shape {tuple(activation.shape)}, but the model lays its tensors out "
        f"as {expected.get(kind, kind)}{grid} (or vectors [B, F])",
        fix="probe another layer (`repreval layers MODEL` shows the shapes)",
    )


def _token_grid(activation: Tensor, layout: Layout) -> Tensor | None:
    """Tokens [B, N, C] as [B, C, h, w] (a 1×N row without a grid): prefix tokens set aside, cells taken in the
    layout's ``order``; None when the count of tokens does not fit."""
    tokens = activation[:, layout.prefix_tokens :]
    if layout.grid is None:
        return tokens.transpose(1, 2)[:, :, None, :]
    height, width = layout.grid
    if layout.order is not None and tokens.shape[1] == len(layout.order):
        tokens = tokens[:, list(layout.order)]
    if tokens.shape[1] != height * width:
        return None
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def from_feature_map(feature_maps: Tensor, template: Tensor, spec: str, layout: Layout | None = None) -> Tensor:
    """The inverse of :func:`as_feature_map`: ``feature_maps`` [S·B, C, h, w] laid out like the probe's tensor
    ``template`` [B, ...] (row r takes its layout from template row r mod B); entries the feature map leaves out
    (prefix tokens) keep the template's values. Differentiable in ``feature_maps``."""
    rows, per_row = feature_maps.shape[0], template[0].numel()
    positions = torch.arange(per_row, dtype=torch.float64, device=template.device).reshape(1, *template.shape[1:])
    index = as_feature_map(positions, spec, layout).reshape(1, -1).long().expand(rows, -1)
    base = template.repeat(rows // template.shape[0], *(1,) * (template.dim() - 1)).reshape(rows, per_row)
    laid_out = base.scatter(1, index, feature_maps.reshape(rows, -1).to(template.dtype))
    return laid_out.reshape(rows, *template.shape[1:])


def gradient_feature_map(gradient: Tensor, spec: str, layout: Layout | None = None) -> Tensor:
    """Gradients [k, B, ...] laid out like the probe's tensor -> [k, B, C, h, w]."""
    rows, batch = gradient.shape[:2]
    flat = as_feature_map(gradient.reshape(rows * batch, *gradient.shape[2:]), spec, layout)
    return flat.reshape(rows, batch, *flat.shape[1:])


def input_leaf(inputs: Tensor) -> Tensor:
    """A copy of the inputs that starts a graph even where no parameter needs one; token ids (integers) cannot
    carry gradients and start it at the embedding lookup instead."""
    leaf = inputs.detach().clone()
    return leaf.requires_grad_(True) if leaf.is_floating_point() else leaf
