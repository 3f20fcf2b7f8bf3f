"""Suite -> plan: units of work with stable ids, grouped so that each attribution is computed once.

A unit is one score value: model × variant × probe layer × saliency × channel aggregator ×
embedding aggregator × score. Units that share (model, variant, layer, saliency, channel aggregator)
read the same attribution maps and form a group. Building the plan also builds every model's
architecture (untrained) to resolve and check its probe layers and embedding: no weights, no data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from itertools import groupby, product
from pathlib import Path
from typing import Any

from .api import AttributionMaps, EmbeddingScore, Network, Registries
from .config import PluginChoice, Suite
from .engine.probe import Probe
from .errors import ReprevalError, suggest
from .layouts import NO_REACH, check_layouts, usable_defaults, verify_layers
from .models import Model, layer_table, load_state, read_checkpoint
from .registry import Registry

#: The "layer" records name for units whose score reads the network's embedding or logits, not attribution maps.
EMBEDDING = "(embedding)"
#: How ids spell a coordinate that does not apply (None): ids stay those of repreval 0.1, so older result
#: folders resume.
_ID_NONE = "-"


class UnitKind(Enum):
    """What computes a unit: attribution maps read by a score, a score of the embedding itself (linear probe,
    classifier accuracy), or an explainer network trained on a layer (Part 2)."""

    ATTRIBUTION = "attribution"
    EMBEDDING = "embedding"
    EXPLAINER = "explainer"


@dataclass(frozen=True, kw_only=True)
class Unit:
    """One score value. Coordinates that do not apply are None: the channel aggregator of a spatial method
    (Grad-CAM), the component aggregator of a score that reads every component, and the saliency method
    and dataset of an embedding score."""

    kind: UnitKind
    model: str
    variant: PluginChoice
    layer: str  # the probe layer (EMBEDDING for embedding scores; the explained layer for explainers)
    score: PluginChoice  # the score; for an EXPLAINER unit, the explainer
    higher_is_better: bool
    fingerprint: str  # everything else that changes the value (data, seeds, weights, options)
    saliency: PluginChoice | None = None
    channel_aggregator: str | None = None  # label
    embedding_aggregator: str | None = None  # label
    metric: str = ""  # for embedding scores and explainers: which of their metrics (top1, part_share, ...)
    dataset: str | None = None  # the evaluation dataset the maps are computed on

    @property
    def id(self) -> str:
        key = [*self.group, self.embedding_aggregator, self.score.label, self.fingerprint]
        parts = [_ID_NONE if part is None else part for part in key] + ([self.metric] if self.metric else [])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]

    @property
    def score_name(self) -> str:
        """The score as records and leaderboards name it: ``noise_score``, ``linear_probe.top1``."""
        return f"{self.score.label}.{self.metric}" if self.metric else self.score.label

    @property
    def group(self) -> tuple:
        """Units computed together: those reading the same maps, or one explainer's metrics at one layer."""
        shared = (
            self.model,
            self.variant.label,
            self.dataset,
            self.layer,
            self.saliency and self.saliency.label,
            self.channel_aggregator,
        )
        return (*shared, "explainer", self.score.label) if self.kind is UnitKind.EXPLAINER else shared

    def describe(self) -> str:
        saliency = self.saliency.label if self.saliency else _ID_NONE
        parts = [
            self.model,
            self.variant.label,
            *([self.dataset] if self.dataset else []),
            self.layer,
            saliency,
            self.channel_aggregator or _ID_NONE,
            self.embedding_aggregator or _ID_NONE,
            self.score_name,
        ]
        return "/".join(parts)


class PluginInstances:
    """Each plugin choice of a plan instantiated once, so a plugin's ``__init__`` may do real work."""

    def __init__(self, registries: Registries):
        self.registries = registries
        self._made: dict[tuple[str, PluginChoice], Any] = {}

    def get(self, kind: str, choice: PluginChoice) -> Any:
        key = (kind, choice)
        if key not in self._made:
            registry: Registry = getattr(self.registries, kind)
            self._made[key] = registry.create(choice.name, dict(choice.options))
        return self._made[key]


@dataclass
class Plan:
    """Every unit of a suite in group order, with each model's probe layers, its expanded variants and the plugin
    instances."""

    suite: Suite
    units: list[Unit]
    layers: dict[str, tuple[str, ...]]  # model id -> probe layers in depth order
    variants: dict[str, list[PluginChoice]]  # model id -> variants, expanded (``layer: each`` -> one per layer)
    instances: PluginInstances = field(repr=False, default=None)  # type: ignore[assignment]
    notes: list[str] = field(default_factory=list)  # what validation left out or found, one line each

    def groups(self, units: list[Unit] | None = None) -> list[tuple[tuple, list[Unit]]]:
        """(group key, units) in plan order; the plan is already sorted by group."""
        return [(key, list(items)) for key, items in groupby(units or self.units, key=lambda u: u.group)]

    def saliency(self, choice: PluginChoice) -> Any:
        return self.instances.get("saliency", choice)

    def aggregator(self, choice: PluginChoice) -> Any:
        return self.instances.get("aggregator", choice)

    def score(self, choice: PluginChoice) -> Any:
        return self.instances.get("score", choice)

    def variant(self, choice: PluginChoice) -> Any:
        return self.instances.get("variant", choice)

    def explainer(self, choice: PluginChoice) -> Any:
        return self.instances.get("explainer", choice)


def fingerprint(suite: Suite, model_id: str, datasets: tuple[str, ...]) -> str:
    """What a unit's value depends on besides its own coordinates (``datasets``: those it reads)."""
    model = suite.models[model_id]
    evaluation = suite.evaluation
    weights = Path(model.weights) if model.weights and Path(model.weights).is_file() else None
    described = {
        "model": set_fields(model, ignore=("id", "group", "baseline")),
        "weights_file": weights and [weights.stat().st_size, weights.stat().st_mtime_ns],
        "train_data": model.train and set_fields(suite.datasets[model.train.dataset]),
        "data": [set_fields(suite.datasets[name]) for name in datasets],
        "smoothing": vars(evaluation.smoothing),
        "seed": suite.seed,
        **({"sample_components": evaluation.sample_components} if evaluation.sample_components else {}),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: Fields added after results were first stored: left out of fingerprints while unset, so older folders resume
_LATER_FIELDS = ("reconstruct", "landmarks")


def set_fields(config: Any, ignore: tuple[str, ...] = ()) -> dict:
    """``vars(config)`` without ``ignore`` and without the later fields that are unset: what fingerprints and
    cache keys hash, so that adding a field leaves earlier results and trained models valid."""
    return {
        key: value
        for key, value in vars(config).items()
        if key not in ignore and not (key in _LATER_FIELDS and value in (None, ()))
    }


def model_layers(model: Model, network: Network, where: str, notes: list[str] | None = None) -> tuple[str, ...]:
    """The model's probe layers, checked against the network and sorted by depth: each verified by measurement
    (``repreval.layouts``). Defaults that fail or whose positions never reach the embedding are left out, and a
    layer asked for explicitly whose positions never reach it is kept; both with a line in ``notes``."""
    layers = model.layers(network)
    if not model.config.layers and layers:
        layers, left_out = usable_defaults(network, layers)
        if notes is not None:
            notes.extend(f"{where}: {note}" for note in left_out)
    if not layers:
        raise ReprevalError(
            "no probe layers: the model source offers no default",
            where=f"{where}.layers",
            fix="list them under 'layers:' (`repreval layers MODEL`)",
        )
    table, _ = layer_table(network)
    depth = {row.name: i for i, row in enumerate(table)}
    for i, layer in enumerate(layers):
        probe = Probe.parse(layer)
        try:
            probe.module(network)
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=f"{where}.layers[{i}]", fix=exc.fix) from None
        if probe.module_name not in depth:
            raise ReprevalError(
                f"layer {layer!r} is not used when computing the embedding",
                where=f"{where}.layers[{i}]",
                fix="probe a layer between the input and the embedding",
            )
    probes = [Probe.parse(layer) for layer in layers]
    problems = check_layouts(network, probes)
    for i, probe in enumerate(probes):
        if probe in problems:
            raise ReprevalError(problems[probe].problem, where=f"{where}.layers[{i}]", fix=problems[probe].fix)
    if notes is not None and model.config.layers:
        unreached = [probe.spec for probe, verdict in verify_layers(network, probes).items() if verdict.reach == "none"]
        notes.extend(f"{where}: layer {layer!r}: {NO_REACH}" for layer in unreached)
    return tuple(sorted(layers, key=lambda layer: depth[Probe.parse(layer).module_name]))


def expand_variants(
    suite: Suite, instances: PluginInstances, model_id: str, network: Network, where: str
) -> list[PluginChoice]:
    """The model's variants with every expandable one (``layer: each``, ``seeds: K``) replaced by the variants
    its option sets make, checked on ``network``."""
    expanded: list[PluginChoice] = []
    declared = f"{where}.variants" if model_id in suite.model_variants else f"{suite.where}: variants"
    for i, choice in enumerate(suite.variants_of(model_id)):
        try:
            option_sets = instances.get("variant", choice).expansions(network)
        except ReprevalError as exc:
            raise ReprevalError(
                exc.problem, where=f"{declared}[{i}] ({choice.label}, model {model_id})", fix=exc.fix
            ) from None
        if option_sets is None:
            expanded.append(choice)
            continue
        for options in option_sets:  # each the full options of one variant it stands for
            expanded.append(PluginChoice(choice.name, tuple(sorted(options.items()))))
    return list({choice.label: choice for choice in expanded}.values())


def _check_weights(suite: Suite, instances: PluginInstances, model: Model, where: str) -> None:
    """Every variant that needs trained weights can get them, and a weights file fits: fail now, not mid-run."""
    config = model.config
    if config.train is not None:
        try:
            model.source.check_training_options(dict(config.train.options))
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=f"{where}.train", fix=exc.fix) from None
    elif not config.weights:
        needing = [v.label for v in suite.variants_of(config.id) if instances.get("variant", v).needs_weights]
        if needing:
            raise ReprevalError(
                f"variant {needing[0]!r} needs trained weights, but this model has none",
                where=where,
                fix="add 'weights: PATH' (or 'weights: hub', or a 'train:' step), or use only the 'random' variant",
            )


def _check_weights_file(model: Model, network: Network, where: str) -> None:
    config = model.config
    if config.weights and config.weights != "hub":
        state = read_checkpoint(config.weights, where=f"{where}.weights")
        load_state(
            network.module, model.source.convert_state_dict(state, network), config.weights_match, f"{where}.weights"
        )


def make_plan(suite: Suite, registries: Registries) -> Plan:
    """Every unit of ``suite``, grouped; checks each model's layers, variants and weights on its architecture."""
    instances = PluginInstances(registries)
    plan = Plan(suite, [], {}, {}, instances)
    embedding_scores, attribution_scores = _split_scores(suite, instances)
    _check_estimates(suite, instances, attribution_scores)
    for model_id, config in suite.models.items():
        where = f"{suite.where}: models.{model_id}"
        model = Model(config, registries.model_source.create(config.source_name), where=where)
        try:
            network = model.untrained(config.seed)
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=exc.where or f"{where}.model", fix=exc.fix) from None
        plan.layers[model_id] = model_layers(model, network, where, plan.notes)
        plan.variants[model_id] = expand_variants(suite, instances, model_id, network, where)
        _check_weights(suite, instances, model, where)
        _check_weights_file(model, network, where)
        explainer_metrics = _explainer_metrics(suite, instances, model, network, plan.layers[model_id], where)
        for variant in plan.variants[model_id]:
            plan.units += _embedding_units(plan, model_id, variant, embedding_scores)
            plan.units += _attribution_units(plan, model_id, variant, attribution_scores)
            plan.units += _explainer_units(plan, model_id, variant, explainer_metrics)
    return plan


def _explainer_metrics(
    suite: Suite, instances: PluginInstances, model: Model, network: Network, layers: tuple[str, ...], where: str
) -> dict[tuple[str, str], list[tuple[str, bool]]]:
    """Per evaluation dataset and explainer, the metrics that apply (name, higher is better): accuracy needs a
    classifier, location instability landmarks, track ablations an explainer with tracks. Checks the layers
    explainers read and reconstruct."""
    from .explain import metrics_for, reconstruction_targets

    if not suite.evaluation.explainers:
        return {}
    for layer in layers:
        reconstruction_targets(model.config, network, layer, where)
    return {
        (dataset, explainer.label): metrics_for(
            network, suite.datasets[dataset].landmarks is not None, instances.get("explainer", explainer)
        )
        for dataset in suite.evaluation.datasets
        for explainer in suite.evaluation.explainers
    }


def _explainer_units(
    plan: Plan, model_id: str, variant: PluginChoice, metrics: dict[tuple[str, str], list[tuple[str, bool]]]
) -> list[Unit]:
    """dataset × layer × explainer × metric."""
    units = []
    evaluation = plan.suite.evaluation
    for dataset, layer in product(evaluation.datasets if metrics else (), plan.layers[model_id]):
        assert evaluation.explainer_data is not None  # the suite parser requires it with explainers
        depends_on = fingerprint(plan.suite, model_id, (dataset, evaluation.explainer_data))
        for explainer in evaluation.explainers:
            for metric, higher in metrics[dataset, explainer.label]:
                units.append(
                    Unit(
                        kind=UnitKind.EXPLAINER,
                        model=model_id,
                        variant=variant,
                        layer=layer,
                        score=explainer,
                        higher_is_better=higher,
                        fingerprint=depends_on,
                        metric=metric,
                        dataset=dataset,
                    )  # fmt: skip
                )
    return units


def _split_scores(suite: Suite, instances: PluginInstances) -> tuple[list[PluginChoice], list[PluginChoice]]:
    """(embedding scores, attribution scores), each checked against the suite."""
    evaluation = suite.evaluation
    embedding_scores = [s for s in evaluation.scores if isinstance(instances.get("score", s), EmbeddingScore)]
    attribution_scores = [s for s in evaluation.scores if s not in embedding_scores]
    for i, score in enumerate(evaluation.scores):
        if score not in embedding_scores:
            continue
        for dataset in instances.get("score", score).datasets():
            if dataset not in suite.datasets:
                raise ReprevalError(
                    f"score {score.label!r} reads unknown dataset {dataset!r}",
                    where=f"{suite.where}: evaluation.scores[{i}]",
                    fix=suggest(dataset, suite.datasets) or "declare it under 'datasets:'",
                )
    for i, saliency in enumerate(evaluation.saliency):
        if evaluation.strategy == "forward" and instances.get("saliency", saliency).uses_points:
            raise ReprevalError(
                f"saliency method {saliency.label!r} needs gradients at points of its own, which only the reverse "
                "sweep evaluates",
                where=f"{suite.where}: evaluation.saliency[{i}]",
                fix="set evaluation.strategy to auto or reverse",
            )
    if attribution_scores and not evaluation.saliency:
        raise ReprevalError(
            "attribution scores need saliency methods",
            where=f"{suite.where}: evaluation.saliency",
            fix="list e.g. [gradients, grad_cam]",
        )
    return embedding_scores, attribution_scores


def _check_estimates(suite: Suite, instances: PluginInstances, scores: list[PluginChoice]) -> None:
    """With ``sample_components``, every attribution score must have an estimate with every component aggregator
    it reads: each is asked for one on small seeded maps, so a combination without one is refused before a run."""
    if suite.evaluation.sample_components is None:
        return
    k = min(suite.evaluation.sample_components, 16)  # small maps: whether an estimate exists, not its value
    import torch

    generator = torch.Generator().manual_seed(0)
    real, noise, noise_b = (torch.rand(1, k, 4, 4, generator=generator) for _ in range(3))
    maps = AttributionMaps(real, noise, noise_b)
    for score in scores:
        scorer = instances.get("score", score)
        aggregators = suite.evaluation.embedding_aggregators if scorer.uses_embedding_aggregator else [None]
        for aggregator in aggregators:
            try:
                scorer.estimate(maps, aggregator and instances.get("aggregator", aggregator), 2 * k, 0)
            except Exception as exc:
                problem = exc.problem if isinstance(exc, ReprevalError) else str(exc)
                raise ReprevalError(
                    problem if problem.startswith("score ") else f"score {score.label!r}: {problem}",
                    where=f"{suite.where}: evaluation.sample_components",
                    fix="remove sample_components to compute every component, or that score or aggregator",
                ) from None


def _embedding_units(plan: Plan, model_id: str, variant: PluginChoice, scores: list[PluginChoice]) -> list[Unit]:
    """One unit per metric of each embedding score (linear probe, classifier accuracy)."""
    units = []
    for score in scores:
        scorer = plan.score(score)
        depends_on = fingerprint(plan.suite, model_id, scorer.datasets())
        for metric in scorer.metrics:
            units.append(
                Unit(
                    kind=UnitKind.EMBEDDING,
                    model=model_id,
                    variant=variant,
                    layer=EMBEDDING,
                    score=score,
                    higher_is_better=bool(scorer.higher_is_better),
                    fingerprint=depends_on,
                    metric=metric,
                )  # fmt: skip
            )
    return units


def _attribution_units(plan: Plan, model_id: str, variant: PluginChoice, scores: list[PluginChoice]) -> list[Unit]:
    """dataset × layer × saliency × channel aggregator × score × component aggregator, in group order."""
    evaluation = plan.suite.evaluation
    units = []
    for dataset, layer in product(evaluation.datasets, plan.layers[model_id]):
        depends_on = fingerprint(plan.suite, model_id, (dataset,))
        for saliency in evaluation.saliency:
            spatial = plan.saliency(saliency).spatial
            channels: list[str | None] = [None] if spatial else [c.label for c in evaluation.channel_aggregators]
            for channel, score in product(channels, scores):
                scorer = plan.score(score)
                components: list[str | None] = (
                    [e.label for e in evaluation.embedding_aggregators] if scorer.uses_embedding_aggregator else [None]
                )
                for embedding in components:
                    units.append(
                        Unit(
                            kind=UnitKind.ATTRIBUTION,
                            model=model_id,
                            variant=variant,
                            layer=layer,
                            score=score,
                            higher_is_better=bool(scorer.higher_is_better),
                            fingerprint=depends_on,
                            saliency=saliency,
                            channel_aggregator=channel,
                            embedding_aggregator=embedding,
                            dataset=dataset,
                        )  # fmt: skip
                    )
    return units
