"""What an executor plugin is handed (:class:`repreval.api.ExecutorJob`): a run's pending units in groups of one
model variant, computed here or as self-contained tasks whose results the driver alone writes, so resume,
leaderboards, reports and failure isolation are those of a local run wherever the units ran."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..api import ExecutorJob, TaskResult, UnitGroup
from ..config import Suite
from ..models import CACHE_ENV, cache_dir
from ..plan import Plan, Unit, make_plan
from ..plugins import Plugins, load_plugins
from ..store import ResultStore
from ..trust import Trust, active, trusting
from .compute import compute, model_of
from .context import Progress, resolve_device
from .inputs import Inputs
from .records import MemorySink, RunOutcome, error_text, failed_record

#: Folders of a task's output that travel back to the driver with its records (maps, explainer pictures)
DRAWINGS = ("maps", "pictures")
#: Test hook: a folder; the first attempt of each task kills its own worker (``kill -9``) after leaving a mark
#: there, so tests can check that a killed worker's units are recomputed
FAULT_ENV = "REPREVAL_FAULT_KILL_WORKER_ONCE"


def one_model(suite: Suite, model_id: str) -> Suite:
    """``suite`` with only ``model_id``: its plan has the same units (ids depend on the model's own fields)."""
    return replace(
        suite,
        models={model_id: suite.models[model_id]},
        model_variants={k: v for k, v in suite.model_variants.items() if k == model_id},
    )


@dataclass(frozen=True)
class GroupTask:
    """One group computed anywhere repreval is installed: plan the one model, compute the units, return the
    records and drawings (pickled to the worker by value; it reads the suite's data and the trained-model cache)."""

    suite: Suite
    blocked: tuple[str, ...]
    model: str
    unit_ids: tuple[str, ...]
    threads: int
    trust: Trust  # the driver's: what torch: may import (a worker has no --trust of its own)

    def __call__(self) -> TaskResult:
        _fault_hook(self.model, self.unit_ids[0])
        torch.set_num_threads(max(1, self.threads))
        plugins = load_plugins(block=self.blocked)
        with (
            tempfile.TemporaryDirectory() as scratch,
            trusting(self.trust),
        ):  # drawings land here and travel back with the records
            plan = make_plan(replace(one_model(self.suite, self.model), output=Path(scratch)), plugins)
            wanted = set(self.unit_ids)
            units = [unit for unit in plan.units if unit.id in wanted]
            if len(units) != len(wanted):
                raise RuntimeError(f"the worker planned {len(units)} of the {len(wanted)} units it was sent")
            sink, outcome = MemorySink(), RunOutcome(output=scratch, total=len(units))
            started = time.perf_counter()
            compute(plan, plugins, units, sink, outcome)
            files = {
                path.relative_to(scratch).as_posix(): path.read_bytes()
                for path in Path(scratch).rglob("*")
                if path.is_file() and path.relative_to(scratch).parts[0] in DRAWINGS
            }
        return TaskResult(sink.records, files, outcome.warnings, time.perf_counter() - started, os.getpid())


def _fault_hook(model: str, first_unit: str) -> None:
    fault = os.environ.get(FAULT_ENV)
    if fault:
        mark = Path(fault) / f"{model}-{first_unit}"
        if not mark.exists():
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def drawing_target(output: Path, name: str) -> Path | None:
    """Where a drawing a task returned as ``name`` goes: ``output/maps/...`` or ``output/pictures/...``; None for
    a name that is absolute, climbs (``..``), is not plain text, or leads out of ``output`` through a link."""
    if not isinstance(name, str):
        return None
    parts = name.split("/")
    plain = name.isprintable() and "\\" not in name and all(part not in ("", ".", "..") for part in parts)
    if not plain or len(parts) < 2 or parts[0] not in DRAWINGS:
        return None
    target = output.joinpath(*parts)
    try:
        inside = not target.is_symlink() and target.resolve().is_relative_to(output.resolve())
    except (OSError, RuntimeError):  # a link loop
        return None
    return target if inside else None


class Job(ExecutorJob):
    """The host's side of an executor's work on one run."""

    def __init__(
        self,
        plan: Plan,
        plugins: Plugins,
        pending: list[Unit],
        store: ResultStore,
        outcome: RunOutcome,
        on_progress: Progress | None,
    ):
        self.plan, self.plugins, self.pending, self.store = plan, plugins, pending, store
        self.outcome, self.on_progress = outcome, on_progress
        self.units: dict[UnitGroup, list[Unit]] = {}
        by_variant: dict[tuple[str, str], list[Unit]] = {}
        for unit in pending:
            by_variant.setdefault((unit.model, unit.variant.label), []).append(unit)
        for (model, variant), units in by_variant.items():
            self.units[UnitGroup(model, variant, len(units))] = units
        self.groups = list(self.units)

    def compute_here(self) -> None:
        compute(self.plan, self.plugins, self.pending, self.store, self.outcome, self.on_progress)

    def prepare_tasks(self) -> dict[str, str]:
        """Train (or load from the cache) every model a pending variant needs, once, here: tasks then read the
        cached weights (``$REPREVAL_CACHE``; on a cluster, storage every node shares)."""
        device = resolve_device(self.plan.suite.device)
        inputs = Inputs(self.plan.suite, self.plugins, device)
        for model_id, config in self.plan.suite.models.items():
            variants = {unit.variant for unit in self.pending if unit.model == model_id}
            if config.train is not None and any(self.plan.variant(variant).needs_weights for variant in variants):
                model_of(self.plan, self.plugins, model_id, inputs, device).trained()
        environment = {CACHE_ENV: str(cache_dir())}
        if os.environ.get(FAULT_ENV):
            environment[FAULT_ENV] = os.environ[FAULT_ENV]
        return environment

    def task(self, group: UnitGroup, threads: int) -> GroupTask:
        unit_ids = tuple(unit.id for unit in self.units[group])
        return GroupTask(self.plan.suite, self.plugins.blocked, group.model, unit_ids, threads, active())

    def accept(self, group: UnitGroup, result: TaskResult) -> None:
        for name, content in result.files.items():  # the task's drawings, written here (inside the folder only)
            target = drawing_target(self.plan.suite.output, name)
            if target is None:
                self.outcome.warnings.append(
                    f"{group.describe()}: a task returned a file outside its drawings: {name!r}"
                )
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        described = {unit.id: unit.describe() for unit in self.units[group]}
        for record in result.records:
            if record.unit_id not in described:
                continue  # not a unit of this group: never written
            self.store.write(record)
            if record.status == "ok":
                self.outcome.computed += 1
            else:
                self.outcome.failures.append((described[record.unit_id], record.error or ""))
        self.outcome.warnings += result.warnings

    def fail(self, group: UnitGroup, exc: BaseException) -> None:
        message = error_text(exc)
        for unit in self.units[group]:
            self.store.write(failed_record(self.plan, unit, message))
            self.outcome.failures.append((unit.describe(), message))

    def progress(self, units: float, what: str) -> None:
        if self.on_progress:
            self.on_progress(units, what)
