"""Issue 22, code and network trust: a suite names no code the user did not trust, never shadows a library, runs
no program, reaches no model code of a directory's own, joins no cluster of its choosing, downloads nothing at
validate, and a task's files land only in the results folder's drawings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import repreval
from repreval.api import TaskResult, UnitGroup
from repreval.cli import main
from repreval.errors import ReprevalError
from repreval.runner.jobs import GroupTask, Job, Piece
from repreval.runner.records import RunOutcome
from repreval.trust import Trust, trusting, user_trust
from repreval_builtins.torch_factory import TorchFactory

EVALUATION = {"dataset": "d", "saliency": ["gradients"], "channel_aggregators": ["abs"],
              "embedding_aggregators": ["mean"], "scores": ["noise_score"]}  # fmt: skip
MYNET = (
    "from torch import nn\n\n"
    "def build() -> nn.Module:\n"
    "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
)


def suite(models: dict, **more) -> dict:
    return {"name": "trust", "datasets": {"d": {"kind": "digits", "limit": 2}}, "models": models,
            "variants": ["random"], "evaluation": EVALUATION, **more}  # fmt: skip


def write_suite(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(autouse=True)
def own_config(tmp_path, monkeypatch):
    """The user's config file lives in the test's folder; no trust comes from the environment."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("REPREVAL_TRUST", raising=False)
    monkeypatch.chdir(tmp_path)


def test_a_module_annotated_to_build_a_model_is_not_trusted_code(tmp_path, capsys):
    """Item 1: torch.fx's reduce_graph_module is annotated to return a Module and execs its arguments."""
    evil = "import os\nos.system('id > pwned')\n"
    model = {"model": "torch:torch.fx.graph_module:reduce_graph_module",
             "options": {"kwargs": {"import_block": evil, "body": {}}, "input_size": [3, 8, 8]}}  # fmt: skip
    code, output = cli(capsys, "validate", write_suite(tmp_path / "stranger", suite({"m": model})))
    assert code == 2 and not (tmp_path / "pwned").exists()
    assert "'torch.fx.graph_module' is not trusted" in output and "--trust torch" in output
    assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name",
    ["tqdm.__main__:main", "typer.__main__:main", "numpy.f2py.__main__:main", "torch.utils.model_dump.__main__:main"],
)
def test_programs_are_refused_before_they_are_imported(name):
    """Item 3: the name is checked as a string: a __main__ module is never imported, even when trusted."""
    module = name.partition(":")[0]
    with trusting(Trust(modules=(module.split(".")[0],))), pytest.raises(ReprevalError, match="__main__"):
        TorchFactory().build(name, {}, 0)
    assert module not in sys.modules


def test_private_parts_and_untrusted_modules_are_refused_by_name():
    with pytest.raises(ReprevalError, match="private"):
        TorchFactory().build("torchvision.models._api:register_model", {}, 0)
    with pytest.raises(ReprevalError, match="private"):
        TorchFactory().build("torch.nn:_Loss", {}, 0)
    with pytest.raises(ReprevalError, match="'torchvision.models.feature_extraction' is not trusted"):
        TorchFactory().build("torchvision.models.feature_extraction:create_feature_extractor", {}, 0)
    with pytest.raises(ReprevalError, match="'timm' is not trusted"):
        TorchFactory().build("timm:create_model", {"kwargs": {"model_name": "resnet18"}}, 0)


def test_modules_beside_a_stranger_suite_never_shadow_libraries(tmp_path):
    """Item 2: torch.py, yaml.py and numpy.py beside a suite (and in the working directory) never run."""
    stranger = tmp_path / "stranger"
    path = write_suite(stranger, suite({"m": {"model": "ae:classifier", "options": {"bottleneck": 4}}}))
    for name in ("torch", "yaml", "numpy", "mynet"):
        (stranger / f"{name}.py").write_text(f"open({str(tmp_path / name)!r} + '.ran', 'w').close()\n")
    script = Path(sys.executable).parent / "repreval"
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([script, "validate", path], capture_output=True, text=True, env=env, cwd=stranger)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("*.ran"))


def test_a_trusted_module_beside_the_suite_loads_from_its_file_without_changing_sys_path(tmp_path, capsys):
    """The user's --trust (or config file) names it; its folder is never put on sys.path."""
    stranger = tmp_path / "here"
    path = write_suite(stranger, suite({"m": {"model": "torch:mynet:build", "options": {"input_size": [3, 8, 8]}}}))
    (stranger / "mynet.py").write_text(MYNET)
    before = list(sys.path)
    code, output = cli(capsys, "validate", path)
    assert code == 2 and "--trust mynet" in output
    try:
        assert cli(capsys, "validate", path, "--trust", "mynet")[0] == 0
        assert sys.path == before
        sys.modules.pop("mynet")
        (tmp_path / "config" / "repreval").mkdir(parents=True)
        (tmp_path / "config" / "repreval" / "config.yaml").write_text("trust: [mynet]\n")
        assert cli(capsys, "validate", path)[0] == 0
    finally:
        sys.modules.pop("mynet", None)
    assert "mynet" not in [Path(p).name for p in sys.path]


def test_hf_never_runs_a_directory_s_own_code(tmp_path, monkeypatch):
    """Item 4: a config whose auto_map names a module of the directory is refused before transformers reads it
    (transformers would otherwise ask, and a 'y' ran the code)."""
    pytest.importorskip("transformers")
    from repreval_builtins.hf_text import HuggingFaceText

    model = tmp_path / "model"
    model.mkdir()
    (model / "custom.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    config = {"model_type": "custom_x", "auto_map": {"AutoConfig": "custom.Config", "AutoModel": "custom.Model"}}
    (model / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("builtins.input", lambda *_: "y")
    with pytest.raises(ReprevalError, match="never runs"):
        HuggingFaceText().build(str(model), {}, 0)
    assert not (tmp_path / "ran").exists()


def test_validate_downloads_no_published_weights(tmp_path, capsys, monkeypatch):
    """Item 6 (downloads): torchvision's weights are not fetched at validate; $TORCH_HOME stays untouched."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = {"model": "torch:torchvision.models:get_model",
             "options": {"kwargs": {"name": "resnet18", "weights": "DEFAULT"}}}  # fmt: skip
    code, output = cli(capsys, "validate", write_suite(tmp_path, suite({"m": model})))
    assert code == 2 and "not cached" in output and "repreval run" in output
    assert not (tmp_path / "torch").exists()


def test_timm_weights_come_only_through_weights(tmp_path, capsys):
    for kwargs in ({"pretrained": True}, {"checkpoint_path": str(tmp_path / "x.pth")}):
        model = {"model": "timm:resnet18", "options": {"kwargs": kwargs, "input_size": [3, 32, 32]}}
        code, output = cli(capsys, "validate", write_suite(tmp_path, suite({"m": model})))
        assert code == 2 and f"may not set {next(iter(kwargs))!r}" in output and "weights: hub" in output


def test_a_suite_does_not_choose_the_cluster_a_run_joins(tmp_path):
    """Item 5: a suite's executor address is refused unless the user allows it; an address that does not
    answer fails in one line instead of hanging."""
    executor = {"kind": "ray", "address": "127.0.0.1:9"}
    path = write_suite(tmp_path, suite({"m": {"model": "ae:classifier"}}, executor=executor))
    with pytest.raises(ReprevalError, match="may not choose where a run connects") as refused:
        repreval.run(path)
    assert "--address" in str(refused.value)
    pytest.importorskip("ray")
    (tmp_path / "config" / "repreval").mkdir(parents=True)
    (tmp_path / "config" / "repreval" / "config.yaml").write_text("addresses: ['127.0.0.1:9']\n")
    with pytest.raises(ReprevalError, match="nothing answers at Ray address '127.0.0.1:9'"):
        repreval.run(path, out=tmp_path / "allowed")
    with pytest.raises(ReprevalError, match="nothing answers"):
        repreval.run(
            write_suite(tmp_path / "plain", suite({"m": {"model": "ae:classifier"}})),
            executor="ray",
            address="127.0.0.1:9",
        )


def test_files_a_task_returns_land_only_in_the_drawings(tmp_path):
    """Item 5: names from a task are checked like import's: no absolute, no '..', no link out of the folder."""
    output, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (output / "pictures").mkdir(parents=True)
    (output / "maps").symlink_to(outside)
    group = UnitGroup("m", "random", 0)
    job = Job.__new__(Job)
    job.plan = SimpleNamespace(suite=SimpleNamespace(output=output))
    job.pieces, job.joining, job.outcome = {group: Piece([])}, {}, RunOutcome(output=str(output), total=0)
    names = ["../x", "/tmp/repreval-x", "maps/a.png", "pictures/../../x", "pictures/./b", "records/r.json"]
    job.accept(group, TaskResult([], {**dict.fromkeys(names, b"x"), "pictures/ok.png": b"ok"}, [], 0.0, 0))
    assert len(job.outcome.warnings) == len(names)
    assert not list(outside.iterdir()) and not (tmp_path / "x").exists() and not Path("/tmp/repreval-x").exists()
    assert sorted(p.name for p in output.rglob("*") if p.is_file()) == ["ok.png"]


def test_an_executor_task_carries_the_user_s_trust(tmp_path, plugins):
    """A worker has no --trust of its own: the task carries the driver's, and builds with it, not its process's."""
    from repreval.plan import make_plan
    from repreval.suite import parse_suite

    (tmp_path / "mynet.py").write_text(MYNET)
    data = suite({"m": {"model": "torch:mynet:build", "options": {"input_size": [3, 8, 8]}, "layers": ["0"]}})
    trusted = user_trust(["mynet"])
    try:
        with trusting(trusted):
            plan = make_plan(parse_suite(data, plugins), plugins)
            job = Job(plan, plugins, plan.units, None, RunOutcome(output="", total=0), None)  # type: ignore[arg-type]
            job.prepare_tasks()  # the driver builds with its trust, and ships inputs and weights
            task, shipped = job.task(job.groups[0], 1), job.payload()
        assert task.trust == trusted
        sys.modules.pop("mynet")
        assert [r.status for r in task(shipped).records] == ["ok"] * len(task.unit_ids)  # outside any trusting()
        sys.modules.pop("mynet")
        untrusted = GroupTask(task.plan, task.blocked, task.unit_ids, 1, Trust())
        records = untrusted(shipped).records  # the worker builds the model: refused, its units recorded as failed
        assert records and all(r.status != "ok" and re.search("'mynet'.* trusted", r.error) for r in records)
    finally:
        sys.modules.pop("mynet", None)
