"""What ``run``/``eval`` say while they compute (repreval.cli.run): plain progress lines when the output is not a
terminal (units done of the total, elapsed, time left), at group ends and at least every heartbeat, and the one
predicted duration of a long run, calibrated on its own first units. The arithmetic is checked by hand on a fake
clock; a real run with its output captured shows the lines."""

from __future__ import annotations

import re
import time

import pytest
import yaml
from conftest import digits_suite

from repreval.cli import main
from repreval.cli import run as run_command
from repreval.cli.run import (
    ProgressLines,
    RunDisplay,
    duration_text,
    predicted_seconds,
    prediction_line,
    progress_line,
)

LINE = re.compile(
    r"^progress: (?P<done>[\d.]+)/(?P<total>\d+) units \((?P<share>\d+) %\), (?P<elapsed>.+?) elapsed"
    r"(?:, (?:about (?P<left>.+?) left|time left unknown))?: (?P<what>.+)$"
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float) -> Clock:
        self.now = 1000.0 + seconds
        return self


def progress_lines(text: str) -> list[re.Match]:
    lines = [line for line in text.splitlines() if line.startswith("progress:")]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m]


@pytest.mark.usefixtures("one_thread")
def test_a_run_whose_output_is_captured_prints_plain_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_command, "LINE_GAP_S", 0.0)  # a line at every group's end
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump(digits_suite()))
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    lines = progress_lines(captured.out)
    assert "progress:" not in captured.err  # stderr: errors and warnings only
    assert "predicted:" not in captured.out  # a short run predicts nothing
    counts = [float(m["done"]) for m in lines]
    assert {m["total"] for m in lines} == {"8"}  # 2 variants × 1 layer × 2 methods × 2 scores
    assert counts == sorted(counts) and counts[-1] == 8 and len(counts) >= 2 and counts[0] < 8
    assert all(m["what"].startswith("ae/") for m in lines)
    assert lines[-1]["share"] == "100" and lines[-1]["left"] is None


def test_lines_at_group_ends_and_heartbeats_on_a_fake_clock(capsys):
    clock = Clock()
    display = ProgressLines(clock, gap=5.0, heartbeat=30.0, thread=False)
    display.started(10)
    display.advanced(0.5, "m/random: 25 % of the maps")  # t=0: a fraction, and the first report (the rate's mark)
    display.advanced(1.5, "m/random/l1/...")  # t=0: a group's end, but within the gap of the start
    clock.at(8)
    display.advanced(2.0, "m/random/l2/...")  # t=8: a group's end, 8 s after the last line
    clock.at(20)
    display.advanced(0.5, "m/random: 10 % of the maps")  # t=20: a fraction within the heartbeat: no line
    clock.at(38)
    display.tick()  # the heartbeat thread at t=38: 30 s since the last line
    clock.at(39)
    display.tick()  # and at t=39: 1 s since
    display.advanced(5.5, "m/random/l4/...")  # t=39: the last group, 1 s after a line: the gap holds it back
    clock.at(40)
    display.finished()  # the final count is always shown
    # by hand: the rate is measured from the first report (t=0, 0.5 units): at t=8, 3.5 units in 8 s, 6 left:
    # 6 × 8 / 3.5 = 13.7 s; at t=38, 4 units in 38 s, 5.5 left: 52.25 s
    assert capsys.readouterr().out.splitlines() == [
        "progress: 4/10 units (40 %), 8 s elapsed, about 14 s left: m/random/l2/...",
        "progress: 4.5/10 units (45 %), 38 s elapsed, about 52 s left: m/random: 10 % of the maps",
        "progress: 10/10 units (100 %), 40 s elapsed: m/random/l4/...",
    ]


def test_after_the_last_unit_the_heartbeat_says_the_run_is_finishing(capsys):
    clock = Clock()
    display = ProgressLines(clock, gap=5.0, heartbeat=30.0, thread=False)
    display.started(2)
    clock.at(6)
    display.advanced(2, "m/random/l1/...")
    clock.at(36)
    display.tick()  # the report's pictures are drawn: no unit moves
    clock.at(37)
    display.finished()  # the final count was shown
    assert capsys.readouterr().out.splitlines() == [
        "progress: 2/2 units (100 %), 6 s elapsed: m/random/l1/...",
        "progress: 2/2 units (100 %), 36 s elapsed: finishing",
    ]


def test_the_heartbeat_thread_writes_while_nothing_moves(capsys):
    display = ProgressLines(gap=1000.0, heartbeat=0.05)
    display.started(10)
    display.advanced(2.5, "m/random: 25 % of the maps")  # then nothing moves

    def stuck(text: str) -> list[re.Match]:
        return [m for m in progress_lines(text) if m["done"] == "2.5"]

    seen = ""
    deadline = time.monotonic() + 20
    while len(stuck(seen)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += capsys.readouterr().out
    display.finished()
    seen += capsys.readouterr().out
    assert len(stuck(seen)) >= 2  # a line per heartbeat, though the count stays where it was
    assert {(m["total"], m["what"]) for m in stuck(seen)} == {("10", "m/random: 25 % of the maps")}
    assert {m["done"] for m in progress_lines(seen)} <= {"0", "2.5"}  # "0": a beat before the first report
    assert display.thread is not None and not display.thread.is_alive()


def test_durations_read_as_people_write_them():
    assert [duration_text(s) for s in (0, 59.4, 65, 600, 3725, -3)] == [
        "0 s",
        "59 s",
        "1 min 05 s",
        "10 min 00 s",
        "1 h 02 min",
        "0 s",
    ]


def test_the_prediction_extrapolates_the_rate_since_the_first_report():
    assert predicted_seconds(30.0, 0.0, 100) is None  # nothing done: no rate
    assert predicted_seconds(30.0, 3.0, 100) == pytest.approx(1000.0)  # no mark: 30 s for 3 units, 100 units
    # marked at (20 s, 1 unit): the 20 s before it (a model trained, data loaded) are paid once, then 9 units in
    # 50 s: 70 s + 90 units × 50/9 s = 570 s
    assert predicted_seconds(70.0, 10.0, 100, (20.0, 1.0)) == pytest.approx(570.0)
    assert predicted_seconds(20.0, 1.0, 100, (20.0, 1.0)) == pytest.approx(2000.0)  # no time since: overall rate
    assert prediction_line(70.0, 10.0, 100, (20.0, 1.0)) == (
        "predicted: about 9 min 30 s in all, 8 min 20 s to go (calibrated on the 9.0 % of the units computed in "
        "50 s; units differ: a rough guide)"
    )
    assert prediction_line(70.0, 90.0, 100, (20.0, 1.0)) is None  # 70 + 10 × 50/89 = 75.6 s: not a long run


def test_a_long_run_is_predicted_once_after_its_calibration(capsys):
    clock = Clock()
    display = RunDisplay(clock)
    display.started(100)
    clock.at(30)
    display.advanced(1, "m/trained/...")  # the first report, after a model was built: the mark
    clock.at(35)
    display.advanced(1, "m/trained/...")  # 5 s of calibration: too early
    assert "predicted" not in capsys.readouterr().out
    clock.at(45)
    display.advanced(2, "m/trained/...")  # 15 s, 3 units since the mark: 45 + 96 × 15/3 = 525 s
    clock.at(100)
    display.advanced(10, "m/random/...")
    assert capsys.readouterr().out.splitlines() == [
        "predicted: about 8 min 45 s in all, 8 min 00 s to go (calibrated on the 3.0 % of the units computed in "
        "15 s; units differ: a rough guide)"
    ]


def test_a_short_run_is_not_predicted(capsys):
    clock = Clock()
    display = RunDisplay(clock)
    display.started(10)
    clock.at(1)
    display.advanced(1, "a")
    clock.at(12)
    display.advanced(4, "b")  # 12 + 5 × 11/4 = 25.75 s: under LONG_RUN_S, and decided once
    clock.at(500)
    display.advanced(1, "c")
    assert capsys.readouterr().out == ""


def test_a_line_before_anything_is_done_says_the_time_left_is_unknown():
    assert (
        progress_line(0.0, 54, 31.0, "starting")
        == "progress: 0/54 units (0 %), 31 s elapsed, time left unknown: starting"
    )
