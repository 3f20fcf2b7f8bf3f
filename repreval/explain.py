"""Explainer units (Part 2 of the method): train an explainer on a frozen performer's features at one layer,
cached by configuration and seed, then measure it on held-out images.

Metrics, one record each (per performer × variant × layer × explainer):

* ``reconstruction_error``: ``||F - F^|| / ||F||`` per held-out image (mean over reconstructed layers);
* ``accuracy``: the performer's top-1 when its upper layers receive F^ (of the deepest reconstructed layer)
  instead of F; ``accuracy_drop``: its own accuracy minus that (per image: own correct - correct on F^);
* ``part_share``: the gate's p per image;
* ``location_instability`` of the interpretable filters and ``performer_location_instability`` of the
  performer's own channels at the explained layer (per filter; :mod:`repreval.landmarks`).

The performer is never trained (its features are extracted once, without gradients), and each group proves
it: the SHA-256 of its weights before and after training is kept in the records' provenance.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .api import Explainer, Explanation, ImageSet, Network, TrainingContext
from .config import ModelConfig, PluginChoice
from .engine.probe import Probe, probe_layout
from .errors import ReprevalError, suggest
from .landmarks import location_instability, peak_positions
from .models import cache_dir, layer_table, load_cached, save_cached

#: metric -> higher is better; accuracy metrics need a classifier, instability metrics landmarks
METRICS = {
    "reconstruction_error": False,
    "accuracy": True,
    "accuracy_drop": False,
    "part_share": True,
    "location_instability": False,
    "performer_location_instability": False,
}
ACCURACY_METRICS = ("accuracy", "accuracy_drop")
LANDMARK_METRICS = ("location_instability", "performer_location_instability")
#: Held-out images drawn in each explainer's picture
PICTURE_IMAGES = 4
BATCH = 256


def metrics_for(network: Network, has_landmarks: bool) -> list[tuple[str, bool]]:
    """The metrics that apply to ``network`` on a dataset with or without landmarks."""
    return [
        (metric, higher)
        for metric, higher in METRICS.items()
        if (metric not in ACCURACY_METRICS or network.classify is not None)
        and (metric not in LANDMARK_METRICS or has_landmarks)
    ]


def reconstruction_targets(config: ModelConfig, network: Network, layer: str, where: str) -> tuple[str, ...]:
    """The layers an explainer of ``layer`` reconstructs (the model's ``reconstruct:``, else ``layer``), checked:
    channels-first feature maps at or after ``layer``."""
    table, _ = layer_table(network)
    depth = {row.name: i for i, row in enumerate(table)}
    targets = config.reconstruct or (layer,)
    for name in (layer, *targets):
        probe = Probe.parse(name)
        if probe.side != "output" or name not in depth:
            raise ReprevalError(
                f"explainers read and reconstruct module outputs; {name!r} is not one this model computes",
                where=f"{where}.reconstruct" if name != layer else f"{where}.layers",
                fix=suggest(name, list(depth)) + " (`repreval layers MODEL`)",
            )
        if probe_layout(network, probe).kind != "channels_first":
            raise ReprevalError(
                f"explainers read channels-first conv feature maps [B, C, h, w]; {name!r} is laid out as "
                f"{probe_layout(network, probe).kind}",
                where=f"{where}.layers",
                fix="explain a convolutional layer",
            )
        if depth[name] < depth[layer]:
            raise ReprevalError(
                f"an explainer of {layer!r} cannot reconstruct the earlier layer {name!r}",
                where=f"{where}.reconstruct",
                fix="reconstruct the explained layer or a later one",
            )
    return targets


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@torch.no_grad()
def capture(network: Network, layers: tuple[str, ...], inputs: Tensor, device) -> dict[str, Tensor]:
    """The outputs of ``layers`` for every input, [N, C, h, w] each (on the CPU), batch by batch."""
    found: dict[str, list[Tensor]] = {name: [] for name in layers}
    probes = {name: Probe.parse(name) for name in dict.fromkeys(layers)}
    for batch in inputs.split(BATCH):
        seen: dict[str, Tensor] = {}
        handles = []
        for name, probe in probes.items():

            def keep(_module, _args, output, name=name, seen=seen):
                seen.setdefault(name, output)  # a module called twice: its first call

            handles.append(probe.module(network).register_forward_hook(keep))
        try:
            network.embed(batch.to(device)) if network.classify is None else network.classify(batch.to(device))
        finally:
            for handle in handles:
                handle.remove()
        for name in probes:
            value = seen.get(name)
            if not isinstance(value, Tensor) or value.dim() != 4:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ReprevalError(
                    f"layer {name!r} gives {shape}, not a feature map [B, C, h, w]", fix="explain a conv layer"
                )
            found[name].append(value.float().cpu())
    return {name: torch.cat(found[name]) for name in layers}


@torch.no_grad()
def logits_with(network: Network, inputs: Tensor, layer: str, target: str, explainer: nn.Module, device) -> Tensor:
    """The performer's logits when ``target``'s output is replaced by the explainer's reconstruction of it from
    ``layer``'s features (``target`` may be ``layer``)."""
    assert network.classify is not None  # accuracy metrics are only planned for classifiers
    outputs = []
    for batch in inputs.split(BATCH):
        stored: list[Tensor] = []

        def keep(_module, _args, output, stored=stored):
            if not stored:
                stored.append(output)

        def replace(_module, _args, output, stored=stored):
            if len(stored) != 1:
                return None
            stored.append(output)  # marks the replacement as done
            explanation: Explanation = explainer(stored[0])
            return explanation.reconstructions[target].to(output.dtype)

        first = Probe.parse(layer).module(network).register_forward_hook(keep)
        second = Probe.parse(target).module(network).register_forward_hook(replace)
        try:
            outputs.append(network.classify(batch.to(device)).float().cpu())
        finally:
            first.remove()
            second.remove()
    return torch.cat(outputs)


class TrainedExplainer:
    """One explainer trained (or read from the cache) for one performer variant and layer."""

    def __init__(self, module: nn.Module, log: dict, cached: bool, path: Path):
        self.module, self.log, self.cached, self.path = module, log, cached, path


def cache_path(explainer: PluginChoice, version: str, described: dict) -> Path:
    """``<cache dir>/explainers/<name>-<key>.pt``: the key hashes the explainer's options and version, the
    performer's weights, the layers, the training data and the seed."""
    described = {"explainer": explainer.name, "options": explainer.options, "version": version, **described}
    key = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "explainers" / f"{explainer.name}-{key}.pt"


def train_or_load(
    explainer: Explainer,
    path: Path,
    features: Tensor,
    targets: dict[str, Tensor],
    seed: int,
    context: TrainingContext,
) -> TrainedExplainer:
    """The explainer from the cache at ``path``, else trained (seeded) and stored there."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = explainer.build(_shape(features), {name: _shape(value) for name, value in targets.items()}, seed)
    cached = load_cached(path, module)
    if cached is not None:
        return TrainedExplainer(module.to(context.device).eval(), cached[1] or {}, True, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        log = explainer.fit(module, features, targets, seed, context)
    module.eval()
    save_cached(path, copy.deepcopy(module.state_dict()), log)
    return TrainedExplainer(module, log, False, path)


def _shape(maps: Tensor) -> tuple[int, int, int]:
    """(C, h, w) of feature maps [N, C, h, w]."""
    channels, height, width = maps.shape[1:]
    return int(channels), int(height), int(width)


@dataclass
class Measures:
    """What :func:`measure` finds: per-item values by metric, record extras, the picture's tensors, and the
    metrics that failed (with why)."""

    values: dict[str, list[float]]
    extras: dict[str, float]
    picture: dict[str, Tensor]
    problems: dict[str, ReprevalError]


@torch.no_grad()
def explain_all(module: nn.Module, features: Tensor, device) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """(reconstructions by layer, p [N], part maps [N, K, h, w]) for every feature map, batch by batch."""
    reconstructions: dict[str, list[Tensor]] = {}
    shares, maps = [], []
    for batch in features.split(BATCH):
        explanation: Explanation = module(batch.to(device))
        for name, value in explanation.reconstructions.items():
            reconstructions.setdefault(name, []).append(value.float().cpu())
        shares.append(explanation.part_share.float().cpu().reshape(-1))
        maps.append(explanation.part_maps.float().cpu())
    return {name: torch.cat(values) for name, values in reconstructions.items()}, torch.cat(shares), torch.cat(maps)


def relative_errors(reconstructed: Tensor, original: Tensor) -> Tensor:
    """``||F - F^|| / ||F||`` per image (0 / 0 reads as 0: an all-zero map reconstructed exactly)."""
    difference = (reconstructed - original).flatten(1).norm(dim=1)
    norm = original.flatten(1).norm(dim=1)
    return torch.where(norm > 0, difference / norm.clamp_min(1e-12), difference)


def measure(
    network: Network,
    trained: TrainedExplainer,
    layer: str,
    targets: tuple[str, ...],
    data: ImageSet,
    inputs: Tensor,
    metrics: list[str],
    device,
) -> Measures:
    """Per-item values of each metric on held-out images, extras, what the picture needs, and why a metric that
    could not be computed failed."""
    features = capture(network, (layer, *targets), inputs, device)
    reconstructions, share, part_maps = explain_all(trained.module, features[layer], device)
    errors = torch.stack([relative_errors(reconstructions[name], features[name]) for name in targets]).mean(dim=0)
    values: dict[str, list[float]] = {"reconstruction_error": errors.tolist(), "part_share": share.tolist()}
    extras: dict[str, float] = {}
    problems: dict[str, ReprevalError] = {}
    if any(metric in ACCURACY_METRICS for metric in metrics):
        if data.labels is None:
            raise ReprevalError("accuracy needs labelled evaluation images", fix="evaluate on a labelled dataset")
        assert network.classify is not None
        labels = data.labels.long()
        with torch.no_grad():
            own = torch.cat([network.classify(b.to(device)).float().cpu() for b in inputs.split(BATCH)])
        deepest = targets[-1]
        substituted = logits_with(network, inputs, layer, deepest, trained.module, device)
        own_correct = (own.argmax(dim=1) == labels).double()
        correct = (substituted.argmax(dim=1) == labels).double()
        values["accuracy"] = correct.tolist()
        values["accuracy_drop"] = (own_correct - correct).tolist()
        extras["performer_accuracy"] = float(own_correct.mean())
    if any(metric in LANDMARK_METRICS for metric in metrics):
        if data.landmarks is None:
            raise ReprevalError(
                "the evaluation dataset has no landmarks", fix="add 'landmarks: ink' or a landmark file to the dataset"
            )
        size = (inputs.shape[-2], inputs.shape[-1])
        for metric, maps in (("location_instability", part_maps), ("performer_location_instability", features[layer])):
            peaks, fires = peak_positions(maps, size)
            per_filter = location_instability(peaks, fires, data.landmarks, size)
            kept = per_filter[~per_filter.isnan()]
            if not len(kept):  # this metric fails alone: the others stand
                problems[metric] = ReprevalError(
                    f"{metric}: no filter fires on two images with landmarks",
                    fix="check the landmarks, or train the explainer longer",
                )
                continue
            values[metric] = kept.tolist()
            extras[f"{metric}_filters"] = float(len(kept))
            extras[f"{metric}_filters_total"] = float(len(per_filter))
    shown = slice(0, PICTURE_IMAGES)
    picture = {
        "images": data.images[shown] if isinstance(data.images, Tensor) else torch.stack(data.images[shown]),
        "part_maps": part_maps[shown],
        "performer_maps": features[layer][shown],
        "landmarks": data.landmarks[shown] if data.landmarks is not None else torch.empty(0),
    }
    return Measures(values, extras, picture, problems)


def progress_of(units: int, on_progress: Callable[[float, str], None] | None, label: str):
    """A TrainingContext progress callback crediting ``units`` × 0.9 over the training."""
    credited = [0.0]

    def report(fraction: float, what: str) -> None:
        step = 0.9 * units * fraction - credited[0]
        credited[0] += step
        if on_progress and step > 0:
            on_progress(step, f"{label}: {what}")

    return report
