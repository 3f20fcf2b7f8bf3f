"""``repreval bench --suite``: both sides compute the same pinned cells (trained and random ResNet20, six layers,
three methods), their values agree, and repreval's time is split into its phases."""

from __future__ import annotations

import pytest
from conftest import SHARED as DATA
from conftest import needs_shared as needs_data

from repreval.bench import SUITE_LAYERS, SUITE_METHODS, SUITE_VARIANTS, bench_suite, run_suite_bench
from repreval.plan import make_plan
from repreval.suite import parse_suite


@needs_data
def test_the_pinned_suite_plans_exactly_the_loop_cells(plugins, tmp_path):
    suite = parse_suite({**bench_suite(4, DATA), "output": str(tmp_path)}, plugins)
    plan = make_plan(suite, plugins)
    cells = {(u.variant.label, u.layer, u.saliency.label) for u in plan.units if u.saliency is not None}
    expected = {(v, layer, m) for v in SUITE_VARIANTS for layer in SUITE_LAYERS for m in SUITE_METHODS}
    assert cells == expected and len(plan.units) == len(expected)


@needs_data
def test_the_suite_bench_compares_equal_values_and_splits_repreval_time():
    result = run_suite_bench(images=2, data_dir=DATA)
    assert result.cells == 36 and result.max_difference < 1e-6
    parts = (result.repreval_compute_seconds, result.repreval_plan_seconds, result.repreval_report_seconds)
    assert all(part > 0 for part in parts) and result.repreval_startup_seconds > 0
    assert sum(parts) + result.repreval_startup_seconds == pytest.approx(result.repreval_seconds)
