"""One model up close, without a suite: its probe layers with their shapes (``repreval layers``) and the
attribution maps of one input at one layer (``repreval show``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from .api import Network, component_maps
from .config import ModelConfig, Subset
from .data import load_images
from .errors import ReprevalError
from .models import LayerInfo, Model, layer_table
from .plan import model_layers
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
            model_layers(model, network, "--layer")
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where="--layer", fix=exc.fix) from None
    return network


def probe_layers(network: Network) -> tuple[list[LayerInfo], int]:
    """Every module reached while computing the embedding (in execution order) and the embedding size D."""
    return layer_table(network)


def input_maps(
    plugins: Plugins, network: Network, image_file: str, layer: str, methods: list[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The image of ``image_file`` fitted to the network's input ([C, H, W] in [0, 1]) and, per saliency method,
    its map at ``layer`` ([h, w]: channels aggregated by ``abs`` unless the method is spatial, then the mean over
    the embedding components)."""
    image = load_images(plugins.dataset.create("image_files", {"paths": image_file}), Subset(), network.input_spec)
    assert isinstance(image.images, Tensor)  # fitted to the network's input
    inputs = network.input_spec.normalize(image.images)
    absolute = plugins.aggregator.create("abs")
    maps = {}
    for name in methods:
        method = plugins.saliency.create(name)
        found = component_maps(network, layer, inputs, method, None if method.spatial else absolute)
        maps[name] = found.float().mean(dim=1)[0]  # the mean over components: [h, w]
    return image.images[0], maps


#: Shades of the terminal sketch of a map, darkest first
SHADES = " ░▒▓█"


def terminal_sketch(values: Tensor, width: int = 32) -> str:
    """A map [h, w] as rows of block characters (at most ``width`` columns; min-max scaled)."""
    height = max(1, round(values.shape[0] * min(1.0, width / values.shape[1]) / 2))  # characters are tall
    small = F.adaptive_avg_pool2d(values[None, None], (height, min(width, values.shape[1])))[0, 0]
    scaled = (small - small.min()) / (small.max() - small.min() + 1e-12)
    levels = (scaled * (len(SHADES) - 1)).round().long()
    return "\n".join("".join(SHADES[int(level)] * 2 for level in row) for row in levels)
