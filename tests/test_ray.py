"""The Ray executor: a local Ray runtime with 2 workers gives the records of a local run, recovers a killed
worker's units, and bad executor options are one-line errors."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import digits_suite

from repreval.cli import main
from repreval.errors import ReprevalError
from repreval.runner import run_suite
from repreval.runner.jobs import FAULT_ENV
from repreval.store import ResultStore
from repreval.suite import parse_suite

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def two_models() -> dict:
    spec = digits_suite()
    spec["models"]["ae2"] = {**spec["models"]["ae"], "options": {"bottleneck": 3}}
    spec["evaluation"]["saliency"] = ["gradients"]
    return spec


def _values(directory) -> dict[str, list[float]]:
    return {record.unit_id: record.values for record in ResultStore(directory).records()}


def test_ray_gives_the_records_of_a_local_run(runtime, tmp_path, plugins):
    local = parse_suite(two_models(), plugins)
    local.output = tmp_path / "local"
    assert not run_suite(local, plugins).failures
    distributed = parse_suite({**two_models(), "executor": {"kind": "ray", "cpus": 1}}, plugins)
    distributed.output = tmp_path / "ray"
    report = run_suite(distributed, plugins)
    assert not report.failures and report.computed == report.total == 8  # 2 models × 2 variants × 2 scores
    here, there = _values(local.output), _values(distributed.output)
    assert set(here) == set(there)
    for unit, values in here.items():
        assert there[unit] == pytest.approx(values, abs=1e-6)
    # the workers' drawings came back to the driver's folder
    assert sorted(p.name for p in (distributed.output / "maps").glob("*.npz")) == sorted(
        p.name for p in (local.output / "maps").glob("*.npz")
    )


def test_the_quickstart_on_ray_equals_it_run_here(runtime, tmp_path, plugins, monkeypatch):
    from conftest import ROOT

    from repreval.suite import load_suite

    monkeypatch.chdir(ROOT)
    values = {}
    for executor in ("local", "ray"):
        suite = load_suite(ROOT / "benchmarks_yaml" / "quickstart.yaml", plugins)
        # a seed group of 2 (not the quickstart's 20) keeps it short and still expands a group on the workers
        suite = parse_suite(
            {**suite.raw, "executor": executor, "variants": ["trained", {"random": {"seeds": 2}}]}, plugins
        )
        suite.output = tmp_path / executor
        assert not run_suite(suite, plugins).failures
        values[executor] = _values(suite.output)
    assert set(values["local"]) == set(values["ray"]) and len(values["local"]) == 72  # 3 networks × 24
    for unit, numbers in values["local"].items():
        assert values["ray"][unit] == pytest.approx(numbers, abs=1e-6)


def test_a_killed_worker_has_its_units_recomputed(runtime, tmp_path, plugins, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "marks"))  # each task's first attempt kills its worker (-9)
    suite = parse_suite({**two_models(), "executor": "ray"}, plugins)
    suite.output = tmp_path / "out"
    report = run_suite(suite, plugins)
    assert len(list((tmp_path / "marks").iterdir())) == 4  # every task was killed once
    assert not report.failures and report.computed == 8
    assert all(record.status == "ok" for record in ResultStore(suite.output).records())


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        ({"kind": "dask"}, "unknown executor 'dask'"),
        ({"kind": "ray", "cpus": -1}, "cpus must be a number of at least 0, got -1"),
        ({"kind": "ray", "memory": "4 parsecs"}, "cannot read '4 parsecs' as a size"),
        ({"kind": "local", "address": "10.0.0.1:6379"}, "executor 'local': it takes no options, got 'address'"),
        ({"kind": "ray", "nodes": 3}, "no option 'nodes'"),
    ],
)
def test_bad_executor_options_exit_2_with_one_line(tmp_path, capsys, executor, message):
    spec = digits_suite()
    spec["executor"] = executor
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_ray_missing_is_a_one_line_error(tmp_path, plugins, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    suite = parse_suite({**digits_suite(), "executor": "ray"}, plugins)
    suite.output = tmp_path / "out"
    with pytest.raises(ReprevalError, match="needs Ray, which is not installed"):
        run_suite(suite, plugins)


def test_validate_counts_groups_and_calibrates_on_one_without_writing(tmp_path, capsys, monkeypatch):
    spec = two_models()
    spec["output"] = "out"
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(path), "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert "8 units in 4 groups" in out and "calibration: ae · trained (2 units) took" in out
    assert not (tmp_path / "out").exists()  # nothing written


def test_an_unknown_executor_on_the_command_line_is_one_line(tmp_path, capsys):
    """``--executor`` takes whatever executor plugins are installed; a name none registered is one line."""
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(digits_suite()))
    assert main(["run", str(path), "--executor", "dask", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown executor 'dask'" in err and "local, ray" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_another_executor_on_the_command_line_drops_the_suite_s_executor_options(tmp_path, monkeypatch):
    """A suite written for Ray (its split and resources) runs here with ``--executor local``; the same kind keeps
    them, and ``--address`` is added to them."""
    from repreval.runs import _override

    written = {"kind": "ray", "split": 4, "cpus": 2}
    data = {"executor": dict(written)}
    _override(data, seed=None, weights=None, device=None, executor="local", address=None)
    assert data["executor"] == {"kind": "local"}
    data = {"executor": dict(written)}
    _override(data, seed=None, weights=None, device=None, executor="ray", address="127.0.0.1:6379")
    assert data["executor"] == {**written, "address": "127.0.0.1:6379"}
    spec = {**digits_suite(), "executor": written}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["run", str(path), "--executor", "local", "--out", str(tmp_path / "out")]) == 0


def test_a_cuda_suite_on_ray_tasks_that_ask_for_no_gpu_is_one_line():
    """Ray hides the GPUs from a task that asks for none: every unit would fail on a GPU machine; say so first."""
    from repreval_builtins.executors import Ray

    class CudaJob:
        device, groups = "cuda", []

    with pytest.raises(ReprevalError, match="computes on cuda, but each Ray task asks for no GPU") as raised:
        Ray().run(CudaJob())  # type: ignore[arg-type]
    assert "gpus: 1" in (raised.value.fix or "")


def test_a_finished_task_says_where_it_ran_and_its_throughput():
    from repreval.api import TaskResult, UnitGroup
    from repreval_builtins.executors import _finished

    group = UnitGroup("ae", "trained", 12)
    workers = {("a1b2c3d4e5f6", 101), ("a1b2c3d4e5f6", 102), ("ffee0011", 7)}
    result = TaskResult([], {}, [], 4.0, 102, "a1b2c3d4e5f6")
    said = _finished(group, result, workers)
    assert (
        said
        == "ae · trained: 12 units in 4.0 s (3.00 units/s) on node a1b2c3d4, worker 102; 3 workers on 2 nodes so far"
    )
    assert _finished(group, None, workers) == "ae · trained failed on Ray (3 workers on 2 nodes so far)"
