"""The front door: :func:`run` does a whole run as ``repreval run`` does it, and returns a :class:`RunResult`.

A run holds its results folder (lock file, ``run.json``: another configuration is refused), computes every
unfinished unit (``repreval.runner``), then writes ``leaderboard.json`` and ``report.md``. The command line
(``repreval run``, ``repreval eval``) and :func:`repreval.evaluate` are thin callers of :func:`run`, so a
folder is the same whichever way it was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReprevalError, suggest
from .leaderboard import Board, build_leaderboards
from .store import ScoreRecord
from .trust import check_suite_address, trusting, user_trust


class RunProgress:
    """What a run tells a display as it goes (every method optional to override; the default shows nothing).
    A display whose ``wants_prediction`` is true also gets the run's predicted cost before it starts."""

    wants_prediction = False

    def predicted_cost(self, prediction) -> int | None:
        """The run's :class:`repreval.runner.prediction.Prediction` (calibrated on each model: seconds). A number
        returned is a count of components to sample instead of computing all (the display decided and said so)."""
        return None

    def planned(self, suite_name: str, units: int, output: Path, threads: int) -> None:
        """The suite is valid and planned: ``units`` in all, results in ``output``."""

    def started(self, pending: int) -> None:
        """Computing starts: ``pending`` units are not done yet."""

    def advanced(self, units: float, what: str) -> None:
        """``units`` more are done (fractions while a long sweep computes); ``what`` is being computed."""

    def noted(self, text: str) -> None:
        """A line worth showing once (an executor's: how it divided the work)."""

    def finished(self) -> None:
        """Computing is over (also after an error)."""


@dataclass
class RunResult:
    """What a run leaves: its folder, the leaderboards and records read back from it, and what happened.

    In a notebook the result shows as the summary table; ``rows()`` gives one dict per (board, row) for
    ``pandas.DataFrame``, ``values()`` the per-input values, ``to_json()`` what ``repreval leaderboard --format
    json`` prints."""

    folder: Path
    suite: str
    boards: list[Board]
    records: list[ScoreRecord]
    computed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (unit, error)
    warnings: list[str] = field(default_factory=list)
    damaged: list[ReprevalError] = field(default_factory=list)  # records that could not be read back
    seconds: float = 0.0  # computing the units
    plan_seconds: float = 0.0  # parsing and planning the suite (building each model's architecture)
    report_seconds: float = 0.0  # the leaderboard, report and pictures
    report: Path | None = None

    @property
    def ok(self) -> bool:
        """No unit failed and every record read back."""
        return not self.failures and not self.damaged

    def to_json(self) -> str:
        """The leaderboards as ``repreval leaderboard DIR --format json`` prints them."""
        from .render import to_json

        return to_json(self.boards)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per leaderboard row: the board's coordinates, the row's model and variant, its average
        and chance level, and its value at each probe layer (``layer:<name>``)."""
        table = []
        for board in self.boards:
            for row in board.rows:
                entry: dict[str, Any] = {
                    "score": board.score,
                    "saliency": board.saliency,
                    "channels": board.channel_aggregator,
                    "components": board.embedding_aggregator,
                    "model": row.model,
                    "variant": row.variant,
                    "dataset": row.dataset or None,
                    "rank": row.rank,
                    "average": row.average,
                    "chance": row.reference_average,
                }
                for layer, cell in zip(board.columns, row.cells):
                    entry[f"layer:{layer}"] = cell.value
                table.append(entry)
        return table

    def values(self, **match: Any) -> dict[str, list[float]]:
        """Per-input values of the records whose fields equal ``match`` (e.g. ``score="noise_score",
        layer="layer2"``), keyed ``model/variant/layer/saliency/channels/components/score``."""
        unknown = [key for key in match if key not in ScoreRecord.__dataclass_fields__]
        if unknown:
            raise ReprevalError(f"records have no field {unknown[0]!r}", fix=suggest(unknown[0], vars(self.records[0])))
        chosen = [r for r in self.records if r.status == "ok" and all(getattr(r, k) == v for k, v in match.items())]
        return {_record_key(record): list(record.values) for record in chosen}

    def summary(self, every: bool = False):
        """The summary table (rich), or with ``every`` one table per board with its layers."""
        from rich.console import Group

        from .render import rich_table, summary_table

        if every:
            return Group(*[rich_table(board) for board in self.boards])
        return summary_table(self.boards)

    def __rich__(self):
        return self.summary()

    def _repr_html_(self) -> str:
        """The boards as HTML tables (what a notebook shows for a result)."""
        from html import escape

        from .render import cell_text

        parts = [f"<p><b>{escape(self.suite)}</b>: {self.computed} computed, {self.skipped} already done, "
                 f"{len(self.failures)} failed; results in <code>{escape(str(self.folder))}</code></p>"]  # fmt: skip
        for board in self.boards:
            head = "".join(f"<th>{escape(h)}</th>" for h in ["", *board.columns, "average", "chance"])
            body = "".join(
                f"<tr><th>{escape(row.name)}</th>"
                + "".join(f"<td>{escape(cell_text(cell))}</td>" for cell in row.cells)
                + "".join(f"<td>{'' if v is None else f'{v:.4g}'}</td>" for v in (row.average, row.reference_average))
                + "</tr>"
                for row in board.rows
            )
            parts.append(f"<table><caption>{escape(board.title)}</caption><tr>{head}</tr>{body}</table>")
        return "\n".join(parts)


def _record_key(record: ScoreRecord) -> str:
    parts = (record.model, record.variant, record.layer, record.saliency, record.channel_aggregator)
    return "/".join(part or "-" for part in (*parts, record.embedding_aggregator, record.score))


def run(
    suite: str | os.PathLike | Mapping,
    *,
    out: str | os.PathLike | None = None,
    seed: int | None = None,
    weights: Mapping[str, str] | None = None,
    device: str | None = None,
    executor: str | None = None,
    address: str | None = None,
    threads: int | None = None,
    force_new: bool = False,
    plugins=None,
    progress: RunProgress | None = None,
    suite_path: str | os.PathLike | None = None,
    trust: Sequence[str] = (),
) -> RunResult:
    """Run ``suite`` (a YAML file, or a suite mapping as such a file holds it) and return its results.

    ``out``: the results folder (default: the suite's ``output``, else ``results/<name>``); ``seed``,
    ``weights`` ({model id: file}, replacing that model's weights or training step), ``device``, ``executor``
    and ``address`` override the suite; ``threads``: torch's CPU threads (default: the cores other processes
    leave idle); ``force_new`` clears a folder that holds a run configured otherwise; ``plugins``: loaded
    plugins (default: every installed one); ``progress``: a :class:`RunProgress` display. Finished units of an
    earlier run into the same folder are kept. ``trust``: modules that ``torch:MODULE:CALLABLE`` may
    import besides torchvision.models and torch.nn (as ``--trust``; a suite never adds to them, see
    :mod:`repreval.trust`), installed or as files in the working directory or beside the suite. A suite's
    ``executor.address`` is refused unless ``address`` names it or the user's config file lists it. Bad input
    raises :class:`~repreval.errors.ReprevalError` (one line naming the problem and the fix) before anything is
    computed; a unit that fails is recorded as failed and listed in ``RunResult.failures`` while the others go
    on."""
    from .suite import resolve_includes

    progress = progress or RunProgress()
    if isinstance(suite, Mapping):
        data, path = dict(suite), Path(suite_path) if suite_path else None
    else:
        path = Path(suite)
        data = resolve_includes(path)
    trusted = user_trust(trust, suite=path)
    if not address:
        check_suite_address(data.get("executor"), trusted)
    _override(data, seed=seed, weights=weights, device=device, executor=executor, address=address)
    with trusting(trusted):
        return _run(data, path, out, threads, force_new, plugins, progress)


def _run(
    data: dict,
    path: Path | None,
    out: str | os.PathLike | None,
    threads: int | None,
    force_new: bool,
    plugins,
    progress: RunProgress,
) -> RunResult:
    from .plan import make_plan
    from .plugins import load_plugins
    from .resources import choose_threads, keep_freed_memory
    from .runner import resolve_device, run_suite
    from .store import ResultStore, run_fingerprint
    from .suite import parse_suite

    if threads is not None and threads < 1:
        raise ReprevalError(f"threads must be at least 1, got {threads}", fix="e.g. --threads 2")
    plugins = plugins if plugins is not None else load_plugins()
    parsed = parse_suite(data, plugins, path=path)
    if out is not None:
        parsed.output = Path(out)
    planning = time.perf_counter()
    plan = make_plan(parsed, plugins)
    plan_seconds = time.perf_counter() - planning
    chosen_threads = choose_threads(threads)
    keep_freed_memory()
    progress.planned(parsed.name, len(plan.units), parsed.output, chosen_threads)
    if progress.wants_prediction:
        parsed, plan = _predicted(data, path, out, plugins, plan, progress, chosen_threads)

    store = ResultStore(parsed.output)
    fingerprint = run_fingerprint(parsed.name, parsed.seed, resolve_device(parsed.device).type)
    if parsed.environment:  # the values of the suite's variables, hashed: never stored
        fingerprint["environment"] = parsed.environment
    with store.claimed(fingerprint, force_new=force_new):
        try:
            done = run_suite(
                parsed, plugins, plan=plan, threads=chosen_threads, on_start=progress.started,
                on_progress=progress.advanced, on_note=progress.noted,
            )  # fmt: skip
        finally:
            progress.finished()
        reporting = time.perf_counter()
        result = write_summaries(parsed.output, parsed.name)
        result.report_seconds = time.perf_counter() - reporting
    result.computed, result.skipped, result.seconds = done.computed, done.skipped, done.seconds
    result.plan_seconds = plan_seconds
    result.failures, result.warnings = done.failures, plan.notes + done.warnings
    return result


def _predicted(data: dict, path, out, plugins, plan, progress: RunProgress, threads: int):
    """Tell ``progress`` the run's predicted cost; where it answers with a number of components (eval's default
    for a long exact run), the suite and plan that estimate from that many instead (the exact ones when a score
    cannot estimate: said in a warning)."""
    from .plan import make_plan
    from .resources import torch_threads
    from .runner.prediction import predict
    from .suite import parse_suite

    with torch_threads(threads):  # as the run will compute: an oversubscribed core would mislead
        sampled = progress.predicted_cost(predict(plan, plugins))
    if sampled is None:
        return plan.suite, plan
    data = {**data, "evaluation": {**data.get("evaluation", {}), "sample_components": sampled}}
    try:
        parsed = parse_suite(data, plugins, path=path)
        if out is not None:
            parsed.output = Path(out)
        return parsed, make_plan(parsed, plugins)
    except ReprevalError as exc:
        plan.notes.append(f"every component computed after all: {exc.problem}")
        return plan.suite, plan


def write_summaries(folder: str | os.PathLike, suite: str = "") -> RunResult:
    """Write the folder's ``leaderboard.json`` and ``report.md`` (with ``plots/``) from its records, as a run
    ends (``repreval import`` does the same); return the folder's results. The caller holds the folder."""
    from .render import to_json
    from .render.report import write_report
    from .store import write_atomic

    result = read_results(folder, suite)
    write_atomic(result.folder / "leaderboard.json", to_json(result.boards))
    result.report = write_report(result.folder)
    return result


def read_results(folder: str | os.PathLike, suite: str = "") -> RunResult:
    """The leaderboards and records of a results folder (damaged records listed in ``damaged``, not raised)."""
    from .folders import read_facts
    from .store import ResultStore

    damaged: list[ReprevalError] = []
    records = ResultStore(folder).records(on_damaged=damaged.append)
    name = suite or (records[0].suite if records else Path(folder).name)
    groups = read_facts(Path(folder)).variant_groups  # seed groups: one row each on the boards
    return RunResult(Path(folder), name, build_leaderboards(records, groups=groups), records, damaged=damaged)


def _override(
    data: dict,
    *,
    seed: int | None,
    weights: Mapping[str, str] | None,
    device: str | None,
    executor: str | None,
    address: str | None,
) -> None:
    """Apply a caller's overrides to the suite mapping ``data`` (in place)."""
    if seed is not None:
        data["seed"] = seed
    models = data.get("models") or {}
    for model_id, file in (weights or {}).items():
        if model_id not in models:
            raise ReprevalError(
                f"weights {f'{model_id}={file}'!r} names no model of the suite",
                fix=suggest(model_id, models) if models else "use MODEL=PATH",
            )
        models[model_id]["weights"] = file
        models[model_id].pop("train", None)
    if device:
        data["device"] = device
    if executor or address:
        chosen = data.get("executor") or {}
        chosen = {"kind": chosen} if isinstance(chosen, str) else dict(chosen)
        if executor and executor != chosen.get("kind"):  # another executor: the suite's options are not its
            chosen = {"kind": executor}
        if address:
            chosen["address"] = address
        data["executor"] = chosen


#: Scores that read labelled data through two disjoint splits (fit on one, score on the other)
DOWNSTREAM_SCORES = {
    "linear_probe": {"linear_probe": {"train": "probe_train", "test": "probe_test"}},
    "classifier_accuracy": {"classifier_accuracy": {"dataset": "probe_test"}},
}


def one_model_suite(
    name: str,
    model_id: str,
    model: dict,
    inputs: dict,
    *,
    saliency: list,
    scores: list,
    variants: list,
    seed: int = 0,
    probe: Callable[[int], dict] | None = None,
    evaluation: Mapping[str, Any] | None = None,
) -> dict:
    """The suite of one model (``repreval eval``, :func:`repreval.evaluate`): ``inputs`` is its dataset entry;
    ``probe(part)`` gives the labelled dataset entry of the downstream scores' split ``part`` (0: fit, 1:
    score; needed when ``scores`` name one). Its output folder is ``results/<name>-<hash of the suite>``: each
    configuration gets its own folder, so two evaluations never mix on one leaderboard."""
    datasets = {"inputs": inputs}
    wanted = [score for score in scores if isinstance(score, str) and score in DOWNSTREAM_SCORES]
    if wanted:
        if probe is None:
            raise ReprevalError(f"{wanted[0]} needs labelled data", fix="give labelled probe data")
        datasets["probe_train"], datasets["probe_test"] = probe(0), probe(1)
    data = {
        "name": name,
        "seed": seed,
        "datasets": datasets,
        "models": {model_id: model},
        "variants": list(variants),
        "evaluation": {
            "dataset": "inputs",
            "saliency": list(saliency),
            "channel_aggregators": ["abs"],
            # var over components is what the variance score reads; both have estimates from sampled components
            "embedding_aggregators": ["mean", "var"] if "variance_score" in scores else ["mean"],
            "scores": [DOWNSTREAM_SCORES.get(score, score) if isinstance(score, str) else score for score in scores],
            **{key: value for key, value in (evaluation or {}).items() if value is not None},
        },
    }
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]
    data["output"] = f"results/{name}-{digest}"
    return data
