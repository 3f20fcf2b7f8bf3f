"""Run a plan: for each model variant (built once), compute its units and write a record per unit.

* :mod:`.inputs`: the evaluation inputs and noise sets, loaded once per input spec
* :mod:`.records`: a unit's record, where records go, what a run did
* :mod:`.variants`: one model variant: build it, then its units kind by kind
* :mod:`.attribution`, :mod:`.embedding`, :mod:`.explainers`: the three kinds of unit
* :mod:`.pictures`: the maps of a few inputs that reports draw
* :mod:`.jobs`: what an executor plugin is handed: the pending units, computed here or as tasks

Finished units are skipped; a unit group that fails is recorded as failed and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from ..config import Suite
from ..findings import FACTS_FILE, SuiteFacts
from ..plan import Plan, Unit, make_plan
from ..plugins import Plugins
from ..store import ResultStore, write_atomic
from .compute import compute, model_of
from .context import Progress, derived_seed, resolve_device
from .inputs import Inputs
from .jobs import Job
from .records import MemorySink, RunOutcome, Sink

__all__ = [
    "run_suite", "compute", "dry_run", "model_of", "RunOutcome", "Sink", "MemorySink", "Inputs", "derived_seed",
    "resolve_device",
]  # fmt: skip


def run_suite(
    suite: Suite,
    plugins: Plugins,
    *,
    threads: int | None = None,
    on_progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    plan: Plan | None = None,
) -> RunOutcome:
    """Compute every unfinished unit of ``suite`` into its output folder; return what happened.

    ``threads``: torch's CPU threads for the run (None: as they are; :func:`repreval.run` passes
    ``choose_threads()``). ``on_start(pending units)``; ``on_progress(units, what)``: units advanced, fractions
    of units while a long sweep computes its maps (so a display can move and estimate the remaining time);
    ``on_note(text)``: a line the executor wants shown once.
    Most callers want :func:`repreval.run`, which also holds the folder and writes the leaderboard and report."""
    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    plan = plan or make_plan(suite, plugins)
    store = ResultStore(suite.output)
    store.write_suite(yaml.safe_dump(suite.raw, sort_keys=False))
    write_atomic(suite.output / FACTS_FILE, SuiteFacts.of(suite).to_json())
    outcome = RunOutcome(output=str(suite.output), total=len(plan.units))
    pending = [unit for unit in plan.units if not store.is_done(unit.id)]
    outcome.skipped = len(plan.units) - len(pending)
    if on_start:
        on_start(len(pending))
    executor = plugins.executor.create(suite.executor.kind, dict(suite.executor.options))
    executor.run(Job(plan, plugins, pending, store, outcome, on_progress, on_note))
    outcome.seconds = time.perf_counter() - started
    return outcome


def dry_run(plan: Plan, plugins: Plugins, units: list[Unit]) -> tuple[RunOutcome, float]:
    """Compute ``units`` for real with nothing kept (records in memory, pictures in a scratch folder that is
    removed); return the outcome and the seconds it took (``repreval validate --calibrate``)."""
    import tempfile
    from dataclasses import replace

    with tempfile.TemporaryDirectory() as scratch:
        scratch_plan = replace(plan, suite=replace(plan.suite, output=Path(scratch)))
        outcome = RunOutcome(output=scratch, total=len(units))
        started = time.perf_counter()
        compute(scratch_plan, plugins, units, MemorySink(), outcome)
        return outcome, time.perf_counter() - started
