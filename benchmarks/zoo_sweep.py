"""The whole-zoo layout sweep: one model of every timm architecture family (the variant with the fewest parameters,
random init, seed 0, a small input), its feature_info stages and a few risky layers, each either refused by
repreval at validation or checked against this script's own oracle; writes the family table to docs/layouts.md.

The oracle does not share repreval's layout code: plain autograd on the unmodified forward pass, the probed
tensor (a module's output, its first tensor when it returns a tuple) laid out as [C, h, w] by a gather index this
script finds by value matching. To find it, the probed tensor is replaced by distinct integer codes and timm's own
NCHW tensors are searched for a rearrangement of them (``forward_intermediates(..., output_fmt='NCHW')``: ViT
drops prefix tokens, Hiera re-rolls, Swin permutes; and the inputs of 2-D convolutions); a layer that is not a
stage is followed upstream through modules that act per position (activations, norms and linear layers over the
last dimension) to a tensor whose layout is known (a convolution's output is [B, C, h, w] by torch's contract).
A layer whose tensor no such search lays out has no oracle. Classes per (family, layer): ``verified`` (accepted,
maps equal to the oracle's, relative 1e-5), ``refused`` (with repreval's one-line reason), ``WRONG`` (accepted,
maps differ from the oracle's), ``no oracle`` (accepted, not checkable here), ``run failed`` (accepted at
validation, failed when computing maps), and per family ``build failed``. Exit status 1 when any layer is WRONG.

Run from the repository root (every family takes minutes; ``--families`` takes timm module names)::

    .venv/bin/python benchmarks/zoo_sweep.py [--families hiera,pvt_v2] [--out docs/layouts.md] [--size 64]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm's hub is never reached: random init only
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradients", "activations_x_gradients", "grad_cam")
TOLERANCE = 1e-5  # relative to the oracle map's largest value (Grad-CAM: to its largest sum of absolute terms)
CLASSES = ("verified", "refused", "WRONG", "no oracle", "run failed")

#: torch's contract: these modules' outputs are [B, C, h, w]
NCHW_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: modules acting on each vector along the last dimension alone (a position keeps its place)
LAST_DIM = {"Linear", "LayerNorm", "LayerNormFp32", "LayerNormAct", "RmsNorm", "RmsNormFp32", "SimpleNorm",
            "SimpleNormFp32", "LayerScale"}  # fmt: skip
#: modules acting on each element alone
ELEMENTWISE = {"Identity", "Dropout", "DropPath", "ReLU", "ReLU6", "GELU", "GELUTanh", "QuickGELU", "SiLU", "Swish",
               "Hardswish", "HardSwish", "Hardsigmoid", "HardSigmoid", "Sigmoid", "Tanh", "LeakyReLU", "ELU", "Mish",
               "Softplus", "StarReLU"}  # fmt: skip


@dataclass
class LayerResult:
    """One (family, layer) verdict; ``zero``: the oracle's gradient maps are all 0 (the layer cannot score);
    ``cells``: the oracle's map size h·w (1: no positions to place)."""

    layer: str
    verdict: str
    reason: str = ""
    zero: bool = False
    cells: int = 0


@dataclass
class FamilyResult:
    """One family's model, input size and layer verdicts (``build_error`` where it could not be built)."""

    family: str
    model: str
    size: int | None = None
    layers: list[LayerResult] = field(default_factory=list)
    build_error: str = ""
    seconds: float = 0.0


# -- which model of each family -------------------------------------------------------------------------------


def families() -> dict[str, list[str]]:
    """timm module (the family) -> the model names it defines."""
    import timm
    from timm.models import model_entrypoint

    grouped: dict[str, list[str]] = collections.defaultdict(list)
    for name in timm.list_models():
        grouped[model_entrypoint(name).__module__.rpartition(".")[2]].append(name)
    return dict(grouped)


def smallest(names: list[str]) -> str:
    """The model with the fewest parameters, counted on the meta device (no memory, no init)."""
    import timm

    counts = {}
    for name in names:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                counts[name] = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        except Exception:  # a variant that cannot be built on meta: left out of the choice
            continue
    return min(counts, key=lambda name: (counts[name], name)) if counts else names[0]


def build(plugins, name: str, size: int):
    """(network, input size) through repreval's timm source at ``size``, else at the size nearest it that the
    refusal names; raises ReprevalError (the first refusal) when none builds."""
    from repreval.errors import ReprevalError

    try:
        return _build_at(plugins, name, size), size
    except ReprevalError as exc:
        sizes = sorted({int(s) for s in re.findall(r"input_size=\[\d+,(\d+),\d+\]", exc.fix or "")})
        for other in sorted(sizes, key=lambda s: (abs(s - size), s)):
            try:
                return _build_at(plugins, name, other), other
            except ReprevalError:
                continue
        raise


def _build_at(plugins, name: str, size: int):
    from repreval.config import ModelConfig
    from repreval.models import Model

    config = ModelConfig(id=name, spec=f"timm:{name}", options={"input_size": [3, size, size]})
    network = Model(config, plugins.model_source.create("timm")).untrained(0)
    network.module.eval()
    return network


def layers_of(network) -> list[str]:
    """The default layers, every feature_info module (even one repreval dropped) and a few risky others: the
    first patch embedding, an attention internal, a downsampling block."""
    modules = dict(network.module.named_modules())
    names = list(network.default_layers)
    names += [info["module"] for info in getattr(network.module, "feature_info", None) or [] if info.get("module")]
    for pattern in (r"(^|\.)patch_embeds?(\.0)?$", r"(^|\.)downsample$"):
        skip = (nn.Identity, nn.ModuleList, nn.ModuleDict)  # containers are never called
        names += [n for n, m in modules.items() if re.search(pattern, n) and not isinstance(m, skip)][:1]
    for pattern in (r"\.attn\.q_norm$", r"\.attn\.qkv$"):  # one attention internal, from a middle block
        found = [n for n in modules if re.search(pattern, n)]
        if found:
            names.append(found[len(found) // 2])
            break
    return list(dict.fromkeys(names))


# -- the oracle: where timm's own NCHW tensors find the probed tensor's elements ------------------------------


class Trace:
    """One unmodified forward pass: for each module (first call) its input and output tensors (first tensor of a
    tuple), when it started and finished, and timm's NCHW intermediates."""

    def __init__(self, model: nn.Module, image: Tensor) -> None:
        self.model, self.image = model, image
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        self.started: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self.modules = dict(model.named_modules())
        self.memo: dict[str, Tensor | None] = {}
        with _hooks(self.modules, self._before, self._after):
            self.intermediates = anchor_pass(model, image)

    def _before(self, name: str, args: tuple) -> None:
        self.started.setdefault(name, len(self.started) + len(self.finished))
        if args and isinstance(args[0], Tensor):
            self.inputs.setdefault(name, args[0].detach().clone())

    def _after(self, name: str, output) -> None:
        self.finished.setdefault(name, len(self.started) + len(self.finished))
        tensor = first_tensor(output)
        if tensor is not None:
            self.outputs.setdefault(name, tensor.detach().clone())


def first_tensor(value) -> Tensor | None:
    """A tensor itself, or the first element of a tuple or list when that is a tensor."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


class _hooks:
    """Context: ``before(name, args)`` / ``after(name, output)`` on every named module's first call; ``after`` may
    return a replacement output."""

    def __init__(self, modules: dict[str, nn.Module], before=None, after=None) -> None:
        self.handles = []
        for name, module in modules.items():
            if not name:
                continue
            if before is not None:
                self.handles.append(module.register_forward_pre_hook(lambda _m, a, n=name: before(n, a)))
            if after is not None:
                self.handles.append(module.register_forward_hook(lambda _m, _a, out, n=name: after(n, out)))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def anchor_pass(model: nn.Module, image: Tensor) -> list[Tensor]:
    """timm's NCHW intermediates of every stage (``forward_intermediates``; [] where the model has none or the
    pass fails: the hooks' records until then still count)."""
    kwargs = {"indices": None, "output_fmt": "NCHW", "intermediates_only": True, "norm": False}
    with torch.no_grad():
        try:
            if not hasattr(model, "forward_intermediates"):
                model.forward_features(image)
                return []
            for drop in ((), ("norm",), ("norm", "output_fmt")):
                try:
                    out = model.forward_intermediates(image, **{k: v for k, v in kwargs.items() if k not in drop})
                    return [t for t in out if isinstance(t, Tensor)]
                except TypeError as exc:
                    if "unexpected keyword" not in str(exc):
                        raise
        except Exception:  # codes can break a model's own checks
            pass
    return []


def codes_like(tensor: Tensor) -> Tensor:
    """Distinct non-negative integers (exact in float32) in ``tensor``'s shape."""
    return torch.arange(tensor.numel(), dtype=torch.float32).reshape(tensor.shape).to(tensor.dtype)


def rearrangement(tensor: Tensor, count: int, *, whole: bool = False) -> Tensor | None:
    """The codes ``tensor`` holds (a long tensor of its shape) when it is a rearrangement of a subset (``whole``:
    of all) of ``count`` codes, at least half of them; else None."""
    values = tensor.detach().flatten().double()
    if values.numel() * 2 < count or (whole and values.numel() != count):
        return None
    if not torch.equal(values, values.round()) or values.min() < 0 or values.max() >= count:
        return None
    index = values.long()
    return index.reshape(tensor.shape) if index.unique().numel() == index.numel() else None


def coded_pass(trace: Trace, replaced: str, watched: tuple[str, ...] = ()) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Run timm's intermediates with the first output of module ``replaced`` swapped for codes: (the
    intermediates, the first input of each module in ``watched`` and of every NCHW module)."""
    seen: dict[str, Tensor] = {}
    done: list[bool] = []
    nchw = {n for n, m in trace.modules.items() if isinstance(m, nn.Conv2d)}

    def before(name, args):
        if (name in watched or name in nchw) and args and isinstance(args[0], Tensor):
            seen.setdefault(name, args[0].detach().clone())

    def after(name, output):
        if name != replaced or done:
            return None
        done.append(True)
        tensor = first_tensor(output)
        if tensor is None:
            return None
        codes = codes_like(tensor)
        return codes if isinstance(output, Tensor) else type(output)([codes, *output[1:]])

    with _hooks(trace.modules, before, after):
        intermediates = anchor_pass(trace.model, trace.image)
    return intermediates, seen


def layout_index(trace: Trace, name: str, depth: int = 0) -> Tensor | None:
    """[C, h, w] indices into the flattened first output of module ``name`` (batch of one), laying it out as
    timm's NCHW tensors do; None where no rule of the oracle applies."""
    if name not in trace.memo:
        trace.memo[name] = None  # a cycle finds nothing
        trace.memo[name] = _find_index(trace, name, depth)
    return trace.memo[name]


def _find_index(trace: Trace, name: str, depth: int) -> Tensor | None:
    output = trace.outputs.get(name)
    if output is None or output.shape[0] != 1 or output.numel() >= 2**24 or depth > 8:
        return None
    module = trace.modules[name]
    if isinstance(module, NCHW_MODULES) and output.dim() == 4:
        return torch.arange(output.numel()).reshape(output.shape[1:])
    inner = _same_output_inside(trace, name)
    if inner is not None:
        return layout_index(trace, inner, depth + 1)
    found = _downstream(trace, name, output.numel())
    if found is None and _per_position(module) is not None:
        found = _upstream(trace, name, depth)
    return found


def _same_output_inside(trace: Trace, name: str) -> str | None:
    """The innermost module inside ``name`` returning the very same tensor (a container's last step)."""
    output = trace.outputs[name]
    inside = [n for n in trace.outputs if n.startswith(name + ".") and torch.equal(trace.outputs[n], output)]
    inside = [n for n in inside if trace.finished.get(n, -1) < trace.finished[name]]
    return max(inside, key=lambda n: trace.finished[n]) if inside else None


def _downstream(trace: Trace, name: str, count: int) -> Tensor | None:
    """Codes at ``name``: the first of timm's intermediates, else of the convolutions' inputs, holding them; the
    unmodified pass's values must agree there too (1e-6)."""
    intermediates, inputs = coded_pass(trace, name)
    convs = sorted(inputs, key=lambda n: trace.started.get(n, 0))
    pairs = [*zip(intermediates, trace.intermediates), *((inputs[n], trace.inputs.get(n)) for n in convs)]
    values = trace.outputs[name].flatten()
    for coded, real in pairs:
        if coded.dim() != 4 or coded.shape[0] != 1 or real is None or real.shape != coded.shape:
            continue
        index = rearrangement(coded[0], count)
        if index is not None and torch.allclose(values[index], real[0], rtol=1e-6, atol=1e-6):
            return index
    return None


def _per_position(module: nn.Module) -> str | None:
    """``element`` for modules acting per element, ``last`` for those acting along the last dimension, else None."""
    kind = type(module).__name__
    if kind in ELEMENTWISE:
        return "element"
    return "last" if kind in LAST_DIM else None


def _upstream(trace: Trace, name: str, depth: int) -> Tensor | None:
    """The index of a per-position module's output from that of its input: the input is found as a
    rearrangement of an earlier module's output (codes there, read at this module's input)."""
    given = trace.inputs.get(name)
    if given is None:
        return None
    start = trace.started[name]
    earlier = [n for n, t in trace.outputs.items() if trace.finished[n] < start and t.numel() == given.numel()]
    for source in sorted(earlier, key=lambda n: -trace.finished[n])[:3]:
        _, inputs = coded_pass(trace, source, (name,))
        moved = rearrangement(inputs[name], given.numel(), whole=True) if name in inputs else None
        source_index = layout_index(trace, source, depth + 1) if moved is not None else None
        if moved is not None and source_index is not None:
            where = torch.empty_like(moved.flatten())
            where[moved.flatten()] = torch.arange(moved.numel())
            return _through(trace, name, where[source_index], given.shape)
    return None


def _through(trace: Trace, name: str, index: Tensor, given: torch.Size) -> Tensor | None:
    """Carry ``index`` (into the module's input, of shape ``given``) to the module's output. Along the last
    dimension, each input position must hold the channels of one cell, or of one s×s block of cells (a patch
    merge), of the reference grid; the output is then laid out on that grid (or the grid of blocks)."""
    output = trace.outputs[name]
    if _per_position(trace.modules[name]) == "element":
        return index if output.shape == given else None
    position = index // given[-1]  # [C, h, w]: the input position holding each reference element
    if output.shape[:-1] != given[:-1] or not torch.equal(position, position[:1].expand_as(position)):
        return None
    grid = _blocks(position[0])
    if grid is None:
        return None
    width = output.shape[-1]
    return grid[None] * width + torch.arange(width)[:, None, None]


def _blocks(position: Tensor) -> Tensor | None:
    """[h/s, w/s] positions when ``position`` [h, w] is constant on s×s blocks and distinct between blocks, for the
    smallest such s; else None."""
    height, width = position.shape
    for side in range(1, min(height, width) + 1):
        if height % side or width % side:
            continue
        blocks = position.reshape(height // side, side, width // side, side)
        coarse = blocks[:, 0, :, 0]
        constant = torch.equal(blocks, coarse[:, None, :, None].expand_as(blocks))
        if constant and coarse.unique().numel() == coarse.numel():
            return coarse
    return None


# -- the oracle's maps and the verdicts ---------------------------------------------------------------------


def oracle_maps(network, layer: str, index: Tensor, image: Tensor, components: Tensor) -> dict[str, tuple]:
    """Per-component maps [1, k, h, w] of each method by plain autograd on the unmodified forward pass, the probed
    tensor and its gradients laid out by ``index``; each with the size of what it sums (the scale of float32
    rounding: Grad-CAM's channel sum cancels)."""
    module = dict(network.module.named_modules())[layer]
    seen: list[Tensor] = []

    def keep(_module, _args, output):
        if seen:
            return None
        tensor = first_tensor(output).clone()  # an identity, so in-place ops downstream leave it intact
        seen.append(tensor)
        return tensor if isinstance(output, Tensor) else type(output)([tensor, *output[1:]])

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            embedding = network.embed(image.clone().requires_grad_(True))
    finally:
        handle.remove()
    tensor = seen[0]
    grads = [  # a tensor the embedding does not use gets 0
        torch.autograd.grad(embedding[:, d].sum(), tensor, retain_graph=True, allow_unused=True)[0]
        for d in components.tolist()
    ]
    grads = [torch.zeros_like(tensor) if g is None else g for g in grads]
    activation = tensor.detach().flatten()[index][None]  # [1, C, h, w]
    gradients = torch.stack([g.flatten()[index] for g in grads])[None]  # [1, k, C, h, w]
    terms = gradients.mean(dim=(-2, -1), keepdim=True) * activation[:, None]  # Grad-CAM's, summed over channels
    return {
        "gradients": (gradients.abs().mean(dim=2),) * 2,
        "activations_x_gradients": ((activation[:, None] * gradients).abs().mean(dim=2),) * 2,
        "grad_cam": (terms.sum(dim=2).relu(), terms.abs().sum(dim=2)),
    }


def repreval_maps(plugins, network, layer: str, image: Tensor, components: Tensor) -> dict[str, Tensor]:
    """repreval's per-component maps [1, k, h, w] of each method (reverse mode)."""
    from repreval.engine import MapRequest, compute_maps
    from repreval.engine.probe import Probe

    abs_mean = plugins.aggregator.create("abs")
    requests = {}
    for name in METHODS:
        method = plugins.saliency.create(name)
        requests[name] = MapRequest(Probe.parse(layer), method, None if method.spatial else abs_mean)
    maps = compute_maps(network, list(requests.values()), image, strategy="reverse", components=components)
    return {name: maps[request] for name, request in requests.items()}


def refusals(network, layers: list[str]) -> dict[str, str]:
    """repreval's one-line reason for refusing each refused layer at validation (one check for all of them)."""
    from repreval.engine.probe import Probe
    from repreval.errors import ReprevalError
    from repreval.layouts import check_layouts

    reasons, probes = {}, []
    for layer in layers:
        try:
            Probe.parse(layer).module(network)
            probes.append(Probe.parse(layer))
        except ReprevalError as exc:
            reasons[layer] = exc.problem
    reasons |= {probe.spec: problem.problem for probe, problem in check_layouts(network, probes).items()}
    return {layer: reason.splitlines()[0] for layer, reason in reasons.items()}


def judge(plugins, network, trace: Trace, layer: str, image: Tensor, components: Tensor) -> LayerResult:
    """The verdict on one layer that repreval accepts (see the module docstring)."""
    from repreval.errors import ReprevalError

    try:
        got = repreval_maps(plugins, network, layer, image, components)
    except ReprevalError as exc:
        return LayerResult(layer, "run failed", exc.problem.splitlines()[0])
    index = layout_index(trace, layer)
    if index is None:
        return LayerResult(layer, "no oracle", "no rearrangement of timm's NCHW tensors found")
    expected = oracle_maps(network, layer, index, image, components)
    zero, cells = bool(expected["gradients"][0].abs().max() == 0), index[0].numel()
    for method in METHODS:
        truth, size = expected[method]
        if got[method].shape != truth.shape:
            shapes = ("×".join(map(str, m.shape[-2:])) for m in (got[method], truth))
            return LayerResult(layer, "WRONG", "map {}, the tensor's grid is {}".format(*shapes), zero, cells)
        error = float((got[method] - truth).abs().max() / size.abs().max().clamp_min(1e-12))
        if not error <= TOLERANCE:
            return LayerResult(layer, "WRONG", f"{method} differs by {error:.2g} (relative)", zero, cells)
    return LayerResult(layer, "verified", "", zero, cells)


def sweep_family(plugins, family: str, model: str, size: int) -> FamilyResult:
    """Build ``model`` and judge each of its layers (seed 0, one random image, 3 live components)."""
    from repreval.errors import ReprevalError

    started = time.perf_counter()
    result = FamilyResult(family, model)
    torch.manual_seed(0)
    try:
        network, result.size = build(plugins, model, size)
    except ReprevalError as exc:
        result.build_error = exc.problem.splitlines()[0][:200]
        return result
    image = torch.rand(1, *network.input_spec.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # three live components (a random ReLU head leaves many at exactly 0)
        components = network.embed(image)[0].abs().topk(3).indices
    trace = Trace(network.module, image)
    layers = layers_of(network)
    refused = refusals(network, layers)
    for layer in layers:
        if layer in refused:
            result.layers.append(LayerResult(layer, "refused", refused[layer]))
            continue
        try:
            result.layers.append(judge(plugins, network, trace, layer, image, components))
        except Exception as exc:  # the sweep reports every layer, whatever breaks
            result.layers.append(LayerResult(layer, "run failed", f"{type(exc).__name__}: {exc}"[:160]))
    result.seconds = time.perf_counter() - started
    return result


# -- the table ------------------------------------------------------------------------------------------------

INTRO = """# Layouts across the timm zoo

Generated by `python benchmarks/zoo_sweep.py` (do not edit by hand). One model per timm architecture family (the
variant with the fewest parameters, random init, seed 0, a {size}×{size} input or the nearest size it takes): its
feature_info stages, its default layers and a few risky layers (the first patch embedding, a downsampling block, an
attention internal), each refused by repreval at validation or checked against the sweep's own oracle: plain autograd
on the unmodified forward pass, the tensor laid out by matching its values against timm's own NCHW tensors (see the
script's docstring). `verified`: maps equal to the oracle's for gradients, activations×gradients and Grad-CAM on 3
components (to {tolerance:g} of the largest map value; for Grad-CAM, of its largest sum of absolute terms over
channels); `WRONG`: accepted and different; `no oracle`: accepted, not checkable by the sweep; `run failed`: accepted
at validation, failed when computing maps; `zero` (a note): the oracle's gradient maps are all 0 (no path from the
layer's positions to the embedding).
"""

HOW_LAYERS_ARE_READ = """## How repreval reads a layer

A model source *declares* how a layer's tensor is laid out (channels-first, channels-last, tokens with prefix
tokens and a grid, optionally in the model's own token order as for Hiera). Before a layer is used, `validate`
*measures* that declaration on the model at hand (`repreval/layouts.py`): one batched forward pass on a seeded
random input and on 24 copies with one square changed (12 Halton-spread places, two sizes; for text one token
replaced). Read as declared, the centroid of where the layer's tensor changes (each cell's change relative to its
typical change) must follow where the input changed: correlation at least 0.5 over rows and over columns (a reading
that keeps no positions gives about 0 ± 0.2), and no other reading of the same tensor (channels first or last, rows
and columns swapped, other prefix counts, column order) may land nearer. Otherwise the layer is refused with the
figures. A layer that too few changes move is measured again with every parameter jittered by about 5 % (a layout
belongs to the architecture, not to its weights). One backward pass of a random projection of the embedding then
tells whether the layer's positions reach the embedding: `none` (every gradient map is 0: a ViT's last block under
class-token pooling) leaves it out of the default layers with a note; `uniform` (flat gradient maps, right before
global pooling) is shown by `repreval layers`. Placements are cached per architecture and input size.
"""


def reason_kind(reason: str) -> str:
    """A refusal reason with its names, numbers and parentheses elided and its explanation (after a colon) cut,
    so that reasons group."""
    text = re.sub(r"^layer '[^']*' cannot be read: ", "", reason)
    text = re.sub(r"'[^']*'", "'…'", text)
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r" ?\([^()]*\)", "", text)
    return re.sub(r"-?\d+(\.\d+)?", "N", text).split(": ")[0]


def counts(result: FamilyResult) -> collections.Counter:
    """Layers per class of one family."""
    return collections.Counter(layer.verdict for layer in result.layers)


def markdown(results: list[FamilyResult], size: int) -> str:
    """docs/layouts.md: what the sweep does, one row per family, totals by class and by refusal reason."""
    lines = [
        INTRO.format(size=size, tolerance=TOLERANCE),
        HOW_LAYERS_ARE_READ,
        "## Families",
        "",
        "| family | model | input | verified | refused | WRONG | no oracle | run failed | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(result) for result in results]
    lines += ["", *_totals(results)]
    return "\n".join(lines) + "\n"


def _row(result: FamilyResult) -> str:
    if result.build_error:
        return f"| {result.family} | {result.model} | – | | | | | | build failed: {_cell(result.build_error)} |"
    tally = counts(result)
    notes = [f"`{r.layer}`: {r.verdict}" + (f" ({_cell(r.reason)})" if r.reason else "") for r in result.layers
             if r.verdict != "verified"]  # fmt: skip
    zeros = [r.layer for r in result.layers if r.zero]
    if zeros:
        notes.append("zero: " + ", ".join(f"`{z}`" for z in zeros))
    cells = " | ".join(str(tally.get(kind, 0)) for kind in CLASSES)
    return f"| {result.family} | {result.model} | {result.size} | {cells} | {'<br>'.join(notes)} |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _totals(results: list[FamilyResult]) -> list[str]:
    built = [r for r in results if not r.build_error]
    tally = sum((counts(r) for r in built), collections.Counter())
    reasons = collections.Counter(reason_kind(layer.reason) for r in built for layer in r.layers
                                  if layer.verdict == "refused")  # fmt: skip
    zeros = [f"{r.family} `{layer.layer}`" for r in built for layer in r.layers if layer.zero]
    single = sum(layer.verdict == "verified" and layer.cells == 1 for r in built for layer in r.layers)
    lines = [
        "## Totals",
        "",
        f"{len(results)} families, {len(results) - len(built)} not built; layers: "
        + ", ".join(f"{tally.get(kind, 0)} {kind}" for kind in CLASSES)
        + f" ({single} of the verified on a 1×1 grid); {len(zeros)} with all-zero gradient maps"
        + (": " + ", ".join(zeros) if zeros else "")
        + ".",
        "",
        "| refusal reason | layers |",
        "|---|---|",
    ]
    lines += [f"| {_cell(reason)} | {count} |" for reason, count in reasons.most_common()]
    failed = collections.Counter(reason_kind(r.build_error) for r in results if r.build_error)
    if failed:
        lines += ["", "| build failure | families |", "|---|---|"]
        lines += [f"| {_cell(reason)} | {count} |" for reason, count in failed.most_common()]
    return lines


def _print(result: FamilyResult) -> None:
    if result.build_error:
        print(f"{result.family:28} {result.model:36} build failed: {result.build_error}", flush=True)
        return
    tally = ", ".join(f"{n} {kind}" for kind, n in sorted(counts(result).items()))
    print(f"{result.family:28} {result.model:36} {result.size:4} {tally} ({result.seconds:.0f} s)", flush=True)
    for layer in result.layers:
        if layer.verdict != "verified":
            print(f"    {layer.layer}: {layer.verdict} {layer.reason}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Sweep the families, print each, write the table; 1 when any layer is WRONG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", help="comma-separated timm module names (default: all)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "layouts.md"), help="the markdown table to write")
    parser.add_argument("--size", type=int, default=64, help="input size tried first")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from repreval.plugins import load_plugins

    plugins = load_plugins()
    zoo = families()
    chosen = args.families.split(",") if args.families else sorted(zoo)
    unknown = [f for f in chosen if f not in zoo]
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; families are timm module names: {', '.join(sorted(zoo))}")
    results = []
    for family in chosen:
        results.append(sweep_family(plugins, family, smallest(zoo[family]), args.size))
        _print(results[-1])
    Path(args.out).write_text(markdown(results, args.size))
    print("\n".join(_totals(results)[:3]))
    return 1 if any(layer.verdict == "WRONG" for r in results for layer in r.layers) else 0


if __name__ == "__main__":
    sys.exit(main())
