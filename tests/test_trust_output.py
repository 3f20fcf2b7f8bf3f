"""Issue 22, items 9 and 12: user text reaches the terminal exactly as written (never read as rich markup or
emoji), and a library's Python warning never turns a one-line error into several lines."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
import zlib

import pytest
import yaml

from repreval.api import AttributionScore, ScoreValues, hookimpl
from repreval.cli import main

#: strings rich would read as markup (a closing tag with no opening one, a style, a tag-like word) or emoji
HOSTILE = ["[/x]", "[bold]b", "a[b]", ":x:", ":smile:"]

SUITE = {
    "name": "plain",
    "seed": 0,
    "datasets": {"held": {"kind": "digits", "limit": 4}},
    "models": {"ae": {"model": "ae:classifier", "options": {"bottleneck": 4}, "layers": ["encoder.block2"]}},
    "variants": ["random"],
    "evaluation": {
        "dataset": "held",
        "batch_size": 4,
        "saliency": ["gradients"],
        "channel_aggregators": ["abs"],
        "embedding_aggregators": ["mean"],
        "scores": ["noise_score"],
    },
}


def _suite(tmp_path, **changes) -> str:
    data = yaml.safe_load(yaml.safe_dump(SUITE))
    data.update(changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return str(path)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("text", HOSTILE)
def test_user_text_in_an_error_is_printed_as_written(tmp_path, capsys, text):
    models = {"ae": {**SUITE["models"]["ae"], "layers": [f"encoder.block2{text}"]}}
    code = main(["validate", _suite(tmp_path, models=models)])
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"encoder.block2{text}" in lines[0], err


def test_run_and_leaderboard_print_model_ids_as_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_id = "ae a[b] :x: [bold]c"
    models = {model_id: SUITE["models"]["ae"]}
    suite = _suite(tmp_path, models=models, description="d[/x] :smile:")
    assert main(["run", suite, "--out", "out", "--threads", "1", "--boards"]) == 0
    out = capsys.readouterr().out
    assert model_id in out, out
    assert main(["leaderboard", "out", "--boards"]) == 0
    assert model_id in capsys.readouterr().out
    assert main(["leaderboard", "out"]) == 0  # the summary: one model, named in the title
    assert f"summary: {model_id}" in capsys.readouterr().out


def test_paths_with_markup_are_printed_as_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = "res[/x] a[b] :x:"
    assert main(["run", _suite(tmp_path), "--out", folder, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"results in {folder}" in out, out
    assert main(["export", folder, "--out", "e[b].zip"]) == 0
    assert "exported to e[b].zip" in capsys.readouterr().err


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` pixels and whose data is almost empty."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )


def test_a_library_warning_does_not_lengthen_a_one_line_error(tmp_path):
    """PIL warns (two lines: file:line, then the source) about a 10^8-pixel header before the read fails; in a
    real process (pytest would capture the warning)."""
    (tmp_path / "big.png").write_bytes(_png_header(10_000, 10_000))
    datasets = {"held": {"kind": "image_files", "options": {"paths": "big.png"}}}
    command = [sys.executable, "-m", "repreval", "run", _suite(tmp_path, datasets=datasets), "--out", "out"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = _error_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "big.png" in lines[0]


class _WarningScore(AttributionScore):
    """The mean of the map, with a two-line Python warning each time (as torch's are)."""

    name = "warning_score"

    def compute(self, maps, embedding_aggregator):
        warnings.warn("first line of a [bold]library :x: warning\nsecond line", UserWarning, stacklevel=1)
        return ScoreValues(values=maps.real.flatten(1).mean(dim=1))


class _WarningPlugin:
    @hookimpl
    def register_scores(register):
        register(_WarningScore)


def test_warnings_of_a_successful_command_are_one_line_each(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    models = {"ae": {**SUITE["models"]["ae"], "layers": ["encoder.block1", "encoder.block2"]}}
    evaluation = {**SUITE["evaluation"], "scores": ["warning_score"]}
    suite = _suite(tmp_path, models=models, evaluation=evaluation)
    code = main(["run", suite, "--out", "out", "--threads", "1"], extra_plugins=[_WarningPlugin])
    err = capsys.readouterr().err
    assert code == 0, err
    assert _error_lines(err) == ["warning: first line of a [bold]library :x: warning (UserWarning)"], err


def test_an_error_naming_a_key_with_a_newline_or_a_terminal_escape_stays_one_inert_line(tmp_path, capsys):
    evaluation = {**SUITE["evaluation"], "saliency": ["gradients", {"a\nb\x1b[2J": 1}]}
    code = main(["validate", _suite(tmp_path, evaluation=evaluation)])
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "\x1b" not in err and "a\\nb\\x1b[2J" in lines[0], err
