"""The predicted cost of a run before it starts (``repreval validate``, ``repreval eval``).

Maps cost one tap pass per batch and one backward row per component (D, or the sampled k) through the probes'
tails, shared by every request of a family. So each model is calibrated once, on its untrained architecture (the
cost does not depend on the weights) and the first few inputs of each evaluation dataset: the runner's own engine
call for each family of the model's groups, timed at two component counts, gives a fixed part ``a`` and a cost
per component ``s`` at the calibration batch; a batch of the run costs ``(a + s·rows)`` scaled to its size, and the
run ``batches × variants`` of those. Calibration runs in the reverse sweep; where ``auto`` sends requests forward
the run is faster than predicted. Training (of models and explainers) and embedding scores are not predicted: the
prediction names them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from ..bench import resident_bytes, timed
from ..plan import Plan, Unit, UnitKind
from ..plugins import Plugins
from .attribution import INPUT_SETS, _families, _family_maps, plan_group
from .compute import model_of
from .context import resolve_device
from .inputs import Inputs

#: Inputs and component counts a calibration call uses (two counts: the fixed part and the cost per component)
CALIBRATION_INPUTS, CALIBRATION_COMPONENTS = 8, (4, 12)
#: Seconds every run pays besides its units (start-up, plan, pictures, report) on the reference 2-core machine
FIXED_SECONDS = 6.0


@dataclass
class Prediction:
    """Predicted seconds (computing maps, plus the fixed part) and peak memory of the attribution units, and what
    the prediction leaves out."""

    seconds: float = 0.0
    peak_bytes: int = 0
    calibration_seconds: float = 0.0
    not_predicted: list[str] = field(default_factory=list)
    largest_dim: int = 0
    variant_seconds: dict[str, float] = field(default_factory=dict)  # by model: one variant's units

    @property
    def total_seconds(self) -> float:
        """The predicted duration of the whole run (what it does not predict excluded)."""
        return self.seconds + FIXED_SECONDS


def predict(plan: Plan, plugins: Plugins, inputs: Inputs | None = None) -> Prediction:
    """Calibrate each model of ``plan`` on its first variant's attribution groups and extrapolate to every variant
    and input; ``inputs``: the run's, when it has loaded them already."""
    prediction = Prediction()
    started = time.perf_counter()
    device = resolve_device(plan.suite.device)
    inputs = inputs or Inputs(plan.suite, plugins, device)
    by_model: dict[str, list[Unit]] = {}
    for unit in plan.units:
        by_model.setdefault(unit.model, []).append(unit)
    for model_id, units in by_model.items():
        _predict_model(plan, plugins, model_id, units, inputs, device, prediction)
    prediction.calibration_seconds = time.perf_counter() - started
    prediction.peak_bytes += resident_bytes() if device.type == "cpu" else 0  # the process itself: torch, model, data
    return prediction


def _predict_model(plan, plugins, model_id, units, inputs, device, prediction: Prediction) -> None:
    config = plan.suite.models[model_id]
    variants = plan.variants[model_id]
    if config.train:
        prediction.not_predicted.append(f"training {model_id}")
    kinds = {unit.kind for unit in units}
    if UnitKind.EXPLAINER in kinds:
        prediction.not_predicted.append(f"explainers of {model_id}")
    first = [u for u in units if u.variant == variants[0] and u.kind == UnitKind.ATTRIBUTION]
    embedding = {u.score for u in units if u.variant == variants[0] and u.kind == UnitKind.EMBEDDING}
    if not first and not embedding:
        return
    model = model_of(plan, plugins, model_id, inputs, device)
    network = model.untrained(config.seed)
    network.module.to(device).eval()
    seconds = _embedding_seconds(plan, network, inputs, embedding) if embedding else 0.0
    for dataset in dict.fromkeys(unit.dataset for unit in first):
        assert dataset is not None
        batches = inputs.batch_source(network, dataset)
        groups = [group for _, group in plan.groups([u for u in first if u.dataset == dataset])]
        works = [(group, plan_group(plan, network, batches, group)) for group in groups]
        count = batches["real"].shape[0]
        batch_size = min(plan.suite.evaluation.batch_size, count)
        calibration = min(CALIBRATION_INPUTS, batch_size)
        for family in _families(works):
            per_batch, peak = _calibrate(plan, network, batches, family, calibration)
            budget = plan.suite.evaluation.memory_budget  # the engine keeps a call's chunks within it
            prediction.peak_bytes = max(prediction.peak_bytes, int(min(budget, peak * batch_size / calibration)))
            seconds += per_batch * batch_size / calibration * math.ceil(count / batch_size)
        with torch.no_grad():
            prediction.largest_dim = max(prediction.largest_dim, network.embed(batches["real"][:1]).shape[1])
    prediction.variant_seconds[model_id] = seconds
    prediction.seconds += seconds * len(variants)


def _embedding_seconds(plan: Plan, network, inputs: Inputs, scores) -> float:
    """Embedding scores (linear probes, classifier accuracy) of one variant: a forward pass over every input of the
    datasets their options name, timed per input on a calibration batch (the probes' fitting is not counted)."""
    names = {value for score in scores for _, value in score.options if value in plan.suite.datasets}
    total = 0.0
    for name in names:
        batch = inputs.batch_source(network, name)["real"]
        chosen = batch[: min(len(batch), CALIBRATION_INPUTS * 4)]
        with torch.no_grad():
            network.embed(chosen)  # warm-up
            started = time.perf_counter()
            network.embed(chosen)
            total += (time.perf_counter() - started) / len(chosen) * len(batch)
    return total


def _calibrate(plan: Plan, network, batches, family, inputs: int) -> tuple[float, float]:
    """Seconds of one batch of ``inputs`` inputs of the family at its full component count, from two
    timed calls (the fixed part and the cost per component); and the memory the calls added (bytes)."""
    works = [work for _, work in family]
    sets = [name for name in INPUT_SETS if any(name in work.sets for work in works)]
    rows = slice(0, inputs)
    if works[0].one_backward:
        return _timed(plan, network, family, batches, sets, rows)
    dim = works[0].dim or int(network.embed(batches["real"][:1]).shape[1])
    full = dim if works[0].sampled is None else len(works[0].sampled)
    counts = [min(k, full) for k in CALIBRATION_COMPONENTS]
    warm_up = [(group, replace(work, sampled=torch.arange(counts[1]), dim=dim)) for group, work in family]
    _, added = _timed(plan, network, warm_up, batches, sets, rows)  # first calls pay one-time costs (vmap, trials)
    timings = []
    for k in counts:
        cut = [(group, replace(work, sampled=torch.arange(k), dim=dim)) for group, work in family]
        timings.append(_timed(plan, network, cut, batches, sets, rows))
    (low, _), (high, _) = timings
    per_component = max(0.0, (high - low) / max(1, counts[1] - counts[0]))
    return low + per_component * (full - counts[0]), added * full / counts[1]


def _timed(plan, network, family, batches, sets, rows) -> tuple[float, float]:
    """Seconds of one engine call of the family, and the memory it used above what was in use before (bytes)."""
    device = batches["real"].device
    _, seconds, megabytes = timed(device, _family_maps, plan, network, family, batches, sets, 0, rows)
    return seconds, megabytes * 2**20
