"""ae:drift and ae:classifier: shapes, training on real digits and MNIST, determinism, the host's cache."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from repreval.api import ImageSet, ReprevalError, TrainingContext
from repreval.config import ModelConfig, TrainingConfig
from repreval.data import fit_to_input, normalize
from repreval.models import CACHE_ENV, Model, seeded
from repreval.plugins import load_plugins
from repreval_builtins.autoencoders import Autoencoders, register_model_sources, training_loss

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def build(name: str, options: dict | None = None, seed: int = 0):
    with seeded(seed):
        return Autoencoders().build(name, options or {}, seed)


def train(network, data: ImageSet, inputs, options: dict, seed: int = 0) -> dict:
    with seeded(seed):  # as the host does
        log = Autoencoders().train(network, data, inputs, options, seed, TrainingContext(load_plugins().registries()))
    network.module.eval()
    return log


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as file:
        return np.frombuffer(file.read(), dtype=np.uint8, offset=offset)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 1,797 real 8×8 digits, fitted to 28×28 in [0, 1]."""
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16
    spec = build("classifier").input_spec
    inputs = normalize(fit_to_input(images, spec), spec)
    return ImageSet(images, torch.tensor(bunch.target)), inputs


@pytest.fixture(scope="module")
def mnist():
    """The first 2,000 MNIST test images in [0, 1] with labels."""
    if not MNIST.is_dir():
        pytest.skip("no shared data")
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)[:2000]
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz", 8)[:2000]
    return ImageSet(torch.from_numpy(images.copy()).float() / 255, torch.from_numpy(labels.astype(np.int64)))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_shapes_and_embedding_sizes():
    inputs = torch.rand(3, 1, 28, 28)
    drift = build("drift")
    assert drift.input_spec.shape == (1, 28, 28)
    assert drift.embed(inputs).shape == (3, 32)
    assert drift.module(inputs).shape == (3, 1, 28, 28)
    assert drift.classify is None
    assert drift.default_layers == ("encoder.block1", "encoder.block2", "encoder.block3")
    for size in (1, 3, 10):
        classifier = build("classifier", {"bottleneck": size})
        assert classifier.embed(inputs).shape == (3, size)
        assert classifier.classify(inputs).shape == (3, 10)
        assert classifier.module(inputs).shape == (3, 1, 28, 28)
    assert classifier.default_layers == ("encoder.block1", "encoder.block2")


def test_probe_layers_are_blocks_ending_in_their_activation():
    assert isinstance(build("classifier").module.encoder.block2.act, torch.nn.Softplus)
    assert isinstance(build("classifier", {"activation": "relu"}).module.encoder.block2.act, torch.nn.ReLU)
    network = build("drift")
    modules = dict(network.module.named_modules())
    outputs = {}
    for name in network.default_layers:
        modules[name].register_forward_hook(lambda _m, _i, output, name=name: outputs.__setitem__(name, output.shape))
    network.embed(torch.rand(2, 1, 28, 28))
    assert outputs == {
        "encoder.block1": (2, 8, 28, 28),
        "encoder.block2": (2, 4, 14, 14),
        "encoder.block3": (2, 2, 9, 9),
    }


def test_bad_names_and_options_are_reported():
    source = Autoencoders()
    assert source.model_names() == ("drift", "classifier")
    with pytest.raises(ReprevalError, match="classifier"):
        source.build("clasifier", {}, 0)
    with pytest.raises(ReprevalError, match="bottleneck"):
        source.build("classifier", {"botleneck": 3}, 0)
    with pytest.raises(ReprevalError, match="no options"):
        source.build("drift", {"bottleneck": 3}, 0)
    with pytest.raises(ReprevalError, match="softplus"):
        source.build("classifier", {"activation": "tanh"}, 0)
    with pytest.raises(ReprevalError, match="positive integer"):
        source.build("classifier", {"bottleneck": 0}, 0)
    network = build("classifier")
    context = TrainingContext(load_plugins().registries())
    images = torch.rand(8, 1, 28, 28)
    with pytest.raises(ReprevalError, match="epoch"):
        source.train(network, ImageSet(images, torch.zeros(8, dtype=torch.long)), images, {"epoch": 1}, 0, context)
    with pytest.raises(ReprevalError, match="labelled"):
        source.train(network, ImageSet(images), images, {}, 0, context)


def test_training_is_deterministic_given_the_seed(digits):
    data, inputs = digits
    subset, subset_inputs = ImageSet(data.images[:300], data.labels[:300]), inputs[:300]
    states = []
    for seed in (5, 5, 6):
        network = build("classifier", seed=0)
        train(network, subset, subset_inputs, {"epochs": 1}, seed)
        states.append(network.module.state_dict())
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert not torch.equal(states[0]["encoder.fc.weight"], states[2]["encoder.fc.weight"])


def test_classifier_learns_digits(digits):
    data, inputs = digits
    network = build("classifier", {"bottleneck": 10})
    log = train(network, ImageSet(data.images[:1400], data.labels[:1400]), inputs[:1400], {"epochs": 5})
    with torch.no_grad():
        held_out = (network.classify(inputs[1400:]).argmax(dim=1) == data.labels[1400:]).float().mean().item()
    print(f"ae:classifier on digits, 5 epochs: {log}, held-out accuracy {held_out:.3f}")
    assert set(log) == {"epochs", "final_loss", "seconds", "train_accuracy"}
    assert log["epochs"] == 5
    assert held_out > 0.7  # 0.864 measured
    assert log["train_accuracy"] > 0.7


def test_drift_autoencoder_learns_to_reconstruct_mnist(mnist):
    network = build("drift")
    inputs = normalize(mnist.images, network.input_spec)
    train_inputs, held_out = inputs[:1000], inputs[1000:]

    def held_out_error() -> float:
        network.module.eval()
        with torch.no_grad():
            return F.mse_loss(network.module(held_out), held_out).item()

    mean_image_error = F.mse_loss(train_inputs.mean(dim=0).expand_as(held_out), held_out).item()
    untrained = held_out_error()
    log = train(network, ImageSet(mnist.images[:1000]), train_inputs, {"epochs": 5})
    trained = held_out_error()
    print(f"ae:drift, 5 epochs on 1,000 MNIST images: held-out MSE {untrained:.4f} -> {trained:.4f}", end=" ")
    print(f"(mean image {mean_image_error:.4f}); {log}")
    assert trained < mean_image_error < untrained  # 0.053 < 0.062 < 0.26 measured
    assert "train_accuracy" not in log


def test_training_loss_adds_cross_entropy_for_the_classifier():
    inputs, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    network = build("classifier")
    network.module.eval()
    code = network.embed(inputs)
    reconstruction, logits = network.module.decoder(code), network.module.classifier(code)
    expected = F.mse_loss(reconstruction, inputs) + F.cross_entropy(logits, labels)
    assert torch.allclose(training_loss(network, inputs, labels), expected)
    drift = build("drift")
    drift.module.eval()
    assert torch.allclose(training_loss(drift, inputs, None), F.mse_loss(drift.module(inputs), inputs))


def test_host_trains_once_and_then_loads_the_cached_checkpoint(digits, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    data, inputs = digits
    subset = ImageSet(data.images[:200], data.labels[:200]), inputs[:200]
    config = ModelConfig(id="ae", spec="ae:classifier", train=TrainingConfig("digits", {"epochs": 2}))
    calls = []

    def training_data(network):
        calls.append(network)
        return subset

    context = TrainingContext(load_plugins().registries())
    first = Model(config, Autoencoders(), training_data=training_data, training_context=context).trained()
    assert len(calls) == 1
    assert list(tmp_path.glob("models/ae_classifier-*.pt"))

    def must_not_train(network):
        raise AssertionError("the cached checkpoint should have been used")

    second = Model(config, Autoencoders(), training_data=must_not_train, training_context=context).trained()
    first_state, second_state = first.module.state_dict(), second.module.state_dict()
    assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    untrained = Model(config, Autoencoders()).untrained(0).module.state_dict()
    assert not torch.equal(untrained["encoder.fc.weight"], second_state["encoder.fc.weight"])


def test_the_plugin_registers_its_source():
    registered = []
    register_model_sources(lambda factory, **_: registered.append(factory))
    assert registered == [Autoencoders]


def test_score_constraints_reach_every_encoder_layer_through_double_backprop(digits):
    """The constraint term alone has a non-zero gradient for the parameters before the probe (the
    activation stays in the graph) and after it; its value is the score repreval reports."""
    from repreval_builtins.autoencoders.training import ScoreConstraints, training_settings

    _, inputs = digits
    network = build("classifier", {"bottleneck": 5})
    for name in ("noise_score", "variance_score"):
        constraints = ScoreConstraints(
            training_settings({"constraints": {name: 1.0}}), seed=0, registries=load_plugins()
        )
        network.module.zero_grad()
        penalty, values = constraints.loss(network, inputs[:8])
        penalty.backward()
        assert penalty.item() == pytest.approx(-values[name]) and values[name] > 0
        for parameter in ("encoder.block1.conv.weight", "encoder.block2.conv.weight", "encoder.fc.weight"):
            grad = dict(network.module.named_parameters())[parameter].grad
            assert grad is not None and grad.abs().sum() > 0, (name, parameter)


def test_constrained_training_logs_its_scores_and_is_deterministic(digits):
    data, inputs = digits
    subset, subset_inputs = ImageSet(data.images[:256], data.labels[:256]), inputs[:256]
    options = {"epochs": 1, "constraints": {"noise_score": 0.1, "variance_score": 0.1}, "constraint_every": 2}
    states, logs = [], []
    for _ in range(2):
        network = build("classifier", {"bottleneck": 3}, seed=0)
        logs.append(train(network, subset, subset_inputs, options, 4))
        states.append(network.module.state_dict())
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    for score in ("noise_score", "variance_score"):
        assert logs[0][f"{score}_first"] > 0 and logs[0][f"{score}_last"] > 0


@pytest.mark.parametrize(
    "options, message",
    [({"constraints": {"noise_score": "high"}}, "must map score names"), ({"constraint_every": 0}, "constraint_every")],
)
def test_bad_constraint_options_are_reported(options, message):
    with pytest.raises(ReprevalError, match=message):
        Autoencoders().check_training_options(options)
