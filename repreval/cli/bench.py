"""``repreval bench``: time the engine against per-component loops (a benchmark, not a test); ``--training``:
the constrained-training overhead; ``--suite``: the paper's 4.1 suite through ``repreval run`` against a loop;
``--estimates``: rankings by estimates from sampled components against the exact scores (repreval.rank_agreement)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TypedDict

from ..errors import ReprevalError
from ..render.bench import bench_table, training_table
from ._common import EXIT_OK, EXIT_UNITS_FAILED, Command, console, errors, lazy, plugins_of, say

bench = lazy("repreval.bench")  # torch
runner = lazy("repreval.runner")
rank_agreement = lazy("repreval.rank_agreement")

BENCH_MODEL = "timm:resnet18"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument(
        "--model",
        default=BENCH_MODEL,
        help=f"SOURCE:NAME (default {BENCH_MODEL}, random init; with --training: ae:classifier)",
    )
    parser.add_argument("--size", type=int, default=224, help="input size for timm models (default 224)")
    parser.add_argument(
        "--layers",
        default="layer1,layer2,layer3,layer4",
        help="comma-separated probe layers (default: resnet18's four stages; 'default': the model's own)",
    )
    parser.add_argument("--saliency", default="gradients,activations_x_gradients,grad_cam")
    parser.add_argument("--images", type=int, default=1, help="images per engine call (default 1)")
    parser.add_argument("--quick", action="store_true", help="time the loops on 32 components and scale to all D")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="also time the engine under autocast to this dtype and report its deviation from float32",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--training",
        action="store_true",
        help="instead: the constrained-training overhead of a trainable model (per bottleneck option)",
    )
    parser.add_argument("--data", default="digits", help="with --training: the dataset to train on (default digits)")
    parser.add_argument(
        "--suite",
        action="store_true",
        help="instead: the paper's 4.1 CIFAR suite through `repreval run` against a hand-written loop, same run",
    )
    parser.add_argument("--loop-threads", type=int, default=1, help="with --suite: threads of the loop (default 1)")
    parser.add_argument(
        "--estimates",
        action="store_true",
        help="instead: do estimates from 16-128 sampled components rank models as the exact scores do? "
        "(10 model variants through `repreval run`, exact and per k, 3 seeds; --quick: digits, 1 seed)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="with --estimates: suite seeds 0..N-1 (default 3, --quick 1)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="with --estimates: keep the runs in this folder (a rerun resumes them); default: a temporary one, removed",
    )


def handle(args: argparse.Namespace) -> int:
    """Time the engine (or, with ``--training`` / ``--suite``, the other scenarios) and print the table."""
    args.device = str(runner.resolve_device(args.device))  # 'auto' -> cuda or cpu
    command = "repreval " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("repreval") else "repreval bench ..."
    if args.training:
        return _training(args, command)
    if args.suite:
        return _suite(args, command)
    if args.estimates:
        return _estimates(args, command)
    lower = args.precision != "float32"

    def show(row):
        if not args.json:
            extra = f", c/d = {row.engine_seconds / row.precision_seconds:.2f}" if lower else ""
            say(f"{row.layer} {row.method}: a/c = {row.rerun_ratio:.1f}, b/c = {row.reuse_ratio:.1f}{extra}", to=errors)

    rows = bench.run_bench(
        plugins_of(args),
        model=args.model,
        size=args.size,
        layers=None if args.layers == "default" else args.layers.split(","),
        methods=tuple(args.saliency.split(",")),
        images=args.images,
        loop_components=32 if args.quick else None,
        device=args.device,
        precision=args.precision,
        on_row=show,
    )
    totals = bench.summary(rows)
    if args.json:
        report = {"command": command, "device": args.device} | ({"precision": args.precision} if lower else {})
        print(json.dumps(report | {"rows": bench.as_dicts(rows), "summary": totals}, indent=1))
        return EXIT_OK
    size = f" at {args.size}²" if args.model.startswith("timm:") else ""
    title = f"repreval bench: {args.model}{size}, {args.device}, per image"
    console.print(bench_table(rows, totals, title=title, precision=args.precision, command=command))
    return EXIT_OK


class _TrainingBenchOverrides(TypedDict, total=False):
    """``--quick`` settings of :func:`repreval.bench.run_training_bench` (its defaults otherwise)."""

    bottlenecks: tuple[int, ...]
    epochs: int


def _suite(args: argparse.Namespace, command: str) -> int:
    images = 16 if args.images == 1 else args.images  # --images defaults to 1 for the per-layer bench
    result = bench.run_suite_bench(images=images, loop_threads=args.loop_threads)
    if args.json:
        ratios = {"ratio": result.ratio, "compute_ratio": result.compute_ratio}
        print(json.dumps({"command": command, **asdict(result), **ratios}, indent=1))
        return EXIT_OK
    say(
        f"suite scenario (ResNet20 trained and random), {result.images} images: {result.cells} cells, "
        f"max |repreval - loop| = "
        f"{result.max_difference:.1e}\n"
        f"repreval run (a fresh process, threads chosen by it): {result.repreval_seconds:.1f} s: computing "
        f"{result.repreval_compute_seconds:.1f} s, planning {result.repreval_plan_seconds:.1f} s, report "
        f"{result.repreval_report_seconds:.1f} s, start-up and exit {result.repreval_startup_seconds:.1f} s\n"
        f"plain loop (a fresh process, {result.loop_threads} thread(s)): {result.loop_seconds:.1f} s, "
        f"of which computing {result.loop_compute_seconds:.1f} s\n"
        f"loop / repreval = {result.ratio:.2f} (whole processes), {result.compute_ratio:.2f} (computing)\n"
        f"reproduce: {command}"
    )
    return EXIT_OK


def _estimates(args: argparse.Namespace, command: str) -> int:
    import tempfile
    from pathlib import Path

    from ..resources import choose_threads

    seeds = args.seeds if args.seeds is not None else 1 if args.quick else 3
    if seeds < 1:
        raise ReprevalError(f"--seeds {seeds}", where="--seeds", fix="give at least 1")
    threads = choose_threads(None)  # repreval's choice, fixed for every run so their times compare

    def show(run) -> None:
        k = "exact" if run.k is None else f"k = {run.k}"
        say(f"{run.group}, seed {run.seed}, {k}: {run.wall_seconds:.1f} s ({run.skipped} units resumed)", to=errors)

    with tempfile.TemporaryDirectory(prefix="repreval-estimates-") as scratch:
        report = rank_agreement.run_estimates_bench(
            quick=args.quick, seeds=range(seeds), out=Path(args.out or scratch), threads=threads, device=args.device,
            plugins=plugins_of(args), on_run=show,
        )  # fmt: skip
    report = {"command": command, "device": args.device, **report}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        say(f"estimates vs exact scores, {seeds} seed(s), {report['seconds']:.0f} s; reproduce: {command}")
        print(rank_agreement.markdown_table(report))
    for failure in report["failures"]:
        say(f"failed: {failure}", to=errors)
    return EXIT_UNITS_FAILED if report["failures"] else EXIT_OK


def _training(args: argparse.Namespace, command: str) -> int:
    model = args.model if args.model != BENCH_MODEL else "ae:classifier"
    settings: _TrainingBenchOverrides = {"bottlenecks": (1, 10), "epochs": 1} if args.quick else {}
    rows = bench.run_training_bench(
        plugins_of(args),
        model=model,
        dataset=args.data,
        device=args.device,
        **settings,
        on_row=None
        if args.json
        else lambda r: say(f"D = {r.bottleneck} {r.constraints}: {r.seconds:.2f} s ({r.ratio:.2f}×)", to=errors),
    )
    if args.json:
        print(json.dumps({"command": command, "device": args.device, "rows": [asdict(r) for r in rows]}, indent=1))
        return EXIT_OK
    title = f"repreval bench --training: {model} on {args.data}, {args.device}, seconds (× unconstrained)"
    console.print(training_table(rows, title=title, epochs=1 if args.quick else 2, command=command))
    return EXIT_OK


COMMANDS = [
    Command("bench", "time the engine against per-component loops (a benchmark, not a test)", add_arguments, handle)
]
