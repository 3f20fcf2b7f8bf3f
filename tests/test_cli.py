"""The command line (repreval.cli): every subcommand in-process, and real subprocesses for exit codes and
one-line errors; runs of a tiny suite (resume, determinism, leaderboards) and the failure path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from conftest import SHARED, needs_shared

from repreval.api import AttributionScore, ScoreValues, hookimpl
from repreval.cli import main
from repreval.plugins import load_plugins
from repreval.runner import run_suite
from repreval.store import ResultStore, ScoreRecord
from repreval.suite import parse_suite

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "benchmarks_yaml" / "quickstart.yaml"

SMALL_SUITE = """\
name: small
seed: 0
datasets:
  train: {kind: digits, limit: 300}
  held: {kind: digits, skip: 300, limit: 8}
models:
  ae:
    model: ae:classifier
    options: {bottleneck: 4}
    train: {dataset: train, epochs: 2}
    layers: [encoder.block2]
variants: [trained, random]
evaluation:
  dataset: held
  batch_size: 4
  saliency: [gradients, grad_cam]
  channel_aggregators: [abs]
  embedding_aggregators: [mean]
  scores: [noise_score, variance_score]
"""
SMALL_UNITS = 2 * 1 * 2 * 2  # variants × layers × saliency × scores

BUILTIN_SALIENCY = ["gradients", "activations_x_gradients", "grad_cam", "integrated_gradients", "smoothgrad"]
BUILTIN_SALIENCY += ["expected_gradients"]
BUILTIN_PLUGINS = {
    "saliency": {"saliency": BUILTIN_SALIENCY},
    "aggregators": {"aggregator": ["mean", "abs", "var", "skew", "max", "topk_mean"]},
    "scores": {"score": ["noise_score", "variance_score", "linear_probe", "classifier_accuracy"]},
    "variants": {"variant": ["trained", "random", "randomize_layer", "cascade"]},
    "datasets": {"dataset": ["digits", "mnist", "image_folder", "image_files", "noise", "text_lines"]},
    "timm": {"model_source": ["timm"]},
    "cifar_resnets": {"model_source": ["cifar"]},
    "autoencoders": {"model_source": ["ae"]},
    "torch_factory": {"model_source": ["torch"]},
    "hf_text": {"model_source": ["hf"]},
    "small_cnns": {"model_source": ["cnn"]},
    "explainers": {"explainer": ["parts"]},
    "executors": {"executor": ["local", "ray"]},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(capsys, *argv, extra_plugins=()) -> tuple[int, str, str]:
    code = main([str(a) for a in argv], extra_plugins=extra_plugins)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def process(*argv, cwd=None) -> subprocess.CompletedProcess:
    """``python -m repreval ARGV`` in a real process (environment kept: the test cache, offline hub)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "repreval", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=300,
    )


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def small_suite(tmp_path: Path, text: str = SMALL_SUITE) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(text)
    return path


def records(directory: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((directory / "records").glob("*.json"))}


def by_coordinates(found: dict[str, dict]) -> dict[tuple, dict]:
    return {
        (
            r["model"],
            r["variant"],
            r["dataset"],
            r["layer"],
            r["saliency"],
            r["channel_aggregator"],
            r["embedding_aggregator"],
            r["score"],
        ): r
        for r in found.values()
    }


def summary(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if " computed, " in line]
    return line


# ---------------------------------------------------------------------------------------------
# Help, plugins, list, layers


@pytest.mark.parametrize(
    "command", [[], ["run"], ["eval"], ["validate"], ["leaderboard"], ["plugins"], ["list"], ["layers"]]
)
def test_help_of_every_subcommand(capsys, command):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: repreval" + "".join(f" {c}" for c in command))


def test_plugins_json_lists_every_builtin_plugin(capsys):
    code, out, _ = cli(capsys, "plugins", "--format", "json")
    assert code == 0
    listed = json.loads(out)
    assert listed[-1] == {"blocked": []}
    plugins = {item["name"]: item for item in listed[:-1]}
    assert set(plugins) == set(BUILTIN_PLUGINS)
    for name, registered in BUILTIN_PLUGINS.items():
        assert plugins[name]["distribution"] == "repreval"
        assert plugins[name]["version"] == version("repreval")
        assert plugins[name]["registered"] == registered

    code, out, _ = cli(capsys, "--block", "timm", "--block", "scores", "plugins", "--format", "json")
    listed = json.loads(out)
    assert code == 0 and listed[-1] == {"blocked": ["timm", "scores"]}
    assert {item["name"] for item in listed[:-1]} == set(BUILTIN_PLUGINS) - {"timm", "scores"}


def test_plugins_table(capsys):
    code, out, _ = cli(capsys, "--block", "timm", "plugins")
    assert code == 0
    assert re.search(
        r"│ autoencoders\s+│ repreval\s+│ " + re.escape(version("repreval")) + r"\s+│ model_source: ae", out
    )
    assert re.search(r"│ timm\s+│.*blocked", out)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("scores", ["noise_score", "variance_score", "linear_probe", "classifier_accuracy"]),
        ("aggregators", ["mean", "abs", "var", "skew", "max", "topk_mean"]),
        ("models", ["ae", "cifar", "cnn", "hf", "timm", "torch"]),
        ("explainers", ["parts"]),
        ("executors", ["local", "ray"]),
        ("datasets", ["digits", "mnist", "image_folder", "image_files", "noise", "text_lines"]),
        ("saliency", BUILTIN_SALIENCY),
        ("variants", ["trained", "random", "randomize_layer", "cascade"]),
    ],
)
def test_list(capsys, kind, expected):
    code, out, _ = cli(capsys, "list", kind)
    assert code == 0
    names = re.findall(r"^│ (\S+)\s+│", out, flags=re.MULTILINE)
    assert sorted(names) == sorted(expected)


def test_list_shows_aliases_plugin_and_description(capsys):
    _, out, _ = cli(capsys, "list", "saliency")
    assert re.search(r"│ gradients\s+│ vanilla\s+│ saliency\s+│ Vanilla gradients", out)
    _, out, _ = cli(capsys, "list", "scores")
    assert re.search(r"│ noise_score\s+│ ns\s+│ scores\s+│ NS = mean", out)


def test_list_unknown_kind_exits_2(capsys):
    code, out, err = cli(capsys, "list", "nonsense")
    assert code == 2 and out == ""
    assert_one_error_line(err, "unknown kind 'nonsense'")
    code, _, err = cli(capsys, "list", "scorez")
    assert code == 2 and "did you mean 'score'" in err


def test_list_unknown_kind_in_a_real_process():
    result = process("list", "nonsense")
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr, "unknown kind 'nonsense'")


def test_layers_of_cifar_resnet20(capsys):
    code, out, _ = cli(capsys, "layers", "cifar:resnet20")
    assert code == 0
    assert "cifar:resnet20: input 3×32×32, embedding D = 64" in out
    for name, shape in (("layer1", "16×32×32"), ("layer2", "32×16×16"), ("layer3", "64×8×8")):
        assert re.search(rf"│ {name}\s+│ Sequential\s+│ {shape}\s+│ C×h×w\s+│ {shape}\s+│ verified[^│]*│ ✓", out), name
    # by default down to the blocks; --all lists their insides too
    assert re.search(r"│ layer2\.0\s+│ BasicBlock\s+│ 32×16×16\s+│", out) and "layer2.0.shortcut" not in out
    code, out, _ = cli(capsys, "layers", "cifar:resnet20", "--all")
    assert re.search(
        r"│ layer2\.0\.shortcut\s+│ ChannelPadShortcut\s+│ 32×16×16\s+│ C×h×w\s+│ 32×16×16\s+│ verified\s+│\s+│", out
    )


def test_layers_lists_only_modules_on_the_embeddings_path(capsys):
    """cifar:resnet20's classifier (``fc``) computes the logits, not the embedding: not listed, even with --all."""
    code, out, _ = cli(capsys, "layers", "cifar:resnet20", "--all")
    assert code == 0
    assert "│ avgpool" in out or "│ layer3 " in out
    assert not re.search(r"│ fc\s", out)


def test_layers_of_timm_resnet18_at_a_small_input(capsys):
    code, out, _ = cli(capsys, "layers", "timm:resnet18", "--option", "input_size=[3,64,64]")
    assert code == 0
    assert "timm:resnet18: input 3×64×64, embedding D = 512" in out
    for name, shape in (("layer1", "64×16×16"), ("layer2", "128×8×8"), ("layer3", "256×4×4")):
        assert re.search(rf"│ {name}\s+│ Sequential\s+│ {shape}\s+│ C×h×w\s+│ {shape}\s+│ verified[^│]*│ ✓", out), name
    # at 64×64 a random ResNet-18's 2×2 layer4 does not follow where the input changes: refused, not a default
    assert re.search(r"│ layer4\s+│ Sequential\s+│ 512×2×2\s+│ C×h×w\s+│ refused", out)


def test_layers_of_a_vit_and_a_swin_show_how_they_are_read(capsys):
    code, out, _ = cli(capsys, "layers", "timm:vit_tiny_patch16_224", "--option", "input_size=[3,64,64]")
    assert code == 0
    assert re.search(r"│ blocks\.10\s+│ Block\s+│ 17×192\s+│ tokens 1\+4×4\s+│ 192×4×4\s+│ verified\s+│ ✓", out)
    # the last block's patch tokens never reach the class token: not a default
    assert re.search(
        r"│ blocks\.11\s+│ Block\s+│ 17×192\s+│ tokens 1\+4×4\s+│ 192×4×4\s+│ verified, never reaches\s+│\s+│", out
    )
    code, out, _ = cli(capsys, "layers", "timm:swin_tiny_patch4_window7_224", "--option", "input_size=[3,112,112]")
    assert code == 0
    assert re.search(
        r"│ layers\.1\s+│ SwinTransformerStage\s+│ 14×14×192\s+│ h×w×C\s+│ 192×14×14\s+│ verified\s+│ ✓", out
    )


def test_layers_of_unknown_models_exit_2_with_a_suggestion(capsys):
    code, out, err = cli(capsys, "layers", "timm:resnet_18")
    assert code == 2 and out == ""
    assert_one_error_line(err, "timm has no model 'resnet_18'", "did you mean 'resnet18'")
    code, _, err = cli(capsys, "layers", "cifr:resnet20")
    assert code == 2
    assert_one_error_line(err, "unknown model source 'cifr'", "did you mean 'cifar'")
    code, _, err = cli(capsys, "layers", "timm:resnet18", "--option", "input_size")
    assert code == 2
    assert_one_error_line(err, "option 'input_size' is not KEY=VALUE")


# ---------------------------------------------------------------------------------------------
# validate and plugin blocking


def test_validate_quickstart(capsys):
    code, out, err = cli(capsys, "validate", QUICKSTART)
    assert code == 0, err
    # 21 variants (trained, random[seeds=20]) × 2 layers × (2 methods × abs + grad_cam)
    # × (noise_score × 2 + variance_score × 2 configs)
    assert "ok: suite 'quickstart': 1 models, 504 units in 21 groups" in out


def test_validate_broken_suite_exits_2(capsys, tmp_path):
    path = small_suite(tmp_path, SMALL_SUITE.replace("saliency: [gradients,", "saliency: [gradient,"))
    code, out, err = cli(capsys, "validate", path)
    assert code == 2 and out == ""
    assert_one_error_line(
        err, f"{path}: evaluation.saliency[0]: unknown saliency 'gradient'", "did you mean 'gradients'"
    )


def test_validate_broken_suite_in_a_real_process(tmp_path):
    path = small_suite(tmp_path, SMALL_SUITE.replace("layers: [encoder.block2]", "layers: [encoder.blok2]"))
    result = process("--block", "timm", "validate", path)  # timm is slow to import and not needed here
    assert result.returncode == 2
    assert_one_error_line(result.stderr, f"{path}: models.ae.layers[0]: no layer 'encoder.blok2'", "'encoder.block2'")


def test_block_option_and_environment_remove_a_plugin(capsys, monkeypatch):
    code, _, err = cli(capsys, "--block", "scores", "validate", QUICKSTART)
    assert code == 2
    assert_one_error_line(err, "evaluation.scores[0]: unknown score 'noise_score'")

    monkeypatch.setenv("REPREVAL_BLOCK_PLUGINS", "scores")
    code, _, err = cli(capsys, "validate", QUICKSTART)
    assert code == 2
    assert_one_error_line(err, "unknown score 'noise_score'")
    code, out, _ = cli(capsys, "plugins", "--format", "json")
    assert json.loads(out)[-1] == {"blocked": ["scores"]}

    monkeypatch.delenv("REPREVAL_BLOCK_PLUGINS")
    assert cli(capsys, "validate", QUICKSTART)[0] == 0


# ---------------------------------------------------------------------------------------------
# run: records, leaderboards, resuming


def test_run_writes_records_and_leaderboards_and_resumes(capsys, tmp_path):
    suite, out = small_suite(tmp_path), tmp_path / "out"
    code, stdout, err = cli(capsys, "run", suite, "--out", out)
    assert code == 0, err
    assert f"small: {SMALL_UNITS} units, results in {out}" in stdout
    assert summary(stdout).startswith(f"{SMALL_UNITS} computed, 0 already done, 0 failed")
    for name in ("suite.yaml", "report.md", "leaderboard.json"):
        assert (out / name).is_file(), name
    first = records(out)
    assert len(first) == SMALL_UNITS
    for unit_id, record in first.items():
        assert record["unit_id"] == unit_id and record["status"] == "ok" and record["error"] is None
        assert record["n_inputs"] == 8 and len(record["values"]) == 8
        assert record["value"] == pytest.approx(sum(record["values"]) / 8, abs=1e-6)
        assert record["suite"] == "small" and record["dataset"] == "held" and record["model_spec"] == "ae:classifier"
    boards = json.loads((out / "leaderboard.json").read_text())
    assert len(boards) == 4  # (noise_score, variance_score) × (gradients, grad_cam)
    report = (out / "report.md").read_text()
    assert report.startswith("# small\n\n## Attribution maps") and "\n## Leaderboards\n" in report

    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "records").glob("*.json")}
    code, stdout, _ = cli(capsys, "run", suite, "--out", out)
    assert code == 0
    assert summary(stdout).startswith(f"0 computed, {SMALL_UNITS} already done, 0 failed")
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "records").glob("*.json")} == stamps

    # Delete one record: exactly that unit is computed again, with the same value; nothing else is touched.
    victim = next(
        r
        for r in first.values()
        if r["score"] == "variance_score" and r["saliency"] == "gradients" and r["variant"] == "trained"
    )
    (out / "records" / f"{victim['unit_id']}.json").unlink()
    code, stdout, _ = cli(capsys, "run", suite, "--out", out)
    assert code == 0
    assert summary(stdout).startswith(f"1 computed, {SMALL_UNITS - 1} already done, 0 failed")
    again = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "records").glob("*.json")}
    changed = {name for name in again if again[name] != stamps.get(name)}
    assert changed == {f"{victim['unit_id']}.json"}
    recomputed = records(out)[victim["unit_id"]]
    assert recomputed["status"] == "ok"
    assert recomputed["value"] == victim["value"] and recomputed["values"] == victim["values"]


def test_leaderboard_formats(capsys, tmp_path):
    suite, out = small_suite(tmp_path), tmp_path / "out"
    assert cli(capsys, "run", suite, "--out", out)[0] == 0

    code, stdout, _ = cli(capsys, "leaderboard", out, "--format", "json")
    assert code == 0
    boards = json.loads(stdout)
    assert boards == json.loads((out / "leaderboard.json").read_text())
    assert {(b["score"], b["saliency"], b["channel_aggregator"], b["embedding_aggregator"]) for b in boards} == {
        ("noise_score", "gradients", "abs", "mean"),
        ("noise_score", "grad_cam", None, "mean"),
        ("variance_score", "gradients", "abs", None),
        ("variance_score", "grad_cam", None, None),
    }
    values = by_coordinates(records(out))
    for board in boards:
        assert board["columns"] == ["encoder.block2"]
        assert board["higher_is_better"] is True
        assert board["bound"] == (0.25 if board["score"] == "variance_score" else 1.0)
        rows = board["rows"]
        assert [row["rank"] for row in rows] == [1, 2]
        assert {row["variant"] for row in rows} == {"trained", "random"}
        assert rows[0]["average"] >= rows[1]["average"]  # higher is better: the best first
        assert all(row["interval"][0] <= row["average"] <= row["interval"][1] for row in rows)
        assert {tuple(row["tied_with"]) for row in rows} in ({()}, {("ae · trained",), ("ae · random",)})
        for row in rows:
            assert row["complete"] is True
            record = values[
                (
                    row["model"],
                    row["variant"],
                    "held",
                    "encoder.block2",
                    board["saliency"],
                    board["channel_aggregator"],
                    board["embedding_aggregator"],
                    board["score"],
                )
            ]
            assert row["average"] == pytest.approx(record["value"])
            assert row["cells"][0]["reference"] == pytest.approx(record["reference"])

    code, stdout, _ = cli(capsys, "leaderboard", out, "--format", "markdown")
    assert code == 0
    assert stdout.startswith("# small\n")
    for board in boards:
        assert f"## {board['title']}" in stdout
    assert stdout.count("| 1 | ae · ") == 4 and stdout.count("| 2 | ae · ") == 4

    code, stdout, _ = cli(capsys, "leaderboard", out, "--boards")
    assert code == 0
    text = " ".join(stdout.split())  # rich wraps long titles to the table's width
    for board in boards:
        assert f"{board['title']} (↑ higher is better)" in text
    assert re.findall(r"│ 1 │ ae\s+│ (trained|random)\s+│", stdout) and len(re.findall(r"│ [12] │ ae ", stdout)) == 8

    # the summary: per metric, each variant raw and minus chance with their intervals, then one sentence
    code, stdout, _ = cli(capsys, "leaderboard", out)
    assert code == 0 and stdout.startswith("summary: ae")
    lines = stdout.splitlines()
    for board in boards:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{board['title']}  (↑ higher is better)"))
        for row in board["rows"]:
            line = next(line for line in lines[start + 2 : start + 4] if line.startswith(row["variant"] + " "))
            shown = [float(number) for number in re.findall(r"[+-]?\d\.\d+", line)]
            above = row["average"] - row["reference_average"]
            assert shown == pytest.approx(
                [row["average"], *row["interval"], above, *row["above_chance_interval"]], abs=1e-3
            )
        assert re.search(r"higher than|tied at 95 %|readings disagree", lines[start + 4])


def test_leaderboard_ranks_lower_is_better_and_keeps_failed_rows_last(capsys, tmp_path):
    store = ResultStore(tmp_path / "made")

    def record(model, layer_index, value, status="ok"):
        store.write(
            ScoreRecord(
                unit_id=f"{model}-{layer_index}",
                suite="made",
                model=model,
                model_spec="x:y",
                variant="trained",
                layer=f"l{layer_index}",
                layer_index=layer_index,
                saliency="gradients",
                channel_aggregator="abs",
                embedding_aggregator="mean",
                score="lower",
                higher_is_better=False,
                status=status,
                value=value if status == "ok" else None,
                spread=0.0 if status == "ok" else None,
                values=[value] if status == "ok" else [],
                error=None if status == "ok" else "RuntimeError: boom",
            )
        )

    for layer, value in enumerate((0.5, 0.7)):
        record("mid", layer, value)
    for layer, value in enumerate((0.1, 0.3)):
        record("best", layer, value)
    record("worst", 0, 0.9)  # only the first layer: incomplete
    for layer in range(2):
        record("broken", layer, None, status="failed")

    code, stdout, _ = cli(capsys, "leaderboard", tmp_path / "made", "--format", "json")
    assert code == 0
    (board,) = json.loads(stdout)
    assert board["higher_is_better"] is False and board["columns"] == ["l0", "l1"]
    ranked = [(row["model"], row["rank"], row["average"], row["complete"]) for row in board["rows"]]
    assert ranked == [
        ("best", 1, pytest.approx(0.2), True),
        ("mid", 2, pytest.approx(0.6), True),
        ("worst", 3, pytest.approx(0.9), False),
        ("broken", None, None, False),
    ]
    assert [cell["status"] for cell in board["rows"][2]["cells"]] == ["ok", "missing"]
    assert [cell["error"] for cell in board["rows"][3]["cells"]] == ["RuntimeError: boom"] * 2

    code, stdout, _ = cli(capsys, "leaderboard", tmp_path / "made", "--format", "markdown")
    assert "*lower is better*" in stdout
    assert "| 3 | worst · trained | 0.900* |" in stdout
    assert "| — | broken · trained | — |  | — | failed | failed |" in stdout  # no interval, no ties


def test_leaderboard_of_an_empty_directory_exits_2(capsys, tmp_path):
    code, out, err = cli(capsys, "leaderboard", tmp_path)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"no results in '{tmp_path}'")


def test_weights_override_for_an_unknown_model_exits_2(capsys, tmp_path):
    suite = small_suite(tmp_path)
    code, out, err = cli(capsys, "run", suite, "--out", tmp_path / "out", "--weights", "aee=/some/file.th")
    assert code == 2 and out == ""
    assert_one_error_line(err, "weights 'aee=/some/file.th' names no model of the suite", "did you mean 'ae'")
    assert not (tmp_path / "out").exists()

    # A known model: the override replaces its training step, and the file is checked.
    code, _, err = cli(capsys, "run", suite, "--out", tmp_path / "out", "--weights", f"ae={tmp_path / 'none.pt'}")
    assert code == 2
    assert_one_error_line(err, f"{suite}: models.ae.weights: weights file", "none.pt")


def test_same_seed_same_values_across_processes_and_another_seed_differs(capsys, tmp_path, monkeypatch):
    suite = small_suite(tmp_path)
    monkeypatch.setenv("REPREVAL_CACHE", str(tmp_path / "cache-a"))  # each run trains its own model
    code, _, err = cli(capsys, "run", suite, "--out", tmp_path / "a")
    assert code == 0, err

    monkeypatch.setenv("REPREVAL_CACHE", str(tmp_path / "cache-b"))
    result = process("--block", "timm", "run", suite, "--out", tmp_path / "b")  # a real process, exit 0
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith(("error:", "failed:"))]
    assert summary(result.stdout).startswith(f"{SMALL_UNITS} computed, 0 already done, 0 failed")
    assert list((tmp_path / "cache-b" / "models").glob("*.pt"))  # it trained, it did not reuse run a's model

    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert set(a) == set(b)
    for unit_id in a:
        assert (a[unit_id]["value"], a[unit_id]["values"], a[unit_id]["reference"]) == (
            b[unit_id]["value"],
            b[unit_id]["values"],
            b[unit_id]["reference"],
        )

    code, _, _ = cli(capsys, "run", suite, "--out", tmp_path / "c", "--seed", "1")
    assert code == 0
    c = records(tmp_path / "c")
    assert not set(c) & set(a)  # the seed is part of every unit id
    assert {r["seed"] for r in c.values()} == {1}
    seed0, seed1 = by_coordinates(a), by_coordinates(c)
    assert seed0.keys() == seed1.keys()
    noise = [key for key in seed0 if key[-1] == "noise_score"]
    assert len(noise) == 4
    for key in noise:
        assert seed0[key]["values"] != seed1[key]["values"]
        assert seed0[key]["value"] != pytest.approx(seed1[key]["value"], rel=1e-6)


@needs_shared
def test_eval_cifar_resnet20_on_cifar_images(capsys, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = cli(
        capsys,
        "eval",
        "cifar:resnet20",
        "--weights",
        SHARED / "cifar10-resnets" / "resnet20-12fca82f.th",
        "--data",
        f"image_folder:{SHARED / 'cifar10-test'}",
        "--limit",
        "4",
        "--layers",
        "layer1,layer2",
        "--saliency",
        "gradients",
        "--scores",
        "noise_score",
        "--out",
        out,
    )
    assert code == 0, err
    found = records(out)
    # variants trained + random × 2 layers × gradients × noise_score × the mean embedding aggregator (var only
    # comes with the variance score)
    assert len(found) == 2 * 2
    assert {r["status"] for r in found.values()} == {"ok"}
    assert {r["variant"] for r in found.values()} == {"trained", "random"}
    assert {r["layer"] for r in found.values()} == {"layer1", "layer2"}
    assert {r["n_inputs"] for r in found.values()} == {4}
    assert {r["model_spec"] for r in found.values()} == {"cifar:resnet20"}
    assert all(0.0 <= r["value"] <= 1.0 for r in found.values())
    assert summary(stdout).startswith("4 computed, 0 already done, 0 failed")
    assert (out / "leaderboard.json").is_file()


# ---------------------------------------------------------------------------------------------
# Failure path: a score that raises; the others are saved, the failed units are retried


class FlakyScore(AttributionScore):
    """Raises on 14×14 maps (the probe layer encoder.block2) while ``fail`` is set."""

    name = "flaky"
    fail = True

    def compute(self, maps, embedding_aggregator):
        if FlakyScore.fail and maps.real.shape[-1] == 14:
            raise RuntimeError("flaky score exploded on a 14x14 map")
        return ScoreValues(values=maps.real.flatten(1).mean(dim=1))


class FlakyPlugin:
    @hookimpl
    def register_scores(register):
        register(FlakyScore)


FAILING_SUITE = (
    SMALL_SUITE.replace("layers: [encoder.block2]", "layers: [encoder.block1, encoder.block2]")
    .replace("saliency: [gradients, grad_cam]", "saliency: [gradients]")
    .replace("scores: [noise_score, variance_score]", "scores: [noise_score, flaky]")
    .replace("variants: [trained, random]", "variants: [random]")
)


def failing_suite_data(tmp_path) -> dict:
    import yaml

    data = yaml.safe_load(FAILING_SUITE)
    data["output"] = str(tmp_path / "out")
    return data


def test_failed_units_are_recorded_and_retried(tmp_path, monkeypatch):
    plugins = load_plugins(extra_plugins=[FlakyPlugin])
    assert plugins.info["FlakyPlugin"].registered == {"score": ["flaky"]}
    suite = parse_suite(failing_suite_data(tmp_path), plugins)
    report = run_suite(suite, plugins)
    assert report.total == 4  # 2 layers × (noise_score, flaky)
    failed = {what for what, _ in report.failures}
    assert "ae/random/held/encoder.block2/gradients/abs/mean/flaky" in failed
    assert all("/encoder.block2/" in what for what in failed)
    assert all(message == "RuntimeError: flaky score exploded on a 14x14 map" for _, message in report.failures)
    assert report.computed == 4 - len(failed)

    saved = by_coordinates(records(tmp_path / "out"))
    assert len(saved) == 4
    for key, record in saved.items():
        if record["layer"] == "encoder.block1":
            assert record["status"] == "ok" and record["value"] is not None and record["error"] is None
        what = "/".join(key)
        if what in failed:
            assert record["status"] == "failed" and record["value"] is None
            assert record["error"] == "RuntimeError: flaky score exploded on a 14x14 map"
        else:
            assert record["status"] == "ok"

    # A second run retries only the failed units (here: the score no longer fails).
    monkeypatch.setattr(FlakyScore, "fail", False)
    again = run_suite(parse_suite(failing_suite_data(tmp_path), plugins), plugins)
    assert (again.computed, again.skipped, again.failures) == (len(failed), 4 - len(failed), [])
    assert {r["status"] for r in records(tmp_path / "out").values()} == {"ok"}


def test_a_failing_score_does_not_fail_the_other_scores_of_its_group(tmp_path):
    plugins = load_plugins(extra_plugins=[FlakyPlugin])
    report = run_suite(parse_suite(failing_suite_data(tmp_path), plugins), plugins)
    assert [what for what, _ in report.failures] == ["ae/random/held/encoder.block2/gradients/abs/mean/flaky"]


def test_cli_exits_1_when_units_fail(capsys, tmp_path, monkeypatch):
    suite = small_suite(tmp_path, FAILING_SUITE)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "run", suite, "--out", out, extra_plugins=[FlakyPlugin])
    assert code == 1
    assert "Traceback" not in err
    failed_lines = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert failed_lines and len(failed_lines) == len(err.strip().splitlines())
    assert any(
        "encoder.block2/gradients/abs/mean/flaky: RuntimeError: flaky score exploded" in line for line in failed_lines
    )
    assert re.search(rf"\d computed, 0 already done, {len(failed_lines)} failed", summary(stdout))
    saved = records(out)
    assert sum(r["status"] == "failed" for r in saved.values()) == len(failed_lines)
    assert all(r["status"] == "ok" for r in saved.values() if r["layer"] == "encoder.block1")
    assert "failed" in (out / "report.md").read_text()  # the leaderboard is written all the same

    monkeypatch.setattr(FlakyScore, "fail", False)
    code, stdout, err = cli(capsys, "run", suite, "--out", out, extra_plugins=[FlakyPlugin])
    assert code == 0, err
    assert summary(stdout).startswith(f"{len(failed_lines)} computed, {4 - len(failed_lines)} already done, 0 failed")


def test_bench_reports_ratios_and_agreement(capsys):
    """`repreval bench --json` times the engine against both loops and checks they agree (a smoke test: no timings asserted)."""
    code, out, err = cli(
        capsys,
        "bench",
        "--model",
        "cifar:resnet20",
        "--layers",
        "layer2",
        "--saliency",
        "grad_cam,gradients",
        "--quick",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert [(r["layer"], r["method"]) for r in report["rows"]] == [("layer2", "grad_cam"), ("layer2", "gradients")]
    for row in report["rows"]:
        assert row["components"] == 64 and row["loop_components"] == 32
        assert row["max_abs_difference"] <= 1e-5
        assert row["rerun_seconds"] > 0 and row["engine_seconds"] > 0
    assert report["rows"][0]["strategy"] == "forward"  # Grad-CAM: 32 channel directions < 64 components
    assert report["summary"]["max_abs_difference"] <= 1e-5


def test_reports_render_from_the_results_folder_alone(capsys, tmp_path):
    """A results folder moved to another machine (its data paths gone, no suite file) still renders its
    report, claims included, identical to the run's own."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.rand(28, 28, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"digit_{i}.png")
    text = SMALL_SUITE.replace(
        "held: {kind: digits, skip: 300, limit: 8}",
        f"held: {{kind: image_files, options: {{paths: '{images}/*.png'}}}}",
    )
    text += (
        "report:\n  title: Moved\n  claims:\n"
        "    - claim: trained above random\n"
        "      greater: {metric: {score: noise_score, saliency: gradients}, higher: trained, lower: random}\n"
    )
    assert "image_files" in text
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", small_suite(tmp_path, text), "--out", out)
    assert code == 0, err
    written = (out / "report.md").read_text()
    assert written.startswith("# Moved") and "trained above random" in written
    for image in images.iterdir():
        image.unlink()
    images.rmdir()
    (out / "report.md").unlink()
    code, stdout, err = cli(capsys, "leaderboard", out, "--format", "markdown")
    assert code == 0, err
    assert (out / "report.md").read_text() == written


@needs_shared
def test_bench_suite_scenario_agrees_with_the_hand_written_loop(capsys):
    """The suite scenario runs `repreval run` and the plain loop on the same cells (timings are not checked)."""
    code, stdout, _ = cli(capsys, "bench", "--suite", "--images", "2", "--json")
    assert code == 0
    result = json.loads(stdout)
    assert result["cells"] == 36 and result["max_difference"] < 1e-5
    assert result["repreval_seconds"] > 0 and result["loop_seconds"] > 0


def test_torch_models_import_from_beside_the_suite_or_the_working_directory(tmp_path):
    """The `repreval` console script (not `python -m`, which puts the working directory on sys.path itself)."""
    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n\n"
        "def build() -> nn.Module:\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
    )
    (tmp_path / "suite.yaml").write_text(
        "name: local\ndatasets: {d: {kind: digits, limit: 2}}\n"
        "models: {m: {model: 'torch:mynet:build', options: {input_size: [3, 16, 16]}, layers: ['0']}}\n"
        "variants: [random]\nevaluation: {dataset: d, saliency: [gradients], channel_aggregators: [abs],"
        " embedding_aggregators: [mean], scores: [noise_score]}\n"
    )
    script = Path(sys.executable).parent / "repreval"
    env = {**os.environ, "PYTHONPATH": ""}
    beside = subprocess.run(
        [script, "validate", tmp_path / "suite.yaml", "--trust", "mynet"], capture_output=True, text=True, env=env
    )
    assert beside.returncode == 0, beside.stderr
    here = subprocess.run(
        [script, "layers", "torch:mynet:build", "--option", "input_size=[3,16,16]", "--trust", "mynet"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    assert "Conv2d" in here.stdout


def test_eval_runs_downstream_scores_on_two_splits_without_a_suite(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli(
        capsys, "eval", "ae:classifier", "--data", "digits", "--limit", "2", "--scores",
        "linear_probe,classifier_accuracy", "--probe-limit", "200", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    found = by_coordinates(records(out))
    scores = {key[-1] for key in found}
    assert scores == {
        "linear_probe[test=probe_test,train=probe_train].top1",
        "linear_probe[test=probe_test,train=probe_train].top5",
        "classifier_accuracy[dataset=probe_test].top1",
        "classifier_accuracy[dataset=probe_test].top5",
    }
    assert all(0.0 <= r["value"] <= 1.0 for r in found.values())
    code, _, err = cli(capsys, "eval", "ae:classifier", "--scores", "linear_probe", "--probe-data", "mnist:/nope")
    assert code == 2 and "--probe-data" in err


def test_a_results_folder_holds_one_run_configuration_and_one_run_at_a_time(capsys, tmp_path):
    suite, out = small_suite(tmp_path), tmp_path / "out"
    assert cli(capsys, "run", suite, "--out", out)[0] == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 0

    code, _, err = cli(capsys, "run", suite, "--out", out, "--seed", "1")
    assert code == 2
    assert "holds results of a run with seed 0, this run has 1" in err and "--force-new" in err
    assert {r["seed"] for r in records(out).values()} == {0}  # nothing mixed in

    (out / "records" / ".orphan.json.tmp").write_text("half a file")  # a killed run's temporary file
    code, _, err = cli(capsys, "run", suite, "--out", out, "--seed", "1", "--force-new")
    assert code == 0, err
    assert {r["seed"] for r in records(out).values()} == {1}
    assert not list((out / "records").glob(".*"))

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(sleeper.pid))
        code, _, err = cli(capsys, "run", suite, "--out", out, "--seed", "1")
        assert code == 2 and f"in use by another run (pid {sleeper.pid})" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    code, _, err = cli(capsys, "run", suite, "--out", out, "--seed", "1")  # the holder is gone: lock taken over
    assert code == 0, err
    assert not (out / ".lock").exists()


def test_each_eval_configuration_gets_its_own_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for layer in ("encoder.block1", "encoder.block2"):
        code, _, err = cli(capsys, "eval", "ae:classifier", "--limit", "2", "--layers", layer, "--saliency",
                           "gradients", "--scores", "noise_score")  # fmt: skip
        assert code == 0, err
    folders = sorted((tmp_path / "results").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("eval-ae_classifier-") for f in folders)
    assert [{r["layer"] for r in records(f).values()} for f in folders] in (
        [{"encoder.block1"}, {"encoder.block2"}],
        [{"encoder.block2"}, {"encoder.block1"}],
    )


def test_block_is_accepted_before_and_after_the_command(capsys):
    """The broken-plugin warning tells users to add ``--block NAME``: it works wherever they add it."""
    code, out, err = cli(capsys, "list", "scores")
    assert code == 0 and "noise_score" in out, err
    for argv in (["list", "scores", "--block", "scores"], ["--block", "scores", "list", "scores"]):
        code, out, err = cli(capsys, *argv)
        assert code == 0, err
        assert "noise_score" not in out and "linear_probe" not in out
