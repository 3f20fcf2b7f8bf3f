"""Issue 22, the file system: a suite's ``output:`` stays strictly below the working directory, clean-up removes
only repreval's own temporary files, one process holds a folder's lock, and hostile result folders and zips
(special files, symlinks, bombs, damaged files, read-only folders) give one line before anything lands."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from conftest import digits_suite

from repreval import folders
from repreval.cli import main
from repreval.errors import ReprevalError
from repreval.folders import export_folder, import_folder
from repreval.store import ResultStore, ScoreRecord, read_record
from repreval.suite import load_suite

SECRET = "SECRET-7f3a-do-not-print"
FINGERPRINT = {"suite": "s", "seed": 0, "repreval": "0", "torch": "0", "device": "cpu"}


def _record(layer: str = "l1", layer_index: int = 0, **changes) -> ScoreRecord:
    fields = {
        "unit_id": f"u-{layer}", "suite": "s", "model": "m", "model_spec": "x:y", "variant": "trained",
        "layer": layer, "layer_index": layer_index, "saliency": "gradients", "channel_aggregator": "abs",
        "embedding_aggregator": "mean", "score": "noise_score", "higher_is_better": True, "value": 0.5,
        "values": [0.5], "dataset": "d",
    }  # fmt: skip
    return ScoreRecord(**(fields | changes))


def _results(directory: Path) -> Path:
    """A small results folder as a run leaves it: two records, the stored suite, the run configuration."""
    store = ResultStore(directory)
    with store.claimed(FINGERPRINT):
        for index, layer in enumerate(("l1", "l2")):
            store.write(_record(layer, index))
        store.write_suite(yaml.safe_dump({"name": "s"}))
    return directory


def _one_line(error: str) -> str:
    assert "Traceback" not in error and error.strip().count("\n") == 0, error
    return error


def _zip(path: Path, entries: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, content in entries.items():
            bundle.writestr(name, content)
    return path


def _record_entries() -> dict[str, bytes | str]:
    return {f"records/{r.unit_id}.json": json.dumps(asdict(r)) for r in (_record("l1", 0), _record("l2", 1))}


# --- output: -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [".", "./", "results/..", "link", "link/run", "inside/../link/x"])
def test_a_suite_cannot_write_into_the_working_directory_or_through_a_symlink_out_of_it(
    plugins, tmp_path, monkeypatch, output
):
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "inside").mkdir(parents=True)
    outside.mkdir()
    (work / "link").symlink_to(outside)
    monkeypatch.chdir(work)
    suite = work / "s.yaml"
    suite.write_text(yaml.safe_dump(digits_suite() | {"output": output}))
    with pytest.raises(ReprevalError, match=r"working directory.*--out") as raised:
        load_suite(suite, plugins)
    assert str(outside) not in str(raised.value)
    for fine in ("results/x", "inside", "inside/deeper"):
        suite.write_text(yaml.safe_dump(digits_suite() | {"output": fine}))
        assert load_suite(suite, plugins).output == Path(fine)


# --- clean-up ----------------------------------------------------------------------------------------------


def test_clean_up_removes_only_temporary_files_repreval_left_in_its_own_folder(tmp_path):
    folder = _results(tmp_path / "out")
    foreign = [folder / ".env.local", folder / ".pre-commit-config.yaml", folder / "records" / ".notes.json.bak"]
    for path in foreign:
        path.write_text("the user's")
    handle, orphan = tempfile.mkstemp(dir=folder / "records", prefix=".u-l1.json.", suffix=".repreval-tmp")
    os.close(handle)  # what a run killed in the middle of writing a record leaves
    with ResultStore(folder).claimed(FINGERPRINT):
        pass
    assert all(path.read_text() == "the user's" for path in foreign)
    assert not Path(orphan).exists()


# --- the lock ----------------------------------------------------------------------------------------------


def _contend(directory: Path, start, attempted, outcomes) -> None:
    start.wait()
    try:
        with ResultStore(directory).claimed(FINGERPRINT):
            outcomes.put("held")
            attempted.wait()  # held until every process has tried
    except ReprevalError:
        outcomes.put("refused")
        attempted.wait()
    except Exception as exc:  # any other failure is the finding
        outcomes.put(f"crash {exc!r}")
        attempted.wait()


def test_processes_entering_a_folder_at_the_same_instant_get_one_holder(tmp_path):
    context, contenders = multiprocessing.get_context("fork"), 6
    for trial in range(24):
        start, attempted = context.Barrier(contenders), context.Barrier(contenders)
        outcomes = context.Queue()
        workers = [
            context.Process(target=_contend, args=(tmp_path / "out", start, attempted, outcomes))
            for _ in range(contenders)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        found = sorted(outcomes.get(timeout=5) for _ in workers)
        assert found == ["held"] + ["refused"] * (contenders - 1), f"trial {trial}: {found}"
    assert not (tmp_path / "out" / ".lock").exists()


# --- import --------------------------------------------------------------------------------------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("run.json", "{not json " + SECRET),
        ("run.json", "[" * 100_000),
        ("run.json", json.dumps([SECRET])),
        ("suite.yaml", f"name: [{SECRET}"),
        ("suite.yaml", "!!python/object/apply:os.system ['id']"),
        ("suite.yaml", BILLION_LAUGHS),
        ("suite.yaml", "{1: 2}"),
        ("report_facts.json", json.dumps({"strengths": SECRET})),
        ("report_facts.json", json.dumps({"unknown": 1})),
        ("report_facts.json", json.dumps({"report": {"claims": SECRET}})),
        ("records/u-l3.json", json.dumps(asdict(_record("l3", 2, status=SECRET)))),
        ("records/u-l3.json", json.dumps(asdict(_record("l3", 2)) | {"unit_id": SECRET})),
    ],
)
def test_an_import_checks_every_file_before_anything_lands(tmp_path, capsys, name, content):
    archive = _zip(tmp_path / "evil.zip", _record_entries() | {name: content})
    out = tmp_path / "out"
    assert main(["import", str(archive), "--out", str(out)]) == 2
    error = _one_line(capsys.readouterr().err)
    assert name.split("/")[-1] in error and SECRET not in error
    assert not out.exists() or not list(out.rglob("*"))


def test_an_import_takes_a_zip_with_directory_entries(tmp_path):
    archive = _zip(tmp_path / "dirs.zip", {"records/": b"", "plots/": b""} | _record_entries())
    folder = import_folder(archive, tmp_path / "out")
    assert len(folder.records) == 2 and (tmp_path / "out" / "records").is_dir()


def test_an_import_refuses_a_zip_that_inflates_past_the_limits(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(folders, "MAX_IMPORT_BYTES", 1 << 20, raising=False)
    monkeypatch.setattr(folders, "MAX_IMPORT_ENTRIES", 50, raising=False)
    bomb = _zip(tmp_path / "bomb.zip", _record_entries() | {"plots/bomb.png": bytes(2 << 20)})
    many = _zip(tmp_path / "many.zip", _record_entries() | {f"pictures/{i}.png": b"x" for i in range(60)})
    for archive in (bomb, many):
        assert main(["import", str(archive), "--out", str(tmp_path / "out")]) == 2
        assert "limit" in _one_line(capsys.readouterr().err)
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*"))


def test_an_import_waits_for_nothing_and_leaves_a_running_folder_alone(tmp_path):
    out = _results(tmp_path / "out")
    archive = export_folder(out, tmp_path / "out.zip")
    with ResultStore(out).claimed(FINGERPRINT), pytest.raises(ReprevalError, match="in use"):
        import_folder(archive, out)
    assert import_folder(archive, out).records


# --- records and folders -----------------------------------------------------------------------------------


def test_a_record_with_a_layer_index_no_model_has_is_damaged(tmp_path, capsys):
    folder = _results(tmp_path / "out")
    path = folder / "records" / "u-l2.json"
    path.write_text(json.dumps(asdict(_record("l2", 9_999_999))))
    with pytest.raises(ReprevalError, match="layer_index"):
        read_record(path)
    assert main(["leaderboard", str(folder)]) == 2
    assert "field 'layer_index'" in capsys.readouterr().err


def test_a_damaged_record_is_named_without_quoting_its_content(tmp_path, capsys):
    folder = _results(tmp_path / "out")
    for field, value in (("status", SECRET), ("layer", [SECRET]), ("unit_id", SECRET), ("schema", SECRET)):
        path = folder / "records" / "u-l2.json"
        path.write_text(json.dumps(asdict(_record("l2", 1)) | {field: value}))
        assert main(["leaderboard", str(folder)]) == 2
        error = capsys.readouterr().err
        assert "u-l2.json" in error and SECRET not in error, error


def _immutable(path: Path, on: bool) -> None:
    if os.geteuid() != 0:
        path.chmod(0o555 if on else 0o755)
    elif subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode:
        pytest.skip("root without chattr: a folder cannot be made read-only")


def test_read_only_folders_give_one_line(tmp_path, capsys):
    folder = _results(tmp_path / "results")
    locked = tmp_path / "locked"
    locked.mkdir()
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(digits_suite()))
    archive = export_folder(folder, tmp_path / "r.zip")
    commands = [
        ["run", str(suite), "--out", str(locked / "run")],
        ["run", str(suite), "--out", str(locked)],
        ["leaderboard", str(folder), "--format", "markdown"],
        ["export", str(folder), "--out", str(locked / "r.zip")],
        ["import", str(archive), "--out", str(locked)],
        ["publish", str(folder), "--out", str(locked / "site")],
    ]
    _immutable(locked, True)
    _immutable(folder, True)
    try:
        for command in commands:
            assert main(command) == 2, command
            assert "locked" in _one_line(capsys.readouterr().err) or command[0] == "leaderboard"
    finally:
        _immutable(locked, False)
        _immutable(folder, False)
    assert not list(locked.iterdir())


def test_special_files_and_symlinks_in_a_results_folder_never_hang_or_leak(tmp_path):
    folder = _results(tmp_path / "out")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(asdict(_record("l9", 0, unit_id="leak", model=SECRET))))
    os.mkfifo(folder / "records" / "fifo.json")
    (folder / "records" / "loop.json").symlink_to("loop.json")
    (folder / "records" / "leak.json").symlink_to(outside)
    (folder / "plots").mkdir()
    os.mkfifo(folder / "plots" / "fifo.png")
    (folder / "plots" / "leak.png").symlink_to(outside)
    (folder / "pictures").symlink_to(folder / "pictures")
    script = (
        "import os, sys; from repreval.cli import main; d, t = sys.argv[1], sys.argv[2]\n"
        "codes = [main(['leaderboard', d]), main(['publish', d, '--out', t + '/site']),"
        " main(['export', d, '--out', t + '/x.zip'])]\n"
        "os.symlink(t + '/outside.json', d + '/report_facts.json')\n"
        "print(codes + [main(['publish', d, '--out', t + '/other'])])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "[2, 0, 2, 2]", done.stdout + done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    assert "report_facts.json' is damaged: a symbolic link" in done.stderr
    site = "".join(path.read_text() for path in (tmp_path / "site").rglob("*.html"))
    assert SECRET not in site and not list((tmp_path / "site").rglob("*.png"))
    os.unlink(folder / "records" / "fifo.json")
    os.unlink(folder / "records" / "loop.json")
    os.unlink(folder / "records" / "leak.json")
    with zipfile.ZipFile(export_folder(folder, tmp_path / "y.zip")) as bundle:
        assert not [name for name in bundle.namelist() if "leak" in name or "fifo" in name]
