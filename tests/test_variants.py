"""Layer randomisation variants on the trained CIFAR-10 ResNet20: exactly the intended parameters change."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED, needs_shared

from repreval.api import ReprevalError
from repreval.config import ModelConfig
from repreval.models import Model
from repreval.plan import make_plan
from repreval.suite import parse_suite
from repreval_builtins.variants import weight_layers

WEIGHTS = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"
SEED = 3


@pytest.fixture(scope="module")
def model(plugins):
    config = ModelConfig(id="r20", spec="cifar:resnet20", weights=str(WEIGHTS))
    return Model(config, plugins.model_source.create("cifar"))


def _state(network) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in network.module.state_dict().items()}


def _changed(a: dict, b: dict) -> set[str]:
    return {key for key in a if not torch.equal(a[key], b[key])}


@needs_shared
def test_weight_layers_run_in_forward_order(model):
    layers = weight_layers(model.trained())
    assert layers[0] == "conv1" and layers[-1] == "linear" and len(layers) == 20  # 19 convs + fc
    assert layers.index("layer1.0.conv1") < layers.index("layer2.0.conv1") < layers.index("layer3.2.conv2")


@needs_shared
@pytest.mark.parametrize("layer", ["layer2.1.conv1", "linear", "layer1.0.bn1"])
def test_independent_randomization_changes_exactly_one_layer(model, plugins, layer):
    trained, random = _state(model.trained()), _state(model.untrained(SEED))
    variant = plugins.variant.create("randomize_layer", {"layer": layer})
    randomized = _state(variant.network(model, SEED))
    own = {k for k in trained if k.rsplit(".", 1)[0] == layer}
    changed = _changed(trained, randomized)
    assert changed == {k for k in own if not torch.equal(trained[k], random[k])} and changed
    for key in own:  # the new values are the random variant's (same seed), never NaN
        assert torch.equal(randomized[key], random[key])
        assert torch.isfinite(randomized[key].float()).all()


@needs_shared
def test_cascading_randomization_is_cumulative_and_ends_at_random(model, plugins):
    trained, random = _state(model.trained()), _state(model.untrained(SEED))
    layers = weight_layers(model.trained())
    previous: set[str] = set()
    for step, layer in enumerate(reversed(layers)):
        variant = plugins.variant.create("cascade", {"down_to": layer})
        changed = _changed(trained, _state(variant.network(model, SEED)))
        expected = {f"{name}.weight" for name in layers[len(layers) - 1 - step :]} | {
            "linear.bias"
        }  # convs have no bias
        assert changed == expected
        assert previous < changed
        previous = changed
    # the whole cascade re-initialises every weight layer; BatchNorm keeps its trained parameters
    full = _state(plugins.variant.create("cascade", {"down_to": "conv1"}).network(model, SEED))
    for key in trained:
        is_weight_layer = key.rsplit(".", 1)[0] in layers
        assert torch.equal(full[key], random[key] if is_weight_layer else trained[key]), key


@needs_shared
def test_each_expands_to_one_variant_per_weight_layer(tmp_path, plugins):
    suite = parse_suite(
        {
            "name": "randomization",
            "output": str(tmp_path / "out"),
            "datasets": {"digits": {"kind": "digits", "limit": 2}},
            "models": {"r20": {"model": "cifar:resnet20", "weights": str(WEIGHTS), "layers": ["layer3"]}},
            "variants": ["trained", {"randomize_layer": {"layer": "each"}}, {"cascade": {"down_to": "each"}}],
            "evaluation": {"dataset": "digits", "saliency": ["gradients"], "scores": ["noise_score"]},
        },
        plugins,
    )
    plan = make_plan(suite, plugins)
    labels = [v.label for v in plan.variants["r20"]]
    assert len(labels) == 1 + 20 + 20 and len(plan.units) == 41
    assert "randomize_layer[layer=layer2.1.conv1]" in labels and "cascade[down_to=conv1]" in labels


@needs_shared
@pytest.mark.parametrize(
    "variant, message",
    [
        ({"randomize_layer": {"layer": "layer9.conv"}}, "no module 'layer9.conv'"),
        ({"randomize_layer": {"layer": "layer1"}}, "has no parameters of its own"),
        ({"cascade": {"down_to": "layer1.0.bn1"}}, "not a weight layer"),
    ],
)
def test_bad_layer_names_fail_at_plan_time(tmp_path, plugins, variant, message):
    suite = parse_suite(
        {
            "name": "bad",
            "output": str(tmp_path / "out"),
            "datasets": {"digits": {"kind": "digits", "limit": 2}},
            "models": {"r20": {"model": "cifar:resnet20", "weights": str(WEIGHTS), "layers": ["layer3"]}},
            "variants": [variant],
            "evaluation": {"dataset": "digits", "saliency": ["gradients"], "scores": ["noise_score"]},
        },
        plugins,
    )
    with pytest.raises(ReprevalError, match=message) as error:
        make_plan(suite, plugins)
    assert "variants[0]" in error.value.one_line()
