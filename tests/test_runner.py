"""The runner's exact shortcuts give the same records as the general path."""

from __future__ import annotations

import pytest
from conftest import SHARED, needs_shared

from repreval.runner import run_suite
from repreval.store import ResultStore
from repreval.suite import parse_suite


def _suite(tmp_path, name: str, scores: list) -> dict:
    return {
        "name": name,
        "output": str(tmp_path / name),
        "datasets": {"cifar": {"kind": "image_folder", "options": {"path": str(SHARED / "cifar10-test")}, "limit": 4}},
        "models": {
            "r20": {
                "model": "cifar:resnet20",
                "weights": str(SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"),
                "layers": ["layer1", "layer2"],
            }
        },
        "variants": ["trained"],
        "evaluation": {
            "dataset": "cifar",
            "saliency": ["gradients", "activations_x_gradients"],
            "channel_aggregators": ["mean"],
            "embedding_aggregators": ["mean"],
            "scores": scores,
        },
    }


@needs_shared
def test_one_backward_noise_scores_equal_the_per_component_path(tmp_path, plugins):
    """noise_score alone with mean/mean takes the one-backward path; with variance_score beside it, the
    per-component maps are computed: both give the same noise scores."""
    values = {}
    for name, scores in (("fast", ["noise_score"]), ("general", ["noise_score", "variance_score"])):
        suite = parse_suite(_suite(tmp_path, name, scores), plugins)
        report = run_suite(suite, plugins)
        assert not report.failures
        values[name] = {
            (r.layer, r.saliency): (r.value, r.reference)
            for r in ResultStore(suite.output).records()
            if r.score == "noise_score"
        }
    assert values["fast"].keys() == values["general"].keys() and len(values["fast"]) == 4
    for key, (value, reference) in values["fast"].items():
        assert value == pytest.approx(values["general"][key][0], abs=1e-5)
        assert reference == pytest.approx(values["general"][key][1], abs=1e-5)
        assert value > 0


@needs_shared
def test_one_sweep_serves_every_group_and_progress_moves_within_it(tmp_path, plugins, monkeypatch):
    """Two layers × two methods × (trained, random) on one dataset: one sweep call per variant and batch
    (all groups and input sets together); progress advances in fractions while the maps are computed and
    adds up to the number of units."""
    import repreval.runner.attribution as attribution
    import repreval.runner.pictures as pictures

    calls = []
    original = attribution.compute_maps

    def counting(network, requests, inputs, **options):
        calls.append((len(requests), inputs.shape[0]))
        return original(network, requests, inputs, **options)

    monkeypatch.setattr(attribution, "compute_maps", counting)
    monkeypatch.setattr(pictures, "compute_maps", counting)
    data = _suite(tmp_path, "sweep", ["noise_score", "variance_score"])
    data["variants"] = ["trained", "random"]
    data["evaluation"]["chunk_size"] = 16
    suite = parse_suite(data, plugins)
    advances = []
    report = run_suite(suite, plugins, on_progress=lambda n, _what: advances.append(n))
    assert not report.failures and report.computed == report.total == 2 * 2 * 2 * 2  # × (noise, variance)
    # per variant: 4 requests, real + 2 noise sets of 4 images in one call; the pictures reuse its first inputs' maps
    assert calls == [(4, 3 * 4)] * 2
    assert any(0 < n < 1 for n in advances)
    assert sum(advances) == pytest.approx(report.total)


def test_nan_weights_fail_their_units_with_the_reason_never_status_ok(tmp_path, capsys, plugins):
    import math

    import torch

    from repreval.cli import main
    from repreval.config import ModelConfig
    from repreval.models import Model

    network = Model(ModelConfig(id="r", spec="cifar:resnet20"), plugins.model_source.create("cifar")).untrained(0)
    state = network.module.state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    out = tmp_path / "out"
    code = main(
        [
            "eval", "cifar:resnet20", "--weights", str(tmp_path / "nan.pt"), "--data", "digits", "--limit", "2",
            "--layers", "layer1", "--saliency", "gradients", "--scores", "noise_score", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 1
    records = {r.variant: r for r in ResultStore(out).records()}
    assert records["trained"].status == "failed"
    assert "not a finite number: NaN or inf in the weights (conv1.weight)" in records["trained"].error
    assert records["random"].status == "ok" and math.isfinite(records["random"].value)
    assert "not a finite number" in capsys.readouterr().err


def test_fields_added_later_leave_cache_keys_and_unit_ids_unchanged_while_unset():
    """A field added to the suite's dataclasses must not invalidate every trained model and stored result."""
    from repreval.config import DatasetConfig, Subset
    from repreval.plan import set_fields

    config = DatasetConfig(kind="digits", options={}, subset=Subset(limit=5))
    legacy = {"kind": "digits", "options": {}, "subset": Subset(limit=5), "drift": None}  # before landmarks
    assert repr(set_fields(config)) == repr(legacy)
    assert set_fields(DatasetConfig(kind="digits", landmarks="ink"))["landmarks"] == "ink"
