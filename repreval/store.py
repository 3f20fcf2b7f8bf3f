"""Versioned result records on disk: one JSON file per unit, written atomically.

Layout of a results directory::

    DIR/suite.yaml               the merged suite that produced the records
    DIR/records/<unit id>.json   one record per unit (status "ok" or "failed")

A finished unit ("ok") is never recomputed; a failed one is retried on the next run.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import math
import os
import platform
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

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


#: Counts stay below this, and so do lists of numbers
_LIMIT = 10_000_000
#: Probe layers of one model stay below this (a leaderboard has a column per layer: layer_index 9999999 made
#: one of 5 GB)
_LAYER_LIMIT = 10_000
#: Largest record file read (a list of _LIMIT numbers fits)
MAX_RECORD_BYTES = 256 << 20


#: The ``valid`` rule of a field holding a count
_COUNT = {"valid": lambda value: 0 <= value < _LIMIT}
#: ... and of a field holding a probe layer's index
_LAYER = {"valid": lambda value: 0 <= value < _LAYER_LIMIT}


@dataclass
class ScoreRecord:
    """The stored result of one unit: one score at one probe layer of one model variant (on one dataset).

    The single declaration of the record format: a record read from disk is checked against these fields, their
    types (:func:`_accepts`) and the further rule in a field's ``valid`` metadata."""

    unit_id: str
    suite: str
    model: str
    model_spec: str
    variant: str
    layer: str
    layer_index: int = field(metadata=_LAYER)  # depth order of the probe layer within its model
    saliency: str | None  # None for embedding scores
    channel_aggregator: str | None  # None where no channel aggregator applies (Grad-CAM)
    embedding_aggregator: str | None  # None where the score reads every component (variance score)
    score: str
    higher_is_better: bool
    status: str = field(default="ok", metadata={"valid": lambda value: value in ("ok", "failed")})
    value: float | None = None  # mean over inputs
    spread: float | None = None  # standard deviation over inputs (None for a single value, e.g. accuracy)
    reference: float | None = None  # chance level (e.g. noise vs noise), mean over inputs
    reference_spread: float | None = None
    bound: float | None = None  # the score's upper bound (variance score: 1/4)
    values: list[float] = field(default_factory=list)  # per input
    reference_values: list[float] = field(default_factory=list)  # chance level per input (its noise pair)
    degenerate_maps: float = 0.0  # fraction of component maps that were exactly zero (rounding noise)
    n_inputs: int = field(default=0, metadata=_COUNT)
    dataset: str | None = None  # the evaluation dataset; None for embedding scores
    seed: int = 0
    device: str = "cpu"
    seconds: float = 0.0  # time of the unit's group, shared by its units
    error: str | None = None
    extras: dict[str, float] = field(default_factory=dict)  # e.g. train_seconds of a trained model
    embedding_signature: list[float] = field(default_factory=list)  # see runner.embedding_signature
    provenance: dict[str, str] = field(default_factory=dict)  # e.g. the weights' SHA-256 before and after a step
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
        """Whether ``unit_id`` has a valid record with status "ok" (a failed or damaged one is recomputed)."""
        path = self.path(unit_id)
        if not path.is_file():
            return False
        try:
            return read_record(path).status == "ok"
        except ReprevalError:
            return False

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (created with the folder): a second holder is refused with the holder's pid.
        A folder that cannot be written is one line."""
        lock = self.directory / LOCK_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = _take_lock(lock)
        except OSError as exc:
            raise unwritable(self.directory, exc) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # before letting go: whoever opened it meanwhile sees it gone and retries
            os.close(handle)

    @contextmanager
    def claimed(self, fingerprint: dict, *, force_new: bool = False) -> Iterator[None]:
        """Hold the folder for one run: its lock (:meth:`locked`), the run configuration (``run.json``: a run
        whose numbers would differ, e.g. another seed, is refused instead of mixed into one leaderboard;
        ``force_new`` clears the old results), and no orphan temporary files."""
        with self.locked():
            run_file = self.directory / RUN_FILE
            held = _read_json_object(run_file)
            if held is not None and held != fingerprint and not force_new:
                key = next(k for k in sorted(set(held) | set(fingerprint)) if held.get(k) != fingerprint.get(k))
                raise ReprevalError(
                    f"{str(self.directory)!r} holds results of a run with {key} {held.get(key)!r}, this run has "
                    f"{fingerprint.get(key)!r}: their numbers would mix on one leaderboard",
                    fix="use --out DIR for this run, or --force-new to clear the folder",
                )
            if held is not None and held != fingerprint:  # force_new: the old results go
                for old in (self.records_dir, self.directory / "plots"):
                    shutil.rmtree(old, ignore_errors=True)
            if held is not None:  # repreval's folder: temporary files a killed run left behind go
                self._remove_orphans()
            if held != fingerprint:  # a new folder (or one from before run.json) is adopted as it is
                write_atomic(run_file, json.dumps(fingerprint, indent=1, sort_keys=True))
            yield

    def _remove_orphans(self) -> None:
        """Remove the temporary files of :func:`write_atomic` (by their exact name pattern), nothing else."""
        for folder in (self.directory, self.records_dir):
            for orphan in folder.glob(f".*{TEMPORARY_SUFFIX}") if folder.is_dir() else []:
                if _TEMPORARY_NAME.fullmatch(orphan.name) and stat.S_ISREG(orphan.lstat().st_mode):
                    orphan.unlink(missing_ok=True)

    def write(self, record: ScoreRecord) -> None:
        """Write ``record`` atomically, replacing any earlier record of its unit."""
        write_atomic(self.path(record.unit_id), json.dumps(asdict(record), indent=1))

    def write_suite(self, text: str) -> None:
        """Store the merged suite YAML as ``DIR/suite.yaml``."""
        write_atomic(self.directory / "suite.yaml", text)

    def records(self, on_damaged: Callable[[ReprevalError], None] | None = None) -> list[ScoreRecord]:
        """Every valid record, sorted by file name. A damaged record raises its one-line error, or with
        ``on_damaged`` is reported there and skipped. Raises ReprevalError when there is no record at all."""
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
                records.append(read_record(path))
            except ReprevalError as exc:
                if on_damaged is None:
                    raise
                on_damaged(exc)
        return records


RUN_FILE = "run.json"
LOCK_FILE = ".lock"
#: How :func:`write_atomic` ends its temporary files' names: ``.NAME.XXXXXXXX.repreval-tmp``
TEMPORARY_SUFFIX = ".repreval-tmp"
_TEMPORARY_NAME = re.compile(rf"\..+\.[a-z0-9_]{{8}}{re.escape(TEMPORARY_SUFFIX)}")


def unwritable(path: Path, error: OSError) -> ReprevalError:
    """The one-line error of a folder or file that cannot be written (read-only, full, missing)."""
    return ReprevalError(
        f"cannot write to {str(path)!r}: {error.strerror or type(error).__name__}",
        fix="make it writable, or choose another folder with --out",
    )


def run_fingerprint(suite_name: str, seed: int, device: str) -> dict:
    """What makes a run's numbers what they are, beyond the units' own definitions (which their ids hash):
    the seed, the code and torch versions, the device type. Thread counts are left out: training runs on one
    thread and attribution gives the same numbers on any count."""
    versions = library_versions()
    return {"suite": suite_name, "seed": seed, "repreval": versions["repreval"], "torch": versions["torch"],
            "device": device}  # fmt: skip


def _read_json_object(path: Path) -> dict | None:
    try:
        data = json.loads(read_regular(path, 1 << 20).decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _take_lock(lock: Path) -> int:
    """An open descriptor of ``lock`` holding its ``flock`` (the kernel lets go when the process dies, so a
    killed run's lock is free) with this pid written in it; a lock held by another process refuses."""
    while True:
        handle = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(handle)
            os.close(handle)
            raise _in_use(lock, holder) from None
        if _still_named(handle, lock):
            break
        os.close(handle)  # its holder removed it as it let go: the next one goes by the new file
    holder = _pid_in(handle)
    if holder and holder != os.getpid() and _alive(holder):  # a pid lock written without flock, still alive
        os.close(handle)
        raise _in_use(lock, holder)
    os.ftruncate(handle, 0)
    os.pwrite(handle, str(os.getpid()).encode(), 0)
    return handle


def _still_named(handle: int, lock: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(lock, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _pid_in(handle: int) -> int:
    """The pid a lock file holds (0 when it holds none yet)."""
    text = os.pread(handle, 20, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def _in_use(lock: Path, holder: int) -> ReprevalError:
    pid = f" (pid {holder})" if holder else ""
    return ReprevalError(
        f"{str(lock.parent)!r} is in use by another run{pid}", fix="wait for it to finish, or use --out DIR"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _accepts(kind: Any) -> Callable[[object], bool]:
    """Whether a JSON value fits a record field's type: ``X | None``, ``list[X]`` (shorter than ``_LIMIT``),
    ``dict[K, V]``, a finite number for ``float`` (an ``int`` too), else an instance (a bool only for ``bool``)."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (UnionType, Union):
        (inner,) = [arg for arg in args if arg is not type(None)]
        accepts = _accepts(inner)
        return lambda value: value is None or accepts(value)
    if origin is list:
        item = _accepts(args[0])
        return lambda value: isinstance(value, list) and len(value) < _LIMIT and all(item(v) for v in value)
    if origin is dict:
        key, item = _accepts(args[0]), _accepts(args[1])
        return lambda value: isinstance(value, dict) and all(key(k) and item(v) for k, v in value.items())
    if kind is float:
        return _number
    return lambda value: isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _rule(kind: Any, valid: Callable[[object], bool] | None) -> Callable[[object], bool]:
    """The check of one field: its type, then its own ``valid`` rule (if any)."""
    accepts = _accepts(kind)
    return accepts if valid is None else lambda value: accepts(value) and valid(value)


#: How each record field is checked, derived from :class:`ScoreRecord`
_RULES: dict[str, Callable[[object], bool]] = {
    f.name: _rule(kind, f.metadata.get("valid"))
    for f, kind in zip(fields(ScoreRecord), get_type_hints(ScoreRecord).values(), strict=True)
}
#: The fields a record must have (those without a default)
_REQUIRED = [f.name for f in fields(ScoreRecord) if f.default is MISSING and f.default_factory is MISSING]


def _damaged(path: Path, problem: str) -> ReprevalError:
    return ReprevalError(f"record {str(path)!r} is damaged: {problem}", fix="run the suite again to recompute it")


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, which must be a regular file (not a link, FIFO or device: nothing that blocks or
    leads elsewhere) of at most ``limit`` bytes. Raises ValueError naming the problem, never quoting the file."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        problem = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or type(exc).__name__
        raise ValueError(problem) from None
    with os.fdopen(handle, "rb") as stream:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise ValueError("not a regular file")
        try:
            data = stream.read(limit + 1)
        except OSError as exc:
            raise ValueError(exc.strerror or type(exc).__name__) from None
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def read_record(path: Path) -> ScoreRecord:
    """The record in ``path`` (a regular file), every field type- and range-checked; a damaged file is a
    one-line ReprevalError naming it (it is recomputed by the next run, which overwrites it)."""
    try:
        data = read_regular(path, MAX_RECORD_BYTES)
    except ValueError as exc:
        raise _damaged(path, str(exc)) from None
    return parse_record(data, path)


def parse_record(data: bytes, path: Path) -> ScoreRecord:
    """The record in ``data``, the content of the record file ``path``; errors name the file, never its content."""
    content = _parse_object(data, path)
    schema = content.get("schema")
    if schema != RECORD_SCHEMA:
        shown = schema if type(schema) is int and 0 <= schema < 1000 else "unknown"
        raise ReprevalError(
            f"record {str(path)!r} has schema {shown}, expected {RECORD_SCHEMA}",
            fix="re-run the suite with this version of repreval",
        )
    content = _upgrade(content)
    _check_fields(content, path)
    if content["unit_id"] != path.stem:
        raise _damaged(path, "its unit id is not its file name")
    if content.get("status", "ok") == "ok" and content.get("value") is None:
        raise _damaged(path, "status ok without a value")
    return ScoreRecord(**content)


def _parse_object(data: bytes, path: Path) -> dict:
    """The JSON object in ``data``."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError):
        raise _damaged(path, "not valid JSON") from None
    if not isinstance(parsed, dict):
        raise _damaged(path, f"a JSON {type(parsed).__name__}, not an object")
    return parsed


def _check_fields(data: dict, path: Path) -> None:
    """Every field of ``data`` is a record field holding what it may, and every required one is there."""
    unknown = set(data) - set(_RULES)
    if unknown:
        raise _damaged(path, f"{len(unknown)} field(s) a record does not have")
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise _damaged(path, f"field {missing[0]!r} is missing")
    for name, value in data.items():
        if not _RULES[name](value):
            raise _damaged(path, f"field {name!r} holds a {type(value).__name__} of the wrong type or range")


#: Coordinates that repreval 0.1 wrote as "-" where they did not apply; None since.
_OPTIONAL = ("saliency", "channel_aggregator", "embedding_aggregator", "dataset")


def _upgrade(data: dict) -> dict:
    return data | {key: None for key in _OPTIONAL if data.get(key) == "-"}


@functools.cache
def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb" if isinstance(content, bytes) else "w") as stream:
            stream.write(content)
        os.chmod(temporary, _file_mode())  # mkstemp makes files 0600 whatever the umask
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
