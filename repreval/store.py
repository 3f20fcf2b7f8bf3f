"""Versioned result records on disk: one JSON file per unit, written atomically.

Layout of a results directory::

    DIR/suite.yaml               the merged suite that produced the records
    DIR/records/<unit id>.json   one record per unit (status "ok" or "failed")

A finished unit ("ok") is never recomputed; a failed one is retried on the next run.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import ReprevalError

RECORD_SCHEMA = 1


def library_versions() -> dict[str, str]:
    """Versions of Python, repreval, torch, timm and torchvision (``"?"`` when not installed), kept in each record."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("repreval", "torch", "timm", "torchvision"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "?"
    return versions


@dataclass
class ScoreRecord:
    """The stored result of one unit: one score at one probe layer of one model variant (on one dataset)."""

    unit_id: str
    suite: str
    model: str
    model_spec: str
    variant: str
    layer: str
    layer_index: int  # depth order of the probe layer within its model
    saliency: str | None  # None for embedding scores
    channel_aggregator: str | None  # None where no channel aggregator applies (Grad-CAM)
    embedding_aggregator: str | None  # None where the score reads every component (variance score)
    score: str
    higher_is_better: bool
    status: str = "ok"  # "ok" or "failed"
    value: float | None = None  # mean over inputs
    spread: float | None = None  # standard deviation over inputs (None for a single value, e.g. accuracy)
    reference: float | None = None  # chance level (e.g. noise vs noise), mean over inputs
    reference_spread: float | None = None
    bound: float | None = None  # the score's upper bound (variance score: 1/4)
    values: list[float] = field(default_factory=list)  # per input
    degenerate_maps: float = 0.0  # fraction of component maps that were exactly zero (rounding noise)
    n_inputs: int = 0
    dataset: str | None = None  # the evaluation dataset; None for embedding scores
    seed: int = 0
    device: str = "cpu"
    seconds: float = 0.0  # time of the unit's group, shared by its units
    error: str | None = None
    extras: dict[str, float] = field(default_factory=dict)  # e.g. train_seconds of a trained model
    versions: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema: int = RECORD_SCHEMA

    def ok_value(self) -> float:
        """``value`` of a finished ("ok") record, which always has one; a record without is corrupt."""
        if self.value is None:
            raise ReprevalError(
                f"record {self.unit_id!r} is marked ok but has no value", fix="delete it and run the suite again"
            )
        return self.value


class ResultStore:
    """The records of one results directory, one JSON file per unit in ``DIR/records``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.records_dir = self.directory / "records"

    def path(self, unit_id: str) -> Path:
        """The record file of ``unit_id``."""
        return self.records_dir / f"{unit_id}.json"

    def is_done(self, unit_id: str) -> bool:
        """Whether ``unit_id`` has a readable record with status "ok" (a failed one is retried)."""
        path = self.path(unit_id)
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text()).get("status") == "ok"
        except (OSError, json.JSONDecodeError):
            return False

    def write(self, record: ScoreRecord) -> None:
        """Write ``record`` atomically, replacing any earlier record of its unit."""
        write_atomic(self.path(record.unit_id), json.dumps(asdict(record), indent=1))

    def write_suite(self, text: str) -> None:
        """Store the merged suite YAML as ``DIR/suite.yaml``."""
        write_atomic(self.directory / "suite.yaml", text)

    def records(self) -> list[ScoreRecord]:
        """Every stored record, sorted by file name; raises ReprevalError when there are none, or for a file
        that is not JSON or has another schema."""
        if not self.records_dir.is_dir():
            raise ReprevalError(
                f"no results in {str(self.directory)!r}",
                fix="run a suite first (`repreval run SUITE --out DIR`) or check the directory",
            )
        records = []
        paths = sorted(self.records_dir.glob("*.json"))
        if not paths:
            raise ReprevalError(
                f"no records in {str(self.records_dir)!r}", fix="run a suite first, or check the directory"
            )
        for path in paths:
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise ReprevalError(
                    f"record {str(path)!r} is not valid JSON", fix="delete it and run the suite again"
                ) from None
            if data.get("schema") != RECORD_SCHEMA:
                raise ReprevalError(
                    f"record {str(path)!r} has schema {data.get('schema')}, expected {RECORD_SCHEMA}",
                    fix="re-run the suite with this version of repreval",
                )
            records.append(ScoreRecord(**_upgrade(data)))
        return records


#: Coordinates that repreval 0.1 wrote as "-" where they did not apply; None since.
_OPTIONAL = ("saliency", "channel_aggregator", "embedding_aggregator", "dataset")


def _upgrade(data: dict) -> dict:
    return data | {key: None for key in _OPTIONAL if data.get(key) == "-"}


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
