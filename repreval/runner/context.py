"""What every kind of unit needs while a run computes: the run's context (plan, where records go, what
happened, progress), seeds derived from the suite's, the device."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ReprevalError
from ..plan import Plan, Unit
from ..store import ResultStore
from .records import RunOutcome, Sink, error_text, failed_record

#: ``progress(units, what)``: units advanced (fractions while a long sweep computes), and what is computed
Progress = Callable[[float, str], None]


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (noise set, smoothing, ...) derived from the suite seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a device; CUDA asked for but missing is an
    error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ReprevalError(f"device {name!r} requested but CUDA is not available", fix="use device: cpu (or auto)")
    return torch.device(name)


@dataclass(frozen=True)
class Shard:
    """A task's share of a variant's attribution units: batches ``index`` of ``count`` of each dataset
    (contiguous, numbered as in a whole run, so seeds derived from the batch index are a whole run's). A shard
    returns each unit's per-input values (:class:`repreval.runner.attribution.UnitTally`) instead of records:
    the driver joins them in batch order. The ``lead`` shard also draws the variant's pictures."""

    index: int
    count: int
    lead: bool

    def batches(self, total: int) -> range:
        """This shard's batch indices of ``total`` batches."""
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)


@dataclass
class RunContext:
    """Where a run's results go: the plan, the sink, the outcome and the progress callback; ``shard``: the
    share of the batches a task computes (None: all of them, records written)."""

    plan: Plan
    sink: Sink | ResultStore
    outcome: RunOutcome
    progress: Progress | None
    shard: Shard | None = None

    def fail(self, units: list[Unit], exc: BaseException, *, advance: bool = True) -> None:
        """Record ``units`` as failed with ``exc``'s one line (and move the progress past them)."""
        message = error_text(exc)
        for unit in units:
            self.sink.write(failed_record(self.plan, unit, message))
            self.outcome.failures.append((unit.describe(), message))
        if advance and self.progress:
            self.progress(len(units), units[0].describe())

    def finished(self, group: list[Unit], failed: list[tuple[Unit, Exception]], credited: float = 0.0) -> None:
        """Count a finished group; ``credited``: progress already reported for it while its maps were computed."""
        for unit, error in failed:
            self.fail([unit], error, advance=False)
        self.outcome.computed += len(group) - len(failed)
        if self.progress:
            self.progress(len(group) - credited, group[0].describe())
