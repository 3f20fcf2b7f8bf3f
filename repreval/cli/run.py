"""``repreval run SUITE`` and ``repreval eval MODEL``: both call :func:`repreval.runs.run` and print what it left."""

from __future__ import annotations

import argparse
import fnmatch
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
        "--sample-components", type=int, metavar="K", help="estimate scores from K sampled components, with errors"
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
            "sample_components": args.sample_components,
        },
    )
    try:
        return run_and_print(data, args)
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


class ProgressBar(RunProgress):
    """A run's progress on the terminal: the plan's one line, then a bar (drawn only on a terminal)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
            disable=not console.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task("starting", total=None)

    def planned(self, suite_name: str, units: int, output: Path, threads: int) -> None:
        say(plain(suite_name, "bold"), f": {units} units, results in {output} ({threads} CPU threads)")

    def started(self, pending: int) -> None:
        self.bar.start()
        self.bar.update(self.task, total=pending, description="computing")

    def advanced(self, units: float, what: str) -> None:
        self.bar.update(self.task, advance=units, description=what)

    def finished(self) -> None:
        self.bar.stop()


def run_and_print(suite, args: argparse.Namespace, *, seed: int | None = None, weights: dict | None = None) -> int:
    """Run ``suite`` (a file, or eval's mapping) through :func:`repreval.runs.run` and print what it left."""
    result = run(
        suite, out=args.out, seed=seed, weights=weights, device=args.device, executor=args.executor,
        address=args.address, threads=args.threads, force_new=args.force_new, plugins=plugins_of(args),
        progress=ProgressBar(), trust=args.trust,
    )  # fmt: skip
    for problem in result.damaged:
        report_damaged(problem)
    print_boards(result.boards, every=args.boards)
    say(f"report: {result.report}")
    say(
        f"{result.computed} computed, {result.skipped} already done, {len(result.failures)} failed "
        f"in {result.seconds:.1f} s; results in {result.folder}"
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
