"""Explainer units (Part 2): train (or load from the cache) one explainer network per explained layer, then
measure it, one record per metric."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .. import explain
from ..api import ImageSet, TrainingContext
from ..data import normalize
from ..drawings import explainer_picture_data
from ..errors import ReprevalError
from ..plan import Unit
from ..resources import TRAINING_THREADS, torch_threads
from .context import derived_seed
from .records import finite, non_finite, record_of

if TYPE_CHECKING:
    from .variants import BuiltVariant


def run_groups(built: BuiltVariant, groups: list[list[Unit]]) -> None:
    """Every explainer group (one explainer of one layer) of one variant, failures isolated.

    Features, training and measures run on TRAINING_THREADS CPU threads: a trained explainer, and every number
    read from it, must not depend on how busy the machine was (float sums round differently over more threads,
    and training amplifies the difference)."""
    for group in groups:
        try:
            with torch_threads(TRAINING_THREADS):
                failed = _explain(built, group)
        except Exception as exc:
            built.run.fail(group, exc, advance=False)
            continue
        built.run.finished(group, failed, credited=0.9 * len(group))


def _explain(built: BuiltVariant, group: list[Unit]) -> list[tuple[Unit, Exception]]:
    plan, network, device, first = built.run.plan, built.network, built.device, group[0]
    suite = plan.suite
    assert suite.evaluation.explainer_data is not None and first.dataset is not None  # checked by the parser
    started = time.perf_counter()
    explainer = plan.explainer(first.score)
    layer = first.layer
    targets = explain.reconstruction_targets(built.model.config, network, layer, built.model.where)
    spec = network.input_spec
    training = built.inputs.loaded(suite.evaluation.explainer_data, spec)
    assert isinstance(training, ImageSet) and isinstance(training.images, Tensor)  # images fitted to the spec
    features = explain.capture(network, (layer, *targets), normalize(training.images, spec), device)
    before = explain.weights_digest(network.module)
    seed = derived_seed(suite.seed, f"explainer-{first.score.label}-{layer}")
    path = explain.cache_path(
        first.score,
        explainer.version,
        {
            "performer": before,
            "layer": layer,
            "targets": targets,
            "data": vars(suite.datasets[suite.evaluation.explainer_data]),
            "spec": vars(spec),
            "seed": seed,
            "device": device.type,
            "training_threads": TRAINING_THREADS,
        },
    )
    progress = explain.progress_of(len(group), built.run.progress, first.describe().rsplit("/", 5)[0])
    context = TrainingContext(plan.instances.registries, device, progress)
    trained = explain.train_or_load(
        explainer, path, features[layer], {name: features[name] for name in targets}, seed, context
    )
    progress(1.0, "measuring")
    after = explain.weights_digest(network.module)
    if after != before:
        raise ReprevalError(
            f"the performer's weights changed while its explainer trained (sha256 {before[:12]} -> {after[:12]})",
            fix="an explainer must not touch the performer: fix the explainer plugin",
        )
    data = built.inputs.loaded(first.dataset, spec)
    assert isinstance(data, ImageSet) and isinstance(data.images, Tensor)
    metrics = [unit.metric for unit in group]
    inputs = normalize(data.images, spec)
    measures = explain.measure(network, trained, layer, targets, data, inputs, metrics, device, seed)
    coordinates = (first.model, first.variant.label, layer, first.score.label)
    _keep_picture_data(measures.picture, explainer_picture_data(suite.output, *coordinates), " · ".join(coordinates))
    extras = measures.extras | _training_extras(trained.log, trained.cached, len(features[layer]))
    provenance = {
        "performer_sha256_before": before,
        "performer_sha256_after": after,
        "explainer_cache": path.name,
        "reconstructed": ",".join(targets),
        "landmarks": suite.datasets[first.dataset].landmarks or "none",
    }
    seconds = round(time.perf_counter() - started, 3)
    failed: list[tuple[Unit, Exception]] = []
    for unit in group:
        if unit.metric in measures.problems:
            failed.append((unit, measures.problems[unit.metric]))
            continue
        per_item = measures.values[unit.metric]
        if not per_item or not finite(*per_item):
            failed.append((unit, non_finite(network)))
            continue
        tensor = torch.tensor(per_item, dtype=torch.float64)
        built.run.sink.write(
            record_of(
                plan,
                unit,
                value=float(tensor.mean()),
                spread=float(tensor.std(correction=0)),
                values=[round(v, 7) for v in per_item],
                bound=1.0 if unit.metric in explain.BOUNDED_BY_1 else None,
                n_inputs=len(per_item),
                seconds=seconds,
                device=str(device),
                provenance=provenance,
                **built.shared | {"extras": built.shared["extras"] | extras},
            )
        )
    return failed


def _keep_picture_data(picture: dict[str, Tensor], path: Path, title: str) -> None:
    """Store what the explainer's picture shows (``measures.picture``: images, part maps, performer maps,
    landmarks) and its ``title`` as ``path`` (an ``.npz``): the report draws the picture from it when it is
    written, so computing draws nothing. Written whole or not at all."""
    arrays: dict[str, Any] = {name: _array(value) for name, value in picture.items()} | {"title": np.array(title)}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as stream:
            np.savez_compressed(stream, **arrays)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _array(value: Tensor) -> np.ndarray:
    """A tensor as numpy, bit for bit (bfloat16, which numpy lacks, widened to float32 exactly)."""
    value = value.detach().cpu()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()


def _training_extras(log: dict, cached: bool, images: int) -> dict[str, float]:
    """What records keep of an explainer's training: cached or not, times, epochs, final losses."""
    extras = {
        "explainer_cached": float(cached),
        "explainer_train_seconds": round(float(log.get("seconds", 0.0)), 3),
        "explainer_seconds_per_epoch": round(float(log.get("seconds_per_epoch", 0.0)), 3),
        "explainer_epochs": float(log.get("epochs", 0)),
        "explainer_training_images": float(images),
    }
    history = log.get("history") or [{}]
    return extras | {f"explainer_final_{key}": float(value) for key, value in history[-1].items() if finite(value)}
