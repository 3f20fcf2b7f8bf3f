"""Suite -> plan: units of work with stable ids, grouped so that each attribution is computed once.

A unit is one score value: model × variant × probe layer × saliency × channel aggregator ×
embedding aggregator × score. Units that share (model, variant, layer, saliency, channel aggregator)
read the same attribution maps and form a group. Building the plan also builds every model's
architecture (untrained) to resolve and check its probe layers and embedding: no weights, no data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from itertools import groupby, product

from .api import EmbeddingScore, Network
from .engine.probe import Probe
from .errors import ReprevalError
from .models import Model, layer_table, load_state, read_checkpoint
from .plugins import Plugins
from .registry import suggest
from .suite import PluginChoice, Suite

NOT_APPLICABLE = "-"
#: The "layer" of units whose score reads the network's embedding or logits, not attribution maps.
EMBEDDING = "(embedding)"
NO_SALIENCY = PluginChoice(NOT_APPLICABLE)


@dataclass(frozen=True)
class Unit:
    model: str
    variant: PluginChoice
    layer: str
    saliency: PluginChoice
    channel_aggregator: str  # label, or "-" for spatial methods (Grad-CAM)
    embedding_aggregator: str  # label, or "-" for scores that read every component
    score: PluginChoice
    higher_is_better: bool
    fingerprint: str  # everything else that changes the value (data, seeds, weights, options)
    metric: str = ""  # for embedding scores: which of the score's metrics (top1, top5, ...)
    dataset: str = NOT_APPLICABLE  # the evaluation dataset the maps are computed on ("-" for embedding scores)

    @property
    def id(self) -> str:
        key = [self.model, self.variant.label, self.dataset, self.layer, self.saliency.label, self.channel_aggregator,
               self.embedding_aggregator, self.score.label, self.fingerprint] + ([self.metric] if self.metric else [])
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]

    @property
    def score_name(self) -> str:
        """The score as records and leaderboards name it: ``noise_score``, ``linear_probe.top1``."""
        return f"{self.score.label}.{self.metric}" if self.metric else self.score.label

    @property
    def group(self) -> tuple:
        return (self.model, self.variant.label, self.dataset, self.layer, self.saliency.label, self.channel_aggregator)

    def describe(self) -> str:
        return "/".join(
            [self.model, self.variant.label] + ([self.dataset] if self.dataset != NOT_APPLICABLE else []) + [self.layer, self.saliency.label, self.channel_aggregator,
             self.embedding_aggregator, self.score_name]
        )


@dataclass
class Plan:
    suite: Suite
    units: list[Unit]
    layers: dict[str, tuple[str, ...]]  # model id -> probe layers in depth order
    variants: dict[str, list[PluginChoice]]  # model id -> variants, expanded (``layer: each`` -> one per layer)

    def groups(self, units=None):
        """(group key, units) in plan order; the plan is already sorted by group."""
        return [(key, list(items)) for key, items in groupby(units or self.units, key=lambda u: u.group)]


def fingerprint(suite: Suite, model_id: str, datasets: tuple[str, ...]) -> str:
    """What a unit's value depends on besides its own coordinates (``datasets``: those it reads)."""
    model = suite.models[model_id]
    evaluation = suite.evaluation
    weights = Path(model.weights) if model.weights and Path(model.weights).is_file() else None
    described = {
        "model": {k: v for k, v in vars(model).items() if k not in ("id", "group", "baseline")},
        "weights_file": weights and [weights.stat().st_size, weights.stat().st_mtime_ns],
        "train_data": model.train and vars(suite.datasets[model.train.dataset]),
        "data": [vars(suite.datasets[name]) for name in datasets],
        "smoothing": vars(evaluation.smoothing),
        "seed": suite.seed,
        **({"sample_components": evaluation.sample_components} if evaluation.sample_components else {}),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_layers(model: Model, network: Network, where: str) -> tuple[str, ...]:
    """The model's probe layers, checked against the network and sorted by depth."""
    layers = model.layers(network)
    if not layers:
        raise ReprevalError("no probe layers: the model source offers no default", where=f"{where}.layers", fix="list them under 'layers:' (`repreval layers MODEL`)")
    table, _ = layer_table(network)
    depth = {row.name: i for i, row in enumerate(table)}
    for i, layer in enumerate(layers):
        probe = Probe.parse(layer)
        try:
            probe.module(network)
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=f"{where}.layers[{i}]", fix=exc.fix) from None
        if probe.module_name not in depth:
            raise ReprevalError(f"layer {layer!r} is not used when computing the embedding", where=f"{where}.layers[{i}]", fix="probe a layer between the input and the embedding")
    return tuple(sorted(layers, key=lambda layer: depth[Probe.parse(layer).module_name]))


def expand_variants(suite: Suite, plugins: Plugins, model_id: str, network: Network, where: str) -> list[PluginChoice]:
    """The model's variants with every expandable one replaced by its option sets, checked on ``network``."""
    expanded: list[PluginChoice] = []
    declared = f"{where}.variants" if model_id in suite.model_variants else f"{suite.path or 'suite'}: variants"
    for i, choice in enumerate(suite.variants_of(model_id)):
        try:
            option_sets = choice.create(plugins.variant).expansions(network)
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=f"{declared}[{i}] ({choice.label}, model {model_id})", fix=exc.fix) from None
        if option_sets is None:
            expanded.append(choice)
            continue
        for options in option_sets:
            expanded.append(PluginChoice(choice.name, tuple(sorted((dict(choice.options) | options).items()))))
    return list({choice.label: choice for choice in expanded}.values())


def _check_weights(suite: Suite, plugins: Plugins, model: Model, where: str) -> None:
    """Every variant that needs trained weights can get them: fail now, not mid-run."""
    config = model.config
    if config.train is not None:
        try:
            model.source.check_training_options(dict(config.train.options))
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=f"{where}.train", fix=exc.fix) from None
    elif not config.weights:
        needing = [v.label for v in suite.variants_of(config.id) if v.create(plugins.variant).needs_weights]
        if needing:
            raise ReprevalError(
                f"variant {needing[0]!r} needs trained weights, but this model has none",
                where=where,
                fix="add 'weights: PATH' (or 'weights: hub', or a 'train:' step), or use only the 'random' variant",
            )


def make_plan(suite: Suite, plugins: Plugins) -> Plan:
    evaluation = suite.evaluation
    units: list[Unit] = []
    layers: dict[str, tuple[str, ...]] = {}
    variants: dict[str, list[PluginChoice]] = {}
    embedding_scores = [s for s in evaluation.scores if isinstance(s.create(plugins.score), EmbeddingScore)]
    attribution_scores = [s for s in evaluation.scores if s not in embedding_scores]
    for i, score in enumerate(evaluation.scores):
        if score in embedding_scores:
            for dataset in score.create(plugins.score).datasets():
                if dataset not in suite.datasets:
                    raise ReprevalError(f"score {score.label!r} reads unknown dataset {dataset!r}", where=f"{suite.path or 'suite'}: evaluation.scores[{i}]", fix=suggest(dataset, suite.datasets) or "declare it under 'datasets:'")
    if attribution_scores and not evaluation.saliency:
        raise ReprevalError("attribution scores need saliency methods", where=f"{suite.path or 'suite'}: evaluation.saliency", fix="list e.g. [gradients, grad_cam]")
    for model_id, config in suite.models.items():
        where = f"{suite.path or 'suite'}: models.{model_id}"
        model = Model(config, plugins.model_source.create(config.source_name), where=where)
        try:
            network = model.untrained(config.seed)
        except ReprevalError as exc:
            raise ReprevalError(exc.problem, where=exc.where or f"{where}.model", fix=exc.fix) from None
        layers[model_id] = model_layers(model, network, where)
        variants[model_id] = expand_variants(suite, plugins, model_id, network, where)
        _check_weights(suite, plugins, model, where)
        if config.weights and config.weights != "hub":  # the checkpoint must fit: fail now, not mid-run
            state = read_checkpoint(config.weights, where=f"{where}.weights")
            load_state(network.module, model.source.convert_state_dict(state, network), config.weights_match, f"{where}.weights")
        for variant in variants[model_id]:
            for score in embedding_scores:
                scorer = score.create(plugins.score)
                printed = fingerprint(suite, model_id, scorer.datasets())
                for metric in scorer.metrics:
                    units.append(Unit(model_id, variant, EMBEDDING, NO_SALIENCY, NOT_APPLICABLE, NOT_APPLICABLE, score,
                                      bool(scorer.higher_is_better), printed, metric))
            for dataset, layer in product(evaluation.datasets, layers[model_id]):
                printed = fingerprint(suite, model_id, (dataset,))
                for saliency in evaluation.saliency:
                    spatial = saliency.create(plugins.saliency).spatial
                    channel_labels = [NOT_APPLICABLE] if spatial else [c.label for c in evaluation.channel_aggregators]
                    for channel in channel_labels:
                        for score in attribution_scores:
                            scorer = score.create(plugins.score)
                            embedding_labels = (
                                [e.label for e in evaluation.embedding_aggregators]
                                if scorer.uses_embedding_aggregator
                                else [NOT_APPLICABLE]
                            )
                            for embedding in embedding_labels:
                                units.append(
                                    Unit(model_id, variant, layer, saliency, channel, embedding, score,
                                         bool(scorer.higher_is_better), printed, dataset=dataset)
                                )
    return Plan(suite, units, layers, variants)
