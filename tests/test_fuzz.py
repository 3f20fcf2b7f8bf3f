"""Property-based fuzzing (Hypothesis): mutated suites through `validate` and damaged record files through
`leaderboard` end in exit 0 or exit 2 with one-line errors: never a traceback, never a hang."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repreval.cli import main

BASE = yaml.safe_load((Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_base.yaml").read_text())

#: values a careless or hostile suite may hold anywhere
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["../../..", "/etc/passwd", "1.2.3GiB", "abc", "", "torch:os:system", "timm:nope", "-1"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(data, prefix=()):
    """Every (path, value) in a nested suite."""
    yield prefix, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, (*prefix, index))


ALL_PATHS = [path for path, _ in _paths(BASE) if path]


def _mutated(base: dict, path: tuple, action: str, value) -> dict:
    data = json.loads(json.dumps(base))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete" and isinstance(parent, dict):
        del parent[last]
    elif action == "delete":
        parent.pop(last)
    elif action == "add" and isinstance(parent, dict):
        parent[f"unknown{len(parent)}"] = value
    else:
        parent[last] = value
    return data


#: raw-text mutations YAML itself must survive (duplicate keys, non-string keys, aliases, nesting, bombs)
TEXT_EDITS = [
    "seed: 1\n",
    "1: x\n",
    "x-r: &r [*r]\n",
    "x-deep: " + "[" * 300 + "]" * 300 + "\n",
    "".join(f"x-{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9 if i else ["lol"] * 9) + "]\n" for i in range(8)),
    "name: [unclosed\n",
    "\t\x00garbage\n",
    "evaluation: !!python/object/apply:os.system ['true']\n",
    "include: ../../../../etc/shadow\n",
]


#: how far the process's peak memory may rise above its peak before the first fuzzed suite (the unbounded alias
#: bomb took 1.3-1.8 GB on its own)
PEAK_GROWTH = 500 * 2**20
_peak_before: list[int] = []


def _peak_bytes() -> int:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _run_validate(tmp_path, text: str, capsys) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    if not _peak_before:
        _peak_before.append(_peak_bytes())
    code = main(["validate", str(path), "--no-predict"])
    assert _peak_bytes() - _peak_before[0] < PEAK_GROWTH, text[:300]
    captured = capsys.readouterr()
    assert code in (0, 2), (code, text[:300], captured.err[-2000:])
    assert "Traceback" not in captured.err + captured.out
    if code == 2:
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), captured.err


FUZZ = settings(
    max_examples=1000,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: a failure reproduces
)


@FUZZ
@given(
    path=st.sampled_from(ALL_PATHS),
    action=st.sampled_from(["replace", "replace", "delete", "add"]),
    value=ODD_VALUES,
)
def test_mutated_suites_validate_or_fail_in_one_line(tmp_path, capsys, path, action, value):
    _run_validate(tmp_path, yaml.safe_dump(_mutated(BASE, path, action, value), allow_unicode=True), capsys)


@settings(max_examples=300, deadline=5000, derandomize=True, suppress_health_check=list(HealthCheck))
@given(edit=st.sampled_from(TEXT_EDITS), position=st.integers(min_value=0, max_value=10**6))
def test_raw_yaml_edits_validate_or_fail_in_one_line(tmp_path, capsys, edit, position):
    text = yaml.safe_dump(BASE)
    lines = text.splitlines(keepends=True)
    cut = position % (len(lines) + 1)
    top_level = [i for i, line in enumerate(lines) if not line.startswith(" ")] + [len(lines)]
    cut = min(top_level, key=lambda i: abs(i - cut))  # insert between top-level entries
    _run_validate(tmp_path, "".join(lines[:cut]) + edit + "".join(lines[cut:]), capsys)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real results folder of a tiny run."""
    out = tmp_path_factory.mktemp("fuzz") / "out"
    suite = {**json.loads(json.dumps(BASE)), "variants": ["random"], "report": {}}
    del suite["models"]["ae"]["train"]
    path = out.parent / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--out", str(out), "--threads", "1"]) == 0
    return out


RECORD_EDITS = st.one_of(
    st.binary(max_size=40).map(lambda raw: ("bytes", raw)),
    st.tuples(st.just("field"), st.text(max_size=20), ODD_VALUES),
    st.just(("json", [1, 2])),
    st.just(("field", "layer_index", 10_000_000)),
    st.just(("field", "schema", 99)),
)


@settings(max_examples=300, deadline=5000, derandomize=True, suppress_health_check=list(HealthCheck))
@given(edit=RECORD_EDITS, which=st.integers(min_value=0, max_value=100))
def test_damaged_records_are_named_and_the_rest_still_shown(results, tmp_path, capsys, edit, which):
    folder = tmp_path / "copy"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(results, folder)
    files = sorted((folder / "records").glob("*.json"))
    target = files[which % len(files)]
    if edit[0] == "bytes":
        target.write_bytes(edit[1])
    elif edit[0] == "json":
        target.write_text(json.dumps(edit[1]))
    else:
        data = json.loads(target.read_text())
        data[edit[1]] = edit[2]
        target.write_text(json.dumps(data))
    code = main(["leaderboard", str(folder)])
    captured = capsys.readouterr()
    assert code in (0, 2)
    assert "Traceback" not in captured.err + captured.out
    if code == 2:
        assert re.search(r"error: record .*(damaged|schema)", captured.err), captured.err


def test_a_damaged_record_is_recomputed_by_the_next_run(results, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(results, folder)
    target = sorted((folder / "records").glob("*.json"))[0]
    before = json.loads(target.read_text())
    target.write_text(json.dumps({**before, "layer_index": "deep"}))
    assert main(["leaderboard", str(folder)]) == 2
    assert "is damaged: field 'layer_index'" in capsys.readouterr().err
    assert main(["run", str(folder / "suite.yaml"), "--out", str(folder), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"1 computed, \d+ already done, 0 failed", out), out
    after = json.loads(target.read_text())
    assert after["value"] == before["value"] and after["layer_index"] == before["layer_index"]
    assert main(["leaderboard", str(folder)]) == 0


def test_written_files_honour_the_umask(results):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    for path in [results / "report.md", results / "leaderboard.json", *sorted((results / "records").glob("*.json"))]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_identical_records(tmp_path):
    """A real run killed (SIGKILL) at seeded random moments, resumed each time: no damaged record is ever
    left, and the finished folder equals an uninterrupted run's, value for value."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from repreval.store import ResultStore, read_record

    suite = {**json.loads(json.dumps(BASE)), "report": {}}
    suite["evaluation"]["batch_size"] = 2
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REPREVAL_CACHE": str(tmp_path / "cache")}

    def run(out, kill_after=None):
        command = [sys.executable, "-m", "repreval", "run", str(path), "--out", str(out), "--threads", "1"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        if kill_after is None:
            assert process.wait(timeout=300) == 0, process.stderr.read()
            return
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)

    run(tmp_path / "clean")
    expected = {r.unit_id: (r.value, r.values, r.reference) for r in ResultStore(tmp_path / "clean").records()}

    moments = random.Random(0)
    killed = tmp_path / "killed"
    for _ in range(4):
        run(killed, kill_after=moments.uniform(1.0, 4.0))
        for record in (killed / "records").glob("*.json") if (killed / "records").is_dir() else []:
            read_record(record)  # never damaged, whatever the moment
    run(killed)
    got = {r.unit_id: (r.value, r.values, r.reference) for r in ResultStore(killed).records()}
    assert got == expected
    assert not [p for p in killed.rglob(".*") if p.name != ".lock"] and not (killed / ".lock").exists()


# -- issue 22: hostile suites, folders, zips and data files (a seeded slice of benchmarks/fuzz_hostile.py) ----


@pytest.fixture(scope="module")
def hostile():
    """The hostile fuzzer's module, a sentinel tree (fake $HOME and caches) and a template results folder; the
    environment and torch's thread count are restored afterwards."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    import torch

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_hostile.py"
    spec = importlib.util.spec_from_file_location("fuzz_hostile", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_hostile", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    environment, threads = dict(os.environ), torch.get_num_threads()
    root = module.make_root()  # in /tmp: pytest's own folder is closed to the unprivileged user of read-only cases
    module.prepare_process(root)
    try:
        yield module, root, module.make_template(root)
    finally:
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(threads)
        module.remove_root(root)


#: cases per attack class in the slice (the script runs 1,500 suites and 300 folders, zips and data files)
HOSTILE_SLICE = {
    "code_exec": 4, "env_default": 3, "anchors": 2, "merge_keys": 3, "markup": 3, "sizes": 3, "include": 3,
    "output": 2, "executor": 1, "secrets": 1, "downloads": 2,
    "folders": 3, "zips": 3, "readonly": 2, "data_files": 4,
}  # fmt: skip


@pytest.mark.parametrize("attack", list(HOSTILE_SLICE))
def test_hostile_inputs_fail_in_one_line_without_touching_anything_outside(hostile, attack):
    """Each case in a forked child with a 20 s limit: no traceback or hang, exit 0/1/2 with one-line errors,
    nothing created, changed or deleted outside its working directory, no secret on disk."""
    module, root, template = hostile
    count = HOSTILE_SLICE[attack]
    if attack in module.SUITE_ATTACKS:
        cases = module.suite_cases(0, count, root, only=attack)
    else:
        cases = module.folder_cases(0, count, root, template, only=attack)
    failures = [module.run_case(case, root, label) for label, case in cases]
    report = [f"{o.label} {o.case.note}: {o.case.commands} -> {o.problems}" for o in failures if o.problems]
    assert not report, "\n".join(report)
