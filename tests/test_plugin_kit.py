"""repreval.testing.check_plugin: every built-in plugin passes it through its real entry point, and broken
plugins fail it with an AssertionError that names the plugin, the registered name and the problem."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import repreval_builtins.saliency
from repreval.api import (
    Aggregator,
    AttributionScore,
    DatasetSource,
    EmbeddingScore,
    ImageSet,
    Points,
    SaliencyMethod,
    ScoreValues,
    Variant,
    hookimpl,
)
from repreval.testing import Checked, check_plugin

BUILTINS = [
    "saliency",
    "aggregators",
    "scores",
    "variants",
    "datasets",
    "timm",
    "cifar_resnets",
    "autoencoders",
    "torch_factory",
]

#: Options that let the checks create the built-ins whose __init__ has required parameters.
OPTIONS = {
    "scores": {"linear_probe": {"train": "a", "test": "b"}, "classifier_accuracy": {"dataset": "a"}},
    "variants": {"randomize_layer": {"layer": "each"}, "cascade": {"down_to": "each"}},
}
MODELS = {"cifar_resnets": "cifar:resnet20", "autoencoders": "classifier"}


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_plugin_passes_check_plugin(name, one_thread):
    checked = check_plugin(name)
    assert checked and all(isinstance(c, Checked) and c.plugin == name for c in checked)
    assert all(c.passed for c in checked)
    if name in OPTIONS or name in MODELS:  # with options and a model build, nothing is left unchecked
        fuller = check_plugin(name, options=OPTIONS.get(name), model=MODELS.get(name))
        assert all(not c.skipped or c.kind == "dataset" for c in fuller)
        assert len(fuller) == len(checked) + (name in MODELS)


def test_what_is_skipped_is_said():
    checked = {c.name: c for c in check_plugin("datasets")}
    assert "size() = 1797" in str(checked["digits"])
    assert checked["image_folder"].skipped == ["instance and smoke test: needs options path (pass options=)"]
    assert "default options rejected" in checked["mnist"].skipped[0]  # path= or images= must be given
    source = check_plugin("cifar_resnets")[0]
    assert "build not run: pass model=" in str(source)


def test_a_module_is_checked_as_its_installed_entry_point():
    checked = check_plugin(repreval_builtins.saliency, kinds=["saliency"])
    assert [(c.plugin, c.name) for c in checked] == [
        ("saliency", "gradients"),
        ("saliency", "activations_x_gradients"),
        ("saliency", "grad_cam"),
        ("saliency", "integrated_gradients"),
        ("saliency", "smoothgrad"),
        ("saliency", "expected_gradients"),
    ]


def test_importing_repreval_testing_does_not_import_torch():
    code = "import sys, repreval.testing; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------
# Broken plugins


class Peak(AttributionScore):
    """A good score: the largest value of the mean map."""

    name = "peak"
    noise_sets = 1

    def compute(self, maps, embedding_aggregator):
        return ScoreValues(values=maps.over_components("real", embedding_aggregator).flatten(1).amax(dim=1))


class GoodPlugin:
    @hookimpl
    def register_scores(register):
        register(Peak)


def test_a_good_in_process_plugin_passes():
    (checked,) = check_plugin(GoodPlugin)
    assert (checked.plugin, checked.kind, checked.name) == ("GoodPlugin", "score", "peak")
    assert "compute() on [N, D, h, w] maps with 1 noise set(s) -> [N]" in checked.passed


class WrongShape(AttributionScore):
    name = "wrong_shape"

    def compute(self, maps, embedding_aggregator):
        return ScoreValues(values=maps.real.mean())  # one value for the batch, not one per input


class Nameless(SaliencyMethod):
    def attribute(self, activation, gradient):
        return gradient


class BadAttributes(SaliencyMethod):
    name = "bad_attributes"
    spatial = "no"


class NotLinear(SaliencyMethod):
    name = "not_linear"
    linear_in_gradient = True

    def attribute(self, activation, gradient):
        return gradient.abs()


class FlatPoints(SaliencyMethod):
    """A points method that forgets the dimension of the points."""

    name = "flat_points"
    uses_points = True

    def points(self, activation, reference, generator):
        return Points(activation, activation)


class RandomPoints(SaliencyMethod):
    """A points method that draws from the global generator instead of the one it is given."""

    name = "random_points"
    uses_points = True

    def points(self, activation, reference, generator):
        return Points(activation + torch.randn(3, *activation.shape), 1 / 3)


class KeepsDim(Aggregator):
    name = "keeps_dim"

    def __call__(self, values, dim):
        return values.mean(dim=dim, keepdim=True)


class ThreeNoiseSets(AttributionScore):
    name = "three"
    noise_sets = 3


class Crashes(AttributionScore):
    name = "crashes"

    def compute(self, maps, embedding_aggregator):
        return ScoreValues(values=maps.noise.mean(dim=(1, 2, 3)))  # reads noise without declaring noise_sets


class OutOfBounds(AttributionScore):
    name = "out_of_bounds"
    bounds = (0.0, 1.0)

    def compute(self, maps, embedding_aggregator):
        return ScoreValues(values=torch.full((len(maps.real),), 2.0))


class NoMetrics(EmbeddingScore):
    name = "no_metrics"
    metrics = ()


class Bright(DatasetSource):
    name = "bright"

    def size(self, target):
        return 1

    def load(self, indices, target):
        return ImageSet(torch.full((len(indices), 1, 4, 4), 255.0))  # 0..255, not 0..1


class Fussy(Variant):
    name = "fussy"

    def __init__(self, level: int = 0):
        raise ValueError("unexpected")


def plugin_of(hook: str, *factories, **register_options):
    """An in-process plugin (a class named after its first factory) registering ``factories`` from ``hook``."""

    def implementation(register):
        for factory in factories:
            register(factory, **register_options)

    implementation.__name__ = hook
    return type(f"{factories[0].__name__}Plugin", (), {hook: staticmethod(hookimpl(implementation))})


@pytest.mark.parametrize(
    "plugin, message",
    [
        (
            plugin_of("register_scores", WrongShape),
            "plugin 'WrongShapePlugin', score 'wrong_shape': compute() returned values of shape [], expected [3] (one per input)",
        ),
        (
            plugin_of("register_saliency_methods", Nameless),
            "plugin 'NamelessPlugin' does not load: plugin 'NamelessPlugin' registered a saliency without a name",
        ),
        (
            plugin_of("register_saliency_methods", Nameless, name="anonymous"),
            "plugin 'NamelessPlugin', saliency 'anonymous': Nameless has no 'name'",
        ),
        (
            plugin_of("register_saliency_methods", BadAttributes),
            "saliency 'bad_attributes': BadAttributes.spatial must be True or False, got 'no'",
        ),
        (
            plugin_of("register_saliency_methods", NotLinear),
            "saliency 'not_linear': linear_in_gradient is True, but attribute(a, g1 + g2) != ",
        ),
        (
            plugin_of("register_saliency_methods", FlatPoints),
            "saliency 'flat_points': points() returned [2, 3, 4, 5] as Points.at: [S, 2, 3, 4, 5]",
        ),
        (
            plugin_of("register_saliency_methods", RandomPoints),
            "saliency 'random_points': points() gave other points for the same generator seed",
        ),
        (
            plugin_of("register_aggregators", KeepsDim),
            "aggregator 'keeps_dim': aggregating dim 1 of [2, 3, 4, 5] gave shape [2, 1, 4, 5], expected [2, 4, 5]",
        ),
        (
            plugin_of("register_scores", ThreeNoiseSets),
            "score 'three': ThreeNoiseSets.noise_sets must be 0, 1 or 2, got 3",
        ),
        (
            plugin_of("register_scores", Crashes),
            "score 'crashes': the AttributionScore smoke test raised AttributeError: ",
        ),
        (
            plugin_of("register_scores", OutOfBounds),
            "score 'out_of_bounds': compute() returned values outside its bounds (0.0, 1.0)",
        ),
        (
            plugin_of("register_scores", NoMetrics),
            "score 'no_metrics': NoMetrics.metrics must be a non-empty tuple of metric names, got ()",
        ),
        (plugin_of("register_datasets", Bright), "dataset 'bright': load([0]) gave pixel values outside [0, 1]"),
        (
            plugin_of("register_variants", Fussy),
            "variant 'fussy': creating it with default options failed: ValueError: unexpected",
        ),
    ],
)
def test_a_broken_plugin_fails_with_a_clear_message(plugin, message):
    with pytest.raises(AssertionError) as caught:
        check_plugin(plugin)
    assert message in str(caught.value)


def test_misuse_is_reported():
    with pytest.raises(AssertionError, match=r"plugin 'Empty' registered nothing"):
        check_plugin(type("Empty", (), {}))
    with pytest.raises(AssertionError, match=r"no plugin 'scorez' is installed; did you mean 'scores'"):
        check_plugin("scorez")
    with pytest.raises(ValueError, match=r"options for 'noise', which plugin 'scores' does not register"):
        check_plugin("scores", options={"noise": {}})
    with pytest.raises(
        AssertionError,
        match=r"plugin 'scores', score 'variance_score': cannot be created with options \{'binarize': 1\}: bad options",
    ):
        check_plugin("scores", options={"variance_score": {"binarize": 1}})
    with pytest.raises(
        AssertionError,
        match=r"model_source 'cifar': build\('resnet21', \{\}\) raised ReprevalError: unknown CIFAR ResNet",
    ):
        check_plugin("cifar_resnets", model="resnet21")
