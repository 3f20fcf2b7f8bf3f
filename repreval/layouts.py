"""Layouts checked by measurement: does a layer's tensor, read as its model declares, hold the input's positions
where the reading puts them, and do those positions reach the embedding?

A model source *declares* how each layer is laid out (``Network.layout``, ``stage_layouts``); a declaration
inferred from module types is right on the families it was written for and can be silently wrong elsewhere
(token sequences in an unrolled order, channels-last tensors inside channels-first blocks, attention
internals). So every probe is measured on the model at hand before it is used:

* **Where the input moves it.** One batched forward pass on a seeded random input and on copies of it with a
  single pixel changed at a few asymmetric places (for a text encoder: a single token replaced). Read through the
  declared layout, the change of the layer's tensor must peak, for every place, at the cell whose centre lies
  within one cell of where that place falls on the layer's grid (the same token for text). A reading that puts
  values at the wrong positions (scrambled order, transposed axes, channels taken for positions) fails at least
  one place and the layer is refused, naming the place.
* **Whether its positions reach the embedding.** One backward pass of a random projection of the embedding: a
  layer whose every position gets a zero gradient (a ViT's last block under class-token pooling: patch tokens
  never reach the class token) cannot give a gradient-based map; a layer whose gradient is the same at every
  position (right before global average pooling) gives flat gradient maps.

Verdicts are cached per architecture, input size, layer and reading.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .api import Layout, Network
from .engine.probe import Probe, as_feature_map, first_tensor, input_leaf, probe_layout
from .errors import ReprevalError


def _radical_inverse(index: int, base: int) -> float:
    """``index`` written in ``base`` and mirrored behind the point: the Halton sequence's coordinate."""
    value, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        value += digit * scale
        scale /= base
    return value


#: Where the changes go, as fractions of the input's height and width: the first 12 points of the (2, 3) Halton
#: sequence squeezed into [0.05, 0.95]; spread over the input and asymmetric (a transposed or mirrored reading
#: cannot pass)
PLACES = tuple((0.05 + 0.9 * _radical_inverse(k, 2), 0.05 + 0.9 * _radical_inverse(k, 3)) for k in range(1, 13))
#: Size of the change, in units of the (normalised) input
STEP = 4.0
#: A response this small relative to the tensor's scale counts as none (float32 rounding)
SILENT = 1e-6

#: Status of a placement that too few changes could tell (measured again with jittered weights)
UNCLEAR = "unclear"
#: Changes that must move a layer's tensor before its layout counts as measured
MIN_ANSWERED = 3
#: Prefix tokens (class, distillation, register tokens) tried when other readings of a sequence are compared
MAX_PREFIX = 8

#: Correlation, over rows and over columns, between where the input changed and where the layer changes, that a
#: reading must reach (readings that keep no positions give about 0 ± 0.2 with 24 changes)
FOLLOWS = 0.5

_CACHE: dict[tuple, LayerVerdict] = {}


@dataclass(frozen=True)
class Box:
    """A changed square of the input as fractions of its height and width: rows [top, bottom), columns
    [left, right)."""

    top: float
    bottom: float
    left: float
    right: float

    def cells(self, height: int, width: int) -> tuple[int, int, int, int]:
        """First and last row, first and last column of an h×w grid that the box overlaps."""
        return (
            int(self.top * height),
            max(int(self.top * height), math.ceil(self.bottom * height - 1e-9) - 1),
            int(self.left * width),
            max(int(self.left * width), math.ceil(self.right * width - 1e-9) - 1),
        )

    def fraction_away(self, row: int, column: int, height: int, width: int) -> float:
        """How far cell (row, column) lies from the nearest cell the box overlaps, in fractions of the input's side
        (comparable across grids; 0 inside the box)."""
        first_row, last_row, first_column, last_column = self.cells(height, width)
        rows = max(first_row - row, row - last_row, 0) / height
        columns = max(first_column - column, column - last_column, 0) / width
        return max(rows, columns)


@dataclass(frozen=True)
class LayerVerdict:
    """How a layer is read and what the measurement found.

    ``status``: ``verified`` (where the layer changes follows where the input changed, under the declared reading
    and better than under any other), ``no positions`` (a vector or a 1×1 map: nothing to place), or ``refused``
    (``reason`` says why). ``reach``: how a random projection of the embedding's gradient spreads over the
    positions: ``varies``, ``uniform`` (flat gradient maps), ``none`` (every gradient-based map is zero),
    ``unused`` (the tensor is not on the embedding's path), or ``""`` when not measured (refused)."""

    status: str
    reason: str = ""
    reach: str = ""

    @property
    def usable(self) -> bool:
        return self.status != "refused"


def verify_layers(network: Network, probes: list[Probe], seed: int = 0) -> dict[Probe, LayerVerdict]:
    """The verdict of every probe (see the module docstring). Where the input's changes cannot be told (the
    model at hand barely moves the layer: a random ResNet's zero-initialised branches), the placement is measured
    again with every parameter jittered: a layout belongs to the architecture, not to its weights. The placement
    is cached per architecture and input size; the reach is measured on the model at hand each time."""
    key = _architecture_key(network)
    placed = {
        probe: _CACHE[key, probe, probe_layout(network, probe)]
        for probe in probes
        if (key, probe, probe_layout(network, probe)) in _CACHE
    }
    todo = [probe for probe in probes if probe not in placed]
    was_training = network.module.training
    network.module.eval()
    try:
        if todo:
            found = _placement(network, todo, seed)
            unclear = [probe for probe in todo if found[probe].status == UNCLEAR]
            if unclear:
                with _jittered(network, seed):
                    found |= _placement(network, unclear, seed)
            for probe in todo:
                verdict = found[probe]
                if verdict.status == UNCLEAR:
                    verdict = LayerVerdict(
                        "refused", "too few input changes move its tensor to tell where it holds positions"
                    )
                placed[probe] = _CACHE[key, probe, probe_layout(network, probe)] = verdict
        reached = _reach(network, [probe for probe in probes if placed[probe].usable], seed)
    finally:
        network.module.train(was_training)
    return {probe: replace(placed[probe], reach=reached.get(probe, "")) for probe in probes}


@contextmanager
def _jittered(network: Network, seed: int):
    """Every parameter moved by seeded noise of about 5 % of its typical size (1e-3 where it is zero), restored
    afterwards."""
    generator = torch.Generator().manual_seed(seed)
    saved = [(parameter, parameter.detach().clone()) for parameter in network.module.parameters()]
    with torch.no_grad():
        for parameter, original in saved:
            scale = 0.05 * float(original.abs().mean()) if original.numel() else 0.0
            noise = torch.randn(original.shape, generator=generator).to(original)
            parameter.add_(noise * max(scale, 1e-3))
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter, original in saved:
                parameter.copy_(original)


def _architecture_key(network: Network) -> tuple:
    """Modules, their types, parameter and buffer shapes, integer buffers' values, the input's shape and the
    declared layouts."""
    digest = hashlib.sha256()
    for name, module in network.module.named_modules():
        digest.update(f"{name}:{type(module).__qualname__};".encode())
    for name, parameter in network.module.named_parameters():
        digest.update(f"{name}:{tuple(parameter.shape)};".encode())
    for name, buffer in network.module.named_buffers():  # index buffers (a fixed token order) are architecture
        digest.update(f"{name}:{tuple(buffer.shape)};".encode())
        if not buffer.is_floating_point():
            digest.update(buffer.detach().cpu().numpy().tobytes())
    digest.update(repr((network.layout, sorted(network.stage_layouts.items()))).encode())
    return (network.description, network.input_spec.shape, digest.hexdigest())


# -- where the input moves it ----------------------------------------------------------------------------------


def _placement(network: Network, probes: list[Probe], seed: int) -> dict[Probe, LayerVerdict]:
    inputs, boxes = _changed_inputs(network, seed)
    seen = _forward_values(network, probes, inputs)
    verdicts = {}
    for probe in probes:
        value = seen.get(probe)
        if value is None:
            verdicts[probe] = LayerVerdict("refused", "not used when computing the embedding")
            continue
        try:
            verdicts[probe] = _placed(network, probe, value, boxes)
        except ReprevalError as exc:
            verdicts[probe] = LayerVerdict("refused", exc.problem)
    return verdicts


def _changed_inputs(network: Network, seed: int) -> tuple[Tensor, list[Box]]:
    """A seeded input and copies with one square changed: a single pixel, and squares of about 1/16, 1/6 and 1/4 of
    the input's side, at each of :data:`PLACES` (a strided layer can be blind to single pixels: a random ResNet's
    zero-initialised residual branches leave a chain of strided 1×1 convolutions that reads one pixel in 16); the
    changed squares as fractions of the input (for text: one token each)."""
    spec = network.input_spec
    generator = torch.Generator().manual_seed(seed)
    if spec.tokens:
        return _changed_texts(network, generator)
    base = torch.randn(1, *spec.shape, generator=generator)
    rows, boxes = [base], []
    short = min(spec.height, spec.width)
    for side in sorted({max(1, round(short / 16)), max(2, round(short / 5))}):
        for fy, fx in PLACES:
            top = min(int(fy * spec.height), spec.height - side)
            left = min(int(fx * spec.width), spec.width - side)
            changed = base.clone()
            changed[0, :, top : top + side, left : left + side] += STEP
            rows.append(changed)
            boxes.append(
                Box(top / spec.height, (top + side) / spec.height, left / spec.width, (left + side) / spec.width)
            )
    return torch.cat(rows), boxes


def _changed_texts(network: Network, generator: torch.Generator) -> tuple[Tensor, list[Box]]:
    """Token ids of one text and copies with one inner token replaced (the first and last stay: special tokens)."""
    length = network.input_spec.tokens
    if network.tokenize is not None and network.noise_like is not None:
        base = network.tokenize([_SAMPLE_TEXT])[:1]
        other = network.noise_like(base, int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    else:  # ids without a tokenizer: small ids, another small id at the changed token
        base = torch.randint(1, 100, (1, length), generator=generator)
        other = (base + 1) % 100 + 1
    inner = list(range(1, length - 1)) or list(range(length))
    positions = sorted({inner[int(f * (len(inner) - 1))] for f in (0.0, 0.2, 0.45, 0.7, 1.0)})
    rows, boxes = [base], []
    for position in positions:
        changed = base.clone()
        changed[0, position] = other[0, position] if other[0, position] != base[0, position] else base[0, position] + 1
        rows.append(changed)
        boxes.append(Box(0.0, 1.0, position / length, (position + 1) / length))
    return torch.cat(rows), boxes


#: A text long enough for any token length: its word pieces fill the changed copies
_SAMPLE_TEXT = " ".join(["the quick brown fox jumps over the lazy dog near the old river bank"] * 16)


def _forward_values(network: Network, probes: list[Probe], inputs: Tensor) -> dict[Probe, Tensor | str]:
    """Each probe's tensor (first call) for the batch ``inputs``, or why there is none."""
    seen: dict[Probe, Tensor | str] = {}

    def keep(probe: Probe, value) -> None:
        tensor = first_tensor(value)
        seen[probe] = tensor.detach().float() if tensor is not None else f"a {type(value).__name__}"

    with _first_values(network, probes, keep), torch.no_grad():
        network.embed(inputs)
    return seen


@contextmanager
def _first_values(network: Network, probes: list[Probe], keep: Callable[[Probe, Any], None]):
    """Hand ``keep`` what each probe reads (its module's output, or first input) at the module's first call."""
    called: set[Probe] = set()

    def once(probe: Probe, value) -> None:
        if probe not in called:
            called.add(probe)
            keep(probe, value)

    handles = []
    for probe in probes:
        module = probe.module(network)
        if probe.side == "input":
            handles.append(
                module.register_forward_pre_hook(lambda _m, args, p=probe: once(p, args[0] if args else None))
            )
        else:
            handles.append(module.register_forward_hook(lambda _m, _a, out, p=probe: once(p, out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _placed(network: Network, probe: Probe, value: Tensor | str, boxes: list[Box]) -> LayerVerdict:
    """The verdict from a probe's tensors: row 0 for the unchanged input, row i for the change in ``boxes[i-1]``."""
    if isinstance(value, str):
        return LayerVerdict("refused", f"it returns {value} with no tensor in it")
    if value.dim() == 0 or value.shape[0] != len(boxes) + 1:
        return LayerVerdict(
            "refused",
            f"its tensor {tuple(value.shape[1:])} per input does not have one entry per input (windows or heads "
            "folded into the first dimension)",
        )
    layout = probe_layout(network, probe)
    declared = as_feature_map(value, probe.spec, layout)  # the engine's reading; ReprevalError when it cannot
    if declared.shape[-2] * declared.shape[-1] == 1:
        return LayerVerdict("no positions")
    answered = _peaks(declared, boxes)
    if len(answered) < MIN_ANSWERED:
        return LayerVerdict(UNCLEAR)
    height, width = declared.shape[-2:]
    follows = _following(declared, boxes)
    if follows is None:
        return LayerVerdict(UNCLEAR)
    if min(follows) < FOLLOWS:
        return LayerVerdict(
            "refused",
            f"read as declared ({_describe(layout, height, width)}), where its tensor changes does not follow where "
            f"the input changed (correlation {_pair(follows)}, {FOLLOWS} needed): its layout is not the declared one, "
            "or the layer mixes positions too much to tell (a larger input helps)",
        )
    own = _miss(answered, height, width)
    for name, reading in _other_readings(value, network.input_spec).items():
        if reading.shape[-2:] == declared.shape[-2:] and torch.equal(reading, declared):
            continue
        others = _peaks(reading, boxes)
        better = (
            len(others) == len(answered)
            and _miss(others, *reading.shape[-2:]) < own - 0.5 / max(height, width)
            and min(_following(reading, boxes) or (0.0,)) >= FOLLOWS
        )
        if better:
            return LayerVerdict(
                "refused",
                f"input changes land nearer where they were made when its tensor is read as {name} than as "
                f"declared ({_describe(layout, height, width)}): its layout is not the declared one",
            )
    return LayerVerdict("verified")


def _peaks(maps: Tensor, boxes: list[Box]) -> list[tuple[Box, tuple[int, int]]]:
    """For each change that moves the tensor: its box and the cell (row, column) where ``maps`` changes most
    relative to that cell's typical change."""
    relative, moved = _relative_change(maps)
    width = maps.shape[-1]
    return [
        (box, divmod(int(energy.flatten().argmax()), width))
        for box, energy, answered in zip(boxes, relative, moved.tolist())
        if answered
    ]


def _relative_change(maps: Tensor) -> tuple[Tensor, Tensor]:
    """How much each cell of ``maps`` [1 + changes, C, h, w] changes with each change (summed over channels), divided
    by that cell's mean change over all changes (cells that respond strongly to anything, such as a random
    network's high-gain positions or a border, do not win every time); and which changes move the tensor at all."""
    change = (maps[1:] - maps[:1]).abs().sum(dim=1)  # [changes, h, w]
    floor = SILENT * float(maps[:1].abs().amax().clamp_min(1e-12)) * maps.shape[1]
    moved = change.flatten(1).amax(dim=1) > floor
    typical = change[moved].mean(dim=0) if bool(moved.any()) else change.mean(dim=0)
    return change / typical.clamp_min(float(typical.amax()) * 1e-6 + 1e-30), moved


def _miss(peaks: list[tuple[Box, tuple[int, int]]], height: int, width: int) -> float:
    """Mean distance, as a fraction of the input's side, between each change and where it peaks."""
    return sum(box.fraction_away(row, column, height, width) for box, (row, column) in peaks) / len(peaks)


def _following(maps: Tensor, boxes: list[Box]) -> tuple[float, float] | None:
    """Correlation, over the changes that move the tensor, between where each change was made and the centroid of
    where ``maps`` changes (relative to each cell's typical change), for rows and for columns; 1.0 for an axis
    of a single cell; None when the changes that move it all land alike (too few to tell)."""
    relative, moved = _relative_change(maps)
    height, width = maps.shape[-2:]
    rows = (torch.arange(height, dtype=relative.dtype) + 0.5) / height
    columns = (torch.arange(width, dtype=relative.dtype) + 0.5) / width
    kept = relative[moved]
    weights = kept / kept.flatten(1).sum(dim=1).clamp_min(1e-30)[:, None, None]
    found = torch.stack([(weights.sum(dim=2) * rows).sum(dim=1), (weights.sum(dim=1) * columns).sum(dim=1)])
    made = torch.tensor(
        [
            [(box.top + box.bottom) / 2 for box, m in zip(boxes, moved.tolist()) if m],
            [(box.left + box.right) / 2 for box, m in zip(boxes, moved.tolist()) if m],
        ],
        dtype=relative.dtype,
    )
    rows_follow, columns_follow = _correlation(made[0], found[0], height), _correlation(made[1], found[1], width)
    if rows_follow is None or columns_follow is None:
        return None
    return rows_follow, columns_follow


def _correlation(made: Tensor, found: Tensor, cells: int) -> float | None:
    if cells == 1:
        return 1.0
    if len(made) < MIN_ANSWERED or float(made.std()) == 0 or float(found.std()) < 1e-6:
        return None
    return float(torch.corrcoef(torch.stack([made, found]))[0, 1])


def _pair(values: tuple[float, float]) -> str:
    return f"{values[0]:.2f} over rows, {values[1]:.2f} over columns"


def _other_readings(value: Tensor, spec) -> dict[str, Tensor]:
    """Ways the same tensor could be laid out, as [batch, C, h, w]: channels first or last, rows and columns
    swapped, and for token sequences every small number of prefix tokens with a grid of the input's aspect."""
    readings: dict[str, Tensor] = {}
    if value.dim() == 4:
        readings["channels-first"] = value
        readings["channels-last"] = value.permute(0, 3, 1, 2)
        for name in list(readings):
            readings[name + ", rows and columns swapped"] = readings[name].transpose(-1, -2)
    elif value.dim() == 3:
        tokens, channels = value.shape[1:]
        for prefix in range(min(tokens, MAX_PREFIX + 1)):
            for height, width in _grids(tokens - prefix, spec):
                grid = value[:, prefix:].reshape(len(value), height, width, channels).permute(0, 3, 1, 2)
                readings[f"{prefix} prefix tokens + a {height}×{width} grid"] = grid
                readings[f"{prefix} prefix tokens + a {height}×{width} grid in column order"] = (
                    value[:, prefix:].reshape(len(value), width, height, channels).permute(0, 3, 2, 1)
                )
    return readings


def _grids(count: int, spec) -> list[tuple[int, int]]:
    """Grids (h, w) of ``count`` cells with the input's aspect (a 1×N row for a token sequence)."""
    if spec.tokens:
        return [(1, count)] if count > 0 else []
    return [
        (height, count // height)
        for height in range(1, count + 1)
        if count % height == 0 and height * spec.width == (count // height) * spec.height
    ]


def _describe(layout: Layout, height: int, width: int) -> str:
    if layout.kind == "tokens":
        return f"{layout.prefix_tokens} prefix tokens + a {height}×{width} grid" + (
            " in the model's own order" if layout.order else ""
        )
    return f"{layout.kind.replace('_', '-')}, {height}×{width} positions"


# -- whether its positions reach the embedding ------------------------------------------------------------------


def _reach(network: Network, probes: list[Probe], seed: int) -> dict[Probe, str]:
    """For each probe: ``varies``/``uniform``/``none``, from the gradient of a random projection of the embedding."""
    if not probes:
        return {}
    inputs, _ = _changed_inputs(network, seed)
    seen: dict[Probe, Tensor] = {}

    def keep(probe: Probe, value) -> None:
        tensor = first_tensor(value)
        if tensor is not None and tensor.requires_grad:
            seen[probe] = tensor

    with _first_values(network, probes, keep), torch.enable_grad():
        embedding = network.embed(input_leaf(inputs[:1]))
    generator = torch.Generator().manual_seed(seed + 1)
    projection = torch.randn(embedding.shape, generator=generator).to(embedding)
    tensors = list(seen.values())
    gradients = torch.autograd.grad(embedding, tensors, projection, allow_unused=True) if tensors else []
    reach = {}
    for probe in probes:
        if probe not in seen:
            reach[probe] = "unused"
            continue
        gradient = gradients[list(seen).index(probe)]
        reach[probe] = _spread(gradient, probe, network)
    return reach


def _spread(gradient: Tensor | None, probe: Probe, network: Network) -> str:
    if gradient is None:  # not on the embedding's path at all
        return "unused"
    per_position = as_feature_map(gradient.float(), probe.spec, probe_layout(network, probe))[0]  # [C, h, w]
    if not bool(per_position.ne(0).any()):
        return "none"
    flat = per_position.flatten(1)
    if flat.shape[1] > 1 and bool(torch.allclose(flat, flat[:, :1].expand_as(flat), rtol=1e-5, atol=0)):
        return "uniform"
    return "varies"


# -- what validation does with the verdicts ----------------------------------------------------------------------


def check_layouts(network: Network, probes: list[Probe]) -> dict[Probe, ReprevalError]:
    """For each probe that cannot be read (its verdict refused), the error naming why."""
    return {
        probe: ReprevalError(
            f"layer {probe.spec!r} cannot be read: {verdict.reason}",
            fix="probe another layer: `repreval layers MODEL` shows how each is read and whether it was verified",
        )
        for probe, verdict in verify_layers(network, probes).items()
        if not verdict.usable
    }


NO_REACH = "its positions never reach the embedding: every gradient-based map of it is 0"


def usable_defaults(network: Network, defaults: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The default layers that are verified and reach the embedding, and a note for each one left out."""
    verdicts = verify_layers(network, [Probe.parse(layer) for layer in defaults])
    kept, notes = [], []
    for layer, verdict in zip(defaults, verdicts.values()):
        if not verdict.usable:
            notes.append(f"default layer {layer!r} left out: {verdict.reason}")
        elif verdict.reach == "none":
            notes.append(f"default layer {layer!r} left out: {NO_REACH}")
        else:
            kept.append(layer)
    return tuple(kept), notes
