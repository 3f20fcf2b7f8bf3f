"""`repreval new-plugin NAME --kind KIND`: every kind generates a plugin that passes check_plugin; generated
packages install offline, their own tests pass and `repreval list` shows them; bad requests are one-line errors."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import install_offline

from repreval.cli import main
from repreval.new_plugin import KINDS
from repreval.testing import check_plugin


def generate(tmp_path: Path, name: str, kind: str, capsys) -> Path:
    assert main(["new-plugin", name, "--kind", kind, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"created {tmp_path / name / 'pyproject.toml'}" in out and "next: pip install -e" in out
    return tmp_path / name


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_generates_a_conforming_plugin(kind, tmp_path, capsys, monkeypatch, one_thread):
    name = f"kit_{kind}"
    root = generate(tmp_path, name, kind, capsys)
    package = root / f"{name}_repreval"
    files = {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}
    assert files == {"pyproject.toml", "README.md", "tests/test_plugin.py", f"{name}_repreval/__init__.py"}
    source = (package / "__init__.py").read_text()
    assert set(re.findall(r"^(?:from|import) (repreval\S*)", source, re.M)) == {"repreval.api"}
    assert "$" not in source + (root / "README.md").read_text()  # every template variable filled
    assert f'{name} = "{name}_repreval"' in (root / "pyproject.toml").read_text()

    monkeypatch.syspath_prepend(str(root))
    module = importlib.import_module(f"{name}_repreval")
    checked = check_plugin(module, model=f"{name}:small" if kind == "model_source" else None)
    assert checked[0].kind == (KINDS[kind].registry or kind) and checked[0].name == name
    assert not checked[0].skipped, checked[0]  # the example runs every check, with default options


@pytest.mark.slow
def test_generated_packages_install_and_pass_their_own_tests(tmp_path, capsys):
    """score and path saliency: generated, installed offline into a site folder, then tested in a subprocess."""
    roots = [generate(tmp_path, f"kit_{kind}", kind, capsys) for kind in ("score", "path_saliency")]
    site = tmp_path / "site"
    install_offline(site, *map(str, roots))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("REPREVAL_BLOCK_PLUGINS", None)

    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            *(str(root / "tests") for root in roots),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    listing = (
        "import repreval.cli, repreval.testing, kit_score_repreval\n"
        "assert repreval.testing.check_plugin('kit_score')[0].name == 'kit_score'\n"
        f"assert kit_score_repreval.__file__.startswith({str(site)!r})\n"
        "for kind in ('scores', 'saliency'):\n"
        "    assert repreval.cli.main(['list', kind]) == 0\n"
    )
    listed = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    scores, saliency = listed.stdout.split("registered: saliency")
    assert re.search(r"kit_score\s.*kit_score", scores)  # name ... plugin
    assert re.search(r"kit_path_saliency\s.*kit_path_saliency", saliency)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["Peak", "--kind", "score"], "error: bad plugin name 'Peak': use lowercase letters"),
        (["peak-fraction", "--kind", "score"], "error: bad plugin name 'peak-fraction'"),
        (["import", "--kind", "score"], "error: bad plugin name 'import'"),
        (["peak", "--kind", "scorer"], "error: unknown plugin kind 'scorer'; did you mean 'score'?"),
        (["occupied", "--kind", "score"], "error: '{out}/occupied' already exists and is not empty"),
        (["noise_score", "--kind", "score"], "error: score 'noise_score' already exists; choose another NAME"),
        (["vanilla", "--kind", "saliency"], "error: saliency 'vanilla' already exists"),  # an alias
        (["scores", "--kind", "aggregator"], "error: plugin 'scores' already exists"),  # an entry-point name
    ],
)
def test_bad_requests_are_one_line_errors(argv, message, tmp_path, capsys):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "keep.txt").write_text("mine")
    assert main(["new-plugin", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert message.format(out=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]  # nothing written


def test_kind_aliases_and_an_empty_target_folder_are_accepted(tmp_path, capsys):
    (tmp_path / "median_kit").mkdir()
    root = generate(tmp_path, "median_kit", "aggregators", capsys)
    assert "class MedianKitAggregator(Aggregator):" in (root / "median_kit_repreval" / "__init__.py").read_text()
