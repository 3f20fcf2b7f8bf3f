"""Run a plan: for each model variant (built once), compute its units and write a record per unit.

* :mod:`.inputs`: the evaluation inputs and noise sets, loaded once per input spec
* :mod:`.records`: a unit's record, where records go, what a run did
* :mod:`.variants`: one model variant: build it, then its units kind by kind
* :mod:`.attribution`, :mod:`.embedding`, :mod:`.explainers`: the three kinds of unit
* :mod:`.pictures`: the maps of a few inputs that reports draw

Finished units are skipped; a unit group that fails is recorded as failed and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from ..api import TrainingContext
from ..config import Suite
from ..models import Model
from ..plan import Plan, Unit, make_plan, set_fields
from ..plugins import Plugins
from ..report import FACTS_FILE, SuiteFacts
from ..store import ResultStore, write_atomic
from .context import Progress, RunContext, derived_seed, resolve_device
from .inputs import Inputs
from .pictures import lacks_pictures, pictures_only
from .records import MemorySink, RunOutcome, Sink
from .variants import run_variant

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
    plan: Plan | None = None,
) -> RunOutcome:
    """Compute every unfinished unit of ``suite`` into its output folder; return what happened.

    ``threads``: torch's CPU threads for the run (None: as they are; :func:`repreval.run` passes
    ``choose_threads()``). ``on_start(pending units)``; ``on_progress(units, what)``: units advanced, fractions
    of units while a long sweep computes its maps (so a display can move and estimate the remaining time).
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
    if suite.executor.kind == "ray":
        from ..executors import Local, run_on_ray

        here = Local(compute, MemorySink, RunOutcome, Inputs, model_of, resolve_device)
        run_on_ray(plan, plugins, pending, store, outcome, on_progress, here)
    else:
        compute(plan, plugins, pending, store, outcome, on_progress)
    outcome.seconds = time.perf_counter() - started
    return outcome


def model_of(plan: Plan, plugins: Plugins, model_id: str, inputs: Inputs, device) -> Model:
    """The suite's model ``model_id``, ready to build, train (once, cached) and derive variants from."""
    suite, config = plan.suite, plan.suite.models[model_id]
    return Model(
        config,
        plugins.model_source.create(config.source_name),
        training_data=inputs.training_data(config.train.dataset) if config.train else None,
        training_data_key=repr(set_fields(suite.datasets[config.train.dataset])) if config.train else "",
        where=f"{suite.where}: models.{model_id}",
        training_context=TrainingContext(plugins.registries(), device),
    )


def compute(
    plan: Plan,
    plugins: Plugins,
    units: list[Unit],
    sink: Sink | ResultStore,
    outcome: RunOutcome,
    on_progress: Progress | None = None,
) -> None:
    """Compute ``units`` here, model by model and variant by variant (each variant built once), writing each
    record to ``sink``; also keep the pictures of variants whose units an earlier run computed."""
    suite = plan.suite
    device = resolve_device(suite.device)
    inputs = Inputs(suite, plugins, device)
    run = RunContext(plan, sink, outcome, on_progress)
    for model_id in suite.models:
        model_units = [unit for unit in units if unit.model == model_id]
        unpictured = [variant for variant in plan.variants[model_id] if lacks_pictures(plan, model_id, variant)]
        if not model_units and not unpictured:
            continue
        model = model_of(plan, plugins, model_id, inputs, device)
        for variant in plan.variants[model_id]:
            variant_units = [unit for unit in model_units if unit.variant == variant]
            if variant_units:
                run_variant(run, model, variant, variant_units, inputs, device)
            elif variant in unpictured:  # every unit done before pictures were kept: draw them now
                pictures_only(run, model, variant, inputs, device)


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
