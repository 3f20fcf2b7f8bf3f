"""torch:MODULE:CALLABLE: any importable nn.Module factory (torchvision's resnet18 as the example)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from repreval.api import InputSpec, ReprevalError
from repreval.models import load_state, read_checkpoint, seeded, with_embedding_at
from repreval.trust import Trust, trusting
from repreval_builtins.torch_factory import TorchFactory, register_model_sources, stage_layers, trial_forward

RESNET18 = "torchvision.models:resnet18"
NO_WEIGHTS = {"kwargs": {"weights": None}}


def build(name: str, options: dict, seed: int = 0):
    with seeded(seed):
        network = TorchFactory().build(name, options, seed)
    network.module.eval()
    return network


@pytest.fixture(scope="module")
def resnet18():
    return build(RESNET18, NO_WEIGHTS)


def test_resnet18_builds_with_its_stages_as_default_layers(resnet18):
    assert isinstance(resnet18.module, nn.Module)
    assert resnet18.default_layers == ("layer1", "layer2", "layer3", "layer4")
    assert resnet18.input_spec.shape == (3, 224, 224)
    assert resnet18.input_spec.mean == (0.485, 0.456, 0.406)
    inputs = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert resnet18.embed(inputs).shape == (2, 1000)
        assert resnet18.classify(inputs).shape == (2, 1000)
        assert with_embedding_at(resnet18, "avgpool", "m").embed(inputs).shape == (2, 512)


def test_weights_saved_from_one_instance_load_into_another(resnet18, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18.module.state_dict(), path)
    other = build(RESNET18, NO_WEIGHTS, seed=1)
    assert not torch.equal(other.module.conv1.weight, resnet18.module.conv1.weight)
    load_state(other.module, read_checkpoint(path))
    inputs = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(other.embed(inputs), resnet18.embed(inputs))


def test_options_shape_the_input_spec():
    network = build(
        "torch.nn:Conv2d",
        {"kwargs": {"in_channels": 1, "out_channels": 4, "kernel_size": 3}, "input_size": [1, 28, 28], "std": 0.5},
    )
    assert network.input_spec.shape == (1, 28, 28)
    assert (network.input_spec.mean, network.input_spec.std) == ((0.0,), (0.5,))
    assert network.embed(torch.rand(2, 1, 28, 28)).shape == (2, 4 * 26 * 26)
    assert network.classify is None  # a 4-D output is no logits
    assert network.default_layers == ()  # no submodules to probe
    with pytest.raises(ReprevalError, match="input_size"):
        build(RESNET18, {**NO_WEIGHTS, "input_size": [3, 224]})
    with pytest.raises(ReprevalError, match="mean"):
        build(RESNET18, {**NO_WEIGHTS, "mean": [0.5, 0.5]})
    with pytest.raises(ReprevalError, match="kwargs"):
        build(RESNET18, {"kwarg": {}})


def test_default_layers_are_one_module_per_resolution_stage():
    # Shaped like torchvision's EfficientNet: each stage's first conv still runs at the previous resolution.
    features = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),  # 16×16
        nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, stride=2, padding=1)),  # 16×16 -> 8×8
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, stride=2, padding=1)),  # 8×8 -> 4×4
    )
    module = nn.Sequential(
        OrderedDict(features=features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(8, 10))
    )
    output, calls = trial_forward(module, InputSpec(3, 16, 16))
    assert output.shape == (1, 10)
    assert stage_layers(module, calls) == ("features.0", "features.1", "features.2")
    assert module.training  # the trial forward runs in eval mode and restores the mode


def test_bad_module_attribute_and_result_are_reported():
    with pytest.raises(ReprevalError, match="cannot import 'torchvison.models'"):
        TorchFactory().build("torchvison.models:resnet18", {}, 0)
    with pytest.raises(ReprevalError, match="resnet18") as error:
        TorchFactory().build("torchvision.models:resnet81", {}, 0)
    assert "did you mean" in error.value.fix
    with pytest.raises(ReprevalError, match="MODULE:CALLABLE"):
        TorchFactory().build("torchvision.models.resnet18", {}, 0)
    with pytest.raises(ReprevalError, match="not known to build a model"):  # never called
        TorchFactory().build("torch.nn.functional:relu", {"kwargs": {"input": [1]}}, 0)
    with pytest.raises(ReprevalError, match="kwargs"):
        TorchFactory().build(RESNET18, {"kwargs": {"wieghts": None}}, 0)
    with pytest.raises(ReprevalError, match="input_size"):
        TorchFactory().build("torch.nn:Linear", {"kwargs": {"in_features": 5, "out_features": 2}}, 0)


def test_the_plugin_registers_its_source():
    registered = []
    register_model_sources(lambda factory, **_: registered.append(factory))
    assert registered == [TorchFactory]


def test_a_suite_cannot_run_commands_through_a_factory(tmp_path, monkeypatch):
    """The trust model: the standard library is never imported as model code, and nothing is called unless it
    is an nn.Module class or a function annotated to return one."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReprevalError, match="'os' is part of Python's standard library"):
        TorchFactory().build("os:system", {"kwargs": {"command": "touch marker"}}, 0)
    with pytest.raises(ReprevalError, match="subprocess"):
        TorchFactory().build("subprocess:run", {"kwargs": {"args": ["touch", "marker"]}}, 0)
    with pytest.raises(ReprevalError, match="'numpy' is not trusted"):
        TorchFactory().build("numpy:save", {"kwargs": {"file": "marker", "arr": [1]}}, 0)
    with trusting(Trust(modules=("numpy",))), pytest.raises(ReprevalError, match="not known to build a model"):
        TorchFactory().build("numpy:save", {"kwargs": {"file": "marker", "arr": [1]}}, 0)
    assert not list(tmp_path.iterdir())
