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


# ---------------------------------------------------------------------------------------------
# Random copies: initialiser, normalisation layers, seed


@needs_shared
def test_random_copies_differ_in_initialiser_norm_layers_and_seed(model, plugins):
    import math

    from repreval_builtins.variants import normalization_layers

    def random(**options):
        return plugins.variant.create("random", options).network(model, SEED).module.requires_grad_(False)

    own = random()
    assert torch.equal(own.conv1.weight, model.untrained(SEED).module.conv1.weight)  # the source's own
    fan_in = own.conv1.weight[0].numel()
    kaiming, xavier, orthogonal, default = (random(init=i) for i in ("kaiming", "xavier", "orthogonal", "pytorch"))
    assert float(kaiming.layer2[0].conv1.weight.std()) == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.1)
    # PyTorch's default for convolutions: kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(default.conv1.weight.abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7
    assert float(default.conv1.weight.std()) == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.2)
    flat = orthogonal.layer3[0].conv1.weight.flatten(1)  # 64 × 288: orthonormal rows
    assert torch.allclose(flat @ flat.T, torch.eye(64), atol=1e-5)
    assert not torch.equal(xavier.conv1.weight, kaiming.conv1.weight)
    assert not torch.equal(random(seed=1).conv1.weight, own.conv1.weight)
    assert torch.equal(random(seed=1).conv1.weight, random(seed=1).conv1.weight)  # seeded

    trained = model.trained().module
    kept = random(norm="keep")
    norms = normalization_layers(model.trained())
    assert norms and all(name.rsplit(".", 1)[-1].startswith("bn") for name in norms)
    for name in norms:
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(kept.get_submodule(name), key), getattr(trained.get_submodule(name), key))
    assert torch.equal(kept.conv1.weight, own.conv1.weight)  # the weights stay random
    assert float(own.bn1.running_var.min()) == 1.0  # reset: a fresh network's statistics


@needs_shared
def test_random_copy_options_are_checked_and_named(plugins):
    with pytest.raises(ReprevalError, match="init must be one of own, pytorch"):
        plugins.variant.create("random", {"init": "he"})
    with pytest.raises(ReprevalError, match="norm must be one of reset, keep"):
        plugins.variant.create("random", {"norm": "drop"})
    assert plugins.variant.create("random", {"norm": "keep"}).needs_weights
    assert not plugins.variant.create("random", {"init": "orthogonal"}).needs_weights
