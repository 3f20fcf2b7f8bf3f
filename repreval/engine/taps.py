"""The tap pass and the batched backward passes over its graph: reverse mode, and where every map starts.

One forward pass taps every probed tensor where it is produced: consumers receive a copy, so in-place
operations downstream leave the tapped tensor as it was. With a graph, each backward pass (one per component,
or one vmapped pass per chunk of components, ``is_grads_batched``: GPUs, and CPUs where a timed trial finds it
faster) then delivers dz_d/da at every tapped tensor at once: the total derivative through every consumer of the
tensor, shortcuts and concatenations included. ``create_graph`` keeps those gradients differentiable with
respect to the parameters (maps as training losses). Forward mode (``engine.forward``) starts from the same
tapped tensors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..errors import ReprevalError, UnknownNameError
from .core import _activation_bytes
from .probe import Probe, first_tensor, input_leaf, locate_producers, no_tensor, with_first_tensor

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Network


@dataclass(frozen=True)
class Tapped:
    """One tap pass: the tensor at each probe as produced, the embedding [B, D], and the bytes of the pass's
    module outputs (what sizes the chunks of the passes that follow)."""

    taps: dict[Probe, Tensor]
    embedding: Tensor
    forward_bytes: int
    # output probes whose module returns a tuple or an output object: forward mode would substitute only the first
    # tensor, missing other elements the block computes from it, so they take the reverse sweep
    containers: frozenset[Probe] = frozenset()


def tap_forward(
    network: Network, probes: Sequence[Probe], inputs: Tensor, *, graph: bool = True, around=None
) -> Tapped:
    """One forward pass (with a graph unless ``graph`` is False) tapping every probe, inside the context manager
    ``around`` if given (e.g. counting its work). An input probe first needs a pass that numbers the torch calls
    (which call produces the tensor its module reads)."""
    with _activation_bytes() as counted:  # the same hooks in both passes: they number the calls alike
        producers = _input_producers(network, probes, inputs)
        before = counted[0]
        leaf = input_leaf(inputs)
        taps: dict[Probe, Tensor] = {}
        containers: set[Probe] = set()
        clone_at: dict[int, list[tuple[int | None, Probe]]] = {}
        for probe, producer in producers.items():
            if producer is None:  # the module reads the network input itself
                taps[probe] = leaf
            else:
                clone_at.setdefault(producer[0], []).append((producer[1], probe))
        clones = _Clones(clone_at, taps)
        with (
            around if around is not None else nullcontext(),  # before the clones: it may make torch calls
            torch.set_grad_enabled(graph),
            _output_taps(network, probes, taps, containers),
            clones,
            _checked_inputs(network, producers, clones),
        ):
            embedding = network.embed(leaf)
        forward_bytes = counted[0] - before
    _check_pass(probes, taps, embedding)
    return Tapped(taps, embedding, forward_bytes, frozenset(containers))


def _check_pass(probes: Sequence[Probe], taps: dict[Probe, Tensor], embedding: Tensor) -> None:
    if embedding.dim() != 2:
        raise ValueError(f"the embedding must be [B, D]; got shape {tuple(embedding.shape)}")
    for name, value in (("the embedding", embedding), *((f"layer {p.spec!r}", taps[p]) for p in probes if p in taps)):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ReprevalError(
                f"{name} holds NaN or inf values: the maps would be meaningless",
                fix="check the weights and the inputs",
            )
    missing = [probe.spec for probe in probes if probe not in taps]
    if missing:
        raise UnknownNameError(
            f"layer {missing[0]!r} is not used when computing the embedding",
            fix="probe a layer between the input and the embedding (`repreval layers MODEL`)",
        )


def _input_producers(
    network: Network, probes: Sequence[Probe], inputs: Tensor
) -> dict[Probe, tuple[int, int | None] | None]:
    """Where each input probe's tensor is produced, numbered as in the real pass (output taps included)."""
    outputs = [probe for probe in probes if probe.side == "output"]
    inputs_side = [probe for probe in probes if probe.side == "input"]
    if not inputs_side:
        return {}
    return locate_producers(network, inputs_side, inputs, _output_taps(network, outputs, {}))


@contextmanager
def _output_taps(
    network: Network, probes: Sequence[Probe], taps: dict[Probe, Tensor], containers: set[Probe] | None = None
) -> Iterator[None]:
    """Tap each output probe's first result (its first tensor: :func:`first_tensor`) and hand its consumers the
    output with a copy of that tensor; probes whose module returns more than a tensor go in ``containers``."""
    handles = []
    for probe in probes:
        if probe.side != "output":
            continue

        def tap(_module, _args, output, probe=probe):
            if probe in taps:  # a module called twice: only its first call is probed
                return None
            tensor = first_tensor(output)
            if tensor is None:
                raise no_tensor(probe.spec, output)
            taps[probe] = tensor
            if containers is not None and not isinstance(output, Tensor):
                containers.add(probe)
            return with_first_tensor(output, tensor.clone())

        handles.append(probe.module(network).register_forward_hook(tap))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Clones(TorchFunctionMode):
    """At the given torch calls, tap the result (element ``position`` of a tuple) and return a copy of it."""

    def __init__(self, clone_at: dict[int, list[tuple[int | None, Probe]]], taps: dict[Probe, Tensor]) -> None:
        super().__init__()
        self.clone_at, self.taps = clone_at, taps
        self.given: dict[Probe, Tensor] = {}
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.calls += 1
        if self.calls not in self.clone_at:
            return result
        items = [result] if not isinstance(result, (tuple, list)) else list(result)
        for position, probe in self.clone_at[self.calls]:
            slot = 0 if position is None else position
            original = result if position is None else result[position]
            if probe not in self.taps:
                self.taps[probe] = original
                copy = items[slot] if items[slot] is not original else original.clone()
                items[slot] = copy
            self.given[probe] = items[slot]
        if not isinstance(result, (tuple, list)):
            return items[0]
        return tuple(items) if isinstance(result, tuple) else items


@contextmanager
def _checked_inputs(
    network: Network, producers: dict[Probe, tuple[int, int | None] | None], clones: _Clones
) -> Iterator[None]:
    """Refuse an input probe whose module did not read the tapped tensor's copy (e.g. an in-place op whose
    return value the model ignores): its gradient would not be dz/da."""
    handles = []
    for probe, producer in producers.items():
        if producer is None:
            continue

        def check(_module, args, probe=probe):
            given = clones.given.get(probe)
            if given is not None and (not args or args[0] is not given):
                raise probe._unidentified("its input is not the tensor its producer returned")
            clones.given.pop(probe, None)

        handles.append(probe.module(network).register_forward_pre_hook(check))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


#: Rows per vmapped chunk on a CPU, and per timed call of the trial that decides between the two ways there.
TRIAL_ROWS = 8

#: Seconds per plain backward pass above which a CPU skips the vmapped trial: vmapping saves autograd's
#: per-pass set-up (a few microseconds per graph node), and costs a working set ``rows`` times larger.
PLAIN_IS_FASTER_ABOVE = 0.005

#: CPU decisions taken in this process, by (architecture, input shape, probes, threads): vmapped?
_decisions: dict[tuple, bool] = {}


def component_gradients(
    embedding: Tensor,
    tapped: list[Tensor],
    index: Tensor,
    chunk_size: int,
    batched: bool | None,
    decision_key: tuple = (),
    create_graph: bool = False,
) -> Iterator[tuple[Tensor, list[Tensor | None]]]:
    """(components, their gradients [rows, ...] at every tapped tensor), chunk by chunk.

    ``batched`` None: vmapped chunks on GPUs. On CPUs a deep backward through big convolutions is faster
    plain, a shallow one vmapped (its per-call overhead dominates): the first rows are computed both ways,
    each timed on its second call (the first pays for new shapes), and the faster way does the rest and is
    remembered under ``decision_key`` for the next sweep of the same architecture (a random twin, the next
    batch). Both ways give the same numbers. ``create_graph``: the gradients stay differentiable."""
    start = 0
    rows = min(TRIAL_ROWS, chunk_size)
    if batched is None and embedding.device.type != "cpu":
        batched = True
    elif batched is None and decision_key in _decisions:
        batched = _decisions[decision_key]
    elif batched is None and len(index) < 2 + max(1, rows // 2) + 2 * rows:  # too few rows to time
        batched = True
    elif batched is None:
        timings = {}
        for mode, warm, timed in ((False, 2, max(1, rows // 2)), (True, rows, rows)):
            for count, timing in ((warm, False), (timed, True)):
                selected = index[start : start + count]
                began = time.perf_counter()
                gradients = _backward(embedding, tapped, _cotangents(embedding, selected), mode, create_graph)
                if timing:
                    timings[mode] = (time.perf_counter() - began) / count
                start += count
                yield selected, gradients
            if timings[False] > PLAIN_IS_FASTER_ABOVE:
                timings[True] = float("inf")  # vmapping saves per-call overhead, negligible in a long pass
                break
        batched = _decisions[decision_key] = timings[True] < timings[False]
    step = (rows if embedding.device.type == "cpu" else chunk_size) if batched else rows
    for begin in range(start, len(index), step):  # plain passes: chunks only bound the gradients held at once
        selected = index[begin : begin + step]
        yield selected, _backward(embedding, tapped, _cotangents(embedding, selected), batched, create_graph)


def _cotangents(embedding: Tensor, selected: Tensor) -> Tensor:
    """[rows, B, D]: row r selects component selected[r] for every input of the batch."""
    rows = len(selected)
    cotangents = torch.zeros(rows, *embedding.shape, dtype=embedding.dtype, device=embedding.device)
    cotangents[torch.arange(rows), :, selected] = 1.0
    return cotangents


def _backward(
    embedding: Tensor, tapped: list[Tensor], cotangents: Tensor, batched: bool, create_graph: bool = False
) -> list[Tensor | None]:
    """Gradients [rows, ...] at every tapped tensor for each row of ``cotangents`` [rows, B, D]."""
    options = {"retain_graph": True, "create_graph": create_graph, "allow_unused": True}
    if batched:
        return list(torch.autograd.grad(embedding, tapped, cotangents, is_grads_batched=True, **options))
    per_row = [torch.autograd.grad(embedding, tapped, row, **options) for row in cotangents]
    return [None if per_row[0][i] is None else torch.stack([g[i] for g in per_row]) for i in range(len(tapped))]


def used(gradient: Tensor | None, probe: Probe) -> Tensor:
    """``gradient``, which is None when the embedding does not depend on the probe's tensor (refused)."""
    if gradient is None:
        raise UnknownNameError(
            f"the embedding does not depend on layer {probe.spec!r}",
            fix="probe a layer between the input and the embedding (`repreval layers MODEL`)",
        )
    return gradient


def component_index(components: Tensor | None, dim: int) -> Tensor:
    """The components to compute (indices into D, in that order; all D when None), checked."""
    if components is None:
        return torch.arange(dim)
    index = torch.as_tensor(components, dtype=torch.long).flatten().cpu()
    if len(index) == 0 or index.min() < 0 or index.max() >= dim:
        raise ValueError(f"components must be non-empty indices in [0, {dim}); got {len(index)} indices")
    return index
