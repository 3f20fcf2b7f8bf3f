"""cifar:resnet20..56: architecture, the akamaster checkpoints, accuracy on real CIFAR-10 test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repreval.api import ReprevalError
from repreval.data import normalize
from repreval.models import load_state, read_checkpoint, seeded
from repreval_builtins.cifar_resnets import CifarResNets, register_model_sources

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKPOINTS = DATA / "cifar10-resnets"
CIFAR_TEST = DATA / "cifar10-test"
PARAMETERS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018}
needs_data = pytest.mark.skipif(not CHECKPOINTS.is_dir() or not CIFAR_TEST.is_dir(), reason="no shared data")


def build(name: str, seed: int = 0):
    with seeded(seed):
        network = CifarResNets().build(name, {}, seed)
    network.module.eval()
    return network


def load_trained(name: str):
    network = build(name)
    (path,) = CHECKPOINTS.glob(f"{name}-*.th")
    state = CifarResNets().convert_state_dict(read_checkpoint(path), network)
    load_state(network.module, state)
    return network


@pytest.fixture(scope="module")
def cifar_images():
    """The first 100 images of each class folder (1,000 images), in [0, 1], with labels."""
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in CIFAR_TEST.iterdir() if p.is_dir())):
        for path in sorted(folder.iterdir())[:100]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return pixels, torch.tensor(labels)


def top1(network, images, labels) -> float:
    with torch.no_grad():
        logits = network.classify(normalize(images, network.input_spec))
    return (logits.argmax(dim=1) == labels).float().mean().item()


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_every_depth_builds_with_the_published_parameter_count(name):
    network = build(name)
    assert sum(p.numel() for p in network.module.parameters()) == PARAMETERS[name]
    assert network.default_layers == ("layer1", "layer2", "layer3")
    assert network.input_spec.shape == (3, 32, 32)
    assert network.input_spec.mean == (0.485, 0.456, 0.406)
    blocks = {n for n, _ in network.module.named_modules() if n.count(".") == 1 and n.startswith("layer")}
    assert len(blocks) == 3 * {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}[name]
    inputs = torch.rand(2, 3, 32, 32)
    assert network.embed(inputs).shape == (2, 64)
    assert network.classify(inputs).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = build("resnet20").module.layer2[0]
    x = torch.randn(1, 16, 32, 32)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (1, 32, 16, 16)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0
    assert not list(block.shortcut.parameters())


def test_same_seed_same_weights_and_kaiming_initialisation():
    first, second, other = build("resnet20", 1), build("resnet20", 1), build("resnet20", 2)
    assert torch.equal(first.module.conv1.weight, second.module.conv1.weight)
    assert not torch.equal(first.module.conv1.weight, other.module.conv1.weight)
    weight = build("resnet56").module.layer3[0].conv2.weight  # fan_in = 64 * 9: std sqrt(2 / 576)
    assert weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)


def test_embedding_reads_the_module_at_call_time():
    network = build("resnet20")
    inputs = torch.rand(2, 3, 32, 32)
    before = network.embed(inputs)
    with torch.no_grad():
        network.module.layer3[-1].bn2.bias.add_(1.0)
    assert not torch.allclose(before, network.embed(inputs))


def test_unknown_name_and_options_are_reported():
    with pytest.raises(ReprevalError, match="resnet20"):
        CifarResNets().build("resnet2O", {}, 0)
    with pytest.raises(ReprevalError, match="width"):
        CifarResNets().build("resnet20", {"width": 2}, 0)
    assert CifarResNets().model_names() == ("resnet20", "resnet32", "resnet44", "resnet56")


@needs_data
@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_published_checkpoints_load_strictly(name):
    network = load_trained(name)
    assert network.module.linear.weight.abs().sum() > 0


@needs_data
def test_trained_resnet20_is_accurate_and_random_init_is_at_chance(cifar_images):
    images, labels = cifar_images
    trained = top1(load_trained("resnet20"), images, labels)
    random = top1(build("resnet20"), images, labels)
    assert trained > 0.75  # 0.804 measured (the JPEG copies cost ~10 points against the PNGs)
    assert random < 0.2


def test_the_plugin_registers_its_source():
    registered = []
    register_model_sources(lambda factory, **_: registered.append(factory))
    assert registered == [CifarResNets]
