"""repreval bench --training: runs every constraint setting per bottleneck (timings are not checked)."""

from __future__ import annotations

import json

from repreval.bench import CONSTRAINT_SETTINGS, run_training_bench
from repreval.cli import main


def test_training_bench_rows(plugins):
    rows = run_training_bench(plugins, bottlenecks=(2, 3), images=128, epochs=1, every=1)
    assert [(r.bottleneck, r.constraints) for r in rows] == [(d, c) for d in (2, 3) for c in CONSTRAINT_SETTINGS]
    for row in rows:
        assert row.seconds > 0 and 0 <= row.train_accuracy <= 1
        assert (row.ratio == 1.0) == (row.constraints == "none")


def test_training_bench_cli_json(capsys, monkeypatch):
    import repreval.bench as bench

    original = bench.run_training_bench
    monkeypatch.setattr(bench, "run_training_bench", lambda plugins, **kw: original(plugins, **(kw | {"images": 64})))
    assert main(["bench", "--training", "--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["command"].startswith("repreval") and len(report["rows"]) == 2 * len(CONSTRAINT_SETTINGS)
