"""``repreval show`` with a chosen component, sampled components and aggregator options: the maps it draws
against plain autograd on the unmodified network, and its one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hooked_forward

from repreval.cli import main
from repreval.config import Subset
from repreval.data import load_images
from repreval.engine.estimate import sample_components
from repreval.inspection import build_network

MODEL, LAYER = "ae:drift", "encoder.block2"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("show") / "digit.png"
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28)).astype("uint8")
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def gradients(plugins, image) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle: the activation a [C, h, w] of LAYER and dz_d/da [D, C, h, w] for every component d, one plain
    autograd call each, on the network `show` builds (random init, seed 0) and the image as it reads it."""
    network = build_network(plugins, MODEL, layer=LAYER, seed=0)
    loaded = load_images(plugins.dataset.create("image_files", {"paths": str(image)}), Subset(), network.input_spec)
    activation, embedding = hooked_forward(network, LAYER, network.input_spec.normalize(loaded.images))
    rows = [
        torch.autograd.grad(embedding[0, d], activation, retain_graph=True)[0][0] for d in range(embedding.shape[1])
    ]
    return activation[0].detach(), torch.stack(rows)


def _show(monkeypatch, image, *options: str) -> dict[str, torch.Tensor]:
    """The maps `show` draws, by label (captured on their way to the PNG)."""
    import repreval.render.maps

    drawn = {}

    def capture(picture, maps, title, path):
        drawn.update({label: torch.from_numpy(values) for label, values in maps.items()})
        return path

    monkeypatch.setattr(repreval.render.maps, "draw_one", capture)
    code = main(
        ["show", MODEL, "--input", str(image), "--layer", LAYER, "--out", str(image.parent / "unused.png"), *options]
    )
    assert code == 0
    return drawn


def _close(found: torch.Tensor, expected: torch.Tensor) -> bool:
    return torch.allclose(found.double(), expected.double(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_one_component_is_plain_autograd_of_that_component(monkeypatch, image, gradients):
    activation, gradient = gradients
    drawn = _show(monkeypatch, image, "--component", "3")
    g = gradient[3]  # dz_3/da [C, h, w]
    expected = {
        "gradients": g.abs().mean(dim=0),
        "activations_x_gradients": (activation * g).abs().mean(dim=0),
        "grad_cam": torch.relu((g.mean(dim=(1, 2), keepdim=True) * activation).sum(dim=0)),
    }
    assert drawn.keys() == expected.keys()
    for label, values in expected.items():
        assert _close(drawn[label], values), label
    two = _show(monkeypatch, image, "--component", "5,3", "--saliency", "gradients")
    assert list(two) == ["gradients · component 5", "gradients · component 3"]
    assert _close(two["gradients · component 3"], expected["gradients"])


def test_aggregator_options_match_the_oracle(monkeypatch, image, gradients):
    activation, gradient = gradients
    drawn = _show(
        monkeypatch, image, "--saliency", "activations_x_gradients",
        "--channel-aggregator", "mean,abs", "--component-aggregator", "var,max",
    )  # fmt: skip
    products = activation * gradient  # [D, C, h, w]
    for channel, per_component in (("mean", products.mean(dim=1)), ("abs", products.abs().mean(dim=1))):
        expected = {"var": per_component.var(dim=0, correction=0), "max": per_component.amax(dim=0)}
        for component, values in expected.items():
            label = f"activations_x_gradients · channels {channel} · components {component}"
            assert _close(drawn[label], values), label


def test_sampled_components_are_the_seeded_sample(monkeypatch, image, gradients):
    _, gradient = gradients
    dim = gradient.shape[0]
    first = _show(monkeypatch, image, "--saliency", "gradients", "--sample-components", "8")
    again = _show(monkeypatch, image, "--saliency", "gradients", "--sample-components", "8")
    assert torch.equal(first["gradients"], again["gradients"])
    chosen = sample_components(dim, 8, seed=0)
    assert _close(first["gradients"], gradient[chosen].abs().mean(dim=1).mean(dim=0))
    assert not _close(first["gradients"], gradient.abs().mean(dim=1).mean(dim=0))  # not all D


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--component-aggregator", "meen"], "--component-aggregator: unknown aggregator 'meen'; did you mean 'mean'"),
        (["--channel-aggregator", "abss"], "--channel-aggregator: unknown aggregator 'abss'; did you mean 'abs'"),
        (["--component", "999"], "--component: component 999 does not exist: the embedding has"),
        (["--component", "3,x"], "--component: 'x' is not a component index"),
        (["--component", "3", "--sample-components", "4"], "--component: --component draws each component's own"),
        (["--sample-components", "0"], "--sample-components: 0 components; sample at least 1"),
        (["--sample-components", "100000"], "--sample-components: 100000 components asked for, but the embedding"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(image, capsys, options, message):
    code = main(
        ["show", MODEL, "--input", str(image), "--layer", LAYER, "--out", str(image.parent / "unused.png"), *options]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and message in error, error
