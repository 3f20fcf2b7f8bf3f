"""Result folders as units of exchange: read several, merge their records into one ranking where the cells are
comparable, export one as a single ``.zip`` and import it elsewhere.

Two records of the same metric (score with its options, saliency, aggregators) from different folders are
comparable when they were computed on the same evaluation data (the dataset's kind, options, subset and drift
as each folder's ``suite.yaml`` declares them) with the same seed. Anything else would rank numbers of
different experiments together, so merging refuses it and says which difference it found.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ReprevalError
from .store import LOCK_FILE, RUN_FILE, ResultStore, ScoreRecord, read_record

#: What an export holds besides ``records/``: the files a folder needs to render and to be re-run
EXPORTED_FILES = ("suite.yaml", "report_facts.json", RUN_FILE)
#: Folders of drawings exported with the records
EXPORTED_FOLDERS = ("records", "plots", "pictures")


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
        suite_file, run_file = directory / "suite.yaml", directory / RUN_FILE
        suite = yaml.safe_load(suite_file.read_text()) if suite_file.is_file() else {}
        run = json.loads(run_file.read_text()) if run_file.is_file() else {}
        return cls(directory, records, suite if isinstance(suite, dict) else {}, run, damaged)

    @property
    def name(self) -> str:
        """The suite's name, else the folder's."""
        return str(self.suite.get("name") or self.directory.name)

    def data_of(self, dataset: str | None) -> object:
        """How the folder's suite declares the evaluation dataset ``dataset`` (None: embedding scores)."""
        return (self.suite.get("datasets") or {}).get(dataset) if dataset else None


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
    """Write the folder's records, suite, run configuration, report facts and drawings to one ``.zip``."""
    directory, archive = Path(directory), Path(archive)
    folder = ResultFolder.read(directory)  # refuses a folder without records
    if folder.damaged:
        raise ReprevalError(folder.damaged[0].problem, fix="re-run the suite before exporting its results")
    archive.parent.mkdir(parents=True, exist_ok=True)
    temporary = archive.with_name(f".{archive.name}.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name in EXPORTED_FILES:
            if (directory / name).is_file():
                bundle.write(directory / name, name)
        for folder_name in EXPORTED_FOLDERS:
            for path in sorted((directory / folder_name).glob("*")) if (directory / folder_name).is_dir() else []:
                if path.is_file():
                    bundle.write(path, f"{folder_name}/{path.name}")
    temporary.replace(archive)
    return archive


def import_folder(archive: str | Path, directory: str | Path) -> ResultFolder:
    """Unpack an export into ``directory`` after checking every record in it; a folder that already holds
    results of another run configuration is refused."""
    archive, directory = Path(archive), Path(directory)
    if not archive.is_file():
        raise ReprevalError(f"{str(archive)!r} does not exist", fix="give the .zip that `repreval export` wrote")
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ReprevalError(
            f"{str(archive)!r} is not a zip file", fix="give the .zip that `repreval export` wrote"
        ) from None
    with bundle:
        names = bundle.namelist()
        allowed = set(EXPORTED_FILES) | {n for n in names if n.split("/")[0] in EXPORTED_FOLDERS}
        strays = [n for n in names if n not in allowed or ".." in n or n.startswith("/") or n.count("/") > 1]
        if strays:
            raise ReprevalError(f"{str(archive)!r} holds {strays[0]!r}, which no export writes", fix="re-export it")
        if not any(n.startswith("records/") for n in names):
            raise ReprevalError(f"{str(archive)!r} holds no records", fix="export a folder with results")
        run = json.loads(bundle.read(RUN_FILE)) if RUN_FILE in names else None
        held = directory / RUN_FILE
        if run is not None and held.is_file() and json.loads(held.read_text()) != run:
            raise ReprevalError(
                f"{str(directory)!r} holds results of another run configuration",
                fix="import into an empty folder",
            )
        staging = directory / ".import"
        staging.mkdir(parents=True, exist_ok=True)
        try:
            for name in names:
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bundle.read(name))
                if name.startswith("records/"):
                    read_record(target)  # a damaged record stops the import before anything lands
            for name in names:
                target = directory / name
                target.parent.mkdir(parents=True, exist_ok=True)
                (staging / name).replace(target)
        finally:
            for leftover in sorted(staging.rglob("*"), reverse=True):
                leftover.rmdir() if leftover.is_dir() else leftover.unlink()
            staging.rmdir()
    (directory / LOCK_FILE).unlink(missing_ok=True)
    return ResultFolder.read(directory)
