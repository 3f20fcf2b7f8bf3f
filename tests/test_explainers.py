"""The explainer network (Part 2): templates and filter loss against a direct computation, the gate, training on
a real performer, the cache, the performer left untouched, landmarks and location instability on hand-made
cases, and a third-party explainer through the plugin hook."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from repreval.api import Explainer, Explanation, ImageSet, InputSpec, TrainingContext, hookimpl
from repreval.errors import ReprevalError
from repreval.explain import METRICS, weights_digest
from repreval.landmarks import (
    fit_landmarks,
    ink_landmarks,
    landmarks_for,
    location_instability,
    peak_positions,
    read_landmark_file,
)
from repreval.plugins import load_plugins
from repreval.render.report import write_report
from repreval.runner import run_suite
from repreval.store import ResultStore
from repreval.suite import parse_suite
from repreval_builtins.explainers.templates import filter_loss, peak_mask, positive_templates, template_matrix

# ---------------------------------------------------------------------------------------------
# Templates and the filter loss


def test_template_values_by_hand():
    """4×4 maps: n = 4, beta = 4, so t = tau·max(1 - d, -1) for the L1 distance d to the template's peak."""
    tau = 0.5 / 16
    templates = positive_templates(4, 4)
    peak_00 = templates[0]
    assert peak_00[0, 0] == pytest.approx(tau)
    assert peak_00[0, 1] == pytest.approx(0.0) and peak_00[1, 0] == pytest.approx(0.0)  # d = 1
    assert peak_00[1, 1] == pytest.approx(-tau) and peak_00[3, 3] == pytest.approx(-tau)  # d = 2, 6: clipped
    assert templates[5][1, 1] == pytest.approx(tau)  # mu = (1, 1)
    matrix = template_matrix(4, 4)
    assert matrix.shape == (16, 17)
    assert torch.all(matrix[:, 16] == -tau)  # the negative template
    assert torch.equal(matrix[:, 5], templates[5].flatten())


def _filter_loss_directly(maps: np.ndarray, templates: np.ndarray) -> float:
    """Loss_f of one filter from METHOD.md, with explicit probabilities in float64 (no log space)."""
    batch, positions = len(maps), templates.shape[1] - 1
    fitness = np.array([[float(maps[b].ravel() @ templates[:, t]) for t in range(positions + 1)] for b in range(batch)])
    likelihood = np.exp(fitness) / np.exp(fitness).sum(axis=0, keepdims=True)  # p(x | T), normalised over X
    alpha = positions / (1 + positions)
    prior = np.array([alpha / positions] * positions + [1 - alpha])
    joint = prior * likelihood
    p_x = joint.sum(axis=1)
    posterior = joint / p_x[:, None]
    positive = posterior[:, :positions].sum(axis=1)
    negative = posterior[:, positions]
    conditional = -sum(
        p_x[b] * (positive[b] * math.log(positive[b]) + negative[b] * math.log(negative[b])) for b in range(batch)
    )
    part = 0.0
    for b in range(batch):
        q = posterior[b, :positions] / positive[b]
        part += p_x[b] * positive[b] * -(q * np.log(q)).sum()
    return conditional + part


def test_filter_loss_matches_the_formulas_computed_directly():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 3, 4, 4, generator=generator, dtype=torch.float64) * 40
    templates = template_matrix(4, 4).double()
    ours = filter_loss(maps, templates)
    for f in range(3):
        assert float(ours[f]) == pytest.approx(_filter_loss_directly(maps[:, f].numpy(), templates.numpy()), rel=1e-9)


def _peaked(batch: int, size: int, height: float, peaks: int) -> torch.Tensor:
    """Maps [batch, 1, size, size] with ``peaks`` sharp peaks sharing ``height`` of activation, at positions that
    differ between images."""
    maps = torch.zeros(batch, 1, size, size)
    positions = list(itertools.product(range(1, size - 1), repeat=2))
    for b in range(batch):
        for k in range(peaks):
            i, j = positions[(b * 7 + k * 11) % len(positions)]
            maps[b, 0, i, j] += height / peaks
    return maps


def test_one_sharp_peak_scores_lower_than_a_diffuse_map_or_several_peaks():
    size, mass = 6, 36 * 200.0
    templates = template_matrix(size, size)
    single = filter_loss(_peaked(8, size, mass, 1), templates)
    several = filter_loss(_peaked(8, size, mass, 3), templates)
    diffuse = filter_loss(torch.full((8, 1, size, size), mass / size**2), templates)
    assert single < several and single < diffuse


def test_peak_mask_keeps_the_peak_and_clears_far_positions():
    maps = torch.rand(2, 3, 8, 8) + 0.1
    maps[0, 1, 2, 5] = 10.0
    masked = peak_mask(maps)
    assert masked[0, 1, 2, 5] == pytest.approx(10.0)  # the template is 1 at the peak
    assert masked[0, 1, 7, 0] == 0  # L1 distance 10 > n / beta = 2
    assert torch.all(masked >= 0) and torch.all(masked <= maps)


# ---------------------------------------------------------------------------------------------
# The network and its training


def _train(eta: float, epochs: int, features: torch.Tensor, plugins) -> tuple[nn.Module, dict]:
    explainer = plugins.explainer.create(
        "parts", {"filters": 8, "hidden": 16, "eta": eta, "epochs": epochs, "lr": 1e-2}
    )
    module = explainer.build(tuple(features.shape[1:]), {"layer": tuple(features.shape[1:])}, seed=0)
    log = explainer.fit(module, features, {"layer": features}, 0, TrainingContext(plugins.registries()))
    return module, log


def test_p_stays_in_0_1_and_the_log_p_term_raises_it(plugins, one_thread):
    features = torch.relu(torch.randn(96, 6, 8, 8, generator=torch.Generator().manual_seed(1)))
    shares = {}
    for eta in (0.0, 10.0):
        module, log = _train(eta, 20, features, plugins)
        with torch.no_grad():
            explanation = module(features)
        assert isinstance(explanation, Explanation)
        assert torch.all((explanation.part_share > 0) & (explanation.part_share < 1))
        shares[eta] = float(explanation.part_share.mean())
        assert log["epochs"] == 20 and len(log["history"]) == 20
    assert shares[10.0] > shares[0.0] + 0.1


def test_bad_explainer_options_are_one_line_errors(plugins):
    with pytest.raises(ReprevalError, match="filters must be a positive integer"):
        plugins.explainer.create("parts", {"filters": 0})
    with pytest.raises(ReprevalError, match="no option 'filter'"):
        plugins.explainer.create("parts", {"filter": 3})


def test_weights_digest_sees_a_changed_buffer():
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    before = weights_digest(module)
    assert weights_digest(module) == before
    module[1].running_mean += 1e-6
    assert weights_digest(module) != before


# ---------------------------------------------------------------------------------------------
# Whole suites on a real performer (a CNN trained on scikit-learn's digits)


def explainer_suite(epochs: int = 6, **explainer_options) -> dict:
    return {
        "name": "explained",
        "seed": 0,
        "datasets": {
            "train": {"kind": "digits", "limit": 600},
            "held": {"kind": "digits", "skip": 600, "limit": 120, "landmarks": "ink"},
        },
        "models": {
            "cnn": {
                "model": "cnn:small",
                "options": {"size": 16},
                "train": {"dataset": "train", "epochs": 4},
                "layers": ["block3"],
            }
        },
        "variants": ["trained", "random"],
        "evaluation": {
            "dataset": "held",
            "explainer_data": "train",
            "explainers": [{"parts": {"filters": 8, "hidden": 16, "epochs": epochs, **explainer_options}}],
        },
    }


def _values(directory) -> dict[tuple[str, str], object]:
    return {(r.variant, r.score.rpartition(".")[2]): r for r in ResultStore(directory).records()}


def test_a_suite_explains_a_trained_and_a_random_performer(tmp_path, plugins, one_thread):
    suite = parse_suite(explainer_suite(), plugins)
    suite.output = tmp_path / "out"
    report = run_suite(suite, plugins)
    assert not report.failures and report.computed == 2 * len(METRICS)  # a classifier, landmarks, two tracks
    records = _values(suite.output)
    assert {metric for _, metric in records} == set(METRICS)
    trained = records[("trained", "accuracy")]
    assert trained.extras["performer_accuracy"] > 0.5  # the CNN learnt the digits
    assert 0 <= trained.value <= 1 and len(trained.values) == 120
    drop = records[("trained", "accuracy_drop")]
    assert drop.value == pytest.approx(trained.extras["performer_accuracy"] - trained.value)
    for record in records.values():  # the performer is untouched, and every record says so
        assert record.provenance["performer_sha256_before"] == record.provenance["performer_sha256_after"]
    assert records[("random", "part_share")].values and all(0 < v < 1 for v in records[("random", "part_share")].values)
    # computing stores the picture's data; the report draws the picture from it (and redraws it when stale)
    picture = suite.output / "pictures" / "cnn-trained-block3-parts-epochs-6-filters-8-hidden-16.png"
    data = picture.with_suffix(".npz")
    assert data.is_file() and not picture.exists()
    with np.load(data) as stored:
        assert {"title", "images", "part_maps", "performer_maps", "landmarks"} <= set(stored.files)
        assert str(stored["title"]) == "cnn · trained · block3 · parts[epochs=6,filters=8,hidden=16]"
        assert stored["images"].shape[0] == stored["part_maps"].shape[0] == 4
    text = write_report(suite.output).read_text()
    assert picture.is_file() and f"](pictures/{picture.name})" in text
    for heading in ("What the parts carry", "Where the parts are", "How diverse the parts are", "Training"):
        assert f"### {heading}" in text
    assert "| interpretable alone | ordinary alone |" in text and "frozen twins" in text and "filter_pull" in text
    drawn = picture.stat().st_mtime_ns
    write_report(suite.output)
    assert picture.stat().st_mtime_ns == drawn  # up to date: not drawn again
    os.utime(data, ns=(drawn + 10**9, drawn + 10**9))
    write_report(suite.output)
    assert picture.stat().st_mtime_ns > drawn  # the data is newer: drawn again


def test_reconstruction_error_falls_with_training_and_the_cache_is_reused(tmp_path, plugins, one_thread):
    errors = {}
    for epochs in (1, 12):
        suite = parse_suite(explainer_suite(epochs), plugins)
        suite.output = tmp_path / f"epochs-{epochs}"
        assert not run_suite(suite, plugins).failures
        errors[epochs] = _values(suite.output)[("trained", "reconstruction_error")].value
    assert errors[12] < 0.8 * errors[1]
    again = parse_suite(explainer_suite(12), plugins)
    again.output = tmp_path / "again"  # a new results folder: the explainer comes from the cache
    assert not run_suite(again, plugins).failures
    first, second = _values(tmp_path / "epochs-12"), _values(again.output)
    assert second[("trained", "part_share")].extras["explainer_cached"] == 1.0
    assert first[("trained", "part_share")].extras["explainer_cached"] == 0.0
    assert second[("trained", "reconstruction_error")].values == first[("trained", "reconstruction_error")].values


def test_the_same_suite_and_seed_give_the_same_numbers_however_many_threads(tmp_path, plugins, monkeypatch):
    values = []
    for threads in (2, 1):
        monkeypatch.setenv("REPREVAL_CACHE", str(tmp_path / f"cache-{threads}"))  # trained afresh each time
        suite = parse_suite(explainer_suite(3), plugins)
        suite.output = tmp_path / f"out-{threads}"
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            assert not run_suite(suite, plugins).failures
        finally:
            torch.set_num_threads(before)
        records = _values(suite.output)
        assert records[("trained", "part_share")].extras["explainer_cached"] == 0.0
        values.append({key: record.values for key, record in records.items()})
    assert values[0] == values[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["evaluation"].pop("explainer_data"), "explainers need a dataset to learn from"),
        (lambda s: s["evaluation"].update(explainer_data="held"), "judged on the images they learnt from"),
        (lambda s: s["evaluation"].update(explainer_data="tran"), "unknown dataset 'tran'"),
        (lambda s: s["datasets"]["held"].update(landmarks="nowhere.csv"), "landmark file 'nowhere.csv' does not exist"),
    ],
)
def test_bad_explainer_suites_are_refused(plugins, change, message):
    spec = explainer_suite()
    change(spec)
    with pytest.raises(ReprevalError, match=message):
        parse_suite(spec, plugins)


def test_a_deeper_layer_is_reconstructed_and_fed_to_the_upper_layers(tmp_path, plugins, one_thread):
    spec = explainer_suite()
    spec["models"]["cnn"]["reconstruct"] = ["block4"]
    spec["variants"] = ["trained"]
    suite = parse_suite(spec, plugins)
    suite.output = tmp_path / "out"
    assert not run_suite(suite, plugins).failures
    records = _values(suite.output)
    assert records[("trained", "part_share")].provenance["reconstructed"] == "block4"
    assert 0 < records[("trained", "reconstruction_error")].value < 1
    assert records[("trained", "accuracy")].extras["performer_accuracy"] > 0.5


def test_reconstructing_an_earlier_layer_is_refused(plugins):
    from repreval.plan import make_plan

    spec = explainer_suite()
    spec["models"]["cnn"]["reconstruct"] = ["block1"]
    with pytest.raises(ReprevalError, match="cannot reconstruct the earlier layer 'block1'"):
        make_plan(parse_suite(spec, plugins), plugins)


# ---------------------------------------------------------------------------------------------
# A third-party explainer


class Linear(nn.Module):
    """Reconstructs F through a 1×1 conv bottleneck; p is fixed at 0.5."""

    def __init__(self, channels: int):
        super().__init__()
        self.encode, self.decode = nn.Conv2d(channels, 4, 1), nn.Conv2d(4, channels, 1)

    def forward(self, features):
        code = torch.relu(self.encode(features))
        return Explanation({"block3": self.decode(code)}, torch.full((len(features),), 0.5), code)


class BottleneckExplainer(Explainer):
    """A 1×1-conv bottleneck (a third party's architecture)."""

    name = "bottleneck"

    def build(self, source, targets, seed):
        return Linear(source[0])

    def fit(self, module, features, targets, seed, context):
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
        for _ in range(30):
            loss = (module(features).reconstructions["block3"] - targets["block3"]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        context.progress(1.0, "done")
        return {"epochs": 30, "seconds": 0.0}


def test_a_third_party_explainer_plugs_in_through_the_hook(tmp_path, one_thread):
    plugin = types.ModuleType("bottleneck_plugin")
    plugin.register_explainers = hookimpl(lambda register: register(BottleneckExplainer))  # type: ignore[attr-defined]
    sys.modules[plugin.__name__] = plugin
    plugins = load_plugins(extra_plugins=[plugin])
    assert "bottleneck" in plugins.explainer
    spec = explainer_suite()
    spec["evaluation"]["explainers"] = ["bottleneck"]
    del spec["datasets"]["held"]["landmarks"]
    suite = parse_suite(spec, plugins)
    suite.output = tmp_path / "out"
    failures = run_suite(suite, plugins).failures
    # its 4 ReLU codes are its part maps; where fewer than two fire on every image, overlap fails alone
    assert all(unit.endswith(".filter_overlap") and "two firing part filters" in why for unit, why in failures)
    records = _values(suite.output)
    no_tracks = {"reconstruction_error", "accuracy", "accuracy_drop", "part_share", "distinct_peaks", "filter_overlap"}
    assert {metric for _, metric in records} | {"filter_overlap"} == no_tracks  # no track ablations: no tracks
    assert records[("trained", "part_share")].value == pytest.approx(0.5)
    assert records[("trained", "reconstruction_error")].value < 1.0


class Silent(nn.Module):
    """A bottleneck whose part maps never fire."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, features):
        explanation = self.inner(features)
        return Explanation(explanation.reconstructions, explanation.part_share, torch.zeros_like(explanation.part_maps))


class SilentExplainer(BottleneckExplainer):
    """Parts that never fire."""

    name = "silent"

    def build(self, source, targets, seed):
        return Silent(super().build(source, targets, seed))


def test_filters_that_never_fire_fail_their_instability_alone(tmp_path, one_thread):
    plugin = types.ModuleType("silent_plugin")
    plugin.register_explainers = hookimpl(lambda register: register(SilentExplainer))  # type: ignore[attr-defined]
    plugins = load_plugins(extra_plugins=[plugin])
    spec = explainer_suite()
    spec["evaluation"]["explainers"] = ["silent"]
    suite = parse_suite(spec, plugins)
    suite.output = tmp_path / "out"
    report = run_suite(suite, plugins)
    failed = sorted(unit.rsplit(".", 1)[1] for unit, _ in report.failures)
    silent = ["filter_overlap", "frozen_location_instability", "location_instability", "moving_fraction"]
    assert failed == sorted(silent * 2)  # what reads the part maps fails; the rest (the performer's) stands
    assert report.computed == 2 * (len(METRICS) - len(silent) - 4)  # no tracks: 4 ablation metrics not planned
    why = dict(report.failures)
    assert all("no filter fires on two images" in why[unit] for unit in why if "instability" in unit)


# ---------------------------------------------------------------------------------------------
# Landmarks and location instability


def test_ink_landmarks_of_a_plus_sign():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 1:8] = 1.0  # horizontal bar, columns 1-7
    image[0, 0, 2:7, 4] = 1.0  # vertical bar, rows 2-6
    points = ink_landmarks(image)[0]
    assert points.tolist() == [[4.0, 2.0], [4.0, 6.0], [1.0, 4.0], [7.0, 4.0], [4.0, 4.0]]
    assert torch.isnan(ink_landmarks(torch.zeros(1, 1, 5, 5))).all()  # no ink, no landmarks


def test_landmarks_move_with_a_resize():
    spec = InputSpec(1, 20, 40)
    moved = fit_landmarks(torch.tensor([[[0.0, 0.0], [19.0, 9.0]]]), [(10, 20)], spec)
    assert moved[0].tolist() == [[0.5, 0.5], [38.5, 18.5]]  # pixel centres: (x + 0.5)·2 - 0.5


def test_landmark_file_rows_match_dataset_indices_and_file_names(tmp_path):
    csv = tmp_path / "points.csv"
    csv.write_text("image,name,x,y\n3,beak,1,2\ncat/b.png,eye,5,6\n")
    rows = read_landmark_file(csv)
    points, names = landmarks_for(rows, [3, 1], ["/data/cat/a.png", "/data/cat/b.png", "/x", "/y"])
    assert names == ("beak", "eye")
    assert points[0, 0].tolist() == [1.0, 2.0] and torch.isnan(points[0, 1]).all()
    assert points[1, 1].tolist() == [5.0, 6.0]
    (tmp_path / "bad.json").write_text(json.dumps([{"image": 1, "x": 2}]))
    with pytest.raises(ReprevalError, match="lacks image, name, x or y"):
        read_landmark_file(tmp_path / "bad.json")


def test_landmark_file_reaches_the_images_of_a_folder_dataset(tmp_path, plugins):
    from PIL import Image

    from repreval.config import Subset
    from repreval.data import load_images

    for name in ("a", "b"):
        (tmp_path / "data" / "cls").mkdir(parents=True, exist_ok=True)
        Image.new("L", (10, 10)).save(tmp_path / "data" / "cls" / f"{name}.png")
    (tmp_path / "points.csv").write_text("image,name,x,y\ncls/b.png,tip,4,6\n")
    source = plugins.dataset.create("image_folder", {"path": str(tmp_path / "data")})
    data = load_images(source, Subset(), InputSpec(1, 20, 20), landmarks=str(tmp_path / "points.csv"))
    assert isinstance(data, ImageSet) and data.landmark_names == ("tip",)
    found = [point for point in data.landmarks[:, 0].tolist() if not math.isnan(point[0])]
    assert found == [[8.5, 12.5]]


def test_location_instability_by_hand():
    """One filter, one landmark on a 10×10 image (diagonal sqrt(200)); the filter's peak is 0, 3 and 6 pixels
    right of the landmark in three images, and does not fire in a fourth (left out): the distances over the
    diagonal are 0, 3/d, 6/d, whose population std is sqrt(6)/d."""
    maps = torch.zeros(4, 1, 10, 10)
    for image, column in enumerate((2, 5, 8)):
        maps[image, 0, 4, column] = 1.0
    peaks, fires = peak_positions(maps, (10, 10))
    assert fires[:, 0].tolist() == [True, True, True, False]
    landmarks = torch.tensor([[[2.0, 4.0]]] * 4)
    value = location_instability(peaks, fires, landmarks, (10, 10))
    assert value.tolist() == pytest.approx([math.sqrt(6) / math.sqrt(200)])
    assert math.isnan(location_instability(peaks[:1], fires[:1], landmarks[:1], (10, 10))[0])  # one image: none


def test_check_plugin_passes_the_builtin_and_the_third_party_explainers():
    import repreval_builtins.explainers
    from repreval.testing import check_plugin

    (checked,) = check_plugin(repreval_builtins.explainers)
    assert any("fit()" in line for line in checked.passed)
    plugin = types.ModuleType("bottleneck_checked")
    plugin.register_explainers = hookimpl(lambda register: register(BottleneckExplainer))  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="smoke test raised KeyError: 'block3'"):  # hard-wired to block3
        check_plugin(plugin)


class Identity(nn.Module):
    """Reconstructs F as F itself: the upper layers then see exactly what they see without an explainer."""

    def forward(self, features):
        return Explanation({"layer2": features.clone()}, torch.full((len(features),), 0.5), features)


class IdentityExplainer(BottleneckExplainer):
    """F^ = F."""

    name = "identity"

    def build(self, source, targets, seed):
        return Identity()

    def fit(self, module, features, targets, seed, context):
        return {"epochs": 0, "seconds": 0.0}


def test_feeding_back_f_itself_through_a_residual_network_changes_nothing(tmp_path, one_thread):
    """Oracle: the performer's own forward pass. On a ResNet (residual branches around layer2's blocks), the
    substituted forward must give every image the logits, hence the correctness, of the plain forward."""
    plugin = types.ModuleType("identity_plugin")
    plugin.register_explainers = hookimpl(lambda register: register(IdentityExplainer))  # type: ignore[attr-defined]
    plugins = load_plugins(extra_plugins=[plugin])
    spec = {
        "name": "identity",
        "datasets": {"train": {"kind": "digits", "limit": 16}, "held": {"kind": "digits", "skip": 16, "limit": 40}},
        "models": {"resnet": {"model": "cifar:resnet20", "layers": ["layer2"]}},
        "variants": ["random"],
        "evaluation": {"dataset": "held", "explainer_data": "train", "explainers": ["identity"]},
    }
    suite = parse_suite(spec, plugins)
    suite.output = tmp_path / "out"
    assert not run_suite(suite, plugins).failures
    records = _values(suite.output)
    assert records[("random", "reconstruction_error")].values == [0.0] * 40
    assert records[("random", "accuracy_drop")].values == [0.0] * 40
    accuracy = records[("random", "accuracy")]
    assert accuracy.value == pytest.approx(accuracy.extras["performer_accuracy"])


def test_the_upper_layers_receive_the_reconstruction(plugins):
    """Oracle: the ResNet's upper stages called by hand on F^ (here F^ = F/2 + 1, which no hook-free path
    produces), against the performer's logits with its layer2 output replaced through the hooks."""
    from repreval.explain import logits_with

    network = plugins.model_source.create("cifar").build("resnet20", {}, 0)
    module = network.module.eval()
    inputs = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    class Shifted(nn.Module):
        def forward(self, features):
            return Explanation({"layer2": features / 2 + 1}, torch.full((len(features),), 0.5), features)

    with torch.no_grad():
        stage2 = module.layer2(module.layer1(torch.relu(module.bn1(module.conv1(inputs)))))
        expected = module.linear(module.avgpool(module.layer3(stage2 / 2 + 1)).flatten(1))
    got = logits_with(network, inputs, "layer2", "layer2", Shifted(), "cpu")
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, module(inputs), atol=1e-3)  # the replacement did change the logits
