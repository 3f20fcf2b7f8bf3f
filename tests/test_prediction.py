"""The predicted cost of a run (repreval/runner/prediction.py): its extrapolation equals a hand computation from the
calibration's timings, it names what it leaves out, and validate / eval print it (eval with a hint to sample
components when the exact run looks long and D is large)."""

from __future__ import annotations

import pytest

from repreval.cli import main
from repreval.cli.run import estimated_components, prediction_text
from repreval.plan import make_plan
from repreval.runner import prediction as module
from repreval.runner.prediction import FIXED_SECONDS, Prediction, predict
from repreval.suite import parse_suite

SUITE = {
    "name": "predicted",
    "seed": 0,
    "datasets": {"digits": {"kind": "digits", "limit": 10}},
    "models": {"ae": {"model": "ae:classifier", "layers": ["encoder.block1", "encoder.block2"]}},
    "variants": [{"random": {"seeds": 3}}],
    "evaluation": {
        "dataset": "digits",
        "batch_size": 4,
        "saliency": ["gradients", "grad_cam"],
        "channel_aggregators": ["abs"],
        "embedding_aggregators": ["mean"],
        "scores": ["noise_score"],
    },
}


def test_the_prediction_extrapolates_the_calibration_by_hand(plugins, monkeypatch, tmp_path):
    """A fake clock for the engine calls: 1 s + 0.25 s per component asked for. One family (both layers and
    methods share the sweep) of 3 variants, 10 inputs in batches of 4 (3 batches), calibrated on 4 inputs: the maps
    cost 3 variants × 3 batches × (1 + 0.25 D) × 4/4."""
    plan = make_plan(parse_suite({**SUITE, "output": str(tmp_path)}, plugins), plugins)
    calls: list[int] = []

    def fake_timed(plan, network, family, batches, sets, rows):
        components = len(family[0][1].sampled)
        calls.append(components)
        return 1.0 + 0.25 * components, 0.0

    monkeypatch.setattr(module, "_timed", fake_timed)
    predicted = predict(plan, plugins)
    dim = 10  # ae:classifier's embedding (its bottleneck layer)
    assert calls == [10, 4, 10]  # a warm-up call, then the two timed ones (12 components: more than D)
    assert predicted.seconds == pytest.approx(3 * 3 * (1 + 0.25 * dim))
    assert predicted.total_seconds == pytest.approx(predicted.seconds + FIXED_SECONDS)
    assert predicted.largest_dim == dim and predicted.not_predicted == []


def test_the_prediction_names_training_and_scales_to_sampled_components(plugins, monkeypatch, tmp_path):
    trained = {**SUITE, "output": str(tmp_path), "variants": ["trained"]}
    trained["models"] = {"ae": {**SUITE["models"]["ae"], "train": {"dataset": "digits", "epochs": 1}}}
    trained["evaluation"] = {**SUITE["evaluation"], "sample_components": 6}
    plan = make_plan(parse_suite(trained, plugins), plugins)
    monkeypatch.setattr(module, "_timed", lambda *args: (1.0 + 0.25 * len(args[2][0][1].sampled), 0.0))
    predicted = predict(plan, plugins)
    assert predicted.not_predicted == ["training ae"]
    assert predicted.seconds == pytest.approx(2 * 1 * 3 * (1 + 0.25 * 6))  # a family per layer: each samples its own


def test_validate_and_eval_print_the_prediction(capsys, tmp_path):
    suite = tmp_path / "suite.yaml"
    import yaml

    suite.write_text(yaml.safe_dump(SUITE))
    assert main(["validate", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "predicted: about " in out and "on this machine (maps " in out and "peak memory ~" in out
    code = main(["eval", "ae:classifier", "--data", "digits", "--limit", "2", "--layers", "encoder.block2",
                 "--saliency", "gradients", "--scores", "noise_score", "--out", str(tmp_path / "eval")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[1].startswith("predicted: about "), lines[:3]


def test_eval_estimates_by_default_only_when_the_exact_run_looks_long_and_d_is_large(monkeypatch):
    import repreval.rank_agreement

    monkeypatch.setattr(repreval.rank_agreement, "recommended_components", lambda dim: 64)
    long = Prediction(seconds=3600.0, largest_dim=768)
    assert estimated_components(long, None) == 64
    assert estimated_components(long, 32) is None and estimated_components(long, "all") is None  # the user chose
    assert estimated_components(Prediction(seconds=60.0, largest_dim=768), None) is None  # short
    assert estimated_components(Prediction(seconds=3600.0, largest_dim=64), None) is None  # small D
    text = prediction_text(Prediction(seconds=120.0, peak_bytes=2**30, not_predicted=["training ae"]))
    assert "maps 2 min 00 s" in text and "~1024 MB" in text and "not included: training ae" in text


@pytest.mark.parametrize("flag, sampled", [([], 16), (["--sample-components", "all"], None)])
def test_a_long_eval_of_a_large_embedding_estimates_unless_told_all(monkeypatch, capsys, tmp_path, flag, sampled):
    """The prediction stands in (an hour); timm resnet18 (D = 512) at 32²: eval samples the rule's k, says so,
    and its records carry the estimate's fields; ``--sample-components all`` keeps every component."""
    import json

    import repreval.rank_agreement
    import repreval.runner.prediction

    monkeypatch.setattr(repreval.rank_agreement, "recommended_components", lambda dim: 16)
    monkeypatch.setattr(
        repreval.runner.prediction, "predict", lambda plan, plugins: Prediction(3600.0, largest_dim=512)
    )
    out = tmp_path / "out"
    code = main(["eval", "timm:resnet18", "--option", "input_size=[3,32,32]", "--data", "digits", "--limit", "2",
                 "--layers", "layer4", "--saliency", "gradients", "--scores", "noise_score", "--out", str(out), *flag])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = [json.loads(path.read_text()) for path in (out / "records").glob("*.json")]
    assert records and all(r["extras"].get("sampled_components") == sampled for r in records)
    assert ("estimating every score from 16 of the 512 components" in captured.err) == (sampled is not None)


def test_peak_memory_reads_the_cuda_allocator_on_a_cuda_device(monkeypatch):
    """The CUDA branch of the memory measurement (bench and prediction share it), run on a CPU with the allocator's
    functions standing in: the peak above the start, after synchronising."""
    import torch

    from repreval.bench import PeakMemory

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 100 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 164 * 2**20)
    with PeakMemory(torch.device("cuda", 0)) as memory:
        calls.append("work")
    assert memory.mb == 64 and calls == ["sync", "reset", "work", "sync"]
