"""Embedding-score units (linear probe, classifier accuracy): each score computed once per variant from the
network's embedding or logits, one record per metric."""

from __future__ import annotations

import time
from itertools import groupby
from typing import TYPE_CHECKING

from ..plan import Unit
from .context import derived_seed
from .records import finite, non_finite, record_of

if TYPE_CHECKING:
    from .variants import BuiltVariant


def run_groups(built: BuiltVariant, groups: list[list[Unit]]) -> None:
    """Every embedding-score group of one variant; a group that fails records its units as failed."""
    for group in groups:
        try:
            failed = _run_group(built, group)
        except Exception as exc:
            built.run.fail(group, exc)
            continue
        built.run.finished(group, failed)


def _run_group(built: BuiltVariant, group: list[Unit]) -> list[tuple[Unit, Exception]]:
    plan, network = built.run.plan, built.network
    failed = []
    for _, same_score in groupby(group, key=lambda unit: unit.score.label):
        units = list(same_score)
        started = time.perf_counter()
        score = plan.score(units[0].score)
        try:
            metrics = score.compute(
                network,
                lambda name: built.inputs.training_data(name)(network),
                derived_seed(plan.suite.seed, units[0].score.label),
            )
        except Exception as exc:
            failed += [(unit, exc) for unit in units]
            continue
        seconds = time.perf_counter() - started
        for unit in units:
            value = float(metrics[unit.metric])
            if not finite(value):
                failed.append((unit, non_finite(network)))
                continue
            built.run.sink.write(
                record_of(
                    plan,
                    unit,
                    value=value,
                    values=[value],
                    bound=score.bounds[1] if score.bounds else None,
                    n_inputs=1,
                    seconds=round(seconds, 3),
                    device=str(built.device),
                    **built.shared,
                )
            )
    return failed
