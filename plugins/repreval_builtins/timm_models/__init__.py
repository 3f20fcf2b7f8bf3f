"""Model source ``timm:<name>``: any timm backbone.

Random initialisation by timm's own initialisers; weights from a local file (the host loads it) or,
with ``weights: hub``, from timm's hub when the machine is online. Input size and normalisation come
from timm's data config. Default probe layers: the stages timm reports in ``feature_info``. The
embedding: pooled backbone features (``forward_head(..., pre_logits=True)``).

Options: ``kwargs`` (passed to ``timm.create_model``, e.g. ``{drop_rate: 0}``), ``input_size``
([C, H, W], overrides the data config: smaller inputs make quick runs). Models built for a fixed size
(ViT, Swin, MaxViT, ...) are built for ``input_size`` (timm's ``img_size``); a size a model cannot take is
refused when the model is built, naming sizes it can.

Layouts: each stage timm lists in ``feature_info`` is read by one forward pass on a zero input and
declared from what timm says about it: a 4-D tensor whose dim 1 (or, for ``output_fmt`` NHWC, dim 3) has
the stage's ``num_chs`` is channels-first (channels-last); a [B, N, C] tensor is tokens whose grid is the
input size over the stage's ``reduction`` and whose extra tokens are the model's ``num_prefix_tokens``.
Anything else stays undeclared, and probing it is refused at validation.
"""

from __future__ import annotations

from repreval.api import InputSpec, Layout, ModelSource, Network, ReprevalError, hookimpl, suggest

#: Square input sizes tried, near the one asked for, when a model refuses a size
_CANDIDATE_SIZES = (32, 48, 56, 64, 96, 112, 128, 160, 192, 224, 256, 288, 384)

_OPTIONS = {"kwargs", "input_size"}


#: create_model arguments that fetch or read weights: those come through ``weights:`` (hub or a file), so a
#: model is built without a download (``validate``) and a checkpoint is read by the host's checks
_WEIGHT_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def _check_options(options: dict) -> None:
    unknown = set(options) - _OPTIONS
    if unknown:
        name = sorted(unknown)[0]
        raise ReprevalError(f"unknown timm option {name!r}", fix=suggest(name, _OPTIONS))
    size = options.get("input_size")
    if size is not None and not (
        isinstance(size, (list, tuple))
        and len(size) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)
    ):
        raise ReprevalError(
            f"option input_size must be [channels, height, width] (three positive integers), got {size!r}",
            fix="e.g. input_size=[3,64,64]",
        )
    kwargs = options.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ReprevalError(f"option kwargs must be a mapping, got {kwargs!r}", fix="e.g. kwargs: {drop_rate: 0}")
    weights = [key for key in _WEIGHT_KWARGS if key in kwargs]
    if weights:
        raise ReprevalError(
            f"timm kwargs may not set {weights[0]!r}: weights come through the model's 'weights:'",
            fix="use 'weights: hub' for published weights or 'weights: PATH' for a file",
        )


def _input_spec(model, options: dict) -> InputSpec:
    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    channels, height, width = options.get("input_size") or config["input_size"]
    return InputSpec(
        channels=int(channels),
        height=int(height),
        width=int(width),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=config.get("interpolation", "bilinear"),
        crop_pct=None if options.get("input_size") else config.get("crop_pct"),
    )


def _stage_names(model) -> tuple[str, ...]:
    """The modules of ``feature_info``'s stages. A name timm spells differently from the module (Twins lists
    ``block.N`` for ``blocks.N``) is matched to the one module whose name differs only in a plural first part (a
    ModuleList, never called itself, by its last block)."""
    modules = dict(model.named_modules())
    return tuple(found for found in (_stage_module(info["module"], modules) for info in _feature_info(model)) if found)


def _feature_info(model) -> list[dict]:
    return [info for info in getattr(model, "feature_info", None) or [] if info.get("module")]


def _stage_module(name: str, modules: dict) -> str | None:
    if name in modules:
        return name
    first, _, rest = name.partition(".")
    spellings = [f"{first}s.{rest}" if rest else f"{first}s", f"{first.removesuffix('s')}.{rest}" if rest else first]
    found = [spelling for spelling in spellings if spelling in modules and spelling != name]
    if len(found) != 1:
        return None
    stage = modules[found[0]]
    if type(stage).__name__ == "ModuleList" and len(stage):  # never called itself: its last block ends the stage
        return f"{found[0]}.{len(stage) - 1}"
    return found[0]


class TimmSource(ModelSource):
    """Any timm backbone (random init, local weights, or the hub when online)."""

    name = "timm"

    # timm is imported on first use: its import is slow, a cost that suites without timm need not pay.
    def model_names(self):
        import timm

        return timm.list_models()

    def build(self, name: str, options: dict, seed: int) -> Network:
        import timm

        _check_options(options)
        if not timm.is_model(name):
            raise ReprevalError(f"timm has no model {name!r}", fix=suggest(name, timm.list_models()))
        model = _create(name, options)
        spec = _input_spec(model, options)

        def embed(inputs):
            return model.forward_head(model.forward_features(inputs), pre_logits=True)

        outputs = _traced_outputs(model, name, spec, options)
        layout = _layout(model)
        shapes = {module: tuple(getattr(out, "shape", out)) for module, out in outputs.items()}
        stage_layouts = {**_module_layouts(model, shapes, layout), **_stage_layouts(model, spec, outputs, layout)}
        return Network(
            module=model,
            input_spec=spec,
            default_layers=_stage_names(model),
            embed=embed,
            classify=model,
            description=f"timm {name}",
            layout=layout,
            stage_layouts=stage_layouts,
        )

    def load_pretrained(self, network: Network, name: str, options: dict) -> None:
        import timm

        try:
            published = timm.create_model(name, pretrained=True, **options.get("kwargs", {}))
        except ReprevalError:  # refused, e.g. a download while validating
            raise
        except Exception as exc:
            raise ReprevalError(
                f"cannot fetch published weights for timm model {name!r} ({type(exc).__name__})",
                fix="the machine may be offline: download the weights elsewhere and name the file with 'weights: PATH'",
            ) from None
        network.module.load_state_dict(published.state_dict())


def _create(name: str, options: dict, size: tuple[int, int] | None = None):
    """timm.create_model, told the input size when one is set and the model takes ``img_size``."""
    import timm

    kwargs = dict(options.get("kwargs", {}))
    if size is None and options.get("input_size"):
        size = (int(options["input_size"][1]), int(options["input_size"][2]))
    if size is not None and "img_size" not in kwargs:
        try:
            return timm.create_model(name, pretrained=False, img_size=size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, pretrained=False, **kwargs)


def _traced_outputs(model, name: str, spec: InputSpec, options: dict) -> dict:
    """On a zero input, the output of each ``feature_info`` stage and the output shape of every other module;
    a size the model cannot take is refused here, naming sizes it can."""
    import torch

    outputs: dict = {}  # every module's first output: stages' tensors, the others' shapes

    def record(_module, _args, out, name):
        if name not in outputs:
            outputs[name] = out if name in stages else tuple(getattr(out, "shape", ()))

    stages = set(_stage_names(model))
    handles = [
        module.register_forward_hook(lambda m, a, out, name=name: record(m, a, out, name))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model.eval()
            model.forward_head(model.forward_features(torch.zeros(1, *spec.shape)), pre_logits=True)
    except Exception as exc:  # timm's own checks: assertions, shape errors
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ReprevalError(
            f"timm model {name!r} cannot take a {spec.height}×{spec.width} input ({cause})",
            fix=_size_hint(name, options, spec),
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _size_hint(name: str, options: dict, spec: InputSpec) -> str:
    """Square sizes the model takes, tried near the requested one and at its default size."""
    import timm
    import torch

    requested = max(spec.height, spec.width)
    nearest = sorted(_CANDIDATE_SIZES, key=lambda size: (abs(size - requested), size))[:5]
    default = timm.get_pretrained_cfg_value(name, "input_size") or (3, 224, 224)
    working = []
    for size in sorted({*nearest, int(default[-1])}):
        try:
            model = _create(name, options, (size, size))
            with torch.no_grad():
                model.eval()
                model.forward_features(torch.zeros(1, spec.channels, size, size))
        except Exception:  # a size it cannot take either
            continue
        working.append(size)
    if not working:
        return "try its default size (drop input_size)"
    return "sizes it takes near this one: " + ", ".join(f"input_size=[{spec.channels},{s},{s}]" for s in working)


def _module_layouts(model, shapes: dict, network_layout: Layout) -> dict[str, Layout]:
    """The layout of every module with a 4-D output, from what its type computes, where it differs from the
    network's: convolutions, 2-D batch norms and pooling are channels-first; ``nn.Linear`` and (not 2-D)
    ``nn.LayerNorm`` act on the last dimension, so their 4-D outputs are channels-last (ConvNeXt's and MaxViT's
    blocks permute to them inside). A module without such a type takes the one kind its sub-modules compute;
    a block mixing both returns the network's layout (timm's blocks permute back); an activation or identity
    directly inside such a mixed block cannot be told and is left undeclared (probing it is refused)."""
    modules = dict(model.named_modules())
    four_d = [name for name, shape in shapes.items() if len(shape) == 4]
    below = _kinds_below({name: modules[name] for name in four_d})
    layouts = {}
    for name in four_d:
        layout = Layout(_module_kind(name, below, network_layout.kind))
        if layout != network_layout:
            layouts[name] = layout
    return layouts


def _typed_kind(module) -> str | None:
    """The layout a module's type computes: convolutions, 2-D batch norms and pooling channels-first,
    ``nn.Linear`` and (not 2-D) ``nn.LayerNorm`` channels-last; None for any other type."""
    from torch import nn

    channels_first = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    if isinstance(module, channels_first):
        return "channels_first"
    if isinstance(module, nn.Linear) or (
        isinstance(module, nn.LayerNorm) and "2d" not in type(module).__name__.lower()
    ):
        return "channels_last"
    return None


def _kinds_below(four_d: dict) -> dict[str, set[str]]:
    """Module name -> the layouts computed by the typed ones of ``four_d`` (name -> module) inside it, itself too."""
    below: dict[str, set[str]] = {}
    for name, module in four_d.items():
        kind = _typed_kind(module)
        if kind:
            parts = name.split(".")
            for depth in range(len(parts) + 1):
                below.setdefault(".".join(parts[:depth]), set()).add(kind)
    return below


def _module_kind(name: str, below: dict[str, set[str]], network_kind: str) -> str:
    """The layout of module ``name``: the one kind computed inside it; the network's where both are; else the
    one kind of its nearest ancestor that computes any, "undeclared" where that ancestor mixes both, and the
    network's where none does."""
    kinds = below.get(name, set())
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds:
        return network_kind
    ancestor = name
    while ancestor and not below.get(ancestor):
        ancestor = ancestor.rpartition(".")[0]
    around = below.get(ancestor, set())
    return next(iter(around)) if len(around) == 1 else "undeclared" if around else network_kind


def _stage_layouts(model, spec: InputSpec, outputs: dict, network_layout: Layout) -> dict[str, Layout]:
    """The layout of each stage whose output differs from the network's (see the module docstring)."""
    import math

    modules = dict(model.named_modules())
    channels = {_stage_module(info["module"], modules): info.get("num_chs") for info in _feature_info(model)}
    reductions = {_stage_module(info["module"], modules): info.get("reduction") for info in _feature_info(model)}
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    layouts = {}
    for stage, value in outputs.items():
        width = channels.get(stage)
        shape = tuple(getattr(value, "shape", ()))
        layout = None
        if len(shape) == 4 and network_layout.kind == "channels_last" and shape[3] == width:
            layout = Layout("channels_last")
        elif len(shape) == 4 and shape[1] == width:
            layout = Layout()
        elif len(shape) == 4 and shape[3] == width:
            layout = Layout("channels_last")
        elif len(shape) == 3 and shape[2] == width and reductions.get(stage):
            reduction = float(reductions[stage] or 1)
            for round_ in (math.ceil, math.floor):
                grid = (round_(spec.height / reduction), round_(spec.width / reduction))
                extra = shape[1] - grid[0] * grid[1]
                if extra in {0, prefix}:
                    layout = Layout("tokens", prefix_tokens=extra, grid=grid, order=_rerolled(model, stage, shape[1]))
                    break
        if layout is not None and layout != network_layout:
            layouts[stage] = layout
    return layouts


def _rerolled(model, stage: str, tokens: int) -> tuple[int, ...] | None:
    """Hiera keeps its token sequences in an unrolled order (its docstring: "not in HxW order"); its own ``reroll``
    maps block ``blocks.N``'s sequence back to the grid. Pushing the token indices through it gives, for each grid
    cell in row-major order, the token holding it. None for other models."""
    import torch

    reroll = getattr(model, "reroll", None)
    first, _, index = stage.partition(".")
    if reroll is None or first != "blocks" or not index.isdigit():
        return None
    positions = torch.arange(tokens, dtype=torch.float64).reshape(1, tokens, 1)
    return tuple(int(position) for position in reroll(positions, int(index)).flatten().tolist())


def _layout(model) -> Layout:
    """The network-wide layout: ``output_fmt`` NHWC (Swin and kin) is channels-last; a model with prefix
    tokens and a patch grid (ViT, DeiT, BEiT, EVA) lays its blocks out as tokens; else channels-first.
    Stages that differ are declared by :func:`_stage_layouts`."""
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        return Layout("channels_last")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if hasattr(model, "num_prefix_tokens") and grid is not None:
        return Layout("tokens", prefix_tokens=int(model.num_prefix_tokens), grid=(int(grid[0]), int(grid[1])))
    return Layout()


@hookimpl
def register_model_sources(register):
    """Register the ``timm`` model source."""
    register(TimmSource)
