"""The plugin author's conformance check: :func:`check_plugin`, to call from a plugin's own tests.

::

    import my_plugin
    from repreval.testing import check_plugin

    def test_my_plugin_conforms():
        check_plugin(my_plugin)          # or check_plugin("my-entry-point-name") once installed

It loads the plugin through the real host (``load_plugins``), then, for everything it registered, checks
the contract of ``repreval.api``: a ``name``, class attributes of the right types, an instance made with
default options (or the ``options`` you pass), and a smoke test on tiny random tensors per kind. A failure
raises ``AssertionError`` naming the plugin, the registered name and what is wrong; success returns what
was checked (and what was skipped, with the reason). Reference: ``docs/hooks.md``.

Importing this module does not import torch; the checks do.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, NoReturn

from .api import (
    Aggregator,
    AttributionMaps,
    AttributionScore,
    DatasetSource,
    EmbeddingScore,
    Explainer,
    Explanation,
    ImageSet,
    InputSpec,
    ModelHandle,
    ModelSource,
    Network,
    Registries,
    SaliencyMethod,
    ScoreValues,
    TextSet,
    TrainingContext,
    Variant,
)
from .errors import ReprevalError, suggest
from .hookspecs import PROJECT

if TYPE_CHECKING:  # annotations only: torch is imported where a check runs
    from torch import Tensor

__all__ = ["check_plugin", "Checked"]

#: Input shape the dataset check asks for (a loader may use it, the host fits any size).
DATASET_TARGET = InputSpec(3, 16, 16)


@dataclass
class Checked:
    """What :func:`check_plugin` checked for one registered name, and what it skipped (with why)."""

    plugin: str
    kind: str
    name: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.kind} {self.name!r}: {', '.join(self.passed)}"
        return text + (f" (skipped: {'; '.join(self.skipped)})" if self.skipped else "")

    def fail(self, problem: str) -> NoReturn:
        """Raise AssertionError naming the plugin, kind, name and ``problem``."""
        raise AssertionError(f"plugin {self.plugin!r}, {self.kind} {self.name!r}: {problem}")

    def expect(self, condition: bool, problem: str) -> None:
        """:meth:`fail` with ``problem`` unless ``condition`` holds."""
        if not condition:
            self.fail(problem)

    @contextmanager
    def running(self, what: str) -> Iterator[None]:
        """Turn an exception from the plugin's code inside the block into a failure naming ``what``."""
        try:
            yield
        except AssertionError:
            raise
        except Exception as exc:
            self.fail(f"{what} raised {type(exc).__name__}: {exc}")


def check_plugin(
    plugin: Any,
    *,
    kinds: Iterable[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> list[Checked]:
    """Check everything ``plugin`` registers against the plugin contract; AssertionError on the first failure.

    ``plugin``: the module (or class, or object) holding the hook implementations, or the entry-point name
    of an installed plugin. A module that is an installed entry point is checked as that entry point.
    ``kinds``: only these registry kinds (``saliency``, ``aggregator``, ``score``, ``model_source``,
    ``dataset``, ``variant``, ``explainer``). ``options``: registered name -> options for plugins whose ``__init__`` has
    required parameters (without them those get attribute checks only). ``model``: ``SOURCE:NAME`` (or
    ``NAME`` when the plugin registers one model source) to build, with ``model_options``, and embed a zero
    input; without it model sources get attribute checks only.
    """
    plugin_name, plugins = _load(plugin)
    registered = plugins.info[plugin_name].registered
    wanted = set(kinds) if kinds is not None else set(Registries.BASES)
    unknown = wanted - set(Registries.BASES)
    if unknown:
        raise ValueError(f"unknown plugin kind {sorted(unknown)[0]!r}; {suggest(sorted(unknown)[0], Registries.BASES)}")
    every = [name for kind, names in registered.items() if kind in wanted for name in names]
    stray = [name for name in options or {} if name not in every]
    if stray:
        raise ValueError(
            f"options for {stray[0]!r}, which plugin {plugin_name!r} does not register; {suggest(stray[0], every)}"
        )
    results = []
    for kind, names in registered.items():
        if kind not in wanted:
            continue
        registry = plugins.registry(kind)
        for name in names:
            check = Checked(plugin_name, kind, name)
            _check_entry(check, registry, dict((options or {}).get(name, {})))
            results.append(check)
    if model is not None:
        results.append(
            _check_model(plugin_name, plugins, registered.get("model_source", []), model, dict(model_options or {}))
        )
    if not results:
        what = f" of kind {', '.join(sorted(wanted))}" if kinds is not None else ""
        raise AssertionError(f"plugin {plugin_name!r} registered nothing{what}; implement a hook of repreval.hookspecs")
    return results


# ---------------------------------------------------------------------------------------------
# Loading


def _load(plugin: Any):
    """(plugin name, loaded host) for an entry-point name or an object with hook implementations."""
    from .plugins import load_plugins

    name = plugin if isinstance(plugin, str) else _entry_point_name(plugin)
    try:
        if name is not None:
            plugins = load_plugins()
        else:
            name = getattr(plugin, "__name__", None) or "extra-0"
            plugins = load_plugins(extra_plugins=[plugin])
    except ReprevalError as exc:
        raise AssertionError(f"plugin {name!r} does not load: {exc}") from None
    if name in plugins.blocked:
        raise AssertionError(f"plugin {name!r} is blocked (REPREVAL_BLOCK_PLUGINS): unblock it to check it")
    if name not in plugins.info:
        raise AssertionError(f"no plugin {name!r} is installed; {suggest(name, plugins.info)}")
    return name, plugins


def _entry_point_name(plugin: Any) -> str | None:
    """The entry-point name under which ``plugin`` (a module) is installed, if it is."""
    module = getattr(plugin, "__name__", None)
    for point in entry_points(group=PROJECT):
        if point.value == module:
            return point.name
    return None


# ---------------------------------------------------------------------------------------------
# One registered name


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def _bounds(value) -> bool:
    if value is None:
        return True
    numbers = isinstance(value, tuple) and len(value) == 2 and all(_number(v) for v in value)
    return numbers and value[0] < value[1]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str_tuple(value) -> bool:
    return isinstance(value, tuple) and len(value) > 0 and all(isinstance(v, str) and v for v in value)


BOOL = (_is_bool, "must be True or False")
BOUNDS = (_bounds, "must be None or a (low, high) pair of numbers with low < high")

#: Base class -> class attribute -> (test, what it must be).
ATTRIBUTES: dict[type, dict[str, tuple[Callable[[Any], bool], str]]] = {
    SaliencyMethod: {
        "spatial": BOOL,
        "gradient": (lambda v: v in ("full", "spatial_mean"), "must be 'full' or 'spatial_mean'"),
        "linear_in_gradient": BOOL,
        "uses_points": BOOL,
    },
    Aggregator: {"linear": BOOL, "elementwise": (lambda v: v is None or callable(v), "must be None or a function")},
    AttributionScore: {
        "higher_is_better": BOOL,
        "uses_embedding_aggregator": BOOL,
        "reads_components": BOOL,
        "noise_sets": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2, "must be 0, 1 or 2"),
        "noise_in_value": BOOL,
        "bounds": BOUNDS,
    },
    EmbeddingScore: {
        "higher_is_better": BOOL,
        "metrics": (_str_tuple, "must be a non-empty tuple of metric names"),
        "bounds": BOUNDS,
    },
    ModelSource: {},
    DatasetSource: {},
    Variant: {"needs_weights": BOOL},
    Explainer: {"version": (lambda v: isinstance(v, str) and bool(v), "must be a non-empty string")},
}


def _check_entry(check: Checked, registry, options: dict) -> None:
    factory = registry.entry(check.name).factory
    cls = factory if inspect.isclass(factory) else None
    instance = _create(check, registry, factory, options)
    if instance is not None:
        cls = type(instance)
    if cls is None:
        check.skipped.append("attributes: a factory function that needs options")
        return
    base = next(base for base in ATTRIBUTES if issubclass(cls, base))
    _check_attributes(check, cls, base)
    if instance is None:
        return
    with check.running(f"the {base.__name__} smoke test"):
        if base is Variant:  # an expanding variant is run as the first variant it stands for
            _smoke_variant(check, instance, lambda extra: registry.create(check.name, options | extra))
        else:
            SMOKE[base](check, instance)


def _create(check: Checked, registry, factory, options: dict):
    """The instance made with ``options`` (through the registry), or with none; None when it needs options.

    Without options, a factory that has required parameters, or that rejects its defaults with a
    ReprevalError (e.g. one of two options must be set), is skipped; any other exception is a failure.
    """
    if options:
        try:
            instance = registry.create(check.name, options)
        except ReprevalError as exc:
            check.fail(f"cannot be created with options {options!r}: {exc}")
        check.passed.append(f"created with {options}")
        return instance
    required = _required_options(factory)
    if required:
        check.skipped.append(f"instance and smoke test: needs options {', '.join(required)} (pass options=)")
        return None
    try:
        instance = factory()
    except ReprevalError as exc:
        check.skipped.append(f"instance and smoke test: default options rejected ({exc.problem}; pass options=)")
        return None
    except Exception as exc:
        check.fail(f"creating it with default options failed: {type(exc).__name__}: {exc}")
    bases = registry.base if isinstance(registry.base, tuple) else (registry.base,)
    check.expect(
        isinstance(instance, bases),
        f"its factory gave a {type(instance).__name__}, not a {' or '.join(b.__name__ for b in bases)}",
    )
    check.passed.append("created with default options")
    return instance


def _required_options(factory) -> list[str]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _check_attributes(check: Checked, cls: type, base: type) -> None:
    name = getattr(cls, "name", None)
    check.expect(
        isinstance(name, str) and bool(name), f"{cls.__name__} has no 'name' (set the class attribute name = ...)"
    )
    for attribute, (test, expected) in ATTRIBUTES[base].items():
        value = getattr(cls, attribute)
        check.expect(test(value), f"{cls.__name__}.{attribute} {expected}, got {value!r}")
    check.passed.append(f"{base.__name__} attributes")


# ---------------------------------------------------------------------------------------------
# Smoke tests, one per base class, on tiny random tensors


def _finite(tensor) -> bool:
    import torch

    return isinstance(tensor, torch.Tensor) and bool(torch.isfinite(tensor).all())


def _shape(tensor) -> list[int] | str:
    return list(tensor.shape) if hasattr(tensor, "shape") else type(tensor).__name__


def _smoke_saliency(check: Checked, method: SaliencyMethod) -> None:
    import torch

    k, b, c, h, w = 2, 2, 3, 4, 5
    generator = torch.Generator().manual_seed(0)
    activation = torch.randn(b, c, h, w, generator=generator)
    spatial_mean = method.gradient == "spatial_mean"
    if method.uses_points:
        _smoke_points(check, method, activation)
        return
    gradients = [torch.randn(k, b, c, *((1, 1) if spatial_mean else (h, w)), generator=generator) for _ in range(2)]
    out = method.attribute(activation, gradients[0])
    expected = [k, b, h, w] if method.spatial else [k, b, c, h, w]
    check.expect(_shape(out) == expected, f"attribute() returned shape {_shape(out)}, expected {expected}")
    check.expect(_finite(out), "attribute() returned non-finite values")
    if method.linear_in_gradient:
        total = method.attribute(activation, gradients[0] + gradients[1])
        parts = out + method.attribute(activation, gradients[1])
        check.expect(
            torch.allclose(total, parts, atol=1e-5),
            "linear_in_gradient is True, but attribute(a, g1 + g2) != attribute(a, g1) + attribute(a, g2)",
        )
    check.passed.append(f"attribute() -> {expected}")


def _smoke_points(check: Checked, method: SaliencyMethod, activation) -> None:
    """A method with ``uses_points``: reference inputs, points and combine have the documented shapes, the points
    depend only on the generator's seed, and the engine computes finite maps with it on a tiny network."""
    import torch

    from .api import InputSpec, Network, component_maps

    class ChannelMean(Aggregator):
        name = "mean"

        def __call__(self, values, dim):
            return values.mean(dim=dim)

    inputs = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    reference_inputs = method.reference_inputs(inputs, torch.Generator().manual_seed(0))
    check.expect(
        reference_inputs is None or (_finite(reference_inputs) and reference_inputs.shape[1:] == inputs.shape[1:]),
        f"reference_inputs() returned {_shape(reference_inputs)}: None or inputs [R, 3, 6, 6] expected",
    )
    reference = None if reference_inputs is None else activation[:1].clone()
    points = [method.points(activation, reference, torch.Generator().manual_seed(0)) for _ in range(2)]
    at = getattr(points[0], "at", None)
    if not (isinstance(at, torch.Tensor) and at.dim() == 5 and at.shape[1:] == activation.shape):
        check.expect(
            False, f"points() returned {_shape(at)} as Points.at: [S, {', '.join(map(str, activation.shape))}]"
        )
        return
    check.expect(torch.equal(at, points[1].at), "points() gave other points for the same generator seed")
    gradients = torch.randn(2, *at.shape, generator=torch.Generator().manual_seed(2))
    out = method.combine(points[0], gradients)
    expected = [2, *activation.shape] if not method.spatial else [2, activation.shape[0], *activation.shape[2:]]
    check.expect(_shape(out) == expected, f"combine() returned shape {_shape(out)}, expected {expected}")
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Conv2d(4, 5, 3))
    network = Network(module, InputSpec(3, 6, 6), (), embed=lambda x: module(x).mean(dim=(-2, -1)))
    maps = component_maps(network, "1", inputs, method, None if method.spatial else ChannelMean())
    check.expect(_finite(maps) and tuple(maps.shape) == (2, 5, 4, 4), f"the engine's maps: {_shape(maps)}")
    check.passed.append(f"points() -> [S, {', '.join(map(str, activation.shape))}], combine() -> {expected}, maps")


def _smoke_aggregator(check: Checked, aggregator: Aggregator) -> None:
    import torch

    values = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    for dim in (1, 0, -1):
        out = aggregator(values, dim=dim)
        expected = [n for i, n in enumerate(values.shape) if i != dim % values.dim()]
        check.expect(
            _shape(out) == expected,
            f"aggregating dim {dim} of {list(values.shape)} gave shape {_shape(out)}, expected {expected}",
        )
        check.expect(_finite(out), f"aggregating dim {dim} gave non-finite values")
    if aggregator.linear:
        other = values.flip(0)
        check.expect(
            torch.allclose(aggregator(values + other, 1), aggregator(values, 1) + aggregator(other, 1), atol=1e-5),
            "linear is True, but the aggregator does not commute with sums",
        )
    if aggregator.elementwise is not None:
        check.expect(
            torch.allclose(aggregator(values, 1), aggregator.elementwise(values).mean(dim=1), atol=1e-5),
            "elementwise is set, but the aggregator is not the mean of elementwise(values)",
        )
    check.passed.append("reduces the given dim")


class _Mean(Aggregator):
    """The embedding aggregator scores get in the smoke test."""

    name = "mean"
    linear = True

    def __call__(self, values, dim):
        return values.mean(dim=dim)


def _smoke_attribution_score(check: Checked, score: AttributionScore) -> None:
    import torch

    n, d, h, w = 3, 4, 5, 6
    generator = torch.Generator().manual_seed(0)
    sets = ["real", "noise", "noise_b"][: 1 + score.noise_sets]
    maps = {which: torch.rand(n, d, h, w, generator=generator) for which in sets}
    aggregator = _Mean() if score.uses_embedding_aggregator else None
    complete = AttributionMaps(maps["real"], maps.get("noise"), maps.get("noise_b"))
    _expect_score_values(check, score.compute(complete, aggregator), score, n, "compute()")
    if not score.reads_components and aggregator is not None:
        aggregated: dict[tuple[str, Aggregator], Tensor] = {
            (which, aggregator): aggregator(maps[which], dim=1) for which in sets
        }
        result = score.compute(AttributionMaps(real=None, aggregated=aggregated), aggregator)
        _expect_score_values(
            check, result, score, n, "compute() from aggregated maps alone (reads_components is False)"
        )
    check.passed.append(f"compute() on [N, D, h, w] maps with {score.noise_sets} noise set(s) -> [N]")


def _expect_score_values(check: Checked, result, score: AttributionScore, n: int, call: str) -> None:
    check.expect(isinstance(result, ScoreValues), f"{call} returned a {type(result).__name__}, not a ScoreValues")
    for field_name in ("values", "reference", "standard_error"):
        tensor = getattr(result, field_name)
        if tensor is None and field_name != "values":
            continue
        check.expect(
            _shape(tensor) == [n],
            f"{call} returned {field_name} of shape {_shape(tensor)}, expected [{n}] (one per input)",
        )
        check.expect(_finite(tensor), f"{call} returned non-finite {field_name}")
    if score.bounds is not None:
        low, high = score.bounds
        inside = bool(((result.values >= low - 1e-6) & (result.values <= high + 1e-6)).all())
        check.expect(inside, f"{call} returned values outside its bounds {score.bounds}: {result.values.tolist()}")


def _smoke_embedding_score(check: Checked, score: EmbeddingScore) -> None:
    import torch

    names = score.datasets()
    check.expect(
        isinstance(names, tuple) and all(isinstance(n, str) for n in names),
        f"datasets() returned {names!r}, not a tuple of names",
    )
    network = _tiny_network(0)
    images = torch.rand(24, *network.input_spec.shape, generator=torch.Generator().manual_seed(0))
    labelled = ImageSet(images, torch.arange(24) % 2, ("even", "odd"))
    result = score.compute(network, lambda name: (labelled, network.input_spec.normalize(images)), 0)
    check.expect(
        isinstance(result, dict) and set(result) == set(score.metrics),
        f"compute() returned {result!r}, expected a dict with the keys of metrics {score.metrics}",
    )
    for metric, value in result.items():
        check.expect(
            _number(value) and math.isfinite(value), f"compute() gave {metric} = {value!r}, not a finite number"
        )
        if score.bounds is not None:
            check.expect(
                score.bounds[0] <= value <= score.bounds[1],
                f"compute() gave {metric} = {value} outside its bounds {score.bounds}",
            )
    check.passed.append("compute() on a tiny network and labelled random images")


def _smoke_model_source(check: Checked, source: ModelSource) -> None:
    names = source.model_names()
    check.expect(all(isinstance(n, str) for n in names), f"model_names() returned {names!r}, not names")
    check.passed.append(f"model_names() ({len(names)} names; build not run: pass model=)")


def _smoke_dataset(check: Checked, dataset: DatasetSource) -> None:
    import torch

    size = dataset.size(DATASET_TARGET)
    check.expect(isinstance(size, int) and size >= 0, f"size() returned {size!r}, not a count")
    description = dataset.describe()
    check.expect(isinstance(description, str) and bool(description), f"describe() returned {description!r}")
    if size == 0:
        check.skipped.append("load(): the dataset is empty")
        return
    loaded = dataset.load([0], DATASET_TARGET)
    if isinstance(loaded, TextSet):
        check.expect(
            len(loaded.texts) == 1 and isinstance(loaded.texts[0], str),
            f"load([0]) returned {len(loaded.texts)} texts, expected one string",
        )
        return
    check.expect(isinstance(loaded, ImageSet), f"load([0]) returned a {type(loaded).__name__}, not an ImageSet")
    if not isinstance(loaded, ImageSet):
        return
    check.expect(len(loaded) == 1, f"load([0]) returned {len(loaded)} images, expected 1")
    image = loaded.images[0]
    check.expect(
        isinstance(image, torch.Tensor) and image.dim() == 3,
        f"load([0]) gave an image of shape {_shape(image)}, expected [C, H, W]",
    )
    check.expect(
        _finite(image) and bool(((image >= 0) & (image <= 1)).all()), "load([0]) gave pixel values outside [0, 1]"
    )
    check.expect(loaded.labels is None or len(loaded.labels) == 1, "load([0]) gave labels that do not match the images")
    check.passed.append(f"size() = {size}, load([0]) -> an image of {list(image.shape)}")


def _smoke_variant(check: Checked, variant: Variant, create: Callable[[dict], Variant]) -> None:
    handle = _TinyModel()
    expansions = variant.expansions(handle.trained())
    check.expect(
        expansions is None or (isinstance(expansions, list) and all(isinstance(e, dict) for e in expansions)),
        f"expansions() returned {expansions!r}, expected None or a list of option dicts",
    )
    if expansions:
        variant = create(expansions[0])
    network = variant.network(handle, 0)
    check.expect(isinstance(network, Network), f"network() returned a {type(network).__name__}, not a Network")
    _expect_embeds(check, network, "network()")
    check.passed.append("network() on a tiny model")


def _smoke_explainer(check: Checked, explainer: Explainer) -> None:
    """build() and fit() on random features [24, 4, 6, 6]; the trained module explains a batch of 3."""
    import torch

    features = torch.rand(24, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    targets = {"layer": features, "deeper": features[:, :2, ::2, ::2].contiguous()}
    module = explainer.build((4, 6, 6), {"layer": (4, 6, 6), "deeper": (2, 3, 3)}, 0)
    check.expect(callable(module) and hasattr(module, "parameters"), f"build() gave {module!r}, not an nn.Module")
    registries = _load_builtins_registries()
    log = explainer.fit(module, features, targets, 0, TrainingContext(registries))
    check.expect(isinstance(log, dict), f"fit() returned {log!r}, not a dict (the training log)")
    with torch.no_grad():
        explanation = module(features[:3])
    check.expect(
        isinstance(explanation, Explanation), f"module(F) gave a {type(explanation).__name__}, not an Explanation"
    )
    for name, shape in (("layer", (3, 4, 6, 6)), ("deeper", (3, 2, 3, 3))):
        got = explanation.reconstructions.get(name)
        found = _shape(got) if got is not None else "missing"
        check.expect(
            got is not None and tuple(got.shape) == shape and _finite(got),
            f"the reconstruction of {name!r} is {found}, expected {list(shape)}",
        )
    share = explanation.part_share
    check.expect(
        tuple(share.shape) == (3,) and bool(((share > 0) & (share < 1)).all()),
        f"part_share is {_shape(share)} with values {share.tolist()[:3]}, expected [3] in (0, 1)",
    )
    check.expect(
        explanation.part_maps.dim() == 4 and explanation.part_maps.shape[0] == 3,
        f"part_maps is {_shape(explanation.part_maps)}, expected [3, K, h, w]",
    )
    check.passed.append("build(), fit() and an explanation of random features")


def _load_builtins_registries() -> Registries:
    from .plugins import load_plugins

    return load_plugins().registries()


SMOKE: dict[type, Callable[[Checked, Any], None]] = {
    SaliencyMethod: _smoke_saliency,
    Aggregator: _smoke_aggregator,
    AttributionScore: _smoke_attribution_score,
    EmbeddingScore: _smoke_embedding_score,
    ModelSource: _smoke_model_source,
    DatasetSource: _smoke_dataset,
    Explainer: _smoke_explainer,
}


# ---------------------------------------------------------------------------------------------
# Networks: a tiny one for variants and embedding scores, and the model= build


def _tiny_network(seed: int) -> Network:
    """1×8×8 inputs -> conv -> ReLU -> pooled 4-D embedding (``features``) -> 2 logits (``head``)."""
    from collections import OrderedDict

    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        module = nn.Sequential(OrderedDict(features=features, head=nn.Linear(4, 2))).eval()
    return Network(module, InputSpec(1, 8, 8), ("features.0",), embed=features, classify=module, description="tiny")


class _TinyModel(ModelHandle):
    def trained(self) -> Network:
        return _tiny_network(1234)

    def untrained(self, seed: int) -> Network:
        return _tiny_network(seed)


def _expect_embeds(check: Checked, network: Network, what: str) -> None:
    import torch

    check.expect(
        isinstance(network.input_spec, InputSpec), f"{what} gave input_spec {network.input_spec!r}, not an InputSpec"
    )
    with torch.no_grad():
        z = network.embed(network.input_spec.example())
    check.expect(
        _shape(z)[:1] == [1] and len(_shape(z)) == 2,
        f"{what}: embed() of one input gave shape {_shape(z)}, expected [1, D]",
    )
    check.expect(_finite(z), f"{what}: embed() gave non-finite values")
    modules = dict(network.module.named_modules())
    missing = [layer for layer in network.default_layers if layer.split(":")[0] not in modules]
    check.expect(not missing, f"{what}: default_layers names no module {missing[0]!r}" if missing else "")


def _check_model(plugin: str, plugins, sources: list[str], model: str, options: dict) -> Checked:
    import torch

    source_name, sep, name = model.partition(":")
    if not sep:
        if len(sources) != 1:
            raise AssertionError(f"plugin {plugin!r}: model={model!r} needs the form SOURCE:NAME (sources: {sources})")
        source_name, name = sources[0], model
    check = Checked(plugin, "model_source", source_name)
    check.expect(
        source_name in sources,
        f"model={model!r}: the plugin registers no model source {source_name!r} ({suggest(source_name, sources)})",
    )
    source = plugins.model_source.create(source_name)
    with check.running(f"build({name!r}, {options!r})"), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = source.build(name, options, 0)
        check.expect(
            isinstance(network, Network), f"build({name!r}) returned a {type(network).__name__}, not a Network"
        )
        network.module.eval()
        _expect_embeds(check, network, f"build({name!r})")
    check.passed.append(f"build({name!r}) and embed() of a zero input")
    return check
