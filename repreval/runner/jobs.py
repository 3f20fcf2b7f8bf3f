"""What an executor plugin is handed (:class:`repreval.api.ExecutorJob`): a run's pending units in groups of one
model variant, computed here or as self-contained tasks whose results the driver alone writes, so resume,
leaderboards, reports and failure isolation are those of a local run wherever the units ran."""

from __future__ import annotations

import math
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..api import EmbeddingScore, ExecutorJob, InputSpec, TaskResult, UnitGroup
from ..config import Suite
from ..models import CACHE_ENV
from ..plan import Plan, PluginInstances, Unit, UnitKind
from ..plugins import Plugins, load_plugins
from ..store import ResultStore, ScoreRecord
from ..trust import Trust, active, trusting
from .attribution import UnitTally, unit_record
from .compute import Shipped, compute, model_of
from .context import Progress, Shard, resolve_device
from .inputs import Inputs
from .prediction import predict
from .records import MemorySink, RunOutcome, error_text, failed_record

#: Folders of a task's output that travel back to the driver with its records (maps, explainer pictures)
DRAWINGS = ("maps", "pictures")
#: Test hook: a folder; the first attempt of each task kills its own worker (``kill -9``) after leaving a mark
#: there, so tests can check that a killed worker's units are recomputed
FAULT_ENV = "REPREVAL_FAULT_KILL_WORKER_ONCE"
#: Test hooks of the simulated cluster (tests/cluster/two_nodes.sh): each task leaves a mark
#: ``<MARKS>/<$REPREVAL_TEST_NODE>-<pid>`` in this folder, then waits ``$REPREVAL_TEST_TASK_DELAY`` seconds
MARKS_ENV, NODE_ENV, DELAY_ENV = "REPREVAL_TEST_TASK_MARKS", "REPREVAL_TEST_NODE", "REPREVAL_TEST_TASK_DELAY"


def one_model(suite: Suite, model_id: str) -> Suite:
    """``suite`` with only ``model_id``: its plan has the same units (ids depend on the model's own fields)."""
    return replace(
        suite,
        models={model_id: suite.models[model_id]},
        model_variants={k: v for k, v in suite.model_variants.items() if k == model_id},
    )


def datasets_read(plan: Plan) -> list[str]:
    """The datasets a run's units read: the evaluation's, the explainers' training data and those embedding
    scores name (training data is not: tasks get trained weights)."""
    evaluation = plan.suite.evaluation
    names = [*evaluation.datasets, *([evaluation.explainer_data] if evaluation.explainer_data else [])]
    for choice in evaluation.scores:
        score = plan.score(choice)
        if isinstance(score, EmbeddingScore):
            names += score.datasets()
    return list(dict.fromkeys(names))


def one_model_plan(plan: Plan, model_id: str) -> Plan:
    """``plan`` cut to one model, without its plugin instances (they do not pickle; a task makes its own)."""
    return Plan(
        suite=one_model(plan.suite, model_id),
        units=[unit for unit in plan.units if unit.model == model_id],
        layers={model_id: plan.layers[model_id]},
        variants={model_id: plan.variants[model_id]},
        instances=None,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class GroupTask:
    """One group computed anywhere repreval is installed, from the driver's plan of its model and the
    :class:`Shipped` inputs and weights it is called with: it reads no file of the driver's (no data, no weights,
    no cache: explainers it trains go to a scratch cache) and returns the records and drawings."""

    plan: Plan
    blocked: tuple[str, ...]
    unit_ids: tuple[str, ...]
    threads: int
    trust: Trust  # the driver's: what torch: may import (a worker has no --trust of its own)
    shard: Shard | None = None  # the share of the variant's batches (None: all, records written here)
    versions: tuple[tuple[str, str], ...] = ()  # the driver's (package, version): a worker must have the same

    def __call__(self, shipped: Shipped) -> TaskResult:
        _same_versions(dict(self.versions))
        model = self.plan.units[0].model if self.plan.units else ""
        _fault_hook(model, self.unit_ids[0] + (f"-{self.shard.index}" if self.shard else ""))
        torch.set_num_threads(max(1, self.threads))
        plugins = load_plugins(block=self.blocked)
        with (
            tempfile.TemporaryDirectory() as scratch,
            trusting(self.trust),
            _environment(CACHE_ENV, str(Path(scratch) / "cache")),
        ):  # drawings land in scratch and travel back with the records
            plan = replace(self.plan, suite=replace(self.plan.suite, output=Path(scratch) / "out"))
            plan.instances = PluginInstances(plugins.registries())
            wanted = set(self.unit_ids)
            units = [unit for unit in plan.units if unit.id in wanted]
            if len(units) != len(wanted):
                raise RuntimeError(f"the task holds {len(units)} of the {len(wanted)} units it was sent")
            sink, outcome = MemorySink(), RunOutcome(output=scratch, total=len(units))
            started = time.perf_counter()
            compute(plan, plugins, units, sink, outcome, shipped=shipped, shard=self.shard)
            output = plan.suite.output
            files = {
                path.relative_to(output).as_posix(): path.read_bytes()
                for path in output.rglob("*")
                if path.is_file() and path.relative_to(output).parts[0] in DRAWINGS
            }
        seconds = time.perf_counter() - started
        return TaskResult(sink.records, files, outcome.warnings, seconds, os.getpid(), _node(), sink.tallies)


def versions() -> tuple[tuple[str, str], ...]:
    """The versions a task's numbers depend on: repreval's, and the installed torch's and timm's."""
    import timm

    from .. import __version__

    return (("repreval", __version__), ("torch", torch.__version__), ("timm", timm.__version__))


def _same_versions(driver: dict[str, str]) -> None:
    """Refuse to compute on a worker whose packages differ from the driver's: its numbers could differ."""
    differ = [
        f"{name} {mine} (the driver: {driver[name]})" for name, mine in versions() if driver.get(name, mine) != mine
    ]
    if differ:
        raise RuntimeError(
            f"this worker ({_node()[:8]}) has {', '.join(differ)}: install the driver's versions on every node "
            "(or give Ray a runtime_env with them)"
        )


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``$name`` set to ``value`` for the block, as it was afterwards."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _node() -> str:
    """The Ray node this runs on, else the host name."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # no Ray, or not in a Ray worker
        pass
    return socket.gethostname()


def _fault_hook(model: str, first_unit: str) -> None:
    marks = os.environ.get(MARKS_ENV)
    if marks:
        Path(marks, f"{os.environ.get(NODE_ENV, 'node')}-{os.getpid()}").write_text(f"{model} {first_unit}")
        time.sleep(float(os.environ.get(DELAY_ENV) or 0))
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


@dataclass
class Piece:
    """What one task computes: units of one variant, and the share of its batches (None: every batch; the
    records are written in the task)."""

    units: list[Unit]
    shard: Shard | None = None


@dataclass
class _Joining:
    """A split variant's attribution units waiting for their parts' per-input values."""

    units: dict[str, Unit]  # the units whose values come in parts
    parts: int  # parts holding each such unit (its batch shards)
    waiting: int  # tasks of the variant not yet returned
    tallies: dict[str, list[UnitTally]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


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
        on_note: Callable[[str], None] | None = None,
    ):
        self.plan, self.plugins, self.pending, self.store = plan, plugins, pending, store
        self.outcome, self.on_progress, self.on_note = outcome, on_progress, on_note
        self.by_variant: dict[tuple[str, str], list[Unit]] = {}
        for unit in pending:
            self.by_variant.setdefault((unit.model, unit.variant.label), []).append(unit)
        self.pieces = {UnitGroup(*key, len(units)): Piece(units) for key, units in self.by_variant.items()}
        self.groups = list(self.pieces)
        self.device = plan.suite.device
        self.joining: dict[tuple[str, str], _Joining] = {}

    def compute_here(self) -> None:
        compute(self.plan, self.plugins, self.pending, self.store, self.outcome, self.on_progress)

    def prepare_tasks(self) -> dict[str, str]:
        """Train (or load from the cache) every model a pending variant needs, once, here, and load every dataset
        its units read for its input spec: tasks get both through :meth:`payload` and read no file."""
        device = resolve_device(self.plan.suite.device)
        self.inputs = Inputs(self.plan.suite, self.plugins, device)
        self.shipped = Shipped()
        self.specs: dict[str, InputSpec] = {}
        for model_id in dict.fromkeys(unit.model for unit in self.pending):
            model = model_of(self.plan, self.plugins, model_id, self.inputs, device)
            spec = self.specs[model_id] = model.untrained(self.plan.suite.seed).input_spec
            variants = {unit.variant for unit in self.pending if unit.model == model_id}
            if any(self.plan.variant(variant).needs_weights for variant in variants):
                model.trained()
                assert model._trained_state is not None  # trained() obtained them
                self.shipped.weights[model_id] = (model._trained_state, model.training_log)
            for dataset in datasets_read(self.plan):
                self.shipped.inputs[dataset, spec] = self.inputs.loaded(dataset, spec)
        return {FAULT_ENV: os.environ[FAULT_ENV]} if os.environ.get(FAULT_ENV) else {}

    def split(self, workers: int, parts: int | None = None) -> None:
        """See :meth:`ExecutorJob.split`; after :meth:`prepare_tasks` (the batches are counted on its inputs)."""
        batches = {key: self._batches(units) for key, units in self.by_variant.items()}
        wanted, how = dict.fromkeys(self.by_variant, parts or 1), "as asked"
        seconds = dict.fromkeys(self.by_variant, 1.0)  # a variant's predicted time (without a calibration: alike)
        if parts is None and workers > 1:
            started = time.perf_counter()
            prediction = predict(self.plan, self.plugins, self.inputs)
            seconds = {key: prediction.variant_seconds.get(key[0], 0.0) for key in self.by_variant}
            # layer groups repeat the backward pass through the later layers: only to fill idle workers
            wanted = {
                key: min(count, max(batches[key], workers)) for key, count in choose_parts(seconds, workers).items()
            }
            how = f"calibrated in {time.perf_counter() - started:.1f} s, for {workers} workers"
        self.pieces, self.joining = {}, {}
        made: dict[tuple[str, str], int] = {}
        cost: dict[UnitGroup, float] = {}
        for key, units in self.by_variant.items():
            pieces = split_variant(units, wanted[key], batches[key])
            made[key] = len(pieces)
            attribution = [unit for unit in units if unit.kind is UnitKind.ATTRIBUTION]
            if len(pieces) > 1:
                parts_per_unit = pieces[0].shard.count if pieces[0].shard else 1
                self.joining[key] = _Joining({u.id: u for u in attribution}, parts_per_unit, len(pieces))
            for part, piece in enumerate(pieces):
                share = sum(_share(piece, unit, batches[key]) for unit in piece.units)
                group = UnitGroup(*key, share, part, len(pieces))
                self.pieces[group] = piece
                cost[group] = seconds[key] * group.units / len(units)
        # the longest tasks first (shards differ by a batch; variants by far more): the last to start are short,
        # so the workers finish together
        self.groups = sorted(self.pieces, key=lambda group: -cost[group])
        if parts is not None or workers > 1:
            self.note(f"{_split_text(made)} ({how})")

    def _batches(self, units: list[Unit]) -> int:
        """The most batches any of the units' evaluation datasets has."""
        batch_size = self.plan.suite.evaluation.batch_size
        counts = [
            -(-len(self.shipped.inputs[unit.dataset, self.specs[unit.model]]) // batch_size)
            for unit in units
            if unit.kind is UnitKind.ATTRIBUTION and unit.dataset is not None
        ]
        return max(counts, default=1)

    def payload(self) -> Shipped:
        return self.shipped

    def task(self, group: UnitGroup, threads: int) -> GroupTask:
        piece = self.pieces[group]
        unit_ids = tuple(unit.id for unit in piece.units)
        plan = one_model_plan(self.plan, group.model)
        return GroupTask(plan, self.plugins.blocked, unit_ids, threads, active(), piece.shard, versions())

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
        joining = self.joining.get((group.model, group.variant))
        described = {unit.id: unit.describe() for unit in self.pieces[group].units}
        for record in result.records:
            if record.unit_id not in described:
                continue  # not a unit of this task: never written
            if joining and record.unit_id in joining.units:
                if record.status == "ok" or record.unit_id in joining.failed:
                    continue  # a part's values come as tallies; one failure is enough
                joining.failed.add(record.unit_id)
            self._write(record, described[record.unit_id])
        if joining:
            for tally in result.partials:
                if isinstance(tally, UnitTally) and tally.unit_id in joining.units and tally.unit_id in described:
                    joining.tallies.setdefault(tally.unit_id, []).append(tally)
            self._returned(group)
        self.outcome.warnings += result.warnings

    def fail(self, group: UnitGroup, exc: BaseException) -> None:
        message = error_text(exc)
        joining = self.joining.get((group.model, group.variant))
        for unit in self.pieces[group].units:
            if joining and unit.id in joining.units:
                if unit.id in joining.failed:
                    continue
                joining.failed.add(unit.id)
            self._write(failed_record(self.plan, unit, message), unit.describe())
        if joining:
            self._returned(group)

    def _returned(self, group: UnitGroup) -> None:
        """One more task of a split variant returned; when it is the last, write the joined records."""
        joining = self.joining[group.model, group.variant]
        joining.waiting -= 1
        if joining.waiting:
            return
        for unit_id, unit in joining.units.items():
            if unit_id in joining.failed:
                continue
            tallies = joining.tallies.get(unit_id, [])
            if len(tallies) == joining.parts:
                record = unit_record(self.plan, unit, tallies)
            else:
                missing = joining.parts - len(tallies)
                record = failed_record(self.plan, unit, f"{missing} of its parts returned no values")
            self._write(record, unit.describe())

    def _write(self, record: ScoreRecord, described: str) -> None:
        self.store.write(record)
        if record.status == "ok":
            self.outcome.computed += 1
        else:
            self.outcome.failures.append((described, record.error or ""))

    def progress(self, units: float, what: str) -> None:
        if self.on_progress:
            self.on_progress(units, what)

    def note(self, text: str) -> None:
        if self.on_note:
            self.on_note(text)


#: Tasks per worker the automatic split aims at (more than one: parts of unequal cost still fill the workers), and
#: the shortest task it makes (predicted seconds): a task's start-up (payload, model build) must stay small beside it
TASKS_PER_WORKER, MIN_TASK_SECONDS = 2, 20.0


def choose_parts(seconds: dict[tuple[str, str], float], workers: int) -> dict[tuple[str, str], int]:
    """Tasks per variant, from each variant's predicted seconds: a variant longer than its fair share of the run
    (the total over ``workers`` × :data:`TASKS_PER_WORKER`, but at least :data:`MIN_TASK_SECONDS`) is split
    into parts of about that share."""
    target = max(sum(seconds.values()) / (max(1, workers) * TASKS_PER_WORKER), MIN_TASK_SECONDS)
    return {key: max(1, math.ceil(value / target - 1e-9)) for key, value in seconds.items()}


def split_variant(units: list[Unit], parts: int, batches: int) -> list[Piece]:
    """A variant's units as about ``parts`` tasks: its attribution units' batches in contiguous shards, and when
    it has fewer batches than ``parts``, its layers in contiguous groups too (each group's backward pass runs
    through every later layer again: a costlier split, which the automatic one makes only to fill idle workers).
    The first piece (the lead) also holds the other units (embedding scores, explainers) and draws the
    pictures."""
    attribution = [unit for unit in units if unit.kind is UnitKind.ATTRIBUTION]
    others = [unit for unit in units if unit.kind is not UnitKind.ATTRIBUTION]
    shards = max(1, min(parts, batches))
    layers = list(dict.fromkeys(unit.layer for unit in attribution))
    layer_parts = max(1, min(-(-parts // shards), len(layers)))
    if not attribution or shards * layer_parts == 1:
        return [Piece(units)]
    pieces = []
    for j in range(layer_parts):
        chosen = set(layers[j * len(layers) // layer_parts : (j + 1) * len(layers) // layer_parts])
        of_layers = [unit for unit in attribution if unit.layer in chosen]
        for i in range(shards):
            lead = i == 0 and j == 0
            pieces.append(Piece([*(others if lead else []), *of_layers], Shard(i, shards, lead)))
    return pieces


def _share(piece: Piece, unit: Unit, batches: int) -> float:
    """How much of ``unit`` ``piece`` computes: its shard's share of the batches, for an attribution unit."""
    if piece.shard is None or unit.kind is not UnitKind.ATTRIBUTION:
        return 1.0
    return len(piece.shard.batches(batches)) / batches


def _split_text(parts: dict[tuple[str, str], int]) -> str:
    """``5 tasks for 2 variants (cnn · random in 4)``."""
    split = {key: count for key, count in parts.items() if count > 1}
    variants = f"{len(parts)} variant{'s' if len(parts) > 1 else ''}"
    if not split:
        return f"{len(parts)} task{'s' if len(parts) > 1 else ''}, one per variant"
    named = ", ".join(f"{model} · {variant} in {count}" for (model, variant), count in list(split.items())[:4])
    return f"{sum(parts.values())} tasks for {variants} ({named}{', ...' if len(split) > 4 else ''})"
