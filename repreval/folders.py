"""Result folders as units of exchange: read several, merge their records into one ranking where the cells are
comparable, export one as a single ``.zip`` and import it elsewhere.

Two records of the same metric (score with its options, saliency, aggregators) from different folders are
comparable when they were computed on the same evaluation data (the dataset's kind, options, subset and drift
as each folder's ``suite.yaml`` declares them) with the same seed. Anything else would rank numbers of
different experiments together, so merging refuses it and says which difference it found.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import ReprevalError
from .findings import FACTS_FILE, SuiteFacts
from .groups import is_group
from .store import (
    RUN_FILE,
    TEMPORARY_SUFFIX,
    ResultStore,
    ScoreRecord,
    parse_record,
    read_regular,
    unwritable,
    write_atomic,
)
from .suite import load_yaml

#: What an export holds besides ``records/``: the files a folder needs to render and to be re-run
EXPORTED_FILES = ("suite.yaml", FACTS_FILE, RUN_FILE)
#: Folders of drawings exported with the records (``maps``: the attribution maps the report draws)
EXPORTED_FOLDERS = ("records", "plots", "pictures", "maps")
#: What the files of a folder end in, where the folder's readers take one kind only
EXPORTED_SUFFIXES = {"records": ".json", "maps": ".npz"}
#: Most entries an import unpacks, and most bytes they may inflate to (checked before anything is read)
MAX_IMPORT_ENTRIES = 100_000
MAX_IMPORT_BYTES = 512 << 20
#: Largest ``suite.yaml``, ``run.json`` or ``report_facts.json`` read
MAX_SETTINGS_BYTES = 16 << 20
#: Longest file name an import writes
MAX_NAME = 200


@dataclass
class ResultFolder:
    """One results directory: its records, the suite it ran (as stored), and how it ran."""

    directory: Path
    records: list[ScoreRecord]
    suite: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    damaged: list[ReprevalError] = field(default_factory=list)

    @classmethod
    def read(cls, directory: str | Path) -> ResultFolder:
        """The folder's records (damaged ones collected, not raised) and its ``suite.yaml`` / ``run.json``."""
        directory = Path(directory)
        damaged: list[ReprevalError] = []
        records = ResultStore(directory).records(on_damaged=damaged.append)
        suite = _stored(directory / "suite.yaml", _suite_mapping)
        run = _stored(directory / RUN_FILE, _json_object)
        return cls(directory, records, suite, run, damaged)

    @property
    def name(self) -> str:
        """The suite's name, else the folder's."""
        return str(self.suite.get("name") or self.directory.name)

    def data_of(self, dataset: str | None) -> object:
        """How the folder's suite declares the evaluation dataset ``dataset`` (None: embedding scores)."""
        return (self.suite.get("datasets") or {}).get(dataset) if dataset else None


def read_facts(directory: Path) -> SuiteFacts:
    """The folder's ``report_facts.json``, every field checked (a folder without one: leaderboards only)."""
    path = directory / FACTS_FILE
    if not _exists(path):
        return SuiteFacts(name=directory.name)
    return SuiteFacts(**_stored(path, _facts))


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _stored(path: Path, parse: Callable[[bytes], dict]) -> dict:
    """The mapping ``parse`` reads from the folder file ``path`` ({} when there is none); a damaged one is a
    one-line error naming it, never quoting it."""
    if not _exists(path):
        return {}
    try:
        return parse(read_regular(path, MAX_SETTINGS_BYTES))
    except ValueError as exc:
        raise ReprevalError(
            f"{str(path)!r} is damaged: {exc}", fix="run the suite again, or import the folder again"
        ) from None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def _json_object(data: bytes) -> dict:
    try:
        parsed = json.loads(_text(data))
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


def _suite_mapping(data: bytes) -> dict:
    try:
        parsed = load_yaml(_text(data))
    except (yaml.YAMLError, RecursionError):
        raise ValueError("not strict YAML (see README.md, 'Trust model')") from None
    if not isinstance(parsed, dict):
        raise ValueError("not a YAML mapping")
    return parsed


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mapping(value: object, holds: Callable[[object], bool]) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and holds(v) for k, v in value.items())


#: What each field of ``report_facts.json`` may hold (see :class:`~repreval.findings.SuiteFacts`)
_FACT_RULES: dict[str, Callable[[object], bool]] = {
    "name": lambda value: isinstance(value, str),
    "description": lambda value: isinstance(value, str),
    "source": lambda value: isinstance(value, str),
    "report": lambda value: value is None or isinstance(value, dict),
    "strengths": lambda value: _mapping(value, _finite),
    "groups": lambda value: _mapping(value, lambda group: isinstance(group, str)),
    "baselines": lambda value: _mapping(value, lambda group: group is None or isinstance(group, str)),
    "variant_groups": lambda value: isinstance(value, list) and all(isinstance(v, str) and is_group(v) for v in value),
}


def _facts(data: bytes) -> dict:
    content = _json_object(data)
    known = {f.name for f in fields(SuiteFacts)}
    if set(content) - known:
        raise ValueError("a field the facts do not have")
    wrong = [key for key, value in content.items() if not _FACT_RULES.get(key, lambda _: True)(value)]
    if wrong:
        raise ValueError(f"field {wrong[0]!r} holds a {type(content[wrong[0]]).__name__} it may not hold")
    try:
        SuiteFacts(**content).config  # noqa: B018 - parses the report section
    except ReprevalError:
        raise ValueError("its report section is not one this version reads") from None
    return content


def _metric(record: ScoreRecord) -> tuple:
    return (record.score, record.saliency, record.channel_aggregator, record.embedding_aggregator)


def merge(folders: list[ResultFolder]) -> list[ScoreRecord]:
    """The records of every folder, as one set that leaderboards rank together. Refused (one line naming both
    folders and the difference) where one metric was computed on different data or seeds in two folders, or
    where the same model and variant appear in two folders with different results."""
    if len(folders) == 1:
        return list(folders[0].records)
    contexts: dict[tuple, tuple[ResultFolder, object, int]] = {}
    rows: dict[tuple, tuple[ResultFolder, ScoreRecord]] = {}
    merged: list[ScoreRecord] = []
    for folder in folders:
        for record in folder.records:
            metric = _metric(record)
            context = (folder.data_of(record.dataset), record.seed)
            if metric in contexts and contexts[metric][0] is not folder:
                other, data, seed = contexts[metric]
                if seed != record.seed:
                    _refuse(other, folder, metric, f"seed {seed} vs {record.seed}")
                if data != context[0]:
                    _refuse(other, folder, metric, f"dataset {record.dataset!r} declared as {data!r} vs {context[0]!r}")
            contexts.setdefault(metric, (folder, *context))
            key = (*metric, record.model, record.variant, record.layer, record.dataset)
            if key in rows and rows[key][0] is not folder:
                first_folder, first = rows[key]
                if first.values != record.values:
                    raise ReprevalError(
                        f"{record.model} · {record.variant} at {record.layer} has different {record.score} values in "
                        f"{str(first_folder.directory)!r} and {str(folder.directory)!r}",
                        fix="merge folders of different models or variants, or rename the model in one suite",
                    )
                continue  # the same cell computed twice: kept once
            rows[key] = (folder, record)
            merged.append(record)
    return merged


def _refuse(first: ResultFolder, second: ResultFolder, metric: tuple, difference: str) -> None:
    label = " · ".join(part for part in metric if part)
    raise ReprevalError(
        f"cannot rank {label} of {str(first.directory)!r} and {str(second.directory)!r} together: {difference}",
        fix="merge runs of the same data and seed, or show the folders separately",
    )


def export_folder(directory: str | Path, archive: str | Path) -> Path:
    """Write the folder's records, suite, run configuration, report facts and drawings to one ``.zip`` (regular
    files only: links, FIFOs and hidden files stay behind)."""
    directory, archive = Path(directory), Path(archive)
    folder = ResultFolder.read(directory)  # refuses a folder without records
    if folder.damaged:
        raise ReprevalError(folder.damaged[0].problem, fix="re-run the suite before exporting its results")
    temporary = archive.with_name(f".{archive.name}{TEMPORARY_SUFFIX}")
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for name in _exported(directory):
                bundle.write(directory / name, name)
        temporary.replace(archive)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise unwritable(archive, exc) from None
    return archive


def _regular(path: Path, kind: int = stat.S_IFREG) -> bool:
    """Whether ``path`` itself (not where a link leads) is a regular file (or of ``kind``, e.g. a folder)."""
    try:
        return stat.S_IFMT(path.lstat().st_mode) == kind
    except OSError:
        return False


def _exported(directory: Path) -> list[str]:
    """The names an export of ``directory`` holds, each a name an import takes."""
    names = [name for name in EXPORTED_FILES if _regular(directory / name)]
    for folder in EXPORTED_FOLDERS:
        if _regular(directory / folder, stat.S_IFDIR):
            names += [f"{folder}/{path.name}" for path in sorted((directory / folder).iterdir()) if _regular(path)]
    return [name for name in names if _importable(name)]


def _importable(name: str) -> bool:
    """Whether an export may hold an entry ``name``: a file it writes, or a plain name in one of its folders."""
    if name in EXPORTED_FILES:
        return True
    folder, _, file = name.partition("/")
    plain = 0 < len(file) <= MAX_NAME and not file.startswith(".") and not set(file) & set("/\\\0")
    return folder in EXPORTED_FOLDERS and plain and file.endswith(EXPORTED_SUFFIXES.get(folder, ""))


def _refused(archive: Path, problem: str, fix: str = "re-export the folder it came from") -> ReprevalError:
    return ReprevalError(f"{str(archive)!r} {problem}", fix=fix)


def import_folder(archive: str | Path, directory: str | Path) -> ResultFolder:
    """Unpack an export into ``directory`` after checking every entry in it (names, sizes, and each file read
    as the folder's readers read it): nothing lands unless all of it would. A folder that already holds results
    of another run configuration, or that a run holds, is refused."""
    archive, directory = Path(archive), Path(directory)
    if not _regular(archive):
        raise ReprevalError(f"{str(archive)!r} is not a file", fix="give the .zip that `repreval export` wrote")
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _refused(archive, "is not a zip file", fix="give the .zip that `repreval export` wrote") from None
    with bundle:
        entries = _checked_entries(bundle, archive)
        with ResultStore(directory).locked():
            _check_run_configuration(bundle, directory)
            for folder in EXPORTED_FOLDERS:
                if os.path.islink(directory / folder):
                    raise _refused(directory, f"holds {folder!r} as a link", fix="import into an empty folder")
            try:
                for entry in entries:
                    write_atomic(directory / entry.filename, bundle.read(entry))
            except OSError as exc:
                raise unwritable(directory, exc) from None
    return ResultFolder.read(directory)


def _checked_entries(bundle: zipfile.ZipFile, archive: Path) -> list[zipfile.ZipInfo]:
    """The archive's file entries (its folders' own entries left out), every one checked."""
    entries = bundle.infolist()
    inflated = sum(entry.file_size for entry in entries)
    if len(entries) > MAX_IMPORT_ENTRIES:
        raise _refused(archive, f"holds {len(entries)} entries, more than the limit of {MAX_IMPORT_ENTRIES}")
    if inflated > MAX_IMPORT_BYTES:
        raise _refused(archive, f"inflates to {inflated} bytes, more than the limit of {MAX_IMPORT_BYTES}")
    files = [entry for entry in entries if entry.filename.rstrip("/") not in EXPORTED_FOLDERS]
    stray = next((entry.filename for entry in files if not _importable(entry.filename)), None)
    if stray is not None:
        raise _refused(archive, f"holds {stray[:MAX_NAME]!r}, which no export writes")
    twice = [name for name, count in Counter(entry.filename for entry in files).items() if count > 1]
    if twice:
        raise _refused(archive, f"holds {twice[0]!r} twice")
    if not any(entry.filename.startswith("records/") for entry in files):
        raise _refused(archive, "holds no records", fix="export a folder with results")
    for entry in files:
        _check_entry(bundle, entry, archive)
    return files


#: How an import reads each file besides records and drawings (as the folder's readers will)
_PARSERS: dict[str, Callable[[bytes], dict]] = {"suite.yaml": _suite_mapping, RUN_FILE: _json_object,
                                                FACTS_FILE: _facts}  # fmt: skip


def _check_entry(bundle: zipfile.ZipFile, entry: zipfile.ZipInfo, archive: Path) -> None:
    """Inflate ``entry`` (its checksum checked) and read it as the folder's readers will."""
    name = entry.filename
    try:
        data = bundle.read(entry)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zlib.error):
        raise _refused(archive, f"holds a damaged entry {name!r}") from None
    if name.startswith("records/"):
        try:
            parse_record(data, Path(name))
        except ReprevalError as exc:
            raise _refused(archive, f"holds a damaged record: {exc.problem}") from None
    elif name in _PARSERS or name.endswith(".npz"):
        try:
            if name in _PARSERS:
                _PARSERS[name](data)
            else:
                _drawing_data(data, name.partition("/")[0])
        except ValueError as exc:
            raise _refused(archive, f"holds a {name[:MAX_NAME]} that is damaged: {exc}") from None


#: The arrays of the drawings' data a report draws from, with their number of dimensions (all share the first:
#: the inputs): maps (``DIR/maps``: also one [inputs, h, w] array per ``method|layer``) and explainer pictures
_DRAWN: dict[str, dict[str, int]] = {
    "maps": {"inputs": 4},
    "pictures": {"images": 4, "part_maps": 4, "performer_maps": 4},
}


#: What reading a damaged ``.npz`` may raise (numpy's messages may quote the file: never shown)
_NPZ_ERRORS = (
    ValueError,
    zipfile.BadZipFile,
    OSError,
    EOFError,
    KeyError,
    RuntimeError,
    NotImplementedError,
    zlib.error,
)


def _npz_arrays(data: bytes) -> dict:
    """The arrays of an ``.npz`` (no pickled objects), once its declared sizes are within the import limit."""
    import io

    import numpy as np

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            inflated = sum(entry.file_size for entry in inner.infolist())
    except _NPZ_ERRORS:
        raise ValueError("not an .npz of arrays") from None
    if inflated > MAX_IMPORT_BYTES:
        raise ValueError(f"its arrays inflate past the limit of {MAX_IMPORT_BYTES} bytes")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except _NPZ_ERRORS:
        raise ValueError("not an .npz of arrays") from None


def _drawing_data(data: bytes, kind: str) -> dict:
    """An ``.npz`` of drawings' data (``kind``: "maps" or "pictures") as the report reads it: plain numeric arrays
    (no pickled objects; a picture's title as text), inflating to at most the import limit, shaped as the runner
    stores them."""
    import numpy as np

    arrays = _npz_arrays(data)
    if any(array.dtype.kind not in "biuf" for key, array in arrays.items() if key != "title"):
        raise ValueError("an array that is not numbers")
    shapes = {key: 3 for key in arrays if "|" in key} if kind == "maps" else {}
    shapes.update(_DRAWN[kind])
    first = {array.shape[0] if array.ndim else 0 for key, array in arrays.items() if key in shapes}
    if any(key not in arrays or arrays[key].ndim != ndim or not arrays[key].size for key, ndim in shapes.items()):
        raise ValueError(f"not the {kind} a run keeps")
    if len(first) != 1 or (kind == "maps" and arrays.get("components", np.zeros(0)).shape != (2,)):
        raise ValueError(f"not the {kind} a run keeps")
    return arrays


def _check_run_configuration(bundle: zipfile.ZipFile, directory: Path) -> None:
    """Refuse to mix the archive's results into a folder that holds another run configuration's."""
    if RUN_FILE not in bundle.namelist() or not _exists(directory / RUN_FILE):
        return
    if _stored(directory / RUN_FILE, _json_object) != json.loads(bundle.read(RUN_FILE)):
        raise ReprevalError(
            f"{str(directory)!r} holds results of another run configuration", fix="import into an empty folder"
        )
