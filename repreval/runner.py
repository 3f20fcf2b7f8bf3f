"""Run a plan: for each model variant (loaded once), each probe layer and saliency method, compute
the attribution maps batch by batch and let every aggregator and score read them.

Finished units are skipped; a unit group that fails is recorded as failed and the run goes on.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from itertools import groupby
from typing import Callable

import torch
import yaml
from torch import Tensor

from .api import AttributionMaps, ImageSet, InputSpec, Network
from .data import load_images, normalize, uniform_noise
from .engine.attribution import component_maps, mean_map
from .engine.estimate import sample_components
from .engine.probe import Probe
from .errors import ReprevalError
from .models import Model
from .plan import EMBEDDING, NOT_APPLICABLE, Plan, Unit, make_plan
from .plugins import Plugins
from .store import ResultStore, ScoreRecord
from .suite import Suite


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (noise set, smoothing, ...) derived from the suite seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ReprevalError(f"device {name!r} requested but CUDA is not available", fix="use device: cpu (or auto)")
    return torch.device(name)


@dataclass
class RunReport:
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
            where = f"{self.suite.path or 'suite'}: datasets.{dataset}"
            self._images[key] = load_images(source, config.subset, spec, where, config.drift)
        return self._images[key]

    def batch_source(self, network: Network, dataset: str) -> dict[str, Tensor]:
        """``real`` inputs of ``dataset`` plus the two seeded noise sets, normalised, on the device.

        The last one is kept: consecutive groups (layers, methods) of a dataset share it."""
        spec = network.input_spec
        if self._last_batches is None or self._last_batches[0] != (dataset, spec):
            real = self.images(dataset, spec).images
            count = len(real)
            self._last_batches = ((dataset, spec), {
                "real": normalize(real, spec).to(self.device),
                "noise": normalize(uniform_noise(count, spec, derived_seed(self.suite.seed, "noise-a")), spec).to(self.device),
                "noise_b": normalize(uniform_noise(count, spec, derived_seed(self.suite.seed, "noise-b")), spec).to(self.device),
            })
        return self._last_batches[1]

    def training_data(self, dataset: str):
        def provide(network: Network) -> tuple[ImageSet, Tensor]:
            data = self.images(dataset, network.input_spec)
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
    report = RunReport(output=str(suite.output), total=len(plan.units))
    pending = [unit for unit in plan.units if not store.is_done(unit.id)]
    report.skipped = len(plan.units) - len(pending)
    if on_start:
        on_start(len(pending))
    device = resolve_device(suite.device)
    inputs = Inputs(suite, plugins, device)

    for model_id, config in suite.models.items():
        model_units = [unit for unit in pending if unit.model == model_id]
        if not model_units:
            continue
        training_key = ""
        if config.train:
            training_key = repr(vars(suite.datasets[config.train.dataset]))
        model = Model(
            config,
            plugins.model_source.create(config.source_name),
            training_data=inputs.training_data(config.train.dataset) if config.train else None,
            training_data_key=training_key,
            where=f"{suite.path or 'suite'}: models.{model_id}",
        )
        for variant in plan.variants[model_id]:
            variant_units = [unit for unit in model_units if unit.variant == variant]
            if not variant_units:
                continue
            try:
                network = variant.create(plugins.variant).network(model, suite.seed)
                network.module.to(device).eval()
            except Exception as exc:  # noqa: BLE001 - one bad model must not stop the others
                _fail(store, plan, variant_units, exc, report, on_progress)
                continue
            extras = {"train_seconds": round(model.training_log["seconds"], 3)} if variant_uses_training(model, variant, plugins) else {}
            for _, group in plan.groups(variant_units):
                try:
                    if group[0].layer == EMBEDDING:
                        failed = _run_embedding_group(plan, plugins, network, inputs, group, store, device, extras)
                    else:
                        failed = _run_group(plan, plugins, network, inputs.batch_source(network, group[0].dataset), group, store, device, extras)
                except Exception as exc:  # noqa: BLE001 - the maps failed: every unit of the group did
                    _fail(store, plan, group, exc, report, on_progress)
                    continue
                for unit, exc in failed:
                    _fail(store, plan, [unit], exc, report, None)
                report.computed += len(group) - len(failed)
                if on_progress:
                    on_progress(len(group), group[0].describe())
            del network
    report.seconds = time.perf_counter() - started
    return report


def variant_uses_training(model: Model, variant, plugins: Plugins) -> bool:
    """Whether the variant's network came from the model's training step (its records carry the training time)."""
    return model.config.train is not None and variant.create(plugins.variant).needs_weights and model.training_log is not None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ReprevalError):
        return exc.one_line()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def _fail(store, plan, units, exc, report, on_progress):
    message = _error_text(exc)
    for unit in units:
        store.write(_record(plan, unit, status="failed", error=message))
        report.failures.append((unit.describe(), message))
    if on_progress:
        on_progress(len(units), units[0].describe())


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
        saliency=unit.saliency.label,
        channel_aggregator=unit.channel_aggregator,
        embedding_aggregator=unit.embedding_aggregator,
        score=unit.score_name,
        higher_is_better=unit.higher_is_better,
        dataset=unit.dataset,
        seed=suite.seed,
        **fields,
    )


def _run_embedding_group(plan: Plan, plugins: Plugins, network: Network, inputs: Inputs, group: list[Unit], store: ResultStore, device, extras: dict) -> list[tuple[Unit, Exception]]:
    """Embedding scores (linear probe, classifier accuracy): each computed once, one record per metric."""
    failed = []
    for _, units in groupby(group, key=lambda unit: unit.score.label):
        units = list(units)
        started = time.perf_counter()
        try:
            score = units[0].score.create(plugins.score)
            metrics = score.compute(network, lambda name: inputs.training_data(name)(network), derived_seed(plan.suite.seed, score.label))
        except Exception as exc:  # noqa: BLE001 - one broken score must not sink the others
            failed += [(unit, exc) for unit in units]
            continue
        seconds = time.perf_counter() - started
        for unit in units:
            value = float(metrics[unit.metric])
            store.write(_record(plan, unit, value=value, values=[value], bound=score.bounds[1] if score.bounds else None,
                                n_inputs=1, seconds=round(seconds, 3), device=str(device), extras=extras))
    return failed


def _run_group(plan: Plan, plugins: Plugins, network: Network, batches: dict[str, Tensor], group: list[Unit], store: ResultStore, device, extras: dict) -> list[tuple[Unit, Exception]]:
    """Compute the maps of one (model, variant, layer, saliency, channel aggregator) and score every unit.

    Returns the units whose score failed (the others are written); an error in the maps propagates.
    """
    started = time.perf_counter()
    suite, evaluation = plan.suite, plan.suite.evaluation
    first = group[0]
    probe = Probe.parse(first.layer)
    method = first.saliency.create(plugins.saliency)
    channel = None
    if first.channel_aggregator != NOT_APPLICABLE:
        channel = next(c for c in evaluation.channel_aggregators if c.label == first.channel_aggregator).create(plugins.aggregator)
    scores = {unit.score.label: unit.score.create(plugins.score) for unit in group}
    embedding_aggregators = {c.label: c.create(plugins.aggregator) for c in evaluation.embedding_aggregators}
    noise_sets = max(score.noise_sets for score in scores.values())
    sets = ["real", "noise", "noise_b"][: 1 + noise_sets]
    # Exact shortcut: when every unit reads only the mean over components of channel-mean maps of a method
    # linear in the gradient, one backward of mean_d z_d replaces the D per-component passes.
    one_backward = (
        method.linear_in_gradient
        and channel is not None
        and channel.linear
        and all(
            not scores[unit.score.label].reads_components
            and unit.embedding_aggregator in embedding_aggregators
            and embedding_aggregators[unit.embedding_aggregator].linear
            for unit in group
        )
    )

    # Opt-in estimates: the maps of k components sampled once per group (seeded), scores estimated with SEs.
    sampled, dim = None, None
    if evaluation.sample_components is not None and not one_backward:
        with torch.no_grad():
            dim = network.embed(batches["real"][:1]).shape[1]
        if evaluation.sample_components < dim:
            sampled = sample_components(dim, evaluation.sample_components, derived_seed(suite.seed, f"components-{first.layer}"))

    failed: dict[str, Exception] = {}
    errors: dict[str, list[Tensor]] = {unit.id: [] for unit in group}
    values: dict[str, list[Tensor]] = {unit.id: [] for unit in group}
    references: dict[str, list[Tensor]] = {unit.id: [] for unit in group}
    zero_maps, all_maps = 0, 0
    count = batches["real"].shape[0]
    for batch_index, start in enumerate(range(0, count, evaluation.batch_size)):
        stop = min(count, start + evaluation.batch_size)
        maps, aggregated = {}, {}
        for name in sets:
            seed = derived_seed(suite.seed, f"smoothing-{name}-{batch_index}")
            if one_backward:
                mean = mean_map(network, probe, batches[name][start:stop], method, smoothing=evaluation.smoothing, seed=seed).float()
                aggregated.update({(name, label): mean for label, agg in embedding_aggregators.items() if agg.linear})
                continue
            maps[name] = component_maps(
                network,
                probe,
                batches[name][start:stop],
                method,
                channel,
                chunk_size=evaluation.chunk_size,
                strategy=evaluation.strategy,
                memory_budget=evaluation.memory_budget,
                smoothing=evaluation.smoothing,
                seed=seed,
                components=sampled,
            ).float()
        real = maps["real"] if maps else aggregated[next(iter(aggregated))][:, None]
        zero_maps += int((real.flatten(2).abs().amax(dim=-1) == 0).sum())
        all_maps += real.shape[0] * real.shape[1]
        attribution = AttributionMaps(maps.get("real"), maps.get("noise"), maps.get("noise_b"), aggregated)
        for unit in group:
            if unit.id in failed:
                continue
            try:
                score, aggregator = scores[unit.score.label], embedding_aggregators.get(unit.embedding_aggregator)
                if sampled is None:
                    result = score.compute(attribution, aggregator)
                else:
                    result = score.estimate(attribution, aggregator, dim, derived_seed(suite.seed, f"bootstrap-{batch_index}"))
                    errors[unit.id].append(result.standard_error.detach().cpu().reshape(-1))
                values[unit.id].append(result.values.detach().cpu().reshape(-1))
                if result.reference is not None:
                    references[unit.id].append(result.reference.detach().cpu().reshape(-1))
            except Exception as exc:  # noqa: BLE001 - one broken score must not sink the others
                failed[unit.id] = exc

    seconds = time.perf_counter() - started
    for unit in group:
        if unit.id in failed:
            continue
        score = scores[unit.score.label]
        per_input = torch.cat(values[unit.id]).double()
        reference = torch.cat(references[unit.id]).double() if references[unit.id] else None
        estimated = {}
        if errors[unit.id]:  # the same components for every input: errors correlate, so average the SEs
            estimated = {"standard_error": float(torch.cat(errors[unit.id]).double().mean()), "sampled_components": len(sampled), "components": dim}
        record = _record(
            plan,
            unit,
            value=float(per_input.mean()),
            spread=float(per_input.std(correction=0)),
            reference=None if reference is None else float(reference.mean()),
            reference_spread=None if reference is None else float(reference.std(correction=0)),
            bound=score.bounds[1] if score.bounds else None,
            values=[round(float(v), 7) for v in per_input],
            degenerate_maps=zero_maps / max(all_maps, 1),
            n_inputs=per_input.numel(),
            seconds=round(seconds, 3),
            device=str(device),
            extras=extras | estimated,
        )
        store.write(record)
    return [(unit, failed[unit.id]) for unit in group if unit.id in failed]
