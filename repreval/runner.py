"""Run a plan: for each model variant (loaded once), each probe layer and saliency method, compute
the attribution maps batch by batch and let every aggregator and score read them.

Finished units are skipped; a unit group that fails is recorded as failed and the run goes on.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import torch
import yaml
from torch import Tensor

from . import explain
from .api import (
    Aggregator,
    AttributionMaps,
    AttributionScore,
    ImageSet,
    InputSpec,
    Network,
    SaliencyMethod,
    TextSet,
    TrainingContext,
)
from .config import PluginChoice, Suite
from .data import load_images, load_texts, noise_inputs, normalize
from .engine.attribution import component_maps
from .engine.estimate import sample_components
from .engine.probe import Probe
from .engine.sweep import MapRequest, sweep_maps, sweep_mean_maps
from .errors import ReprevalError
from .models import Model
from .plan import EMBEDDING, Plan, Unit, make_plan, set_fields
from .plugins import Plugins
from .report import FACTS_FILE, SuiteFacts
from .resources import TRAINING_THREADS, torch_threads
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
    warnings: list[str] = field(default_factory=list)  # what went wrong besides units (e.g. a picture)
    seconds: float = 0.0


#: the two noise input sets (noise score: real vs ``noise``; its chance level: ``noise`` vs ``noise_b``) and the
#: names their seeds derive from
NOISE_SETS = {"noise": "a", "noise_b": "b"}


class Inputs:
    """Preprocessed evaluation inputs and noise sets, cached per input spec."""

    def __init__(self, suite: Suite, plugins: Plugins, device: torch.device):
        self.suite, self.plugins, self.device = suite, plugins, device
        self._loaded: dict[tuple[str, InputSpec], ImageSet | TextSet] = {}
        self._last_batches: tuple[tuple[str, InputSpec], dict[str, Tensor]] | None = None

    def loaded(self, dataset: str, spec: InputSpec) -> ImageSet | TextSet:
        """The dataset's inputs for networks of ``spec``: images fitted to it, or texts for a text encoder."""
        key = (dataset, spec)
        if key not in self._loaded:
            config = self.suite.datasets[dataset]
            source = self.plugins.dataset.create(config.kind, config.options)
            where = f"{self.suite.where}: datasets.{dataset}"
            if spec.tokens:
                self._loaded[key] = load_texts(source, config.subset, spec, where, config.drift)
            else:
                self._loaded[key] = load_images(source, config.subset, spec, where, config.drift, config.landmarks)
        return self._loaded[key]

    def batch_source(self, network: Network, dataset: str) -> dict[str, Tensor]:
        """``real`` inputs of ``dataset`` plus the two seeded noise sets, normalised, on the device.

        The last one is kept: consecutive groups (layers, methods) of a dataset share it."""
        spec = network.input_spec
        if self._last_batches is None or self._last_batches[0] != (dataset, spec):
            data = self.loaded(dataset, spec)
            seeds = {name: derived_seed(self.suite.seed, f"noise-{part}") for name, part in NOISE_SETS.items()}
            if isinstance(data, TextSet):  # token ids; noise: random tokens where the texts have tokens
                if network.tokenize is None or network.noise_like is None:
                    raise ReprevalError("the model reads token ids but gives no tokenizer", where=network.description)
                real = network.tokenize(data.texts)
                batches = {"real": real, **{name: network.noise_like(real, seed) for name, seed in seeds.items()}}
            else:
                images = data.images
                assert isinstance(images, Tensor)  # load_images fits every image to the spec: one [N, C, H, W] tensor
                batches = {
                    "real": normalize(images, spec),
                    **{name: normalize(noise_inputs(len(images), spec, seed), spec) for name, seed in seeds.items()},
                }
            self._last_batches = ((dataset, spec), {name: batch.to(self.device) for name, batch in batches.items()})
        return self._last_batches[1]

    def training_data(self, dataset: str):
        def provide(network: Network) -> tuple[ImageSet, Tensor]:
            data = self.loaded(dataset, network.input_spec)
            if not isinstance(data, ImageSet):
                raise ReprevalError("repreval trains image models only", fix="evaluate the text encoder as it is")
            assert isinstance(data.images, Tensor)  # load_images fits every image to the spec: one tensor
            return data, normalize(data.images, network.input_spec)

        return provide


def run_suite(
    suite: Suite,
    plugins: Plugins,
    *,
    threads: int | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    plan: Plan | None = None,
) -> RunReport:
    """Compute every unfinished unit of ``suite``; return what happened.

    ``threads``: torch's CPU threads for the run (None: as they are; the CLI passes ``choose_threads()``).
    ``on_start(pending units)``; ``on_progress(units, what)``: units advanced, fractions of units while a long
    sweep computes its maps (so a display can move and estimate the remaining time)."""
    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    plan = plan or make_plan(suite, plugins)
    store = ResultStore(suite.output)
    store.write_suite(yaml.safe_dump(suite.raw, sort_keys=False))
    write_atomic(suite.output / FACTS_FILE, SuiteFacts.of(suite).to_json())
    report = RunReport(output=str(suite.output), total=len(plan.units))
    pending = [unit for unit in plan.units if not store.is_done(unit.id)]
    report.skipped = len(plan.units) - len(pending)
    if on_start:
        on_start(len(pending))
    if suite.executor.kind == "ray":
        from .executors import Local, run_on_ray

        here = Local(compute, Collected, RunReport, _record, _error_text, Inputs, model_of, resolve_device)
        run_on_ray(plan, plugins, pending, store, report, on_progress, here)
    else:
        compute(plan, plugins, pending, store, report, on_progress)
    report.seconds = time.perf_counter() - started
    return report


class Sink:
    """Where computed records go: the results folder (``ResultStore`` is one), or a list a remote worker
    returns to the driver, which alone writes the folder."""

    def write(self, record: ScoreRecord) -> None:
        raise NotImplementedError


class Collected(Sink):
    """Records kept in memory (a worker's, for the driver to write)."""

    def __init__(self) -> None:
        self.records: list[ScoreRecord] = []

    def write(self, record: ScoreRecord) -> None:
        self.records.append(record)


def model_of(plan: Plan, plugins: Plugins, model_id: str, inputs: Inputs, device) -> Model:
    """The suite's model ``model_id``, ready to build, train (once, cached) and derive variants from."""
    suite, config = plan.suite, plan.suite.models[model_id]
    return Model(
        config,
        plugins.model_source.create(config.source_name),
        training_data=inputs.training_data(config.train.dataset) if config.train else None,
        training_data_key=repr(set_fields(suite.datasets[config.train.dataset])) if config.train else "",
        where=f"{suite.where}: models.{model_id}",
        training_context=TrainingContext(plugins.registries(), device),
    )


def compute(
    plan: Plan,
    plugins: Plugins,
    units: list[Unit],
    sink: Sink | ResultStore,
    report: RunReport,
    on_progress: Callable[[float, str], None] | None = None,
) -> None:
    """Compute ``units`` here, model by model and variant by variant (each variant built once), writing each
    record to ``sink``; also draw the pictures of variants whose units an earlier run computed."""
    suite = plan.suite
    device = resolve_device(suite.device)
    inputs = Inputs(suite, plugins, device)
    run = _Run(plan, sink, report, on_progress)
    for model_id in suite.models:
        model_units = [unit for unit in units if unit.model == model_id]
        unpictured = [variant for variant in plan.variants[model_id] if _lacks_pictures(plan, model_id, variant)]
        if not model_units and not unpictured:
            continue
        model = model_of(plan, plugins, model_id, inputs, device)
        for variant in plan.variants[model_id]:
            variant_units = [unit for unit in model_units if unit.variant == variant]
            if variant_units:
                _run_variant(run, model, variant, variant_units, inputs, device)
            elif variant in unpictured:  # every unit done before pictures were kept: draw them now
                _pictures_only(run, model, variant, inputs, device)


@dataclass
class _Run:
    """Where a run's results go: the plan, the store, the report and the progress callback."""

    plan: Plan
    store: Sink | ResultStore
    report: RunReport
    on_progress: Callable[[float, str], None] | None

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
        if not all(bool(torch.isfinite(parameter).all()) for parameter in network.module.parameters()):
            raise _non_finite(network)
    except Exception as exc:
        run.fail(units, exc)
        return
    first = inputs.batch_source(network, plan.suite.evaluation.datasets[0])  # data the model cannot read: exit 2
    try:
        signature = embedding_signature(network, first)
    except Exception as exc:
        run.fail(units, exc)
        return
    extras: dict[str, float] = {"threads": torch.get_num_threads()}
    if model.config.train is not None and plan.variant(variant).needs_weights and model.training_log is not None:
        extras["train_seconds"] = round(model.training_log["seconds"], 3)
    shared = {"extras": extras, "embedding_signature": signature}  # fields of every record of this variant
    groups = [group for _, group in plan.groups(units)]
    for group in [g for g in groups if g[0].layer == EMBEDDING]:
        try:
            failed = _run_embedding_group(plan, network, inputs, group, run.store, device, shared)
        except Exception as exc:
            run.fail(group, exc)
            continue
        _finished(run, group, failed)
    for group in [g for g in groups if g[0].explains]:
        try:
            failed = _run_explainer_group(run, model, network, inputs, group, device, shared)
        except Exception as exc:
            run.fail(group, exc, progress=False)
            continue
        _finished(run, group, failed, credited=0.9 * len(group))
    attribution = [g for g in groups if g[0].layer != EMBEDDING and not g[0].explains]
    for dataset, grouped in groupby(attribution, key=lambda group: group[0].dataset):
        assert dataset is not None  # attribution units always name their evaluation dataset
        batches = inputs.batch_source(network, dataset)
        same_dataset = list(grouped)
        _run_sweeps(run, network, batches, same_dataset, device, shared)
        if dataset == plan.suite.evaluation.datasets[0] and _pictured(plan, model.config.id, variant):
            try:  # the maps of a few inputs, for the report's pictures; a failure here costs only the picture
                _keep_picture_maps(plan, network, batches, variant, model.config.id, same_dataset)
            except Exception as exc:  # any failure: the numbers above are what matters
                run.report.warnings.append(
                    f"{model.config.id}/{variant.label}: no attribution pictures: {_error_text(exc)}"
                )


def _attribution_groups(plan: Plan, model_id: str, variant: PluginChoice) -> list[list[Unit]]:
    """The attribution groups of one model variant on the first evaluation dataset (what pictures draw)."""
    first = plan.suite.evaluation.datasets[0]
    units = [
        u
        for u in plan.units
        if u.model == model_id and u.variant == variant and u.dataset == first and u.saliency is not None
    ]
    return [group for _, group in plan.groups(units)] if units else []


#: Most models a report draws maps of (the first replicate of each group, in suite order)
PICTURE_MODELS = 12


def _pictured(plan: Plan, model_id: str, variant: PluginChoice) -> bool:
    """Whether the report's pictures show this model variant: a few variants (trained and random first) of the
    first replicate of the first PICTURE_MODELS model groups."""
    from .render.maps import pictured

    firsts = list({config.group or model_id: key for key, config in reversed(plan.suite.models.items())}.values())
    models = sorted(firsts, key=list(plan.suite.models).index)[:PICTURE_MODELS]
    return model_id in models and variant.label in pictured([v.label for v in plan.variants[model_id]])


def _lacks_pictures(plan: Plan, model_id: str, variant: PluginChoice) -> bool:
    from .render.maps import maps_file

    return (
        _pictured(plan, model_id, variant)
        and bool(_attribution_groups(plan, model_id, variant))
        and not maps_file(plan.suite.output, model_id, variant.label).is_file()
    )


def _pictures_only(run: _Run, model: Model, variant: PluginChoice, inputs: Inputs, device) -> None:
    """The picture maps of a variant whose units were all computed by an earlier run."""
    plan = run.plan
    try:
        network = plan.variant(variant).network(model, plan.suite.seed)
        network.module.to(device).eval()
        batches = inputs.batch_source(network, plan.suite.evaluation.datasets[0])
        groups = _attribution_groups(plan, model.config.id, variant)
        _keep_picture_maps(plan, network, batches, variant, model.config.id, groups)
    except Exception as exc:  # any failure: the numbers are what matters
        run.report.warnings.append(f"{model.config.id}/{variant.label}: no attribution pictures: {_error_text(exc)}")


#: Real and noise inputs whose maps the report draws, and most components they are averaged over
PICTURE_INPUTS, PICTURE_NOISE, PICTURE_COMPONENTS = 2, 1, 256


def _keep_picture_maps(
    plan: Plan, network: Network, batches: dict[str, Tensor], variant: PluginChoice, model_id: str, groups
) -> None:
    """Store ``DIR/maps/<model>-<variant>.npz``: the inputs and, per saliency method and probe layer, each one's
    map (the suite's first channel aggregator, then the mean over components) for the first real inputs and a
    noise input. The report draws them (repreval.render.maps)."""
    import numpy as np

    from .render.maps import maps_file

    if network.input_spec.tokens:
        return  # text: no image to draw a map over
    evaluation = plan.suite.evaluation
    channel = plan.aggregator(evaluation.channel_aggregators[0]) if evaluation.channel_aggregators else None
    layers = list(dict.fromkeys(group[0].layer for group in groups))
    methods = list(dict.fromkeys(group[0].saliency for group in groups if group[0].saliency is not None))
    requests = {
        (method.label, layer): MapRequest(
            Probe.parse(layer), plan.saliency(method), None if plan.saliency(method).spatial else channel
        )
        for method in methods
        for layer in layers
    }
    if not requests:
        return
    inputs = torch.cat([batches["real"][:PICTURE_INPUTS], batches["noise"][:PICTURE_NOISE]])
    with torch.no_grad():
        dim = network.embed(inputs[:1]).shape[1]
    components = None
    if dim > PICTURE_COMPONENTS:
        generator = torch.Generator().manual_seed(derived_seed(plan.suite.seed, "picture-components"))
        components = torch.randperm(dim, generator=generator)[:PICTURE_COMPONENTS].sort().values
    maps = sweep_maps(
        network, list(requests.values()), inputs, components=components, memory_budget=evaluation.memory_budget
    )
    arrays: dict[str, Any] = {
        "inputs": inputs.float().cpu().numpy(),
        "components": np.array([dim, len(components) if components is not None else dim]),
    }
    for (method, layer), request in requests.items():
        arrays[f"{method}|{layer}"] = maps[request].float().mean(dim=1).cpu().numpy()  # mean over components
    path = maps_file(plan.suite.output, model_id, variant.label)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


#: Inputs and random directions of an embedding signature
SIGNATURE_INPUTS, SIGNATURE_DIRECTIONS = 4, 8


def embedding_signature(network: Network, batches: dict[str, Tensor]) -> list[float]:
    """A fingerprint of what the network embeds: its embedding of the first few evaluation inputs, projected on
    fixed random directions. Two variants with equal signatures embed alike (e.g. one whose classifier layer
    was re-initialised is the trained network as far as any attribution score can tell); reports leave such
    variants out of correlations."""
    with torch.no_grad():
        embedding = network.embed(batches["real"][:SIGNATURE_INPUTS]).double().flatten().cpu()
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(SIGNATURE_DIRECTIONS, embedding.numel(), generator=generator, dtype=torch.float64)
    return [float(v) for v in directions @ embedding / embedding.numel() ** 0.5]


def _finished(run: _Run, group: list[Unit], failed: list[tuple[Unit, Exception]], credited: float = 0.0) -> None:
    """Record a finished group; ``credited``: progress already reported for it while its maps were computed."""
    for unit, error in failed:
        run.fail([unit], error, progress=False)
    run.report.computed += len(group) - len(failed)
    if run.on_progress:
        run.on_progress(len(group) - credited, group[0].describe())


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ReprevalError):
        return exc.one_line()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def _finite(*values) -> bool:
    return all(value is None or math.isfinite(value) for value in values)


def _non_finite(network: Network) -> ReprevalError:
    """Why a score is NaN or infinite, as far as the weights tell."""
    broken = [name for name, p in network.module.named_parameters() if not bool(torch.isfinite(p).all())]
    cause = (
        f"NaN or inf in the weights ({broken[0]}{' and others' if len(broken) > 1 else ''})"
        if broken
        else ("NaN or inf in the activations or gradients")
    )
    return ReprevalError(f"the score is not a finite number: {cause}", fix="check the weights file or the inputs")


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


def _run_explainer_group(
    run: _Run, model: Model, network: Network, inputs: Inputs, group: list[Unit], device, shared: dict
) -> list[tuple[Unit, Exception]]:
    """Train (or load from the cache) one explainer of one layer, then write a record per metric. Features,
    training and measures run on TRAINING_THREADS CPU threads: a trained explainer, and every number read from
    it, must not depend on how busy the machine was (float sums round differently over more threads, and
    training amplifies the difference)."""
    with torch_threads(TRAINING_THREADS):
        return _explain(run, model, network, inputs, group, device, shared)


def _explain(
    run: _Run, model: Model, network: Network, inputs: Inputs, group: list[Unit], device, shared: dict
) -> list[tuple[Unit, Exception]]:
    plan, first = run.plan, group[0]
    suite = plan.suite
    assert suite.evaluation.explainer_data is not None and first.dataset is not None  # checked by the parser
    started = time.perf_counter()
    explainer = plan.explainer(first.score)
    layer = first.layer
    targets = explain.reconstruction_targets(model.config, network, layer, model.where)
    spec = network.input_spec
    training = inputs.loaded(suite.evaluation.explainer_data, spec)
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
    report = explain.progress_of(len(group), run.on_progress, first.describe().rsplit("/", 5)[0])
    context = TrainingContext(plan.instances.registries, device, report)
    trained = explain.train_or_load(
        explainer, path, features[layer], {name: features[name] for name in targets}, seed, context
    )
    report(1.0, "measuring")
    after = explain.weights_digest(network.module)
    if after != before:
        raise ReprevalError(
            f"the performer's weights changed while its explainer trained (sha256 {before[:12]} -> {after[:12]})",
            fix="an explainer must not touch the performer: fix the explainer plugin",
        )
    data = inputs.loaded(first.dataset, spec)
    assert isinstance(data, ImageSet) and isinstance(data.images, Tensor)
    metrics = [unit.metric for unit in group]
    measures = explain.measure(network, trained, layer, targets, data, normalize(data.images, spec), metrics, device)
    from .render.parts import parts_picture
    from .render.plots import explainer_picture

    coordinates = (first.model, first.variant.label, layer, first.score.label)
    parts_picture(measures.picture, explainer_picture(suite.output, *coordinates), " · ".join(coordinates))
    log = trained.log
    extras = measures.extras | {
        "explainer_cached": float(trained.cached),
        "explainer_train_seconds": round(float(log.get("seconds", 0.0)), 3),
        "explainer_seconds_per_epoch": round(float(log.get("seconds_per_epoch", 0.0)), 3),
        "explainer_epochs": float(log.get("epochs", 0)),
        "explainer_training_images": float(len(features[layer])),
    }
    history = log.get("history") or [{}]
    extras |= {f"explainer_final_{key}": float(value) for key, value in history[-1].items() if _finite(value)}
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
        if not per_item or not _finite(*per_item):
            failed.append((unit, _non_finite(network)))
            continue
        tensor = torch.tensor(per_item, dtype=torch.float64)
        run.store.write(
            _record(
                plan,
                unit,
                value=float(tensor.mean()),
                spread=float(tensor.std(correction=0)),
                values=[round(v, 7) for v in per_item],
                bound=1.0 if unit.metric in ("accuracy", "part_share") else None,
                n_inputs=len(per_item),
                seconds=seconds,
                device=str(device),
                provenance=provenance,
                **shared | {"extras": shared["extras"] | extras},
            )
        )
    return failed


def _run_embedding_group(
    plan: Plan, network: Network, inputs: Inputs, group: list[Unit], store: Sink | ResultStore, device, shared: dict
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
            if not _finite(value):
                failed.append((unit, _non_finite(network)))
                continue
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
                    **shared,
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


@dataclass
class _Collected:
    """Per-input values of one unit, gathered batch by batch."""

    values: list[Tensor] = field(default_factory=list)
    references: list[Tensor] = field(default_factory=list)
    errors: list[Tensor] = field(default_factory=list)


def _run_sweeps(
    run: _Run, network: Network, batches: dict[str, Tensor], groups: list[list[Unit]], device, shared: dict
) -> None:
    """Every group of one model variant and dataset: groups that can share passes form a family whose maps
    come from one sweep per batch (one forward, one batched backward per chunk of components, all layers and
    methods). A family that fails is retried group by group, so one bad layer does not sink the others."""
    plan = run.plan
    works: list[tuple[list[Unit], _GroupWork]] = []
    for group in groups:
        try:
            works.append((group, _plan_group(plan, network, batches, group)))
        except Exception as exc:
            run.fail(group, exc)
    for family in _families(plan, works):
        try:
            progress = _FamilyProgress(run, family)
            results = _run_family(plan, network, batches, family, run.store, device, shared, progress)
        except Exception as exc:
            if len(family) == 1:
                run.fail(family[0][0], exc)
                continue
            results = []
            for member in family:
                try:
                    progress = _FamilyProgress(run, [member])
                    results += _run_family(plan, network, batches, [member], run.store, device, shared, progress)
                except Exception as single:
                    run.fail(member[0], single)
        for group, failed in results:
            _finished(run, group, failed, progress.credit(group))


def _families(plan: Plan, works: list[tuple[list[Unit], _GroupWork]]) -> list[list[tuple[list[Unit], _GroupWork]]]:
    """Groups that one sweep serves: the same path (full maps, or the one-backward mean) and the same
    components. Forced forward mode keeps each group on its own (forward mode is per layer)."""
    if plan.suite.evaluation.strategy == "forward":
        return [[work] for work in works]
    families: dict[tuple, list[tuple[list[Unit], _GroupWork]]] = {}
    for group, work in works:
        sampled = None if work.sampled is None else tuple(work.sampled.tolist())
        families.setdefault((work.one_backward, sampled), []).append((group, work))
    return list(families.values())


class _FamilyProgress:
    """Moves the progress display while a family's maps are computed (per chunk of components), crediting
    each group its share, so a long sweep shows movement and a remaining time."""

    def __init__(self, run: _Run, family: list[tuple[list[Unit], _GroupWork]]):
        self.run, self.family = run, family
        self.units = sum(len(group) for group, _ in family)
        self.done = 0.0  # fraction of the family's maps computed
        self.calls = 1

    def chunk(self, done: int, total: int, call: int) -> None:
        """``done`` of ``total`` components of engine call ``call`` (of ``self.calls``) are finished."""
        fraction = (call + done / total) / self.calls
        step, self.done = fraction - self.done, fraction
        if self.run.on_progress and step > 0:
            what = f"{self.family[0][0][0].describe().rsplit('/', 5)[0]}: {100 * fraction:.0f} % of the maps"
            self.run.on_progress(0.99 * step * self.units, what)

    def credit(self, group: list[Unit]) -> float:
        return 0.99 * self.done * len(group)


def _run_family(
    plan: Plan,
    network: Network,
    batches: dict[str, Tensor],
    family: list[tuple[list[Unit], _GroupWork]],
    store: Sink | ResultStore,
    device,
    shared: dict,
    progress: _FamilyProgress | None = None,
) -> list[tuple[list[Unit], list[tuple[Unit, Exception]]]]:
    """Compute the family's maps batch by batch, score every unit, write the records; return each group with
    the units whose score failed. An error in the maps propagates."""
    started = time.perf_counter()
    sets = [name for name in ("real", "noise", "noise_b") if any(name in work.sets for _, work in family)]
    failed: dict[str, Exception] = {}
    collected = {unit.id: _Collected() for group, _ in family for unit in group}
    zero_maps = {id(group): [0, 0] for group, _ in family}
    count, batch_size = batches["real"].shape[0], plan.suite.evaluation.batch_size
    batch_count = -(-count // batch_size)
    per_batch = len(sets) if plan.suite.evaluation.smoothing.active else 1
    if progress:
        progress.calls = batch_count * per_batch
    for batch_index, start in enumerate(range(0, count, batch_size)):
        rows = slice(start, min(count, start + batch_size))

        def on_chunk(done: int, total: int, call: int, first: int = batch_index * per_batch) -> None:
            if progress:
                progress.chunk(done, total, first + call)

        maps = _family_maps(plan, network, family, batches, sets, batch_index, rows, on_chunk)
        for group, work in family:
            if not all(bool(torch.isfinite(maps[name][_request(work)]).all()) for name in work.sets):
                failed.update({unit.id: _non_finite(network) for unit in group if unit.id not in failed})
                continue  # normalising NaN maps would hide them behind finite scores
            attribution = _attribution(work, maps)
            real = attribution.real
            if real is None:
                real = next(iter(attribution.aggregated.values()))[:, None]
            zero_maps[id(group)][0] += int((real.flatten(2).abs().amax(dim=-1) == 0).sum())
            zero_maps[id(group)][1] += real.shape[0] * real.shape[1]
            for unit in group:
                if unit.id not in failed:
                    try:
                        _score_batch(plan, work, unit, attribution, batch_index, collected[unit.id])
                    except Exception as exc:
                        failed[unit.id] = exc
    seconds = round((time.perf_counter() - started) / len(family), 3)  # the family's time, shared by its groups
    results = []
    for group, work in family:
        zeros, total = zero_maps[id(group)]
        for unit in group:
            if unit.id in failed:
                continue
            fields = _summary(collected[unit.id], work)
            estimated = fields.pop("estimated")
            if not _finite(fields["value"], *fields.get("values") or ()):
                failed[unit.id] = _non_finite(network)
                continue
            score = work.scores[unit.score.label]
            store.write(
                _record(
                    plan,
                    unit,
                    **fields,
                    bound=score.bounds[1] if score.bounds else None,
                    degenerate_maps=zeros / max(total, 1),
                    seconds=seconds,
                    device=str(device),
                    **shared | {"extras": shared["extras"] | estimated},
                )
            )
        results.append((group, [(unit, failed[unit.id]) for unit in group if unit.id in failed]))
    return results


def _request(work: _GroupWork) -> MapRequest:
    return MapRequest(work.probe, work.method, None if work.one_backward else work.channel)


def _attribution(work: _GroupWork, maps: dict[str, dict[MapRequest, Tensor]]) -> AttributionMaps:
    """The group's maps of one batch, from the family's."""
    request = _request(work)
    if work.one_backward:
        aggregated = {
            (name, agg): maps[name][request] for name in work.sets for agg in work.aggregators.values() if agg.linear
        }
        return AttributionMaps(None, aggregated=aggregated)
    sets = {name: maps[name][request] for name in work.sets}
    return AttributionMaps(sets.get("real"), sets.get("noise"), sets.get("noise_b"))


def _family_maps(
    plan: Plan,
    network: Network,
    family: list[tuple[list[Unit], _GroupWork]],
    batches: dict[str, Tensor],
    sets: list[str],
    batch_index: int,
    rows: slice,
    on_chunk: Callable[[int, int, int], None] | None = None,
) -> dict[str, dict[MapRequest, Tensor]]:
    """Maps of one batch for every request of the family and every input set. Without smoothing the sets go
    through the network as one batch; with it each set keeps its own seeded perturbation."""
    evaluation = plan.suite.evaluation
    works = [work for _, work in family]
    requests = list(dict.fromkeys(_request(work) for work in works))
    one_backward, sampled = works[0].one_backward, works[0].sampled
    if evaluation.strategy == "forward":  # forward mode: one group per family, the per-layer engine
        work = works[0]

        def compute(inputs: Tensor, seed: int, call: int = 0) -> dict[MapRequest, Tensor]:
            maps = component_maps(
                network, work.probe, inputs, work.method, work.channel, chunk_size=evaluation.chunk_size,
                strategy="forward", memory_budget=evaluation.memory_budget, smoothing=evaluation.smoothing,
                seed=seed, components=sampled,
            )  # fmt: skip
            return {requests[0]: maps}
    elif one_backward:

        def compute(inputs: Tensor, seed: int, call: int = 0) -> dict[MapRequest, Tensor]:
            return sweep_mean_maps(network, requests, inputs, smoothing=evaluation.smoothing, seed=seed)
    else:

        def compute(inputs: Tensor, seed: int, call: int = 0) -> dict[MapRequest, Tensor]:
            return sweep_maps(
                network, requests, inputs, components=sampled, chunk_size=evaluation.chunk_size,
                memory_budget=evaluation.memory_budget, smoothing=evaluation.smoothing, seed=seed,
                on_chunk=None if on_chunk is None else lambda done, total: on_chunk(done, total, call),
            )  # fmt: skip

    if evaluation.smoothing.active:
        return {
            name: _floats(
                compute(batches[name][rows], derived_seed(plan.suite.seed, f"smoothing-{name}-{batch_index}"), call)
            )
            for call, name in enumerate(sets)
        }
    together = torch.cat([batches[name][rows] for name in sets])
    maps = _floats(compute(together, 0))
    return {name: {r: value.chunk(len(sets))[i] for r, value in maps.items()} for i, name in enumerate(sets)}


def _floats(maps: dict[MapRequest, Tensor]) -> dict[MapRequest, Tensor]:
    return {request: value.float() for request, value in maps.items()}


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
        "reference_values": [] if reference is None else [round(float(v), 7) for v in reference],
        "n_inputs": per_input.numel(),
        "estimated": estimated,
    }
