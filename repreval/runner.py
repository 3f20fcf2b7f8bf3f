"""Run a plan: for each model variant (loaded once), each probe layer and saliency method, compute
the attribution maps batch by batch and let every aggregator and score read them.

Finished units are skipped; a unit group that fails is recorded as failed and the run goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

import torch
import yaml
from torch import Tensor

from .api import (
    Aggregator,
    AttributionMaps,
    AttributionScore,
    ImageSet,
    InputSpec,
    Network,
    SaliencyMethod,
    TrainingContext,
)
from .config import PluginChoice, Suite
from .data import load_images, noise_inputs, normalize
from .engine.attribution import component_maps, mean_map
from .engine.estimate import sample_components
from .engine.probe import Probe
from .errors import ReprevalError
from .models import Model
from .plan import EMBEDDING, Plan, Unit, make_plan
from .plugins import Plugins
from .report import FACTS_FILE, SuiteFacts
from .store import ResultStore, ScoreRecord, write_atomic


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (noise set, smoothing, ...) derived from the suite seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a device; CUDA asked for but missing is an
    error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ReprevalError(f"device {name!r} requested but CUDA is not available", fix="use device: cpu (or auto)")
    return torch.device(name)


@dataclass
class RunReport:
    """What a run did: units in total, computed, skipped as already done, failed (with errors), wall time."""

    output: str
    total: int = 0
    computed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (unit description, error)
    seconds: float = 0.0


class Inputs:
    """Preprocessed evaluation inputs and noise sets, cached per input spec."""

    def __init__(self, suite: Suite, plugins: Plugins, device: torch.device):
        self.suite, self.plugins, self.device = suite, plugins, device
        self._images: dict[tuple[str, InputSpec], ImageSet] = {}
        self._last_batches: tuple[tuple[str, InputSpec], dict[str, Tensor]] | None = None

    def images(self, dataset: str, spec: InputSpec) -> ImageSet:
        key = (dataset, spec)
        if key not in self._images:
            config = self.suite.datasets[dataset]
            source = self.plugins.dataset.create(config.kind, config.options)
            where = f"{self.suite.where}: datasets.{dataset}"
            self._images[key] = load_images(source, config.subset, spec, where, config.drift)
        return self._images[key]

    def batch_source(self, network: Network, dataset: str) -> dict[str, Tensor]:
        """``real`` inputs of ``dataset`` plus the two seeded noise sets, normalised, on the device.

        The last one is kept: consecutive groups (layers, methods) of a dataset share it."""
        spec = network.input_spec
        if self._last_batches is None or self._last_batches[0] != (dataset, spec):
            real = self.images(dataset, spec).images
            assert isinstance(real, Tensor)  # load_images fits every image to the spec: one [N, C, H, W] tensor
            count = len(real)
            self._last_batches = (
                (dataset, spec),
                {
                    "real": normalize(real, spec).to(self.device),
                    "noise": normalize(noise_inputs(count, spec, derived_seed(self.suite.seed, "noise-a")), spec).to(
                        self.device
                    ),
                    "noise_b": normalize(noise_inputs(count, spec, derived_seed(self.suite.seed, "noise-b")), spec).to(
                        self.device
                    ),
                },
            )
        return self._last_batches[1]

    def training_data(self, dataset: str):
        def provide(network: Network) -> tuple[ImageSet, Tensor]:
            data = self.images(dataset, network.input_spec)
            assert isinstance(data.images, Tensor)  # load_images fits every image to the spec: one tensor
            return data, normalize(data.images, network.input_spec)

        return provide


def run_suite(
    suite: Suite,
    plugins: Plugins,
    *,
    on_progress: Callable[[int, str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    plan: Plan | None = None,
) -> RunReport:
    """Compute every unfinished unit of ``suite``; return what happened."""
    started = time.perf_counter()
    plan = plan or make_plan(suite, plugins)
    store = ResultStore(suite.output)
    store.write_suite(yaml.safe_dump(suite.raw, sort_keys=False))
    write_atomic(suite.output / FACTS_FILE, SuiteFacts.of(suite).to_json())
    report = RunReport(output=str(suite.output), total=len(plan.units))
    pending = [unit for unit in plan.units if not store.is_done(unit.id)]
    report.skipped = len(plan.units) - len(pending)
    if on_start:
        on_start(len(pending))
    device = resolve_device(suite.device)
    inputs = Inputs(suite, plugins, device)
    context = TrainingContext(plugins.registries(), device)
    run = _Run(plan, store, report, on_progress)

    for model_id, config in suite.models.items():
        model_units = [unit for unit in pending if unit.model == model_id]
        if not model_units:
            continue
        model = Model(
            config,
            plugins.model_source.create(config.source_name),
            training_data=inputs.training_data(config.train.dataset) if config.train else None,
            training_data_key=repr(vars(suite.datasets[config.train.dataset])) if config.train else "",
            where=f"{suite.where}: models.{model_id}",
            training_context=context,
        )
        for variant in plan.variants[model_id]:
            variant_units = [unit for unit in model_units if unit.variant == variant]
            if variant_units:
                _run_variant(run, model, variant, variant_units, inputs, device)
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Run:
    """Where a run's results go: the plan, the store, the report and the progress callback."""

    plan: Plan
    store: ResultStore
    report: RunReport
    on_progress: Callable[[int, str], None] | None

    def fail(self, units: list[Unit], exc: BaseException, *, progress: bool = True) -> None:
        message = _error_text(exc)
        for unit in units:
            self.store.write(_record(self.plan, unit, status="failed", error=message))
            self.report.failures.append((unit.describe(), message))
        if progress and self.on_progress:
            self.on_progress(len(units), units[0].describe())


def _run_variant(run: _Run, model: Model, variant: PluginChoice, units: list[Unit], inputs: Inputs, device) -> None:
    """Build the variant's network once, then compute every group of its units (failures isolated)."""
    plan = run.plan
    try:
        network = plan.variant(variant).network(model, plan.suite.seed)
        network.module.to(device).eval()
    except Exception as exc:
        run.fail(units, exc)
        return
    extras = {}
    if model.config.train is not None and plan.variant(variant).needs_weights and model.training_log is not None:
        extras = {"train_seconds": round(model.training_log["seconds"], 3)}
    for _, group in plan.groups(units):
        try:
            if group[0].layer == EMBEDDING:
                failed = _run_embedding_group(plan, network, inputs, group, run.store, device, extras)
            else:
                dataset = group[0].dataset
                assert dataset is not None  # attribution units always name their evaluation dataset
                batches = inputs.batch_source(network, dataset)
                failed = _run_group(plan, network, batches, group, run.store, device, extras)
        except Exception as exc:
            run.fail(group, exc)
            continue
        for unit, error in failed:
            run.fail([unit], error, progress=False)
        run.report.computed += len(group) - len(failed)
        if run.on_progress:
            run.on_progress(len(group), group[0].describe())


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ReprevalError):
        return exc.one_line()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def _record(plan: Plan, unit: Unit, **fields) -> ScoreRecord:
    suite = plan.suite
    return ScoreRecord(
        unit_id=unit.id,
        suite=suite.name,
        model=unit.model,
        model_spec=suite.models[unit.model].spec,
        variant=unit.variant.label,
        layer=unit.layer,
        layer_index=0 if unit.layer == EMBEDDING else plan.layers[unit.model].index(unit.layer),
        saliency=unit.saliency.label if unit.saliency else None,
        channel_aggregator=unit.channel_aggregator,
        embedding_aggregator=unit.embedding_aggregator,
        score=unit.score_name,
        higher_is_better=unit.higher_is_better,
        dataset=unit.dataset,
        seed=suite.seed,
        **fields,
    )


def _run_embedding_group(
    plan: Plan, network: Network, inputs: Inputs, group: list[Unit], store: ResultStore, device, extras: dict
) -> list[tuple[Unit, Exception]]:
    """Embedding scores (linear probe, classifier accuracy): each computed once, one record per metric."""
    failed = []
    for _, same_score in groupby(group, key=lambda unit: unit.score.label):
        units = list(same_score)
        started = time.perf_counter()
        score = plan.score(units[0].score)
        try:
            metrics = score.compute(
                network,
                lambda name: inputs.training_data(name)(network),
                derived_seed(plan.suite.seed, units[0].score.label),
            )
        except Exception as exc:
            failed += [(unit, exc) for unit in units]
            continue
        seconds = time.perf_counter() - started
        for unit in units:
            value = float(metrics[unit.metric])
            store.write(
                _record(
                    plan,
                    unit,
                    value=value,
                    values=[value],
                    bound=score.bounds[1] if score.bounds else None,
                    n_inputs=1,
                    seconds=round(seconds, 3),
                    device=str(device),
                    extras=extras,
                )
            )
    return failed


@dataclass
class _GroupWork:
    """What one group of units needs from the engine, decided once before its batches."""

    probe: Probe
    method: SaliencyMethod
    channel: Aggregator | None
    scores: dict[str, AttributionScore]  # by score label
    aggregators: dict[str, Aggregator]  # component aggregators by label
    sets: list[str]  # input sets the maps are computed on: real, noise, noise_b
    one_backward: bool  # exact shortcut: one backward of mean_d z_d instead of D
    sampled: Tensor | None = None  # opt-in estimates: the k sampled components
    dim: int | None = None  # D, when components are sampled


def _plan_group(plan: Plan, network: Network, batches: dict[str, Tensor], group: list[Unit]) -> _GroupWork:
    evaluation, first = plan.suite.evaluation, group[0]
    assert first.saliency is not None
    method = plan.saliency(first.saliency)
    channel = None
    if first.channel_aggregator is not None:
        channel = plan.aggregator(
            next(c for c in evaluation.channel_aggregators if c.label == first.channel_aggregator)
        )
    scores = {unit.score.label: plan.score(unit.score) for unit in group}
    aggregators = {c.label: plan.aggregator(c) for c in evaluation.embedding_aggregators}
    noise_sets = max(score.noise_sets for score in scores.values())
    # Exact shortcut: when every unit reads only the mean over components of channel-mean maps of a method
    # linear in the gradient, one backward of mean_d z_d replaces the D per-component passes.
    one_backward = (
        method.linear_in_gradient
        and channel is not None
        and channel.linear
        and all(
            not scores[unit.score.label].reads_components
            and unit.embedding_aggregator in aggregators
            and aggregators[unit.embedding_aggregator].linear
            for unit in group
        )
    )
    work = _GroupWork(
        Probe.parse(first.layer),
        method,
        channel,
        scores,
        aggregators,
        ["real", "noise", "noise_b"][: 1 + noise_sets],
        one_backward,
    )
    if evaluation.sample_components is not None and not one_backward:
        with torch.no_grad():
            work.dim = network.embed(batches["real"][:1]).shape[1]
        if evaluation.sample_components < work.dim:
            seed = derived_seed(plan.suite.seed, f"components-{first.layer}")
            work.sampled = sample_components(work.dim, evaluation.sample_components, seed)
    return work


def _batch_maps(
    plan: Plan, network: Network, work: _GroupWork, batches: dict[str, Tensor], batch_index: int, rows: slice
) -> AttributionMaps:
    """The attribution maps of one batch of every input set the group's scores read."""
    evaluation = plan.suite.evaluation
    maps, aggregated = {}, {}
    for name in work.sets:
        seed = derived_seed(plan.suite.seed, f"smoothing-{name}-{batch_index}")
        if work.one_backward:
            mean = mean_map(
                network, work.probe, batches[name][rows], work.method, smoothing=evaluation.smoothing, seed=seed
            ).float()
            aggregated.update({(name, agg): mean for agg in work.aggregators.values() if agg.linear})
            continue
        maps[name] = component_maps(
            network,
            work.probe,
            batches[name][rows],
            work.method,
            work.channel,
            chunk_size=evaluation.chunk_size,
            strategy=evaluation.strategy,
            memory_budget=evaluation.memory_budget,
            smoothing=evaluation.smoothing,
            seed=seed,
            components=work.sampled,
        ).float()
    return AttributionMaps(maps.get("real"), maps.get("noise"), maps.get("noise_b"), aggregated)


@dataclass
class _Collected:
    """Per-input values of one unit, gathered batch by batch."""

    values: list[Tensor] = field(default_factory=list)
    references: list[Tensor] = field(default_factory=list)
    errors: list[Tensor] = field(default_factory=list)


def _run_group(
    plan: Plan,
    network: Network,
    batches: dict[str, Tensor],
    group: list[Unit],
    store: ResultStore,
    device,
    extras: dict,
) -> list[tuple[Unit, Exception]]:
    """Compute the maps of one (model, variant, layer, saliency, channel aggregator) and score every unit.

    Returns the units whose score failed (the others are written); an error in the maps propagates.
    """
    started = time.perf_counter()
    work = _plan_group(plan, network, batches, group)
    failed: dict[str, Exception] = {}
    collected = {unit.id: _Collected() for unit in group}
    zero_maps, all_maps = 0, 0
    count, batch_size = batches["real"].shape[0], plan.suite.evaluation.batch_size
    for batch_index, start in enumerate(range(0, count, batch_size)):
        attribution = _batch_maps(
            plan, network, work, batches, batch_index, slice(start, min(count, start + batch_size))
        )
        real = (
            attribution.real if attribution.real is not None else next(iter(attribution.aggregated.values()))[:, None]
        )
        zero_maps += int((real.flatten(2).abs().amax(dim=-1) == 0).sum())
        all_maps += real.shape[0] * real.shape[1]
        for unit in group:
            if unit.id not in failed:
                try:
                    _score_batch(plan, work, unit, attribution, batch_index, collected[unit.id])
                except Exception as exc:
                    failed[unit.id] = exc

    seconds = time.perf_counter() - started
    for unit in group:
        if unit.id not in failed:
            fields = _summary(collected[unit.id], work)
            estimated = fields.pop("estimated")
            score = work.scores[unit.score.label]
            store.write(
                _record(
                    plan,
                    unit,
                    **fields,
                    bound=score.bounds[1] if score.bounds else None,
                    degenerate_maps=zero_maps / max(all_maps, 1),
                    seconds=round(seconds, 3),
                    device=str(device),
                    extras=extras | estimated,
                )
            )
    return [(unit, failed[unit.id]) for unit in group if unit.id in failed]


def _score_batch(
    plan: Plan, work: _GroupWork, unit: Unit, attribution: AttributionMaps, batch_index: int, collected: _Collected
) -> None:
    score = work.scores[unit.score.label]
    aggregator = work.aggregators.get(unit.embedding_aggregator) if unit.embedding_aggregator else None
    if work.sampled is None:
        result = score.compute(attribution, aggregator)
    else:
        assert work.dim is not None
        result = score.estimate(
            attribution, aggregator, work.dim, derived_seed(plan.suite.seed, f"bootstrap-{batch_index}")
        )
        if result.standard_error is None:
            raise ReprevalError(
                f"score {unit.score.label!r} returned an estimate without a standard error",
                fix="set ScoreValues.standard_error in the score's estimate()",
            )
        collected.errors.append(result.standard_error.detach().cpu().reshape(-1))
    collected.values.append(result.values.detach().cpu().reshape(-1))
    if result.reference is not None:
        collected.references.append(result.reference.detach().cpu().reshape(-1))


def _summary(collected: _Collected, work: _GroupWork) -> dict:
    """A unit's record fields from its per-input values."""
    per_input = torch.cat(collected.values).double()
    reference = torch.cat(collected.references).double() if collected.references else None
    estimated = {}
    if collected.errors:  # the same components for every input: errors correlate, so average the SEs
        assert work.sampled is not None
        estimated = {
            "standard_error": float(torch.cat(collected.errors).double().mean()),
            "sampled_components": len(work.sampled),
            "components": work.dim,
        }
    return {
        "value": float(per_input.mean()),
        "spread": float(per_input.std(correction=0)),
        "reference": None if reference is None else float(reference.mean()),
        "reference_spread": None if reference is None else float(reference.std(correction=0)),
        "values": [round(float(v), 7) for v in per_input],
        "n_inputs": per_input.numel(),
        "estimated": estimated,
    }
