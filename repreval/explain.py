"""Explainer units (Part 2 of the method): train an explainer on a frozen performer's features at one layer,
cached by configuration and seed, then measure it on held-out images.

Metrics, one record each (per performer × variant × layer × explainer):

* ``reconstruction_error``: ``||F - F^|| / ||F||`` per held-out image (mean over reconstructed layers);
  ``interpretable_reconstruction_error`` and ``ordinary_reconstruction_error``: the same from one track's
  contribution alone (the other zeroed, the gate as trained; explainers that declare ``tracks``). These, not the
  gate p, say how much of F the parts carry;
* ``accuracy``: the performer's top-1 when its upper layers receive F^ (of the deepest reconstructed layer)
  instead of F; ``accuracy_drop``: its own accuracy minus that (per image: own correct - correct on F^);
  ``interpretable_accuracy`` and ``ordinary_accuracy``: the top-1 on one track's reconstruction alone;
* ``part_share``: the gate's p per image;
* diversity of the part maps, per image: ``distinct_peaks`` (distinct peak cells among the filters that fire)
  and ``filter_overlap`` (mean cosine similarity of the maps of two firing filters);
* with landmarks, location instability (:mod:`repreval.landmarks`; per filter, lower is more stable) of the
  interpretable filters (``location_instability``), of the performer's own channels at the explained layer
  (``performer_location_instability``) and of three baselines that locate nothing: a filter fixed at each cell
  of the map (``fixed_location_instability``, per cell), each explainer filter frozen at the cell where it peaks
  most often (``frozen_location_instability``) and filters peaking at random cells
  (``random_location_instability``); ``moving_fraction`` and ``performer_moving_fraction``: per filter, 1 when
  its peak moves with the object (``landmarks.moving_filters``), else 0.

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
from .landmarks import (
    STUCK_SHARE,
    fixed_position_instability,
    location_instability,
    modal_cells,
    moving_filters,
    peak_positions,
    random_position_instability,
)
from .models import cache_dir, layer_table, load_cached, save_cached
from .part_diversity import distinct_peaks, filter_overlap

#: metric -> higher is better; accuracy metrics need a classifier, landmark metrics landmarks, track metrics an
#: explainer that declares its tracks
METRICS = {
    "reconstruction_error": False,
    "interpretable_reconstruction_error": False,
    "ordinary_reconstruction_error": False,
    "accuracy": True,
    "accuracy_drop": False,
    "interpretable_accuracy": True,
    "ordinary_accuracy": True,
    "part_share": True,
    "distinct_peaks": True,
    "filter_overlap": False,
    "location_instability": False,
    "performer_location_instability": False,
    "fixed_location_instability": False,
    "frozen_location_instability": False,
    "random_location_instability": False,
    "moving_fraction": True,
    "performer_moving_fraction": True,
}
ACCURACY_METRICS = ("accuracy", "accuracy_drop", "interpretable_accuracy", "ordinary_accuracy")
LANDMARK_METRICS = tuple(name for name in METRICS if name.endswith(("location_instability", "moving_fraction")))
#: Metrics that cannot exceed 1 (records keep the bound)
BOUNDED_BY_1 = (
    "accuracy",
    "interpretable_accuracy",
    "ordinary_accuracy",
    "part_share",
    "filter_overlap",
    "moving_fraction",
    "performer_moving_fraction",
)
#: The tracks an explainer may declare, and the metrics that need them
TRACKS = ("interpretable", "ordinary")
TRACK_METRICS = tuple(f"{track}_{metric}" for track in TRACKS for metric in ("reconstruction_error", "accuracy"))
#: Held-out images drawn in each explainer's picture
PICTURE_IMAGES = 4
BATCH = 256


def metrics_for(network: Network, has_landmarks: bool, explainer: Explainer) -> list[tuple[str, bool]]:
    """The metrics that apply to ``network`` and ``explainer`` on a dataset with or without landmarks."""
    return [
        (metric, higher)
        for metric, higher in METRICS.items()
        if (metric not in ACCURACY_METRICS or network.classify is not None)
        and (metric not in LANDMARK_METRICS or has_landmarks)
        and (metric not in TRACK_METRICS or set(TRACKS) <= set(explainer.tracks))
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
def logits_with(
    network: Network,
    inputs: Tensor,
    layer: str,
    target: str,
    explainer: nn.Module,
    device,
    track: str | None = None,
) -> Tensor:
    """The performer's logits when ``target``'s output is replaced by the explainer's reconstruction of it from
    ``layer``'s features (``target`` may be ``layer``; ``track``: from that track's contribution alone)."""
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
            explanation: Explanation = _explain(explainer, stored[0], track)
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


def _explain(module: nn.Module, features: Tensor, track: str | None) -> Explanation:
    """``module(features)``, or ``module(features, track=track)`` for one track's contribution alone."""
    return module(features) if track is None else module(features, track=track)


@torch.no_grad()
def explain_all(
    module: nn.Module, features: Tensor, device, track: str | None = None
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """(reconstructions by layer, p [N], part maps [N, K, h, w]) for every feature map, batch by batch (``track``:
    from that track's contribution alone)."""
    reconstructions: dict[str, list[Tensor]] = {}
    shares, maps = [], []
    for batch in features.split(BATCH):
        explanation = _explain(module, batch.to(device), track)
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


@dataclass
class Measured:
    """What one group's measures read: the performer's features by layer (explained layer and targets), the
    explained and reconstructed layers, the held-out data and inputs, the metrics asked and the device."""

    network: Network
    module: nn.Module
    features: dict[str, Tensor]
    layer: str
    targets: tuple[str, ...]
    data: ImageSet
    inputs: Tensor
    metrics: list[str]
    device: torch.device


@torch.no_grad()
def measure(
    network: Network,
    trained: TrainedExplainer,
    layer: str,
    targets: tuple[str, ...],
    data: ImageSet,
    inputs: Tensor,
    metrics: list[str],
    device,
    seed: int = 0,
) -> Measures:
    """Per-item values of each metric on held-out images, extras, what the picture needs, and why a metric that
    could not be computed failed. ``seed`` draws the random-position baseline."""
    features = capture(network, (layer, *targets), inputs, device)
    asked = Measured(network, trained.module, features, layer, targets, data, inputs, metrics, device)
    reconstructions, share, part_maps = explain_all(trained.module, features[layer], device)
    values: dict[str, list[float]] = {
        "reconstruction_error": _errors(reconstructions, asked).tolist(),
        "part_share": share.tolist(),
    }
    values |= _track_errors(asked)
    values |= _diversity(part_maps)
    extras: dict[str, float] = {"part_filters": float(part_maps.shape[1])}
    problems: dict[str, ReprevalError] = {}
    if not values["filter_overlap"]:
        problems["filter_overlap"] = ReprevalError(
            "filter_overlap: no held-out image has two firing part filters", fix="train the explainer longer"
        )
    if any(metric in ACCURACY_METRICS for metric in metrics):
        values |= _accuracies(asked, extras)
    if any(metric in LANDMARK_METRICS for metric in metrics):
        found, failed = _instabilities(asked, part_maps, seed, extras)
        values, problems = values | found, problems | failed
    shown = slice(0, PICTURE_IMAGES)
    picture = {
        "images": data.images[shown] if isinstance(data.images, Tensor) else torch.stack(data.images[shown]),
        "part_maps": part_maps[shown],
        "performer_maps": features[layer][shown],
        "landmarks": data.landmarks[shown] if data.landmarks is not None else torch.empty(0),
    }
    return Measures(values, extras, picture, problems)


def _errors(reconstructions: dict[str, Tensor], asked: Measured) -> Tensor:
    """The relative error per image, averaged over the reconstructed layers."""
    return torch.stack([relative_errors(reconstructions[name], asked.features[name]) for name in asked.targets]).mean(
        dim=0
    )


def _track_errors(asked: Measured) -> dict[str, list[float]]:
    """``{track}_reconstruction_error`` for each track the metrics ask for: the reconstruction from that track's
    contribution alone."""
    values = {}
    for track in TRACKS:
        if f"{track}_reconstruction_error" in asked.metrics:
            reconstructions, _, _ = explain_all(asked.module, asked.features[asked.layer], asked.device, track)
            values[f"{track}_reconstruction_error"] = _errors(reconstructions, asked).tolist()
    return values


def _diversity(part_maps: Tensor) -> dict[str, list[float]]:
    """Per image: distinct peak cells among the firing filters, and the mean overlap of two firing filters
    (images with fewer than two firing filters left out)."""
    overlap = filter_overlap(part_maps)
    return {"distinct_peaks": distinct_peaks(part_maps).tolist(), "filter_overlap": overlap[~overlap.isnan()].tolist()}


def _accuracies(asked: Measured, extras: dict[str, float]) -> dict[str, list[float]]:
    """Per image: correct on F^ (and on each track's F^ where asked), own correct minus correct on F^."""
    if asked.data.labels is None:
        raise ReprevalError("accuracy needs labelled evaluation images", fix="evaluate on a labelled dataset")
    network, device = asked.network, asked.device
    assert network.classify is not None
    labels = asked.data.labels.long()
    own = torch.cat([network.classify(b.to(device)).float().cpu() for b in asked.inputs.split(BATCH)])
    own_correct = (own.argmax(dim=1) == labels).double()
    extras["performer_accuracy"] = float(own_correct.mean())
    values = {}
    for track in (None, *TRACKS):
        metric = f"{track}_accuracy" if track else "accuracy"
        if track and metric not in asked.metrics:
            continue
        logits = logits_with(network, asked.inputs, asked.layer, asked.targets[-1], asked.module, device, track)
        correct = (logits.argmax(dim=1) == labels).double()
        values[metric] = correct.tolist()
        if track is None:
            values["accuracy_drop"] = (own_correct - correct).tolist()
    return values


def _instabilities(
    asked: Measured, part_maps: Tensor, seed: int, extras: dict[str, float]
) -> tuple[dict[str, list[float]], dict[str, ReprevalError]]:
    """Location instability per filter of the explainer, the performer and the three baselines, and the moving
    fractions; a metric with no usable filter fails alone (the others stand)."""
    landmarks = asked.data.landmarks
    if landmarks is None:
        raise ReprevalError(
            "the evaluation dataset has no landmarks", fix="add 'landmarks: ink' or a landmark file to the dataset"
        )
    size = (asked.inputs.shape[-2], asked.inputs.shape[-1])
    map_size = (part_maps.shape[-2], part_maps.shape[-1])
    performer_maps = asked.features[asked.layer]
    cells, shares = modal_cells(part_maps)
    fires = ~shares.isnan()
    per_filter = {
        "location_instability": _filter_instability(part_maps, landmarks, size),
        "performer_location_instability": _filter_instability(performer_maps, landmarks, size),
        "fixed_location_instability": fixed_position_instability(_every_cell(map_size), landmarks, map_size, size),
        "frozen_location_instability": fixed_position_instability(cells[fires], landmarks, map_size, size),
        "random_location_instability": random_position_instability(landmarks, map_size, size, part_maps.shape[1], seed),
        "moving_fraction": moving_filters(part_maps, landmarks, size),
        "performer_moving_fraction": moving_filters(performer_maps, landmarks, size),
    }
    values, problems = {}, {}
    for metric, found in per_filter.items():
        kept = found[~found.isnan()]
        if not len(kept):
            problems[metric] = ReprevalError(
                f"{metric}: no filter fires on two images with landmarks",
                fix="check the landmarks, or train the explainer longer",
            )
            continue
        values[metric] = kept.tolist()
        extras[f"{metric}_filters"] = float(len(kept))
        extras[f"{metric}_filters_total"] = float(len(found))
    fixed = per_filter["fixed_location_instability"].reshape(map_size)
    extras["fixed_location_instability_centre"] = float(fixed[map_size[0] // 2, map_size[1] // 2])
    extras["fixed_location_instability_best"] = float(fixed.min())
    extras["stuck_filters"] = float((shares[fires] >= STUCK_SHARE).sum())
    return values, problems


def _filter_instability(maps: Tensor, landmarks: Tensor, size: tuple[int, int]) -> Tensor:
    """Location instability of each channel of ``maps`` [N, K, h, w] (NaN: never fires on two images)."""
    peaks, fires = peak_positions(maps, size)
    return location_instability(peaks, fires, landmarks, size)


def _every_cell(map_size: tuple[int, int]) -> Tensor:
    """[h·w, 2]: every (row, col) of an h×w map, row by row."""
    rows, cols = torch.meshgrid(torch.arange(map_size[0]), torch.arange(map_size[1]), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def progress_of(units: int, on_progress: Callable[[float, str], None] | None, label: str):
    """A TrainingContext progress callback crediting ``units`` × 0.9 over the training."""
    credited = [0.0]

    def report(fraction: float, what: str) -> None:
        step = 0.9 * units * fraction - credited[0]
        credited[0] += step
        if on_progress and step > 0:
            on_progress(step, f"{label}: {what}")

    return report
