"""``auto``'s cost model: which requests go forward and which share the reverse sweep.

A pass's cost is the work of the embedding's computation *after* the probe it starts from (its tail): the reverse
sweep runs one backward row per component from the embedding down to its earliest probe (its rows serve every
reverse request at once), forward mode one JVP per input direction through each probe's own tail. The work is
counted during the first tap pass of a network, input shape and probe set (no pass of its own): 2 × output
elements × weight fan-in for every leaf module with a weight matrix or kernel (convolutions, linear layers), and
:data:`ELEMENT_COST` per element every other leaf module writes. The choice is deterministic, like the maps
(both modes give them equal to float rounding).

The relative cost of one JVP direction to one backward row over the same tail, :data:`FORWARD_WEIGHT`, was
measured by ``python benchmarks/forward_mode.py`` (vmapped JVPs carry the primal and the tangent; a backward row
only the cotangent).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # the api hands its plugins this engine: no import back at run time
    from ..api import Network
    from .probe import Probe

#: One JVP direction's cost over one backward row through the same tail (benchmarks/forward_mode.py)
FORWARD_WEIGHT = 1.5
#: An element written by a leaf module without a weight matrix counts as this many operations (memory-bound)
ELEMENT_COST = 4.0
#: Every pass costs at least this fraction of the whole forward (launch and bookkeeping): a tail with no counted
#: work (a pooling right before the embedding) is cheap, not free
PASS_FLOOR = 0.01

_tails: weakref.WeakKeyDictionary[nn.Module, dict[tuple, dict[Probe, float]]] = weakref.WeakKeyDictionary()


def _key(probes: Sequence[Probe], inputs: Tensor) -> tuple:
    return (tuple(inputs.shape[1:]), tuple(probes))


def tail_costs(network: Network, probes: Sequence[Probe], inputs: Tensor) -> dict[Probe, float] | None:
    """Work of the embedding's computation after each probe's tensor, as counted by :func:`counting_work` around a
    tap pass of this network, input shape and probes; None if none was counted."""
    return _tails.get(network.module, {}).get(_key(probes, inputs))


@contextmanager
def counting_work(network: Network, probes: Sequence[Probe], inputs: Tensor) -> Iterator[None]:
    """Count the work of the pass run inside (``network.embed(inputs)``) after each probe, for
    :func:`tail_costs`; nothing when it was counted before."""
    cached = _tails.setdefault(network.module, {})
    key = _key(probes, inputs)
    if key in cached:
        yield
        return
    done = [0.0]
    at: dict[Probe, float] = {}
    with ExitStack() as stack:
        for leaf in (m for m in network.module.modules() if next(m.children(), None) is None):
            stack.callback(leaf.register_forward_hook(_counter(leaf, done)).remove)
        for probe in probes:  # after the counters: a leaf probe's own work is before its tensor
            stack.enter_context(probe.hooked(network, _marker(at, probe, done)))
        yield
    floor = PASS_FLOOR * done[0]
    cached[key] = {probe: max(done[0] - at.get(probe, 0.0), 0.0) + floor for probe in probes}


def _counter(module: nn.Module, done: list[float]):
    """A forward hook adding a leaf module's work to ``done``. It makes no torch call the pass could see (the tap
    pass numbers torch calls to find input probes' tensors), so its fan-in is read now."""
    weight = getattr(module, "weight", None)
    fan_in = 0
    if isinstance(weight, Tensor) and weight.dim() >= 2 and not isinstance(module, nn.Embedding):
        fan_in = weight[0].numel()
    per_element = 2.0 * fan_in if fan_in else ELEMENT_COST

    def count(_module: nn.Module, _args, output) -> None:
        with torch._C.DisableTorchFunction():
            done[0] += per_element * sum(t.numel() for t in _tensors(output))

    return count


def _marker(at: dict, probe: Probe, done: list[float]):
    """A probe hook noting the work done when the probe's tensor first appears (it replaces nothing)."""

    def mark(_value) -> None:
        at.setdefault(probe, done[0])

    return mark


def _tensors(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def cheapest_modes(capable: dict, tails: dict[Probe, float], rows: int, directions: dict) -> dict:
    """The mode of every request (keys of ``capable``: may it go forward?) that minimises the predicted work: the
    reverse sweep costs ``rows`` backward rows through the tail of its earliest probe (nothing when no request is
    left to it), forward mode ``directions[(probe, spatial_mean)]`` JVPs per Jacobian through that probe's tail,
    each :data:`FORWARD_WEIGHT` rows. The candidates are the cuts "forward above this tail, reverse below"; a
    request whose probe the reverse sweep passes anyway rides along with it (it costs no pass). Ties: reverse."""
    best = dict.fromkeys(capable, "reverse")
    best_cost = _predicted(best, tails, rows, directions)
    for cut in sorted({tails[r.probe] for r in capable}, reverse=True):
        modes = {r: "forward" if can and tails[r.probe] >= cut else "reverse" for r, can in capable.items()}
        depth = max((tails[r.probe] for r, mode in modes.items() if mode == "reverse"), default=0.0)
        modes = {r: "reverse" if tails[r.probe] <= depth else mode for r, mode in modes.items()}  # rides along
        cost = _predicted(modes, tails, rows, directions)
        if cost < best_cost:
            best, best_cost = modes, cost
    return best


def _predicted(modes: dict, tails: dict[Probe, float], rows: int, directions: dict) -> float:
    """Predicted work of ``modes``, in backward rows × tail work."""
    reverse = [tails[r.probe] for r, mode in modes.items() if mode == "reverse"]
    jacobians = {
        (r.probe, r.method.gradient == "spatial_mean"): tails[r.probe] for r, mode in modes.items() if mode == "forward"
    }
    forward = sum(FORWARD_WEIGHT * directions[key] * tail for key, tail in jacobians.items())
    return rows * max(reverse, default=0.0) + forward
