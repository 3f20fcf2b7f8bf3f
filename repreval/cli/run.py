"""``repreval run SUITE`` and ``repreval eval MODEL``: both call :func:`repreval.runs.run` and print what it left."""

from __future__ import annotations

import argparse
import fnmatch
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..errors import ReprevalError
from ..render import plain
from ..runs import RunProgress, one_model_suite, run
from ..trust import TRUST_HELP
from ._common import (
    EXIT_OK,
    EXIT_UNITS_FAILED,
    Command,
    add_model_options,
    console,
    errors,
    key_values,
    plugins_of,
    print_boards,
    print_warning,
    report_damaged,
    say,
    short_model_name,
)


def add_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    """What ``run`` and ``eval`` share: where units run, the results folder, device, threads, display."""
    parser.add_argument(
        "--executor", metavar="NAME", help="where the units run: local, ray, ... (`repreval list executors`)"
    )
    parser.add_argument(
        "--address", help="a Ray cluster to join, HOST:PORT (with --executor ray); a suite's own address is refused"
    )
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE", help=TRUST_HELP)
    parser.add_argument("--boards", action="store_true", help="print every board with its layers, not the summary")
    parser.add_argument("--out", help=f"results directory (default: {default_out})")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the suite)")
    parser.add_argument(
        "--force-new",
        action="store_true",
        help="clear the results folder when it holds a run configured otherwise (another seed, version, device)",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: the cores not busy with other processes)"
    )


# -- run -----------------------------------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``run``'s arguments."""
    parser.add_argument("suite", help="suite YAML file")
    add_run_options(parser, "from the suite")
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="MODEL=PATH",
        help="weights file for a model of the suite (overrides its weights/train)",
    )
    parser.add_argument("--seed", type=int, help="override the suite's seed")


def handle_run(args: argparse.Namespace) -> int:
    """``repreval run SUITE``: run it (``--seed``/``--weights`` override the suite), show its leaderboards."""
    weights = {}
    for item in args.weights:
        model_id, sep, path = item.partition("=")
        if not sep or not model_id:
            raise ReprevalError(f"--weights {item!r} is not MODEL=PATH", fix="e.g. --weights classifier=model.pt")
        weights[model_id] = path
    return run_and_print(args.suite, args, seed=args.seed, weights=weights)


# -- eval ----------------------------------------------------------------------------------------------------


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """``eval``'s arguments."""
    parser.add_argument("model", help="SOURCE:NAME, e.g. timm:resnet18")
    parser.add_argument(
        "--weights", help="local weights file, or 'hub' (needs internet); without it only the random variant runs"
    )
    parser.add_argument(
        "--weights-match",
        choices=["name", "position"],
        default="name",
        help="match checkpoint tensors by key name (default) or by position",
    )
    parser.add_argument(
        "--data",
        default="digits",
        metavar="KIND[:PATH]",
        help="dataset, e.g. digits, image_folder:DIR, image_files:'DIR/*.jpg', mnist:DIR (default: digits)",
    )
    parser.add_argument("--limit", type=int, default=8, help="number of inputs (default 8)")
    parser.add_argument("--layers", help="comma-separated probe layers (default: the model's stages)")
    parser.add_argument("--embedding", help="module whose pooled output is the embedding (default: the model's)")
    parser.add_argument(
        "--saliency", default="gradients,activations_x_gradients,grad_cam", help="comma-separated saliency methods"
    )
    parser.add_argument(
        "--scores",
        default="noise_score,variance_score",
        help="comma-separated scores; linear_probe and classifier_accuracy use --probe-data",
    )
    parser.add_argument(
        "--probe-data",
        metavar="KIND[:PATH]",
        help="labelled dataset for linear_probe (fit on one split, scored on another) and classifier_accuracy "
        "(the second split); default: --data",
    )
    parser.add_argument(
        "--probe-limit", type=int, default=500, help="inputs in each of the two downstream splits (default 500)"
    )
    parser.add_argument(
        "--variants", help="comma-separated variants (default: trained,random with weights, else random)"
    )
    add_model_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, help="inputs per engine call (suite key evaluation.batch_size)")
    parser.add_argument("--memory-budget", help="memory for one engine call, e.g. 4GiB (evaluation.memory_budget)")
    parser.add_argument("--strategy", choices=["auto", "reverse", "forward"], help="engine mode (evaluation.strategy)")
    parser.add_argument(
        "--sample-components",
        type=components_choice,
        metavar="K|all",
        help="estimate scores from K sampled components, with errors; 'all': every component (default: all, unless "
        "the exact run is predicted to take over 10 min with D >= 256: then the k of docs/estimates.md's rule)",
    )
    add_run_options(parser, "results/eval-<model>-<hash>")


def handle_eval(args: argparse.Namespace) -> int:
    """``repreval eval MODEL``: run a one-model suite built from the command-line options."""
    scores = args.scores.split(",")
    if {"linear_probe", "classifier_accuracy"} & set(scores) and args.probe_limit < 1:
        raise ReprevalError(f"--probe-limit must be at least 1, got {args.probe_limit}")
    model = {"model": args.model, "options": key_values(args.option)}
    if args.weights:
        model["weights"] = args.weights
        model["weights_match"] = args.weights_match
    if args.layers:
        model["layers"] = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if args.embedding:
        model["embedding"] = args.embedding
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in short_model_name(args.model))
    data = one_model_suite(
        f"eval-{slug}",
        slug,
        model,
        dataset_entry(args.data, limit=args.limit),
        saliency=args.saliency.split(","),
        scores=scores,
        variants=args.variants.split(",") if args.variants else (["trained", "random"] if args.weights else ["random"]),
        seed=args.seed,
        # two disjoint splits of one permutation of --probe-data
        probe=lambda part: dataset_entry(
            args.probe_data or args.data,
            limit=args.probe_limit,
            **({"skip": args.probe_limit} if part else {}),
            seed=0,
        ),  # fmt: skip
        evaluation={
            "batch_size": args.batch_size,
            "memory_budget": args.memory_budget,
            "strategy": args.strategy,
            "sample_components": args.sample_components if args.sample_components != "all" else None,
        },
    )
    try:
        return run_and_print(data, args, predict=True)
    except ReprevalError as exc:  # say where in the flags the user typed, not in the suite eval built
        if exc.where and exc.where.startswith("suite: "):
            exc.where = eval_flag(exc.where.removeprefix("suite: "), args.model)
        raise ReprevalError(exc.problem, where=exc.where, fix=exc.fix) from None


def dataset_entry(text: str, **subset) -> dict:
    """``KIND[:PATH]`` (as --data takes it) as a suite dataset entry with the given subset keys."""
    kind, _, path = text.partition(":")
    dataset: dict = {"kind": kind, **subset}
    if path:
        dataset["options"] = {"paths" if kind == "image_files" else "path": path}
    return dataset


#: eval's flags by the suite key they fill (the first matching prefix wins)
EVAL_FLAGS = (
    ("models.*.weights", "--weights"),
    ("models.*.layers", "--layers"),
    ("models.*.embedding", "--embedding"),
    ("models.*.options", "--option"),
    ("models.", "{model}"),
    ("datasets.probe_", "--probe-data"),
    ("datasets.", "--data"),
    ("variants", "--variants"),
    ("evaluation.saliency", "--saliency"),
    ("evaluation.scores", "--scores"),
    ("evaluation.batch_size", "--batch-size"),
    ("evaluation.memory_budget", "--memory-budget"),
    ("evaluation.strategy", "--strategy"),
    ("evaluation.sample_components", "--sample-components"),
    ("device", "--device"),
    ("executor", "--executor"),
    ("seed", "--seed"),
)


def eval_flag(key: str, model: str) -> str:
    """The flag of ``repreval eval`` that filled suite key ``key``."""
    for pattern, flag in EVAL_FLAGS:
        if fnmatch.fnmatch(key, pattern + "*"):
            return flag.format(model=model)
    return key


# -- both ----------------------------------------------------------------------------------------------------


#: Plain progress lines (output not a terminal): one when a unit group finishes, at most every LINE_GAP_S
#: seconds, and at least every HEARTBEAT_S seconds while a long group computes
LINE_GAP_S, HEARTBEAT_S = 5.0, 30.0
#: After CALIBRATION_S seconds of computing, the run's duration is predicted once, and said when over LONG_RUN_S
CALIBRATION_S, LONG_RUN_S = 10.0, 120.0


def duration_text(seconds: float) -> str:
    """``45 s``, ``3 min 05 s`` or ``2 h 05 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


#: A rate measurement: (seconds elapsed, units done) at the run's first progress report
Mark = tuple[float, float]


def predicted_seconds(elapsed: float, done: float, total: int, first: Mark | None = None) -> float | None:
    """The whole run's seconds if its ``total - done`` units left go at the rate measured so far (``validate
    --calibrate``'s extrapolation, on the run's own units: no extra work): the rate since the ``first`` progress
    report (what came before it, building or training a model and loading data, is not a cost per unit), else
    over all of ``elapsed``; None before anything is done."""
    if first is not None and done > first[1] and elapsed > first[0]:
        return elapsed + (total - done) * (elapsed - first[0]) / (done - first[1])
    return elapsed * total / done if done > 0 else None


def prediction_line(elapsed: float, done: float, total: int, first: Mark) -> str | None:
    """``predicted: about ...`` from the units done since the ``first`` progress report, or None when the run
    will not take LONG_RUN_S."""
    predicted = predicted_seconds(elapsed, done, total, first)
    if predicted is None or predicted < LONG_RUN_S:
        return None
    return (
        f"predicted: about {duration_text(predicted)} in all, {duration_text(predicted - elapsed)} to go (calibrated "
        f"on the {100 * (done - first[1]) / total:.1f} % of the units computed in {duration_text(elapsed - first[0])}; "
        "units differ: a rough guide)"
    )


def progress_line(done: float, total: int, elapsed: float, what: str, first: Mark | None = None) -> str:
    """``progress: 12.5/54 units (23 %), 1 min 05 s elapsed, about 3 min 40 s left: WHAT``."""
    predicted = predicted_seconds(elapsed, done, total, first)
    left = "time left unknown" if predicted is None else f"about {duration_text(predicted - elapsed)} left"
    left = "" if total and done >= total else f", {left}"
    count = f"{done:.0f}" if abs(done - round(done)) < 0.05 else f"{done:.1f}"
    share = 100 * done / total if total else 100.0
    return f"progress: {count}/{total} units ({share:.0f} %), {duration_text(elapsed)} elapsed{left}: {what}"


#: Above this predicted duration (seconds) eval suggests estimates from sampled components, where D is at least
#: ESTIMATES_FROM_DIM
LONG_PREDICTION_S, ESTIMATES_FROM_DIM = 600, 256


def prediction_text(predicted) -> str:
    """``predicted: about 12 min ...`` for a :class:`repreval.runner.prediction.Prediction`."""
    left = predicted.not_predicted
    named = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    left_out = f"; not included: {named}" if left else ""
    fixed = duration_text(predicted.total_seconds - predicted.seconds)
    return (
        f"predicted: about {duration_text(predicted.total_seconds)} on this machine (maps "
        f"{duration_text(predicted.seconds)}, start-up and report ~{fixed}), peak memory "
        f"~{predicted.peak_bytes / 2**20:.0f} MB{left_out} (calibrated in {predicted.calibration_seconds:.1f} s)"
    )


def components_choice(text: str) -> int | str:
    """``--sample-components``: a count of components, or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of components or 'all', got {text!r}") from None


def estimated_components(predicted, sampled: int | str | None) -> int | None:
    """eval's default when ``--sample-components`` is not given: the k of the documented rule
    (:func:`repreval.rank_agreement.recommended_components`) when the exact run is predicted to take over
    LONG_PREDICTION_S and D is at least ESTIMATES_FROM_DIM; None: compute every component."""
    if sampled is not None or predicted.total_seconds < LONG_PREDICTION_S or predicted.largest_dim < ESTIMATES_FROM_DIM:
        return None
    from ..rank_agreement import recommended_components

    return recommended_components(predicted.largest_dim)


class RunDisplay(RunProgress):
    """What ``run`` and ``eval`` show: the plan's one line; once the run has computed for CALIBRATION_S seconds
    after its first progress report, a predicted duration if it looks longer than LONG_RUN_S; the progress (how,
    the subclasses say). Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.lock = clock, threading.Lock()
        self.total, self.done, self.what = 0, 0.0, "starting"
        self.started_at: float | None = None
        self.first: Mark | None = None  # the first progress report: the rate is measured from it
        self.predicted = False
        self.units: int | None = None  # the plan's
        self.sampled_components: int | str | None = None  # eval's --sample-components (None: its default rule)

    def planned(self, suite_name: str, units: int, output: Path, threads: int) -> None:
        self.units = units
        say(plain(suite_name, "bold"), f": {units} units, results in {output} ({threads} CPU threads)")

    def predicted_cost(self, prediction) -> int | None:
        say(prediction_text(prediction))
        k = estimated_components(prediction, self.sampled_components)
        if k is not None:
            print_warning(
                f"exact scores look long here: estimating every score from {k} of the {prediction.largest_dim} "
                f"components instead (with standard errors, about {prediction.largest_dim / k:.0f}× less computing; "
                "docs/estimates.md: how estimates rank models); --sample-components all computes every component"
            )
        return k

    def started(self, pending: int) -> None:
        if self.units is not None and pending < self.units:  # the counts below are of the units left
            say(f"{self.units - pending} of them already done, {pending} to compute")
        with self.lock:
            self.total, self.started_at = pending, self.clock()

    def noted(self, text: str) -> None:
        say(text)

    def advanced(self, units: float, what: str) -> None:
        with self.lock:
            self.done, self.what = min(self.total, self.done + units), what
            if self.first is None:
                self.first = (self.elapsed(), self.done)
            elif not self.predicted and self.elapsed() - self.first[0] >= CALIBRATION_S:
                self.predicted = True
                line = prediction_line(self.elapsed(), self.done, self.total, self.first)
                if line:
                    say(line)
            self.moved()

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else self.clock() - self.started_at

    def moved(self) -> None:
        """The count or ``what`` changed (the lock is held)."""


class ProgressBar(RunDisplay):
    """Progress as a bar on the terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )  # fmt: skip
        self.task = self.bar.add_task("starting", total=None)

    def started(self, pending: int) -> None:
        super().started(pending)
        self.bar.start()
        self.bar.update(self.task, total=pending, description="computing")

    def moved(self) -> None:
        self.bar.update(self.task, completed=self.done, description=self.what)

    def finished(self) -> None:
        self.bar.stop()


class ProgressLines(RunDisplay):
    """Progress as plain lines (output to a log file, a pipe): units done of the total, elapsed, time left, what is
    computed; one when a unit group finishes (at most every ``gap`` seconds) and at least every ``heartbeat``
    seconds, also while one long group computes (from a thread; ``thread=False``: the caller calls :meth:`tick`)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        gap: float = LINE_GAP_S,
        heartbeat: float = HEARTBEAT_S,
        thread: bool = True,
    ) -> None:
        super().__init__(clock)
        self.gap, self.heartbeat, self.threaded = gap, heartbeat, thread
        self.last_line = 0.0  # when the last line was written
        self.shown: tuple[float, str] | None = None  # the count and what it showed
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def started(self, pending: int) -> None:
        super().started(pending)
        self.last_line = self.clock()
        if self.threaded:
            self.thread = threading.Thread(target=self._beat, name="repreval-progress", daemon=True)
            self.thread.start()

    def moved(self) -> None:
        # sweeps report fractions of units; a finished group brings the count back to a whole number
        group_done = abs(self.done - round(self.done)) < 1e-6
        since = self.clock() - self.last_line
        if (group_done and since >= self.gap) or since >= self.heartbeat:
            self.write()

    def tick(self) -> None:
        """A line if none was written for ``heartbeat`` seconds (the thread calls this)."""
        with self.lock:
            if self.clock() - self.last_line >= self.heartbeat:
                # every unit counted and shown: what is left (the report's attribution pictures) is no unit
                self.write("finishing" if self.total and self.shown == (self.total, self.what) else self.what)

    def write(self, what: str | None = None) -> None:
        """One progress line (the lock is held)."""
        say(progress_line(self.done, self.total, self.elapsed(), what or self.what, self.first))
        self.last_line, self.shown = self.clock(), (self.done, self.what)

    def finished(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        with self.lock:
            if self.done > 0 and self.shown != (self.done, self.what):  # the count it ended at
                self.write()

    def _beat(self) -> None:
        while not self.stop.wait(max(0.05, self.heartbeat - (self.clock() - self.last_line))):
            self.tick()


def run_display() -> RunDisplay:
    """A bar on a terminal, else plain lines."""
    return ProgressBar() if console.is_terminal else ProgressLines(gap=LINE_GAP_S, heartbeat=HEARTBEAT_S)


def run_and_print(
    suite, args: argparse.Namespace, *, seed: int | None = None, weights: dict | None = None, predict: bool = False
) -> int:
    """Run ``suite`` (a file, or eval's mapping) through :func:`repreval.runs.run` and print what it left; with
    ``predict`` the predicted cost first (eval)."""
    display = run_display()
    display.wants_prediction = predict
    display.sampled_components = getattr(args, "sample_components", None)
    result = run(
        suite, out=args.out, seed=seed, weights=weights, device=args.device, executor=args.executor,
        address=args.address, threads=args.threads, force_new=args.force_new, plugins=plugins_of(args),
        progress=display, trust=args.trust,
    )  # fmt: skip
    for problem in result.damaged:
        report_damaged(problem)
    print_boards(result.boards, every=args.boards)
    say(f"report: {result.report}")
    say(
        f"{result.computed} computed, {result.skipped} already done, {len(result.failures)} failed "
        f"in {result.seconds:.1f} s (planning {result.plan_seconds:.1f} s, report {result.report_seconds:.1f} s); "
        f"results in {result.folder}"
    )
    for warning in result.warnings:
        print_warning(warning)
    if result.failures:
        for what, message in result.failures[:20]:
            say(plain("failed:", "red"), f" {what}: {message}", to=errors)
        return EXIT_UNITS_FAILED
    return EXIT_OK


COMMANDS = [
    Command("run", "run a suite and show its leaderboard", add_run_arguments, handle_run),
    Command("eval", "evaluate one model from the command line (no suite file)", add_eval_arguments, handle_eval),
]
