"""Suite YAML -> a typed, completely validated :class:`Suite` (no computation).

Validation resolves every plugin name (with options), dataset, model, probe layer and weights file
before a run starts, and reports the first problem as ``FILE: KEY: problem (fix)``.
See README.md ("Suite format") for the full format.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .claims import parse_report, split_side
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
    MetricSelector,
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
from .files import file_kind
from .groups import canonical, is_group
from .plugins import Plugins
from .registry import Registry
from .sizes import parse_bytes

# ---------------------------------------------------------------------------------------------
# Reading YAML with locations

#: Bounds of the numbers a suite gives, checked before anything is allocated: seeds and counts fit in 64 bits,
#: smoothing samples (each input repeated that many times in memory) stay few
MAX_NUMBER = 2**63 - 1
MAX_COUNT = 2**31 - 1
MAX_SMOOTHING_SAMPLES = 1_000


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
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ReprevalError(
                f"{_short(value)} does not fit in 64 bits", where=self.at(key), fix="use a smaller number"
            )
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ReprevalError(f"expected {names}, got {_kind(value)} {_short(value)}", where=self.at(key))
        if isinstance(value, float) and not math.isfinite(value):
            raise ReprevalError(f"expected a finite number, got {value}", where=self.at(key))
        return value

    def number(self, key: str, kind: type, default, low: float, high: float = MAX_NUMBER):
        """``get`` for a number in ``[low, high]`` (None stays None: left out where that is allowed)."""
        value = self.get(key, kind, default)
        if value is not None and value < low:
            bound = "must not be negative" if low == 0 else f"must be at least {low}"
            raise ReprevalError(f"{key} {bound}, got {_short(value)}", where=self.at(key))
        if value is not None and value > high:
            raise ReprevalError(f"{key} must be at most {high:,}, got {_short(value)}", where=self.at(key))
        return value

    def finish(self) -> None:
        """Reject keys nobody read; ``x-`` keys are free for YAML anchors (``x-shared: &base {...}``)."""
        unknown = [key for key in self.data if key not in self.seen and not str(key).startswith("x-")]
        if unknown:
            raise ReprevalError(
                f"unknown key {unknown[0]!r}", where=self.where.rstrip(": ") or None, fix=suggest(unknown[0], self.seen)
            )


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer of more than 4,300 digits (from Python: a file cannot hold one)
        return f"{_kind(value)} holding a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: Top-level keys whose text is published (report.md, the site): kept as written, never expanded
_PUBLISHED = ("description", "report")


def _expand(data: Any, where: str) -> tuple[Any, dict[str, str]]:
    """``data`` with ``${NAME}`` and ``${NAME:-default}`` (default when unset or empty) replaced from the
    environment, except in the published text (:data:`_PUBLISHED`); and the value of each variable the
    environment gave. Iterative, so that no shape of suite can exhaust the stack: deeper than ``MAX_DEPTH`` or
    larger than ``MAX_EXPANDED`` is refused as it is in a file."""
    used: dict[str, str] = {}
    if not isinstance(data, dict):
        return data, used
    expanded = dict(data)
    stack: list[tuple[Any, Any, int, str]] = [(expanded, key, 1, str(key)) for key in data if key not in _PUBLISHED]
    for count in itertools.count():
        if not stack:
            break
        container, key, depth, path = stack.pop()
        if depth > StrictLoader.MAX_DEPTH:
            raise ReprevalError(f"nesting deeper than {StrictLoader.MAX_DEPTH} levels", where=f"{where}{path}")
        if count > StrictLoader.MAX_EXPANDED:
            raise ReprevalError(f"more than {StrictLoader.MAX_EXPANDED:,} values", where=f"{where}{path}")
        value = container[key]
        if isinstance(value, str):
            container[key] = _substitute(value, used, f"{where}{path}")
        elif isinstance(value, list):
            container[key] = items = list(value)
            stack += [(items, i, depth + 1, f"{path}[{i}]") for i in range(len(items))]
        elif isinstance(value, dict):
            container[key] = mapping = dict(value)
            stack += [(mapping, k, depth + 1, f"{path}.{k}") for k in mapping]
    return expanded, used


def _substitute(text: str, used: dict[str, str], where: str) -> Any:
    """``text`` with its variables replaced. A value that is one variable and nothing else is read as YAML, as
    strictly as the file (:class:`StrictLoader`), so ``seed: ${SEED:-0}`` is a number."""

    def value_of(match: re.Match) -> str:
        given = os.environ.get(match.group(1)) or ""
        if given:
            used[match.group(1)] = given
        return given or match.group(2) or ""

    expanded = _VARIABLE.sub(value_of, text)
    whole = _VARIABLE.fullmatch(text)
    if expanded == text or not whole or not expanded:
        return expanded
    try:
        return load_yaml(expanded)
    except NotStrictYAML as exc:
        raise ReprevalError(
            f"the value of ${{{whole.group(1)}}} is not strict YAML: {exc.problem}",
            where=where,
            fix="give a plain value (see README.md, 'Trust model')",
        ) from None
    except yaml.YAMLError:  # not YAML at all (e.g. a glob pattern): the text itself
        return expanded


def environment_digest(used: dict[str, str]) -> str:
    """What tells runs of one suite under other environments apart: the values hashed, never stored ("" when
    the environment gave none)."""
    if not used:
        return ""
    pairs = "\0".join(f"{name}={value}" for name, value in sorted(used.items()))
    return hashlib.sha256(pairs.encode()).hexdigest()[:16]


class NotStrictYAML(yaml.MarkedYAMLError):
    """YAML that breaks a rule of :class:`StrictLoader`."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes directly under ``node`` (keys and values of a mapping)."""
    if not isinstance(node.value, list):
        return []
    return [part for child in node.value for part in (child if isinstance(child, tuple) else (child,))]


class StrictLoader(yaml.SafeLoader):
    """YAML as suites may use it: string keys, each once (merged ones too); anchors and aliases, but no alias to a
    node that contains it, and at most ``MAX_DEPTH`` levels of nesting and ``MAX_EXPANDED`` nodes once aliases
    are expanded (a "billion laughs" document is a few lines that expand to billions; 25 anchors each nesting
    the one before are shallow as written and 1,500 levels deep expanded)."""

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
                raise NotStrictYAML(
                    None, None, f"alias *{event.anchor} refers to a node that contains it", event.start_mark
                )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self.MAX_DEPTH:
            raise NotStrictYAML(None, None, f"nesting deeper than {self.MAX_DEPTH} levels", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)

    def construct_document(self, node):
        self._check_expanded(node)
        return super().construct_document(node)

    def _check_expanded(self, root: yaml.Node) -> None:
        """Nodes and depth of the document once every alias is copied out, bottom-up without recursion (each
        shared node computed once)."""
        measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth) below and including it
        stack = [root]
        while stack:
            node = stack[-1]
            if id(node) in measured:
                stack.pop()
                continue
            children = _children(node)
            pending = [child for child in children if id(child) not in measured]
            if pending:
                stack += pending
                continue
            stack.pop()
            nodes = 1 + sum(measured[id(child)][0] for child in children)
            depth = 1 + max((measured[id(child)][1] for child in children), default=0)
            measured[id(node)] = nodes, depth
            if depth > self.MAX_DEPTH:
                raise NotStrictYAML(None, None, f"nesting deeper than {self.MAX_DEPTH} levels", node.start_mark)
            if nodes > self.MAX_EXPANDED:
                problem = f"the document expands to more than {self.MAX_EXPANDED:,} values"
                raise NotStrictYAML(None, None, problem, node.start_mark)

    def construct_yaml_int(self, node):
        """An integer, at most 64 bits (longer ones cannot even be printed past 4,300 digits)."""
        try:
            value = super().construct_yaml_int(node)
        except ValueError:
            value = None
        if value is None or not -(2**63) <= value < 2**63:
            problem = f"the integer {node.value[:20]}... does not fit in 64 bits"
            raise NotStrictYAML(None, None, problem, node.start_mark)
        return value

    def _string_key(self, key_node: yaml.Node) -> str:
        key = self.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            problem = f"keys must be strings, not {type(key).__name__} {_short(key)}"
            raise NotStrictYAML(None, None, problem, key_node.start_mark)
        return key

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:  # the keys written here; merged ones (``<<: *base``) may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._string_key(key_node)
            if key in seen:
                problem = f"key {key!r} appears twice (line {seen[key] + 1} and here)"
                raise NotStrictYAML(None, None, problem, key_node.start_mark)
            seen[key] = key_node.start_mark.line
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            for key_node, _ in node.value:  # the merged keys too
                self._string_key(key_node)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def load_yaml(text: str):
    """``text`` read by :class:`StrictLoader`."""
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no Python objects


def read_yaml(path: Path) -> dict:
    """The mapping in the YAML file ``path`` as written (no includes, no ``${...}`` expansion)."""
    if file_kind(path, "suite file", str(path)) != "file":
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
    """Validate ``data`` (a merged suite mapping) completely and return the typed suite. Its variables are
    expanded for the computation; ``raw`` keeps them as written (what is stored and published), ``environment``
    hashes the values the environment gave them."""
    written = data
    data, used = _expand(data, f"{str(path) if path else 'suite'}: ")
    top = _Section(data, f"{str(path) if path else 'suite'}: ")
    given = defaults(Suite)
    _check_version(top.get("version", int, SUITE_VERSION), top)
    name = _suite_name(top)
    description = top.get("description", str, given["description"])
    seed = top.number("seed", int, given["seed"], 0)
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
    _check_claimed_variants(report, variants, models, model_variants, top)
    _check_report_scores(report, evaluation, plugins, top.at("report"))
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
        raw=written,
        environment=environment_digest(used),
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
    """The results folder (default ``results/NAME``); a suite FILE writes strictly below the working directory,
    links resolved: never into the working directory itself, never through a link that leads out of it."""
    output = Path(top.get("output", str, f"results/{name}"))
    if path is None:
        return output
    working = Path.cwd().resolve()
    try:
        resolved = (working / output).resolve()
    except (OSError, RuntimeError):  # a link loop
        resolved = working.parent
    if resolved == working and not output.is_absolute():
        problem = "is the working directory itself (its clean-up and files would mix with yours)"
    elif output.is_absolute() or ".." in output.parts or not resolved.is_relative_to(working):
        problem = "leaves the working directory"
    else:
        return output
    raise ReprevalError(
        f"output {_short(str(output))} {problem}",
        where=top.at("output"),
        fix="use a folder below it without '..' or links out, or choose the folder yourself with --out",
    )


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
    reads it relative to chance only where the score has a chance level (explainer metrics have none); every
    metric but a curve's (which draws each board it matches) names one metric, not several."""
    scores = {choice.name for choice in [*evaluation.scores, *evaluation.explainers]}
    without_chance = {c.name for c in evaluation.scores if not _has_chance_level(plugins.score.entry(c.name).factory)}
    without_chance |= {choice.name for choice in evaluation.explainers}
    judged = [
        *(claim.metric for claim in report.claims if isinstance(claim, MetricClaim)),
        *(claim.than for claim in report.claims if isinstance(claim, BelowClaim) and claim.than is not None),
        *(selector for pair in report.correlations for selector in pair),
        *(selector for selector in (report.drift, report.replicates) if selector is not None),
        *report.replicates_also,
    ]
    for selector in [*judged, *(report.curves or [])]:
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
    computed = _computed_metrics(evaluation, plugins) if judged else set()
    for selector in judged:
        _check_one_metric(selector, computed, where)


Metric = tuple[str, str | None, str | None, str | None]  # score, saliency, channels, components, as records name them
_METRIC_KEYS = ("score", "saliency", "channels", "components")


def _computed_metrics(evaluation: Evaluation, plugins: Plugins) -> set[Metric]:
    """Every metric the suite computes, named as its records will be (see :mod:`repreval.plan`)."""
    from .api import EmbeddingScore

    metrics: set[Metric] = set()
    for choice in evaluation.scores:
        score = plugins.score.create(choice.name, dict(choice.options))
        if isinstance(score, EmbeddingScore):
            metrics |= {(f"{choice.label}.{metric}", None, None, None) for metric in score.metrics}
            continue
        aggregators = [c.label for c in evaluation.embedding_aggregators]
        components = aggregators if score.uses_embedding_aggregator else [None]
        for saliency in evaluation.saliency:
            spatial = plugins.registry("saliency").create(saliency.name, dict(saliency.options)).spatial
            channels = [None] if spatial else [c.label for c in evaluation.channel_aggregators]
            metrics |= set(itertools.product([choice.label], [saliency.label], channels, components))
    if evaluation.explainers:
        from .explain import METRICS

        metrics |= {(f"{e.label}.{metric}", None, None, None) for e in evaluation.explainers for metric in METRICS}
    return metrics


def _check_one_metric(selector: MetricSelector, computed: set[Metric], where: str) -> None:
    """A metric of the report names one of the ``computed`` metrics, not several (as the findings match them:
    a label with or without its options, exact matches first), so that the run cannot end in that error."""
    wanted = (selector.score, selector.saliency, selector.channels, selector.components)
    found = [
        m
        for m in computed
        if all(w is None or (v is not None and w in (v, _without_options(v))) for w, v in zip(wanted, m))
    ]
    exact = [m for m in found if all(w is None or w == v for w, v in zip(wanted, m))]
    matching = sorted(exact or found, key=str)
    if len(matching) < 2:
        return
    first, second = matching[:2]
    index = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
    raise ReprevalError(
        f"the report's metric {selector.label[:60]!r} matches {len(matching)} scores the suite computes, e.g. "
        f"{_metric_text(first)} and {_metric_text(second)}",
        where=where,
        fix=f"say which in the metric, e.g. {_METRIC_KEYS[index]}: {first[index]!r} (or {second[index]!r})",
    )


def _without_options(label: str) -> str:
    """``linear_probe[test=a,train=b].top1`` -> ``linear_probe.top1``."""
    return re.sub(r"\[[^\]]*\]", "", label)


def _metric_text(metric: Metric) -> str:
    return " · ".join(f"{key} {value}" for key, value in zip(_METRIC_KEYS, metric) if value is not None)


def _check_claimed_variants(
    report: ReportConfig,
    variants: list[PluginChoice],
    models: dict[str, ModelConfig],
    model_variants: dict[str, list[PluginChoice]],
    top: _Section,
) -> None:
    """Each side a ``greater`` claim compares is run by the suite: ``MODEL/VARIANT`` (or a plain variant of the
    metric's ``model``) names a model of the suite and a variant run for it; a plain variant without a model, a
    variant some model runs; a seed group (``random[seeds=20]``, options in any order), a group declared as such."""
    for i, claim in enumerate(report.claims):
        if not isinstance(claim, GreaterClaim):
            continue
        for key, named in (("higher", [claim.higher]), ("lower", claim.lower)):
            for one in named:
                where = top.at(f"report.claims[{i}].{claim.kind}.{key}")
                model, variant = split_side(one)
                _check_claimed_side(model or claim.metric.model, variant, variants, models, model_variants, where)


def _check_claimed_side(
    model: str | None,
    variant: str,
    variants: list[PluginChoice],
    models: dict[str, ModelConfig],
    model_variants: dict[str, list[PluginChoice]],
    where: str,
) -> None:
    """One side of a claim (see :func:`_check_claimed_variants`)."""
    if model is not None and model not in models:
        raise ReprevalError(
            f"claim compares model {model[:40]!r}, which the suite does not have", where=where,
            fix=_listing(model, list(models), "models"),
        )  # fmt: skip
    ids = [model] if model is not None else list(models)
    run = list(dict.fromkeys(choice.label for m in ids for choice in model_variants.get(m, variants)))
    of = f" for model {model[:40]!r}" if model is not None else ""
    if is_group(variant):
        declared = [canonical(label) for label in run if is_group(label)]
        if canonical(variant) not in declared:
            raise ReprevalError(
                f"claim compares group {variant[:40]!r}, which the suite does not declare{of}", where=where,
                fix=_listing(variant, declared, "groups declared") if declared else "declare it: {random: {seeds: K}}",
            )  # fmt: skip
    elif variant.split("[")[0] not in {label.split("[")[0] for label in run}:
        raise ReprevalError(
            f"claim compares variant {variant[:40]!r}, which the suite does not run{of}", where=where,
            fix=_listing(variant, run, "variants run"),
        )  # fmt: skip


def _listing(name: str, names: list[str], what: str) -> str:
    """``did you mean 'x'? models: a, b, c``: the close names, then every one (cut at 200 characters)."""
    close = suggest(name, names) if difflib.get_close_matches(name, names, n=1, cutoff=0.5) else ""
    shown = ", ".join(names)
    return f"{close + ' ' if close else ''}{what}: {shown[:200]}{'...' if len(shown) > 200 else ''}"


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
        limit=section.number("limit", int, subset_given["limit"], 1),
        skip=section.number("skip", int, subset_given["skip"], 0),
        seed=section.number("seed", int, seed, 0),  # default: the suite's seed
    )
    drift = _parse_drift(section.get("drift", (dict, float), None), section.at("drift"), seed)
    landmarks = section.get("landmarks", str, given["landmarks"])
    section.finish()
    if (
        landmarks not in (None, "ink", "own")
        and file_kind(landmarks, "landmark file", section.at("landmarks")) != "file"
    ):
        raise ReprevalError(
            f"landmark file {_short(landmarks)} does not exist",
            where=section.at("landmarks"),
            fix="give a CSV or JSON file of image, name, x, y rows; 'ink' to derive them from the images; "
            "'own' for the dataset's own",
        )
    kind = _resolve(plugins.dataset, PluginChoice(kind, tuple(sorted(options.items()))), f"{where}.kind").name
    return DatasetConfig(kind=kind, options=options, subset=subset, drift=drift, landmarks=landmarks)


def _parse_drift(spec: dict | float | None, where: str, seed: int) -> Drift | None:
    """``drift: LAMBDA`` or ``drift: {lambda: LAMBDA, seed: SEED}`` (None: no drift)."""
    if spec is None:
        return None
    section = _Section(spec if isinstance(spec, dict) else {"lambda": spec}, where)
    drift = Drift(strength=section.number("lambda", float, ..., 0), seed=section.number("seed", int, seed, 0))
    section.finish()
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
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_NUMBER for s in seeds)
    ):
        raise ReprevalError(
            f"seeds must be a non-empty list of integers from 0 to 2**63 - 1, got {_short(seeds)}",
            where=f"{where}.seeds",
        )
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
    if (
        weights
        and weights != "hub"
        and check_files
        and file_kind(weights, "weights file", section.at("weights")) != "file"
    ):
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
        seed=section.number("seed", int, seed, 0),
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
        batch_size=section.number("batch_size", int, given["batch_size"], 1, MAX_COUNT),
        chunk_size=section.number("chunk_size", int, given["chunk_size"], 1, MAX_COUNT),
        strategy=section.get("strategy", str, given["strategy"]),
        memory_budget=parse_bytes(
            section.get("memory_budget", (str, int), given["memory_budget"]), section.at("memory_budget")
        ),
        smoothing=smoothing,
        sample_components=section.number("sample_components", int, given["sample_components"], 3, MAX_COUNT),
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
        samples=section.number("samples", int, given["samples"], 1, MAX_SMOOTHING_SAMPLES),
        sigma=section.number("sigma", float, given["sigma"], 0),
        random_scale=section.get("random_scale", bool, given["random_scale"]),
    )
    section.finish()
    return smoothing


def _check_computation(evaluation: Evaluation, section: _Section) -> None:
    """How the engine computes: a known strategy (its numbers are bounded as they are read)."""
    if evaluation.strategy not in STRATEGIES:
        raise ReprevalError(
            f"unknown strategy {evaluation.strategy!r}",
            where=section.at("strategy"),
            fix="use " + ", ".join(STRATEGIES),
        )


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
