"""A unit's record, where records go, and what a run did.

Records are written by the process that owns the results folder: a local run writes each one as it is
computed; a remote task collects its records in memory and the driver writes them (see the executors)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..api import Network
from ..errors import ReprevalError
from ..plan import Plan, Unit, UnitKind
from ..store import ScoreRecord


@dataclass
class RunOutcome:
    """What a run did: units in total, computed, skipped as already done, failed (with errors), wall time."""

    output: str
    total: int = 0
    computed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (unit description, error)
    warnings: list[str] = field(default_factory=list)  # what went wrong besides units (e.g. a picture)
    seconds: float = 0.0


class Sink:
    """Where computed records go: the results folder (``ResultStore`` is one), or a list a remote task
    returns to the driver, which alone writes the folder."""

    def write(self, record: ScoreRecord) -> None:
        raise NotImplementedError


class MemorySink(Sink):
    """Records kept in memory (a remote task's, for the driver to write), and a shard's per-input values of
    units whose records the driver makes once every shard has returned."""

    def __init__(self) -> None:
        self.records: list[ScoreRecord] = []
        self.tallies: list = []  # repreval.runner.attribution.UnitTally

    def write(self, record: ScoreRecord) -> None:
        self.records.append(record)


def record_of(plan: Plan, unit: Unit, **fields) -> ScoreRecord:
    """The record of ``unit`` with the computed ``fields`` (value, per-input values, ... or status and error)."""
    suite = plan.suite
    return ScoreRecord(
        unit_id=unit.id,
        suite=suite.name,
        model=unit.model,
        model_spec=suite.models[unit.model].spec,
        variant=unit.variant.label,
        layer=unit.layer,
        layer_index=0 if unit.kind is UnitKind.EMBEDDING else plan.layers[unit.model].index(unit.layer),
        saliency=unit.saliency.label if unit.saliency else None,
        channel_aggregator=unit.channel_aggregator,
        embedding_aggregator=unit.embedding_aggregator,
        score=unit.score_name,
        higher_is_better=unit.higher_is_better,
        dataset=unit.dataset,
        seed=suite.seed,
        **fields,
    )


def failed_record(plan: Plan, unit: Unit, message: str) -> ScoreRecord:
    """The record of a unit that failed with ``message``: the next run computes it again."""
    return record_of(plan, unit, status="failed", error=message)


def error_text(exc: BaseException) -> str:
    """An exception as one line: a ReprevalError's own, else its type and first line."""
    if isinstance(exc, ReprevalError):
        return exc.one_line()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def finite(*values) -> bool:
    """Whether every value that is not None is a finite number."""
    return all(value is None or math.isfinite(value) for value in values)


def non_finite(network: Network) -> ReprevalError:
    """Why a score is NaN or infinite, as far as the weights tell."""
    broken = [name for name, p in network.module.named_parameters() if not bool(torch.isfinite(p).all())]
    cause = (
        f"NaN or inf in the weights ({broken[0]}{' and others' if len(broken) > 1 else ''})"
        if broken
        else ("NaN or inf in the activations or gradients")
    )
    return ReprevalError(f"the score is not a finite number: {cause}", fix="check the weights file or the inputs")
