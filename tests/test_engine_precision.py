"""Precision mode: the network under bfloat16/float16 autocast, float32 maps, and the deviation from float32."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED, needs_shared
from engine_helpers import component_maps, precision_deviation

from repreval.bench import BenchRow, as_dicts, map_deviation
from repreval.cli import main
from repreval.config import ModelConfig
from repreval.data import fit_to_input, normalize
from repreval.engine.core import PRECISIONS, precision_context
from repreval.engine.probe import Probe
from repreval.models import Model, seeded
from repreval_builtins.cifar_resnets import CifarResNets


@pytest.fixture(scope="module")
def random_resnet20():
    with seeded(0):
        network = CifarResNets().build("resnet20", {}, 0)
    network.module.eval()
    return network, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_precisions_are_exported():
    assert PRECISIONS == ("float32", "bfloat16", "float16")
    with pytest.raises(ValueError, match="bfloat16"), precision_context("float64", torch.device("cpu")):
        pass


def test_float32_deviation_is_exactly_zero(random_resnet20, plugins):
    network, inputs = random_resnet20
    deviation = precision_deviation(
        network,
        Probe.parse("layer2"),
        inputs,
        plugins.saliency.create("gradients"),
        plugins.aggregator.create("abs"),
        "float32",
    )
    assert deviation == {
        "precision": "float32",
        "max_abs_difference": 0.0,
        "max_relative_difference": 0.0,
        "relative_l2_difference": 0.0,
        "mean_map_difference": 0.0,
    }


@pytest.mark.parametrize("strategy", ["reverse", "forward"])
def test_both_modes_run_at_lower_precision_and_return_float32(random_resnet20, plugins, strategy):
    """Grad-CAM at layer2 (32 channel directions): reverse mode (batch norms in float32 under autocast)
    and forward mode; both give float32 maps close to the float32 ones, and `components` still works."""
    network, inputs = random_resnet20
    probe, method = Probe.parse("layer2"), plugins.saliency.create("grad_cam")
    reference = component_maps(network, probe, inputs[:1], method, None)
    maps = component_maps(network, probe, inputs[:1], method, None, strategy=strategy, precision="bfloat16")
    assert maps.dtype == torch.float32 and maps.shape == reference.shape
    deviation = map_deviation(reference, maps)
    assert 0 < deviation["max_relative_difference"] < 0.1, deviation
    index = torch.tensor([40, 3, 17])
    sampled = component_maps(
        network, probe, inputs[:1], method, None, strategy=strategy, precision="bfloat16", components=index
    )
    assert torch.allclose(sampled, maps[:, index], atol=1e-6)


def test_lower_precision_maps_stay_differentiable(random_resnet20, plugins):
    network, inputs = random_resnet20
    network.module.zero_grad()
    maps = component_maps(
        network,
        Probe.parse("layer2"),
        inputs,
        plugins.saliency.create("gradients"),
        plugins.aggregator.create("abs"),
        precision="bfloat16",
        create_graph=True,
    )
    maps.sum().backward()
    assert network.module.layer3[0].conv1.weight.grad.abs().sum() > 0
    network.module.zero_grad()


@needs_shared
def test_bfloat16_maps_of_the_trained_resnet20_deviate_slightly(plugins):
    """Trained CIFAR-10 ResNet20, 3 real images, layer3: bfloat16 ~1% of the largest map, float16 ~0.1%."""
    from test_engine import _cifar_images

    config = ModelConfig(
        id="r20", spec="cifar:resnet20", weights=str(SHARED / "cifar10-resnets" / "resnet20-12fca82f.th")
    )
    network = Model(config, plugins.model_source.create("cifar")).trained()
    inputs = normalize(fit_to_input(_cifar_images(3), network.input_spec), network.input_spec)
    probe = Probe.parse("layer3")
    method, aggregator = plugins.saliency.create("activations_x_gradients"), plugins.aggregator.create("abs")
    bf16 = precision_deviation(network, probe, inputs, method, aggregator, "bfloat16")
    fp16 = precision_deviation(network, probe, inputs, method, aggregator, "float16")
    print(f"bfloat16: {bf16}\nfloat16: {fp16}")
    assert 0 < bf16["max_relative_difference"] < 0.1
    assert 0 < bf16["relative_l2_difference"] < 0.1
    assert 0 < bf16["mean_map_difference"] < 0.1
    assert 0 < fp16["max_relative_difference"] < bf16["max_relative_difference"]


def test_bench_reports_the_lower_precision(capsys):
    """`repreval bench --precision bfloat16` adds (d) and its deviation; without it the rows are unchanged."""
    args = ["bench", "--model", "cifar:resnet20", "--layers", "layer3", "--saliency", "grad_cam", "--quick", "--json"]
    assert main(args + ["--precision", "bfloat16"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "bfloat16"
    (row,) = report["rows"]
    assert row["precision"] == "bfloat16" and row["precision_seconds"] > 0
    assert 0 < row["precision_max_relative"] < 0.1 and 0 <= row["precision_mean_map_difference"] < 0.1
    float32_row = BenchRow(
        **{k: v for k, v in row.items() if k in BenchRow.__dataclass_fields__ and not k.startswith("precision")}
    )
    assert set(as_dicts([float32_row])[0]) == set(row) - {k for k in row if k.startswith("precision")}
