"""Suite YAML -> a typed, completely validated :class:`Suite` (no computation).

Validation resolves every plugin name (with options), dataset, model, probe layer and weights file
before a run starts, and reports the first problem as ``FILE: KEY: problem (fix)``.
See README.md ("Suite format") for the full format.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .claims import parse_report
from .config import (
    STRATEGIES,
    SUITE_VERSION,
    BelowClaim,
    DatasetConfig,
    Drift,
    Evaluation,
    ExecutorConfig,
    GreaterClaim,
    MetricClaim,
    ModelConfig,
    PluginChoice,
    ReportConfig,
    Smoothing,
    Subset,
    Suite,
    TrainingConfig,
    defaults,
)
from .errors import ReprevalError, suggest
from .plugins import Plugins
from .registry import Registry
from .sizes import parse_bytes

# ---------------------------------------------------------------------------------------------
# Reading YAML with locations


class _Section:
    """A mapping being read; remembers where it is and rejects keys nobody asked for."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise ReprevalError(f"expected a mapping, got {_kind(data)}", where=where)
        self.data = data
        self.where = where
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where and not self.where.endswith(": ") else f"{self.where}{key}"

    def get(self, key: str, kind, default=..., *, required: bool = False):
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required or default is ...:
                raise ReprevalError(f"missing required key {key!r}", where=self.where.rstrip(": ") or None)
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ReprevalError(f"expected {names}, got {_kind(value)} {_short(value)}", where=self.at(key))
        if isinstance(value, float) and not math.isfinite(value):
            raise ReprevalError(f"expected a finite number, got {value}", where=self.at(key))
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ReprevalError(f"{value} does not fit in 64 bits", where=self.at(key), fix="use a smaller number")
        return value

    def finish(self) -> None:
        """Reject keys nobody read; ``x-`` keys are free for YAML anchors (``x-shared: &base {...}``)."""
        unknown = [key for key in self.data if key not in self.seen and not str(key).startswith("x-")]
        if unknown:
            raise ReprevalError(
                f"unknown key {unknown[0]!r}", where=self.where.rstrip(": ") or None, fix=suggest(unknown[0], self.seen)
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any) -> Any:
    """``${NAME}`` and ``${NAME:-default}`` (default when unset or empty) are replaced from the environment.

    A value that is one variable and nothing else is read as YAML, so ``seed: ${SEED:-0}`` is a number.
    """
    if isinstance(value, str):
        expanded = _VARIABLE.sub(lambda m: os.environ.get(m.group(1)) or m.group(2) or "", value)
        if expanded != value and _VARIABLE.fullmatch(value):
            try:
                return yaml.safe_load(expanded) if expanded else expanded
            except yaml.YAMLError:
                return expanded
        return expanded
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


class StrictLoader(yaml.SafeLoader):
    """YAML as suites may use it: string keys, each once; anchors and aliases, but no alias to a node that
    contains it, at most ``MAX_DEPTH`` levels of nesting, and at most ``MAX_EXPANDED`` nodes once aliases are
    expanded (a "billion laughs" document is a few lines that expand to billions)."""

    MAX_DEPTH = 64
    MAX_EXPANDED = 100_000

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open_anchors: set[str] = set()

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} refers to a node that contains it", event.start_mark
                )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self.MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nesting deeper than {self.MAX_DEPTH} levels", event.start_mark
            )
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)

    def construct_document(self, node):
        sizes: dict[int, int] = {}

        def expanded(current) -> int:  # nodes once every alias is copied out; shared nodes counted once each
            if id(current) not in sizes:
                children = current.value if isinstance(current.value, list) else []
                pairs = [part for child in children for part in (child if isinstance(child, tuple) else (child,))]
                sizes[id(current)] = 1 + sum(expanded(child) for child in pairs)
            return sizes[id(current)]

        if expanded(node) > self.MAX_EXPANDED:
            raise yaml.constructor.ConstructorError(
                None, None, f"the document expands to more than {self.MAX_EXPANDED:,} values", node.start_mark
            )
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:  # the keys written here; merged ones (``<<: *base``) may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"keys must be strings, not {type(key).__name__} {_short(key)}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (line {seen[key] + 1} and here)", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``text`` read by :class:`StrictLoader`."""
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no Python objects


def read_yaml(path: Path) -> dict:
    """The mapping in the YAML file ``path`` as written (no includes, no ``${...}`` expansion)."""
    if not path.is_file():
        raise ReprevalError(f"suite file {str(path)!r} does not exist", fix="check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ReprevalError(f"cannot read the suite ({type(exc).__name__})", where=str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ReprevalError(f"{problem}{line}", where=str(path), fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ReprevalError("a suite must be a YAML mapping", where=str(path), fix="see README.md, 'Suite format'")
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep merge of mappings; lists and scalars of ``override`` replace those of ``base``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def resolve_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The suite at ``path`` with its ``include:`` files merged underneath it (relative to the file)."""
    path = path.resolve()
    if path in seen:
        raise ReprevalError("include cycle: " + " -> ".join(p.name for p in (*seen, path)), where=str(path))
    data = read_yaml(path)
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ReprevalError("'include' must be a file name or a list of them", where=f"{path}: include")
    merged: dict = {}
    for name in includes:
        included = path.parent / name
        if not _inside(included, path.parent) and not _inside(included, Path.cwd()):
            raise ReprevalError(
                f"included file {_short(name)} is outside the suite's folder and the working directory",
                where=f"{path}: include",
                fix="copy the file next to the suite (a suite may only read files the user put there)",
            )
        if not included.is_file():
            raise ReprevalError(
                f"included file {name!r} does not exist",
                where=f"{path}: include",
                fix="paths are relative to the including file",
            )
        merged = merge(merged, resolve_includes(included, (*seen, path)))
    return merge(merged, data)


# ---------------------------------------------------------------------------------------------
# Parsing


def split_model_spec(spec: str) -> tuple[str, str]:
    """``timm:resnet18`` -> (``timm``, ``resnet18``); ``torch:pkg.mod:make`` -> (``torch``, ``pkg.mod:make``)."""
    source, sep, name = spec.partition(":")
    if not sep or not source or not name:
        raise ReprevalError(
            f"model {spec!r} is not of the form SOURCE:NAME", fix="e.g. timm:resnet18 or cifar:resnet20"
        )
    return source, name


def _plugin_choices(value: Any, where: str) -> list[PluginChoice]:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ReprevalError("expected a non-empty list of names", where=where)
    choices = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            choices.append(PluginChoice(item))
        elif isinstance(item, dict) and len(item) == 1:
            ((name, options),) = item.items()
            options = options or {}
            if not isinstance(options, dict):
                raise ReprevalError("options must be a mapping", where=f"{where}[{i}].{name}")
            choices.append(PluginChoice(str(name), tuple(sorted(options.items()))))
        else:
            raise ReprevalError("each entry is a name or {name: {options}}", where=f"{where}[{i}]")
    return choices


def parse_suite(data: dict, plugins: Plugins, *, path: Path | None = None, check_files: bool = True) -> Suite:
    """Validate ``data`` (a merged suite mapping) completely and return the typed suite."""
    data = _expand(data)
    top = _Section(data, f"{str(path) if path else 'suite'}: ")
    given = defaults(Suite)
    _check_version(top.get("version", int, SUITE_VERSION), top)
    name = _suite_name(top)
    description = top.get("description", str, given["description"])
    seed = top.get("seed", int, given["seed"])
    output = _output(top, name, path)
    device = _device(top, given["device"])
    datasets = {
        dataset_name: _parse_dataset(spec, top.at(f"datasets.{dataset_name}"), plugins, seed)
        for dataset_name, spec in top.get("datasets", dict, required=True).items()
    }
    raw_variants = top.get("variants", (list, str, dict), None)
    variants = _resolved(
        plugins.variant,
        given["variants"] if raw_variants is None else _plugin_choices(raw_variants, top.at("variants")),
        top.at("variants"),
    )
    models, model_variants = _parse_models(top, plugins, seed, datasets, check_files)
    evaluation = _parse_evaluation(top.get("evaluation", dict, required=True), top.at("evaluation"), plugins, datasets)
    report = parse_report(top.get("report", dict, None), top.at("report"))
    executor = parse_executor(top.get("executor", (dict, str), None), top.at("executor"), plugins)
    _check_report_scores(report, evaluation, plugins, top.at("report"))
    _check_claimed_variants(report, variants, top)
    top.finish()
    return Suite(
        name=name,
        path=path,
        seed=seed,
        output=output,
        device=device,
        datasets=datasets,
        models=models,
        variants=variants,
        evaluation=evaluation,
        description=description,
        raw=data,
        model_variants=model_variants,
        report=report,
        executor=executor,
    )


def _check_version(version: int, top: _Section) -> None:
    if version != SUITE_VERSION:
        raise ReprevalError(
            f"suite version {version} is not supported", where=top.at("version"), fix=f"use version: {SUITE_VERSION}"
        )


def _suite_name(top: _Section) -> str:
    """The suite's ``name``: a plain name, as it names the output folder."""
    name = top.get("name", str, required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name) or ".." in name:
        raise ReprevalError(
            f"suite name {_short(name)} is not a plain name", where=top.at("name"), fix="use letters, digits, - _ ."
        )
    return name


def _output(top: _Section, name: str, path: Path | None) -> Path:
    """The results folder (default ``results/NAME``); a suite FILE writes below the working directory."""
    output = Path(top.get("output", str, f"results/{name}"))
    if path is not None and (output.is_absolute() or ".." in output.parts):
        raise ReprevalError(
            f"output {_short(str(output))} leaves the working directory",
            where=top.at("output"),
            fix="use a relative path without '..', or choose the folder yourself with --out",
        )
    return output


def _device(top: _Section, default: str) -> str:
    device = top.get("device", str, default)
    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        raise ReprevalError(f"unknown device {device!r}", where=top.at("device"), fix="use cpu, cuda, cuda:N or auto")
    return device


def _parse_models(
    top: _Section, plugins: Plugins, seed: int, datasets: dict, check_files: bool
) -> tuple[dict[str, ModelConfig], dict[str, list[PluginChoice]]]:
    """The ``models:`` section: each model (one per seed of a group of replicates), and the models' own variants."""
    models: dict[str, ModelConfig] = {}
    model_variants: dict[str, list[PluginChoice]] = {}
    for model_id, spec in top.get("models", dict, required=True).items():
        where = top.at(f"models.{model_id}")
        spec = dict(spec) if isinstance(spec, dict) else spec
        variants_spec = spec.pop("variants", None) if isinstance(spec, dict) else None
        for replicate_id, replicate in _replicates(str(model_id), spec, where):
            if replicate_id in models:
                raise ReprevalError(
                    f"model id {replicate_id!r} is declared twice", where=where, fix="rename one of them"
                )
            if variants_spec is not None:
                model_variants[replicate_id] = _variants(variants_spec, f"{where}.variants", plugins)
            models[replicate_id] = _parse_model(replicate_id, replicate, where, plugins, seed, datasets, check_files)
            models[replicate_id].group = str(model_id)
    _check_baselines(models, top)
    return models, model_variants


def _check_baselines(models: dict[str, ModelConfig], top: _Section) -> None:
    """Each ``baseline:`` names a group of models of the suite."""
    groups = {m.group for m in models.values()}
    for config in models.values():
        if config.baseline is not None and config.baseline not in groups:
            raise ReprevalError(
                f"unknown baseline {config.baseline!r}",
                where=top.at(f"models.{config.group}.baseline"),
                fix=suggest(config.baseline, groups),
            )


def parse_executor(spec: Any, where: str, plugins: Plugins) -> ExecutorConfig:
    """``executor: local | ray`` or ``{kind: ray, address: HOST:PORT, cpus: 1, ...}``: an executor plugin and its
    options (checked as every plugin's are)."""
    if spec is None:
        return ExecutorConfig()
    section = _Section({"kind": spec} if isinstance(spec, str) else dict(spec), where)
    kind = section.get("kind", str, defaults(ExecutorConfig)["kind"])
    options = {key: section.get(key, object) for key in section.data if key != "kind" and not str(key).startswith("x-")}
    section.finish()
    choice = _resolve(plugins.executor, PluginChoice(kind, tuple(sorted(options.items()))), where)
    return ExecutorConfig(kind=choice.name, options=choice.options)


def _has_chance_level(factory: Any) -> bool:
    """Attribution scores have a chance level (the score on noise inputs); embedding scores do not."""
    from .api import EmbeddingScore

    return not (isinstance(factory, type) and issubclass(factory, EmbeddingScore))


def _check_report_scores(report: ReportConfig, evaluation: Evaluation, plugins: Plugins, where: str) -> None:
    """Every metric the report reads names a score the suite computes (``linear_probe.top1``: its metric), and
    reads it relative to chance only where the score has a chance level (explainer metrics have none)."""
    scores = {choice.name for choice in [*evaluation.scores, *evaluation.explainers]}
    without_chance = {c.name for c in evaluation.scores if not _has_chance_level(plugins.score.entry(c.name).factory)}
    without_chance |= {choice.name for choice in evaluation.explainers}
    selectors = [
        *(claim.metric for claim in report.claims if isinstance(claim, MetricClaim)),
        *(claim.than for claim in report.claims if isinstance(claim, BelowClaim) and claim.than is not None),
        *(report.curves or []),
        *(selector for pair in report.correlations for selector in pair),
        *(selector for selector in (report.drift, report.replicates) if selector is not None),
        *report.replicates_also,
    ]
    for selector in selectors:
        name = selector.score.split("[")[0].split(".")[0]
        if name not in scores:
            raise ReprevalError(
                f"the report reads score {selector.score[:40]!r}, which the suite does not compute",
                where=where,
                fix=suggest(name, sorted(scores)),
            )
        if selector.reading != "raw" and name in without_chance:
            raise ReprevalError(
                f"the report reads {selector.score[:40]!r} as {selector.reading}, but it has no chance level",
                where=where,
                fix="read it raw (drop reading:)",
            )


def _check_claimed_variants(report: ReportConfig, variants: list[PluginChoice], top: _Section) -> None:
    """The variants a ``greater`` claim compares are variants the suite runs."""
    names = {variant.name for variant in variants}
    for i, claim in enumerate(report.claims):
        if not isinstance(claim, GreaterClaim):
            continue
        for key, named in (("higher", [claim.higher]), ("lower", claim.lower)):
            for one in named:
                if one.split("[")[0] not in names:
                    raise ReprevalError(
                        f"claim compares variant {one[:40]!r}, which the suite does not run",
                        where=top.at(f"report.claims[{i}].{claim.kind}.{key}"),
                        fix=suggest(one, sorted(names)),
                    )


def _variants(raw: Any, where: str, plugins: Plugins) -> list[PluginChoice]:
    return _resolved(plugins.variant, _plugin_choices(raw, where), where)


def _resolved(registry: Registry, choices: list[PluginChoice], where: str) -> list[PluginChoice]:
    """``choices`` resolved (see :func:`_resolve`), each once: one listed twice is computed once."""
    resolved = [_resolve(registry, choice, f"{where}[{i}]") for i, choice in enumerate(choices)]
    return list({choice.label: choice for choice in resolved}.values())


def _resolve(registry: Registry, choice: PluginChoice, where: str) -> PluginChoice:
    """The choice under its canonical name (aliases resolved), its options checked by creating it."""
    try:
        choice = PluginChoice(registry.entry(choice.name).name, choice.options)
        registry.create(choice.name, dict(choice.options))
    except ReprevalError as exc:
        raise ReprevalError(exc.problem, where=where, fix=exc.fix) from None
    return choice


def _parse_dataset(spec: Any, where: str, plugins: Plugins, seed: int) -> DatasetConfig:
    section = _Section(spec, where)
    given, subset_given = defaults(DatasetConfig), defaults(Subset)
    kind = section.get("kind", str, required=True)
    options = section.get("options", dict, given["options"])
    subset = Subset(
        limit=section.get("limit", int, subset_given["limit"]),
        skip=section.get("skip", int, subset_given["skip"]),
        seed=section.get("seed", int, seed),  # default: the suite's seed
    )
    drift = _parse_drift(section.get("drift", (dict, float), None), section.at("drift"), seed)
    landmarks = section.get("landmarks", str, given["landmarks"])
    section.finish()
    if landmarks not in (None, "ink", "own") and not Path(landmarks).is_file():
        raise ReprevalError(
            f"landmark file {_short(landmarks)} does not exist",
            where=section.at("landmarks"),
            fix="give a CSV or JSON file of image, name, x, y rows; 'ink' to derive them from the images; "
            "'own' for the dataset's own",
        )
    if subset.limit is not None and subset.limit < 1:
        raise ReprevalError("limit must be at least 1", where=section.at("limit"))
    if subset.skip < 0:
        raise ReprevalError("skip must not be negative", where=section.at("skip"))
    kind = _resolve(plugins.dataset, PluginChoice(kind, tuple(sorted(options.items()))), f"{where}.kind").name
    return DatasetConfig(kind=kind, options=options, subset=subset, drift=drift, landmarks=landmarks)


def _parse_drift(spec: dict | float | None, where: str, seed: int) -> Drift | None:
    """``drift: LAMBDA`` or ``drift: {lambda: LAMBDA, seed: SEED}`` (None: no drift)."""
    if spec is None:
        return None
    section = _Section(spec if isinstance(spec, dict) else {"lambda": spec}, where)
    drift = Drift(strength=section.get("lambda", float, required=True), seed=section.get("seed", int, seed))
    section.finish()
    if drift.strength < 0:
        raise ReprevalError("drift lambda must not be negative", where=section.at("lambda"))
    return drift


def _replicates(model_id: str, spec: Any, where: str) -> list[tuple[str, Any]]:
    """``seeds: [0, 1, 2]`` -> one model per seed, ``ID@0``, ``ID@1``, ... (a group of replicates)."""
    if not isinstance(spec, dict) or spec.get("seeds") is None:
        return [(model_id, spec)]
    seeds = spec.pop("seeds")
    if "seed" in spec:
        raise ReprevalError("give either 'seed' or 'seeds', not both", where=where)
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ReprevalError(f"seeds must be a non-empty list of integers, got {seeds!r}", where=f"{where}.seeds")
    return [(f"{model_id}@{seed}", {**spec, "seed": seed}) for seed in dict.fromkeys(seeds)]


def _parse_model(model_id, spec, where, plugins: Plugins, seed, datasets, check_files) -> ModelConfig:
    section = _Section(spec, where)
    given = defaults(ModelConfig)
    model_spec = section.get("model", str, required=True)
    _check_model_source(model_spec, section.at("model"), plugins)
    weights = section.get("weights", str, given["weights"])
    train = _parse_training(section.get("train", dict, None), section.at("train"), datasets)
    if weights and train:
        raise ReprevalError("give either 'weights' or 'train', not both", where=where)
    if weights and weights != "hub" and check_files and not Path(weights).is_file():
        raise ReprevalError(
            f"weights file {weights!r} does not exist",
            where=section.at("weights"),
            fix="check the path (relative to the current directory)",
        )
    layers = section.get("layers", (list, str), given["layers"])
    layers = [layers] if isinstance(layers, str) else layers
    reconstruct = section.get("reconstruct", (list, str), given["reconstruct"])
    reconstruct = [reconstruct] if isinstance(reconstruct, str) else reconstruct
    config = ModelConfig(
        id=model_id,
        spec=model_spec,
        options=section.get("options", dict, given["options"]),
        weights=weights,
        weights_match=section.get("weights_match", str, given["weights_match"]),
        train=train,
        layers=tuple(str(layer) for layer in layers),
        reconstruct=tuple(str(layer) for layer in reconstruct),
        embedding=section.get("embedding", str, given["embedding"]),
        seed=section.get("seed", int, seed),
        baseline=section.get("baseline", str, given["baseline"]),
    )
    if config.weights_match not in ("name", "position"):
        raise ReprevalError(
            f"unknown weights_match {config.weights_match!r}",
            where=section.at("weights_match"),
            fix="use name or position",
        )
    section.finish()
    return config


def _check_model_source(model_spec: str, where: str, plugins: Plugins) -> None:
    """``model: SOURCE:NAME`` names an installed model source."""
    try:
        source_name, _ = split_model_spec(model_spec)
    except ReprevalError as exc:
        raise ReprevalError(exc.problem, where=where, fix=exc.fix) from None
    if source_name not in plugins.model_source:
        raise ReprevalError(
            f"unknown model source {source_name!r}", where=where, fix=suggest(source_name, plugins.model_source.names())
        )


def _parse_training(spec: dict | None, where: str, datasets) -> TrainingConfig | None:
    """A model's ``train:`` section: a suite ``dataset`` and the source's own training options (None: none)."""
    if spec is None:
        return None
    section = _Section(dict(spec), where)
    dataset = section.get("dataset", str, required=True)
    if dataset not in datasets:
        raise ReprevalError(f"unknown dataset {dataset!r}", where=section.at("dataset"), fix=suggest(dataset, datasets))
    return TrainingConfig(dataset=dataset, options={k: v for k, v in spec.items() if k != "dataset"})


#: The plugin lists of ``evaluation:``: key and plugin kind
_PLUGIN_LISTS = (
    ("saliency", "saliency"),
    ("channel_aggregators", "aggregator"),
    ("embedding_aggregators", "aggregator"),
    ("scores", "score"),
    ("explainers", "explainer"),
)


def _parse_evaluation(spec: dict, where: str, plugins: Plugins, datasets) -> Evaluation:
    section = _Section(spec, where)
    given = defaults(Evaluation)
    chosen = _evaluation_datasets(section, datasets)
    if "explainers" in spec:  # explainers alone are an evaluation: scores may be left out
        given["scores"] = []
    lists = {key: _plugin_list(section, key, plugins.registry(kind), given.get(key)) for key, kind in _PLUGIN_LISTS}
    smoothing = _parse_smoothing(section.get("smoothing", dict, {}), section.at("smoothing"))
    evaluation = Evaluation(
        datasets=tuple(dict.fromkeys(chosen)),
        batch_size=section.get("batch_size", int, given["batch_size"]),
        chunk_size=section.get("chunk_size", int, given["chunk_size"]),
        strategy=section.get("strategy", str, given["strategy"]),
        memory_budget=parse_bytes(
            section.get("memory_budget", (str, int), given["memory_budget"]), section.at("memory_budget")
        ),
        smoothing=smoothing,
        sample_components=section.get("sample_components", int, given["sample_components"]),
        explainer_data=section.get("explainer_data", str, given["explainer_data"]),
        **lists,
    )
    _check_explainers(evaluation, section, datasets)
    _check_computation(evaluation, section)
    section.finish()
    return evaluation


def _evaluation_datasets(section: _Section, datasets) -> list[str]:
    """``dataset: NAME`` or ``datasets: [NAME, ...]``, each a suite dataset."""
    if "datasets" in section.data and "dataset" in section.data:
        raise ReprevalError("give either 'dataset' or 'datasets', not both", where=section.where)
    key = "datasets" if "datasets" in section.data else "dataset"
    chosen = section.get(key, (list, str), required=True)
    chosen = [chosen] if isinstance(chosen, str) else chosen
    if not chosen:
        raise ReprevalError("no evaluation datasets", where=section.at(key), fix="name at least one dataset")
    for i, dataset in enumerate(chosen):
        if not isinstance(dataset, str) or dataset not in datasets:
            at = section.at(key) + (f"[{i}]" if key == "datasets" else "")
            raise ReprevalError(f"unknown dataset {_short(dataset)}", where=at, fix=suggest(str(dataset), datasets))
    return chosen


def _plugin_list(
    section: _Section, key: str, registry: Registry, default: list[PluginChoice] | None
) -> list[PluginChoice]:
    """The plugins listed under ``key`` (``default`` when left out; None: it may not be), resolved."""
    raw = section.get(key, (list, str, dict), ... if default is None else None)
    if raw is None:  # left out, and it may be
        return _resolved(registry, default or [], section.at(key))
    if raw == []:  # written empty: it would silently compute nothing
        raise ReprevalError(
            "expected a non-empty list of names", where=section.at(key), fix=f"name at least one, or drop {key!r}"
        )
    return _resolved(registry, _plugin_choices(raw, section.at(key)), section.at(key))


def _parse_smoothing(spec: dict, where: str) -> Smoothing:
    section = _Section(spec, where)
    given = defaults(Smoothing)
    smoothing = Smoothing(
        samples=section.get("samples", int, given["samples"]),
        sigma=section.get("sigma", float, given["sigma"]),
        random_scale=section.get("random_scale", bool, given["random_scale"]),
    )
    section.finish()
    return smoothing


def _check_computation(evaluation: Evaluation, section: _Section) -> None:
    """How the engine computes: at least 3 sampled components, a known strategy, sizes and samples at least 1."""
    if evaluation.sample_components is not None and evaluation.sample_components < 3:
        raise ReprevalError(
            "sample_components must be at least 3",
            where=section.at("sample_components"),
            fix="sample more components, or remove the key for exact scores",
        )
    if evaluation.strategy not in STRATEGIES:
        raise ReprevalError(
            f"unknown strategy {evaluation.strategy!r}",
            where=section.at("strategy"),
            fix="use " + ", ".join(STRATEGIES),
        )
    for key in ("batch_size", "chunk_size"):
        if getattr(evaluation, key) is not None and getattr(evaluation, key) < 1:
            raise ReprevalError(f"{key} must be at least 1", where=section.at(key))
    if evaluation.smoothing.samples < 1:
        raise ReprevalError("samples must be at least 1", where=f"{section.at('smoothing')}.samples")


def _check_explainers(evaluation: Evaluation, section: _Section, datasets) -> None:
    """Explainers learn from ``explainer_data`` (a suite dataset other than the evaluation datasets)."""
    if not evaluation.explainers:
        if evaluation.explainer_data is not None:
            raise ReprevalError(
                "explainer_data without explainers", where=section.at("explainer_data"), fix="list explainers"
            )
        return
    if evaluation.explainer_data is None:
        raise ReprevalError(
            "explainers need a dataset to learn from",
            where=section.at("explainers"),
            fix="add 'explainer_data: NAME' (a suite dataset, disjoint from the evaluation dataset)",
        )
    if evaluation.explainer_data not in datasets:
        raise ReprevalError(
            f"unknown dataset {_short(evaluation.explainer_data)}",
            where=section.at("explainer_data"),
            fix=suggest(evaluation.explainer_data, datasets),
        )
    if evaluation.explainer_data in evaluation.datasets:
        raise ReprevalError(
            "explainers would be judged on the images they learnt from",
            where=section.at("explainer_data"),
            fix="learn from another dataset (e.g. the same one with skip: past the evaluation images)",
        )


def load_suite(
    path: str | os.PathLike, plugins: Plugins, *, output: str | None = None, check_files: bool = True
) -> Suite:
    """Read, merge includes, and validate the suite at ``path``; ``output`` overrides its output."""
    path = Path(path)
    suite = parse_suite(resolve_includes(path), plugins, path=path, check_files=check_files)
    if output:
        suite.output = Path(output)
    return suite
