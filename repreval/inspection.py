"""One model up close, without a suite: its probe layers with their shapes (``repreval layers``) and the
attribution maps of one input at one layer (``repreval show``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .api import Network
from .config import ModelConfig, Subset
from .data import load_images
from .engine import MapRequest, compute_maps
from .engine.estimate import sample_components
from .engine.probe import Probe
from .errors import ReprevalError
from .layouts import check_layouts, verify_layers
from .models import LayerInfo, Model, layer_table
from .plugins import Plugins
from .suite import split_model_spec
from .trust import trusting, user_trust


def build_network(
    plugins: Plugins,
    spec: str,
    *,
    options: dict | None = None,
    weights: str | None = None,
    weights_match: str = "name",
    layer: str | None = None,
    seed: int = 0,
    trust: Sequence[str] = (),
) -> Network:
    """The network of model ``spec`` (``SOURCE:NAME``): with the weights of a local file, else randomly
    initialised from ``seed``. ``layer``: a probe layer to check (an unknown or unreadable one: one line).
    ``trust``: modules ``torch:`` may import (as ``--trust``; see :mod:`repreval.trust`)."""
    with trusting(user_trust(trust)):
        return _build_network(plugins, spec, options, weights, weights_match, layer, seed)


def _build_network(
    plugins: Plugins,
    spec: str,
    options: dict | None,
    weights: str | None,
    weights_match: str,
    layer: str | None,
    seed: int,
) -> Network:
    source_name, _ = split_model_spec(spec)
    config = ModelConfig(
        id="model", spec=spec, options=options or {}, weights=weights, weights_match=weights_match,
        layers=(layer,) if layer else (), seed=seed,
    )  # fmt: skip
    model = Model(config, plugins.model_source.create(source_name), where="--layer" if layer else "model")
    network = model.trained() if weights else model.untrained(seed)
    if layer:
        try:
            _check_layer(network, Probe.parse(layer))
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where="--layer", fix=exc.fix) from None
    return network


def _check_layer(network: Network, probe: Probe) -> None:
    """One probe layer checked as a suite's are: it exists, its layout was verified, and it is on the embedding's
    path; without the table of every module a suite needs to order its layers (minutes for EfficientNet)."""
    probe.module(network)
    problems = check_layouts(network, [probe])
    if probe in problems:
        raise problems[probe]
    if verify_layers(network, [probe])[probe].reach == "unused":
        raise ReprevalError(
            f"layer {probe.spec!r} is not used when computing the embedding",
            fix="probe a layer between the input and the embedding",
        )


def probe_layers(network: Network) -> tuple[list[LayerInfo], int]:
    """Every module reached while computing the embedding (in execution order) and the embedding size D."""
    return layer_table(network)


@dataclass(frozen=True)
class MapChoice:
    """What ``show`` draws: per saliency method (``methods``) and channel aggregator (not for spatial methods),
    either each component of ``components`` on its own, or the component aggregation of every component (or of
    ``sample`` of them drawn with ``seed``)."""

    methods: tuple[str, ...]
    channel_aggregators: tuple[str, ...] = ("abs",)
    component_aggregators: tuple[str, ...] = ("mean",)
    components: tuple[int, ...] = ()
    sample: int | None = None
    seed: int = 0


@dataclass
class ShownMaps:
    """The input [C, H, W] in [0, 1], its maps [h, w] by label (the method, then the channel and component
    aggregation where they differ between maps), and what all maps share, in words (channels, components)."""

    image: Tensor
    maps: dict[str, Tensor]
    described: str


def show_plugins(plugins: Plugins, choice: MapChoice) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The saliency methods, channel and component aggregators ``choice`` names (by name), each created once:
    an unknown name is refused in one line naming its option, before any model is built."""
    made: list[dict[str, Any]] = []
    for option, registry, names in (
        ("--saliency", plugins.saliency, choice.methods),
        ("--channel-aggregator", plugins.aggregator, choice.channel_aggregators),
        ("--component-aggregator", plugins.aggregator, choice.component_aggregators),
    ):
        try:
            made.append({name: registry.create(name) for name in names})
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=option, fix=exc.fix) from None
    return made[0], made[1], made[2]


def input_maps(plugins: Plugins, network: Network, image_file: str, layer: str, choice: MapChoice) -> ShownMaps:
    """The image of ``image_file`` fitted to the network's input and its maps at ``layer`` as ``choice`` asks, all
    from one engine call (one forward pass; the backward passes shared by every method). A map's label names its
    method and whichever aggregation differs between the maps; the rest is said once (``ShownMaps.components``)."""
    methods, channels, aggregators = show_plugins(plugins, choice)
    image = load_images(plugins.dataset.create("image_files", {"paths": image_file}), Subset(), network.input_spec)
    assert isinstance(image.images, Tensor)  # fitted to the network's input
    inputs = network.input_spec.normalize(image.images)
    with torch.no_grad():
        dim = network.embed(inputs).shape[1]
    index, covered = _components(choice, dim)
    probe = Probe.parse(layer)
    requests = {
        (name, channel): MapRequest(probe, method, channels[channel] if channel else None)
        for name, method in methods.items()
        for channel in ([None] if method.spatial else channels)
    }
    found = compute_maps(network, list(requests.values()), inputs, components=index)
    maps: dict[str, Tensor] = {}
    for (name, channel), request in requests.items():
        values = found[request][0].float()  # [k, h, w]
        if choice.components:
            reduced = {f"component {i}": values[j] for j, i in enumerate(choice.components)}
        else:
            reduced = {f"components {label}": aggregator(values, dim=0) for label, aggregator in aggregators.items()}
        for part, value in reduced.items():
            varying = (
                name,
                f"channels {channel}" if channel and len(channels) > 1 else None,
                part if len(reduced) > 1 else None,
            )
            maps[" · ".join(label for label in varying if label)] = value
    per_channel = any(not method.spatial for method in methods.values())
    said = [f"channels: {next(iter(channels))}"] if per_channel and len(channels) == 1 else []
    if choice.components:
        said.append(f"{'component' if len(choice.components) == 1 else 'components'} {covered}")
    else:
        said.append(f"{next(iter(aggregators)) + ' ' if len(aggregators) == 1 else ''}over {covered}")
    return ShownMaps(image.images[0], maps, "; ".join(said))


def _components(choice: MapChoice, dim: int) -> tuple[Tensor | None, str]:
    """The component indices to compute (None: all ``dim``) and, in words, which they are."""
    if choice.components:
        wrong = [i for i in choice.components if not 0 <= i < dim]
        if wrong:
            raise ReprevalError(
                f"component {wrong[0]} does not exist: the embedding has {dim} components",
                where="--component",
                fix=f"give indices from 0 to {dim - 1}",
            )
        return torch.tensor(choice.components), f"{', '.join(map(str, choice.components))} of {dim}"
    if choice.sample is not None and choice.sample > dim:
        raise ReprevalError(
            f"{choice.sample} components asked for, but the embedding has {dim}",
            where="--sample-components",
            fix=f"sample 1 to {dim} of them, or leave the option out for all",
        )
    if choice.sample is None or choice.sample == dim:
        return None, f"all {dim} components"
    return (
        sample_components(dim, choice.sample, choice.seed),
        f"{choice.sample} of {dim} components, sampled with seed {choice.seed}",
    )


#: Shades of the terminal sketch of a map, darkest first
SHADES = " ░▒▓█"


def terminal_sketch(values: Tensor, width: int = 32) -> str:
    """A map [h, w] as rows of block characters (at most ``width`` columns; min-max scaled)."""
    height = max(1, round(values.shape[0] * min(1.0, width / values.shape[1]) / 2))  # characters are tall
    small = F.adaptive_avg_pool2d(values[None, None], (height, min(width, values.shape[1])))[0, 0]
    scaled = (small - small.min()) / (small.max() - small.min() + 1e-12)
    levels = (scaled * (len(SHADES) - 1)).round().long()
    return "\n".join("".join(SHADES[int(level)] * 2 for level in row) for row in levels)
