"""Command line: ``repreval run | eval | validate | leaderboard | plugins | list | layers | bench | new-plugin``.

Exit codes: 0 success; 2 bad input (one line naming file, key and fix); 1 when units failed
during a run (the others finished and were saved).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path
from typing import NoReturn, TypedDict

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .errors import ReprevalError, suggest
from .runs import RunProgress

EXIT_OK, EXIT_UNITS_FAILED, EXIT_BAD_INPUT = 0, 1, 2
BENCH_MODEL = "timm:resnet18"

KIND_ALIASES = {
    "saliency": "saliency",
    "saliency_methods": "saliency",
    "methods": "saliency",
    "aggregator": "aggregator",
    "aggregators": "aggregator",
    "score": "score",
    "scores": "score",
    "model_source": "model_source",
    "model_sources": "model_source",
    "models": "model_source",
    "sources": "model_source",
    "dataset": "dataset",
    "datasets": "dataset",
    "variant": "variant",
    "variants": "variant",
    "explainer": "explainer",
    "explainers": "explainer",
}

console = Console(width=None if sys.stdout.isatty() else 160)  # wide tables when piped to a file
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repreval",
        description="Evaluate learned representations through aggregated attributions (noise and variance scores).",
    )
    parser.add_argument(
        "--block",
        action="append",
        default=[],
        metavar="PLUGIN",
        help="do not load this plugin (repeatable; also $REPREVAL_BLOCK_PLUGINS=a,b)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a suite and show its leaderboard")
    run.add_argument("suite", help="suite YAML file")
    _add_run_options(run)

    evaluate = commands.add_parser("eval", help="evaluate one model from the command line (no suite file)")
    evaluate.add_argument("model", help="SOURCE:NAME, e.g. timm:resnet18")
    evaluate.add_argument(
        "--weights", help="local weights file, or 'hub' (needs internet); without it only the random variant runs"
    )
    evaluate.add_argument(
        "--weights-match",
        choices=["name", "position"],
        default="name",
        help="match checkpoint tensors by key name (default) or by position",
    )
    evaluate.add_argument(
        "--data",
        default="digits",
        metavar="KIND[:PATH]",
        help="dataset, e.g. digits, image_folder:DIR, image_files:'DIR/*.jpg', mnist:DIR (default: digits)",
    )
    evaluate.add_argument("--limit", type=int, default=8, help="number of inputs (default 8)")
    evaluate.add_argument("--layers", help="comma-separated probe layers (default: the model's stages)")
    evaluate.add_argument("--embedding", help="module whose pooled output is the embedding (default: the model's)")
    evaluate.add_argument(
        "--saliency", default="gradients,activations_x_gradients,grad_cam", help="comma-separated saliency methods"
    )
    evaluate.add_argument(
        "--scores",
        default="noise_score,variance_score",
        help="comma-separated scores; linear_probe and classifier_accuracy use --probe-data",
    )
    evaluate.add_argument(
        "--probe-data",
        metavar="KIND[:PATH]",
        help="labelled dataset for linear_probe (fit on one split, scored on another) and classifier_accuracy "
        "(the second split); default: --data",
    )
    evaluate.add_argument(
        "--probe-limit", type=int, default=500, help="inputs in each of the two downstream splits (default 500)"
    )
    evaluate.add_argument(
        "--variants", help="comma-separated variants (default: trained,random with weights, else random)"
    )
    evaluate.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option (YAML value), e.g. input_size=[3,64,64]",
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--batch-size", type=int, help="inputs per engine call (suite key evaluation.batch_size)")
    evaluate.add_argument("--memory-budget", help="memory for one engine call, e.g. 4GiB (evaluation.memory_budget)")
    evaluate.add_argument(
        "--strategy", choices=["auto", "reverse", "forward"], help="engine mode (evaluation.strategy)"
    )
    evaluate.add_argument(
        "--sample-components", type=int, metavar="K", help="estimate scores from K sampled components, with errors"
    )
    _add_run_options(evaluate, default_out=None)

    validate = commands.add_parser("validate", help="check a suite completely without computing anything")
    validate.add_argument("suite")
    validate.add_argument(
        "--calibrate",
        action="store_true",
        help="compute the first group (one model variant) for real, nothing written, and estimate the whole run",
    )

    board = commands.add_parser("leaderboard", help="render stored results again (several folders: ranked together)")
    board.add_argument("directories", nargs="+", metavar="DIR", help="results directories of runs")
    board.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    board.add_argument("--boards", action="store_true", help="every board with its layers, not the summary")

    publish = commands.add_parser("publish", help="write a static HTML site of result folders (no server needed)")
    publish.add_argument("directories", nargs="+", metavar="DIR", help="results directories of runs")
    publish.add_argument("--out", required=True, metavar="SITE", help="the site's folder (index.html goes there)")
    publish.add_argument("--merge", action="store_true", help="add a page ranking every folder's rows together")
    publish.add_argument(
        "--link", action="store_true", help="reference the folders' PNGs where they are instead of copying them"
    )

    export = commands.add_parser("export", help="write a results folder to one .zip (records, suite, drawings)")
    export.add_argument("directory", metavar="DIR")
    export.add_argument("--out", required=True, metavar="FILE.zip")

    importing = commands.add_parser("import", help="unpack an exported .zip into a results folder")
    importing.add_argument("archive", metavar="FILE.zip")
    importing.add_argument("--out", required=True, metavar="DIR")

    plugins = commands.add_parser("plugins", help="every plugin, its version and what it registered")
    plugins.add_argument("--format", choices=["table", "json"], default="table")

    listing = commands.add_parser("list", help="registered names of one kind")
    listing.add_argument("kind", help="saliency | aggregators | scores | models | datasets | variants")

    bench = commands.add_parser("bench", help="time the engine against per-component loops (a benchmark, not a test)")
    bench.add_argument(
        "--model",
        default=BENCH_MODEL,
        help=f"SOURCE:NAME (default {BENCH_MODEL}, random init; with --training: ae:classifier)",
    )
    bench.add_argument("--size", type=int, default=224, help="input size for timm models (default 224)")
    bench.add_argument(
        "--layers",
        default="layer1,layer2,layer3,layer4",
        help="comma-separated probe layers (default: resnet18's four stages; 'default': the model's own)",
    )
    bench.add_argument("--saliency", default="gradients,activations_x_gradients,grad_cam")
    bench.add_argument("--images", type=int, default=1, help="images per engine call (default 1)")
    bench.add_argument("--quick", action="store_true", help="time the loops on 32 components and scale to all D")
    bench.add_argument("--device", default="cpu")
    bench.add_argument(
        "--precision",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="also time the engine under autocast to this dtype and report its deviation from float32",
    )
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument(
        "--training",
        action="store_true",
        help="instead: the constrained-training overhead of a trainable model (per bottleneck option)",
    )
    bench.add_argument("--data", default="digits", help="with --training: the dataset to train on (default digits)")
    bench.add_argument(
        "--suite",
        action="store_true",
        help="instead: the paper's 4.1 CIFAR suite through `repreval run` against a hand-written loop, same run",
    )
    bench.add_argument("--loop-threads", type=int, default=1, help="with --suite: threads of the loop (default 1)")

    layers = commands.add_parser("layers", help="the probe layers a model offers, with output shapes")
    layers.add_argument("model", help="SOURCE:NAME, e.g. timm:resnet18 or cifar:resnet20")
    layers.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option (YAML value)")
    layers.add_argument("--all", action="store_true", help="show every module, not only those with 4-D or 2-D outputs")

    show = commands.add_parser("show", help="one image's attribution maps at one layer: a PNG and a terminal sketch")
    show.add_argument("model", help="SOURCE:NAME, e.g. cifar:resnet20 or timm:resnet18")
    show.add_argument("--input", required=True, metavar="IMAGE", help="an image file")
    show.add_argument("--layer", required=True, help="the probe layer (`repreval layers MODEL` lists them)")
    show.add_argument("--saliency", default="gradients,activations_x_gradients,grad_cam", help="comma-separated")
    show.add_argument("--weights", help="a local weights file (default: random initialisation, seeded)")
    show.add_argument("--weights-match", choices=["name", "position"], default="name")
    show.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option (YAML value)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", metavar="FILE.png", help="default: show-<model>-<layer>.png")

    new_plugin = commands.add_parser("new-plugin", help="start a plugin package: one working example, a test, a README")
    new_plugin.add_argument(
        "name", help="plugin name, lowercase (e.g. peak_fraction): the entry point and the registered name"
    )
    new_plugin.add_argument(
        "--kind", required=True, help="saliency | aggregator | score | dataset | variant | model_source | explainer"
    )
    new_plugin.add_argument("--out", default=".", metavar="DIR", help="write DIR/NAME (default: ./NAME)")
    return parser


def _add_run_options(command, default_out="from the suite"):
    command.add_argument("--executor", choices=["local", "ray"], help="where the units run (overrides the suite)")
    command.add_argument("--address", help="a Ray cluster to join, HOST:PORT (with --executor ray)")
    command.add_argument("--boards", action="store_true", help="print every board with its layers, not the summary")
    command.add_argument("--out", help=f"results directory (default: {default_out or 'results/<name>'})")
    command.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the suite)")
    command.add_argument(
        "--force-new",
        action="store_true",
        help="clear the results folder when it holds a run configured otherwise (another seed, version, device)",
    )
    command.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: the cores not busy with other processes)"
    )
    if command.prog.endswith(" run"):
        command.add_argument(
            "--weights",
            action="append",
            default=[],
            metavar="MODEL=PATH",
            help="weights file for a model of the suite (overrides its weights/train)",
        )
        command.add_argument("--seed", type=int, help="override the suite's seed")


# ---------------------------------------------------------------------------------------------


def entry_point() -> NoReturn:
    """The ``repreval`` command: :func:`main`, then :func:`~repreval.resources.exit_now` with its code."""
    from .resources import exit_now

    exit_now(main())


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    from .resources import start_core_window

    start_core_window()
    args = _parser().parse_args(argv)
    # Libraries' deprecation notices about their own internals are not the user's to act on; they would
    # interleave with the tables (a run's own problems are reported as warnings and errors, one line each).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        return COMMANDS[args.command](args)
    except ReprevalError as exc:
        errors.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print("interrupted: finished units are saved; run again to continue")
        return 130


def _plugins(args):
    from .plugins import load_plugins

    plugins = load_plugins(block=args.block)
    for info in plugins.broken.values():  # skipped; everything else works
        errors.print(
            f"[yellow]warning:[/] plugin {info.name!r} (distribution {info.distribution} {info.version}) failed to "
            f"load and is skipped: {info.broken}; skip it quietly with --block {info.name}",
            highlight=False,
            soft_wrap=True,
        )
    return plugins


def _local_modules(suite: str | Path | None = None) -> None:
    from .runs import local_modules

    local_modules(suite)


def _key_value(items: list[str]) -> dict:
    from .suite import load_yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ReprevalError(f"option {item!r} is not KEY=VALUE", fix="e.g. --option input_size=[3,64,64]")
        try:
            options[key] = load_yaml(value)
        except yaml.YAMLError as exc:
            raise ReprevalError(f"option {item!r}: {getattr(exc, 'problem', None) or 'invalid YAML'}") from None
    return options


def cmd_run(args) -> int:
    """``repreval run SUITE``: run it (``--seed``/``--weights`` override the suite), show its leaderboards."""
    weights = {}
    for item in args.weights:
        model_id, sep, path = item.partition("=")
        if not sep or not model_id:
            raise ReprevalError(f"--weights {item!r} is not MODEL=PATH", fix="e.g. --weights classifier=model.pt")
        weights[model_id] = path
    return _run(args.suite, args, seed=args.seed, weights=weights)


def cmd_eval(args) -> int:
    """``repreval eval MODEL``: run a one-model suite built from the command-line options."""
    from .runs import one_model_suite

    _local_modules()
    scores = args.scores.split(",")
    if {"linear_probe", "classifier_accuracy"} & set(scores) and args.probe_limit < 1:
        raise ReprevalError(f"--probe-limit must be at least 1, got {args.probe_limit}")
    model = {"model": args.model, "options": _key_value(args.option)}
    if args.weights:
        model["weights"] = args.weights
        model["weights_match"] = args.weights_match
    if args.layers:
        model["layers"] = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if args.embedding:
        model["embedding"] = args.embedding
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in _short_model_name(args.model))
    data = one_model_suite(
        f"eval-{slug}",
        slug,
        model,
        _dataset_arg(args.data, limit=args.limit),
        saliency=args.saliency.split(","),
        scores=scores,
        variants=args.variants.split(",") if args.variants else (["trained", "random"] if args.weights else ["random"]),
        seed=args.seed,
        # two disjoint splits of one permutation of --probe-data
        probe=lambda part: _dataset_arg(
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
        return _run(data, args)
    except ReprevalError as exc:  # say where in the flags the user typed, not in the suite eval built
        if exc.where and exc.where.startswith("suite: "):
            exc.where = _eval_flag(exc.where.removeprefix("suite: "), args.model)
        raise ReprevalError(exc.problem, where=exc.where, fix=exc.fix) from None


def _dataset_arg(text: str, **subset) -> dict:
    """``KIND[:PATH]`` (as --data takes it) as a suite dataset entry with the given subset keys."""
    kind, _, path = text.partition(":")
    dataset: dict = {"kind": kind, **subset}
    if path:
        dataset["options"] = {"paths" if kind == "image_files" else "path": path}
    return dataset


def _short_model_name(spec: str) -> str:
    """``hf:/a/b/all-MiniLM/model`` -> ``hf:all-MiniLM_model``: a directory-valued name by its last parts."""
    source, _, name = spec.partition(":")
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    if len(parts) < 2:
        return spec
    generic = parts[-1] in ("model", "models", "weights")
    return f"{source}:{parts[-2]}_{parts[-1]}" if generic else f"{source}:{parts[-1]}"


#: eval's flags by the suite key they fill (the first matching prefix wins)
_EVAL_FLAGS = (
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
    ("seed", "--seed"),
)


def _eval_flag(key: str, model: str) -> str:
    import fnmatch

    for pattern, flag in _EVAL_FLAGS:
        if fnmatch.fnmatch(key, pattern + "*"):
            return flag.format(model=model)
    return key


class _ProgressBar(RunProgress):
    """A run's progress on the terminal: the plan's one line, then a bar (drawn only on a terminal)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
            disable=not console.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task("starting", total=None)

    def planned(self, suite_name: str, units: int, output: Path, threads: int) -> None:
        console.print(
            f"[bold]{suite_name}[/]: {units} units, results in {output} ({threads} CPU threads)", highlight=False
        )

    def started(self, pending: int) -> None:
        self.bar.start()
        self.bar.update(self.task, total=pending, description="computing")

    def advanced(self, units: float, what: str) -> None:
        self.bar.update(self.task, advance=units, description=what)

    def finished(self) -> None:
        self.bar.stop()


def _run(suite, args, *, path: Path | None = None, seed: int | None = None, weights: dict | None = None) -> int:
    """Run ``suite`` (a file, or eval's mapping) through :func:`repreval.runs.run` and print what it left."""
    from .runs import run

    result = run(
        suite, out=args.out, seed=seed, weights=weights, device=args.device, executor=args.executor,
        address=args.address, threads=args.threads, force_new=args.force_new, plugins=_plugins(args),
        progress=_ProgressBar(), suite_path=path,
    )  # fmt: skip
    for problem in result.damaged:
        _report_damaged(problem)
    _print_boards(result.boards, every=args.boards)
    console.print(f"report: {result.report}", highlight=False)
    console.print(
        f"{result.computed} computed, {result.skipped} already done, {len(result.failures)} failed "
        f"in {result.seconds:.1f} s; results in {result.folder}",
        highlight=False,
    )
    for warning in result.warnings:
        errors.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if result.failures:
        for what, message in result.failures[:20]:
            errors.print(f"[red]failed:[/] {what}: {message}", highlight=False, soft_wrap=True)
        return EXIT_UNITS_FAILED
    return EXIT_OK


def cmd_validate(args) -> int:
    """``repreval validate SUITE``: parse the suite and plan its units without computing anything."""
    _local_modules(args.suite)
    from .plan import make_plan
    from .suite import load_suite

    plugins = _plugins(args)
    suite = load_suite(args.suite, plugins)
    plan = make_plan(suite, plugins)
    groups: dict[tuple[str, str], list] = {}
    for unit in plan.units:
        groups.setdefault((unit.model, unit.variant.label), []).append(unit)
    console.print(
        f"[green]ok[/]: suite {suite.name!r}: {len(suite.models)} models, {len(plan.units)} units in {len(groups)} "
        "groups (a group: one model variant, built once; one task each on Ray)",
        highlight=False,
    )
    if args.calibrate:
        from .runner import dry_run

        (model_id, variant), units = next(iter(groups.items()))
        _, seconds = dry_run(plan, plugins, units)  # one group for real; its records and pictures thrown away
        console.print(
            f"calibration: {model_id} · {variant} ({len(units)} units) took {seconds:.1f} s here (training and "
            f"data loading included); {len(groups)} such groups ≈ {seconds * len(groups) / 60:.1f} min on one "
            f"worker, ≈ {seconds * len(groups) / 60 / 8:.1f} min on 8 (groups differ: a rough guide)",
            highlight=False,
        )
    return EXIT_OK


def cmd_leaderboard(args) -> int:
    """``repreval leaderboard DIR``: render stored results as tables, JSON, or the Markdown report."""
    from .folders import ResultFolder, merge
    from .leaderboard import build_leaderboards
    from .render import to_json

    folders = [ResultFolder.read(directory) for directory in args.directories]
    damaged = [problem for folder in folders for problem in folder.damaged]
    boards = build_leaderboards(merge(folders))
    for problem in damaged:
        _report_damaged(problem)
    if args.format == "json":
        print(to_json(boards))
    elif args.format == "markdown":
        from .render.report import write_report

        if len(folders) > 1:
            raise ReprevalError("a Markdown report is one folder's", fix="give one DIR, or use --format table|json")
        path = write_report(args.directories[0])
        print(path.read_text())
        errors.print(f"report written to {path} (plots in {path.parent / 'plots'})", highlight=False)
    else:
        _print_boards(boards, every=args.boards)
    return EXIT_BAD_INPUT if damaged else EXIT_OK


def _print_boards(boards, every: bool) -> None:
    """The compact summary (one line per metric), or with ``every`` each board with its layers."""
    from .render import rich_table, summary_table

    if not boards:
        return
    if not every:
        console.print(summary_table(boards))
        return
    for board in boards:
        console.print(rich_table(board))


def cmd_publish(args) -> int:
    """``repreval publish DIR... --out SITE``: a static site of the result folders."""
    from .render.site import publish

    index = publish(args.directories, args.out, merged=args.merge, link=args.link)
    errors.print(f"site written to {index} (open it in a browser; no server needed)", highlight=False)
    return EXIT_OK


def cmd_export(args) -> int:
    """``repreval export DIR --out FILE.zip``."""
    from .folders import export_folder

    errors.print(f"exported to {export_folder(args.directory, args.out)}", highlight=False)
    return EXIT_OK


def cmd_import(args) -> int:
    """``repreval import FILE.zip --out DIR``."""
    from .folders import import_folder

    folder = import_folder(args.archive, args.out)
    errors.print(f"imported {len(folder.records)} records into {folder.directory}", highlight=False)
    return EXIT_OK


def _report_damaged(problem: ReprevalError) -> None:
    """One line per damaged record; the tables show the others."""
    errors.print(f"[bold red]error:[/] {problem.one_line()}", highlight=False, soft_wrap=True)


def cmd_plugins(args) -> int:
    """``repreval plugins``: every loaded plugin with its distribution, version and registrations; blocked ones."""
    plugins = _plugins(args)
    rows = sorted(plugins.info.values(), key=lambda p: (p.distribution != "repreval", p.name))
    if args.format == "json":
        listed = [{k: v for k, v in vars(p).items() if k != "broken"} for p in rows]
        listed += [vars(p) for p in plugins.broken.values()]
        print(json.dumps([*listed, {"blocked": list(plugins.blocked)}], indent=1))
        return EXIT_OK
    table = Table(title="repreval plugins", title_justify="left", header_style="bold")
    for column in ("plugin", "distribution", "version", "registered"):
        table.add_column(column)
    for info in rows:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items())
        table.add_row(info.name, info.distribution, info.version, registered or "(nothing)")
    for info in plugins.broken.values():
        table.add_row(info.name, info.distribution, info.version, f"[red]broken[/]: {info.broken}")
    for name in plugins.blocked:
        table.add_row(name, "", "", "[yellow]blocked[/]")
    console.print(table)
    return EXIT_OK


def cmd_list(args) -> int:
    """``repreval list KIND``: the registered names of one plugin kind, with aliases, plugin and description."""
    kind = KIND_ALIASES.get(args.kind.lower())
    if kind is None:
        raise ReprevalError(f"unknown kind {args.kind!r}", fix=suggest(args.kind, KIND_ALIASES))
    plugins = _plugins(args)
    table = Table(title=f"registered: {kind}", title_justify="left", header_style="bold")
    for column in ("name", "aliases", "plugin", "description"):
        table.add_column(column)
    for entry in plugins.registry(kind):
        table.add_row(entry.name, ", ".join(entry.aliases), entry.plugin, entry.description)
    console.print(table)
    return EXIT_OK


def cmd_layers(args) -> int:
    """``repreval layers MODEL``: the probe layers of the untrained model with their output shapes."""
    _local_modules()
    from .config import ModelConfig
    from .models import Model, layer_table

    plugins, source = _model_source(args)
    model = Model(
        ModelConfig(id="model", spec=args.model, options=_key_value(args.option)),
        source,
    )
    network = model.untrained(0)
    rows, embedding_size = layer_table(network)
    spec = network.input_spec
    table = Table(
        title=f"{args.model}: input {_input_size(spec)}, embedding D = {embedding_size}",
        title_justify="left",
        header_style="bold",
    )
    for column in ("layer", "type", "output shape", "read as", "map C×h×w", "default"):
        table.add_column(column)
    for row in rows:
        if args.all or (row.map_shape is not None and len(row.shape) in (1, 2, 3)) or row.default:
            shape = "×".join(map(str, row.shape))
            mapped = "×".join(map(str, row.map_shape)) if row.map_shape else f"[red]not readable[/]: {row.unreadable}"
            table.add_row(row.name, row.kind, shape, row.layout, mapped, "✓" if row.default else "")
    table.caption = "probe a layer's input with NAME:input; ✓ = probed when a suite lists no layers"
    console.print(table)
    return EXIT_OK


def cmd_show(args) -> int:
    """``repreval show MODEL --input IMAGE --layer L``: the image's maps (channels: abs, then the mean over the
    embedding components), one per saliency method, as a PNG beside the image and as shaded blocks here."""
    _local_modules()
    import torch

    from .config import ModelConfig, Subset
    from .data import load_images
    from .engine.attribution import component_maps
    from .engine.probe import Probe
    from .models import Model
    from .plan import model_layers
    from .render.maps import draw_one

    plugins, source = _model_source(args)
    config = ModelConfig(
        id="model", spec=args.model, options=_key_value(args.option), weights=args.weights,
        weights_match=args.weights_match, layers=(args.layer,), seed=args.seed,
    )  # fmt: skip
    model = Model(config, source, where="--layer")
    network = model.trained() if args.weights else model.untrained(args.seed)
    try:
        model_layers(model, network, "--layer")  # an unknown or unreadable layer: one line, exit 2
    except ReprevalError as exc:
        raise ReprevalError(exc.problem, where="--layer", fix=exc.fix) from None
    image = load_images(plugins.dataset.create("image_files", {"paths": args.input}), Subset(), network.input_spec)
    assert isinstance(image.images, torch.Tensor)  # fitted to the network's input
    inputs = network.input_spec.normalize(image.images)
    absolute = plugins.aggregator.create("abs")
    maps = {}
    for name in [n.strip() for n in args.saliency.split(",") if n.strip()]:
        method = plugins.saliency.create(name)
        found = component_maps(network, Probe.parse(args.layer), inputs, method, None if method.spatial else absolute)
        maps[name] = found.float().mean(dim=1)[0]  # the mean over components: [h, w]
    default = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"show-{_short_model_name(args.model)}-{args.layer}") + ".png"
    out = Path(args.out or default)
    title = (
        f"{args.model} ({'weights ' + Path(args.weights).name if args.weights else 'random, seed ' + str(args.seed)})"
    )
    draw_one(image.images[0].numpy(), {k: v.numpy() for k, v in maps.items()}, f"{title} @ {args.layer}", out)
    for name, values in maps.items():
        console.print(f"[bold]{name}[/] at {args.layer} ({values.shape[0]}×{values.shape[1]}):", highlight=False)
        console.print(_shaded(values), highlight=False)
    console.print(f"written: {out}", highlight=False)
    return EXIT_OK


#: Shades of the terminal sketch of a map, darkest first
SHADES = " ░▒▓█"


def _shaded(values, width: int = 32) -> str:
    """A map as rows of block characters (at most ``width`` columns; min-max scaled)."""
    import torch.nn.functional as F

    height = max(1, round(values.shape[0] * min(1.0, width / values.shape[1]) / 2))  # characters are tall
    small = F.adaptive_avg_pool2d(values[None, None], (height, min(width, values.shape[1])))[0, 0]
    scaled = (small - small.min()) / (small.max() - small.min() + 1e-12)
    levels = (scaled * (len(SHADES) - 1)).round().long()
    return "\n".join("".join(SHADES[int(level)] * 2 for level in row) for row in levels)


def _model_source(args):
    """The loaded plugins and the model source ``args.model`` names (one line naming the unknown source)."""
    from .suite import split_model_spec

    source_name, _ = split_model_spec(args.model)
    plugins = _plugins(args)
    if source_name not in plugins.model_source:
        raise ReprevalError(
            f"unknown model source {source_name!r}", fix=suggest(source_name, plugins.model_source.names())
        )
    return plugins, plugins.model_source.create(source_name)


def _input_size(spec) -> str:
    return f"{spec.tokens} tokens" if spec.tokens else f"{spec.channels}×{spec.height}×{spec.width}"


def cmd_bench(args) -> int:
    """``repreval bench``: time the engine against per-component loops (``--training``: constrained training)."""
    from .bench import as_dicts, run_bench, summary
    from .render.bench import bench_table
    from .runner import resolve_device

    args.device = str(resolve_device(args.device))  # 'auto' -> cuda or cpu
    command = "repreval " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("repreval") else "repreval bench ..."
    if args.training:
        return _bench_training(args, command)
    if args.suite:
        return _bench_suite(args, command)
    lower = args.precision != "float32"

    def show(row):
        if not args.json:
            extra = f", c/d = {row.engine_seconds / row.precision_seconds:.2f}" if lower else ""
            errors.print(
                f"{row.layer} {row.method}: a/c = {row.rerun_ratio:.1f}, b/c = {row.reuse_ratio:.1f}{extra}",
                highlight=False,
            )

    rows = run_bench(
        _plugins(args),
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
    totals = summary(rows)
    if args.json:
        report = {"command": command, "device": args.device} | ({"precision": args.precision} if lower else {})
        print(json.dumps(report | {"rows": as_dicts(rows), "summary": totals}, indent=1))
        return EXIT_OK
    size = f" at {args.size}²" if args.model.startswith("timm:") else ""
    title = f"repreval bench: {args.model}{size}, {args.device}, per image"
    console.print(bench_table(rows, totals, title=title, precision=args.precision, command=command))
    return EXIT_OK


class _TrainingBenchOverrides(TypedDict, total=False):
    """``--quick`` settings of :func:`repreval.bench.run_training_bench` (its defaults otherwise)."""

    bottlenecks: tuple[int, ...]
    epochs: int


def _bench_suite(args, command: str) -> int:
    from dataclasses import asdict

    from .bench import SUITE, run_suite_bench

    if not SUITE.is_file():
        raise ReprevalError(f"the suite scenario needs {SUITE}", fix="run it from a source checkout of repreval")
    images = 16 if args.images == 1 else args.images  # --images defaults to 1 for the per-layer bench
    result = run_suite_bench(images=images, loop_threads=args.loop_threads)
    if args.json:
        print(json.dumps({"command": command, **asdict(result), "ratio": result.ratio}, indent=1))
        return EXIT_OK
    console.print(
        f"4.1 CIFAR suite, {result.images} images: {result.cells} cells, max |repreval - loop| = "
        f"{result.max_difference:.1e}\n"
        f"repreval run (a fresh process, threads chosen by it): {result.repreval_seconds:.1f} s\n"
        f"plain loop (a fresh process, {result.loop_threads} thread(s)): {result.loop_seconds:.1f} s, "
        f"of which computing {result.loop_compute_seconds:.1f} s\n"
        f"loop / repreval = {result.ratio:.2f} (whole processes)\nreproduce: {command}",
        highlight=False,
    )
    return EXIT_OK


def _bench_training(args, command: str) -> int:
    from dataclasses import asdict

    from .bench import run_training_bench
    from .render.bench import training_table

    model = args.model if args.model != BENCH_MODEL else "ae:classifier"
    settings: _TrainingBenchOverrides = {"bottlenecks": (1, 10), "epochs": 1} if args.quick else {}
    rows = run_training_bench(
        _plugins(args),
        model=model,
        dataset=args.data,
        device=args.device,
        **settings,
        on_row=None
        if args.json
        else lambda r: errors.print(
            f"D = {r.bottleneck} {r.constraints}: {r.seconds:.2f} s ({r.ratio:.2f}×)", highlight=False
        ),
    )
    if args.json:
        print(json.dumps({"command": command, "device": args.device, "rows": [asdict(r) for r in rows]}, indent=1))
        return EXIT_OK
    title = f"repreval bench --training: {model} on {args.data}, {args.device}, seconds (× unconstrained)"
    console.print(training_table(rows, title=title, epochs=1 if args.quick else 2, command=command))
    return EXIT_OK


def cmd_new_plugin(args) -> int:
    """``repreval new-plugin NAME --kind KIND``: write a plugin package from the templates."""
    from .new_plugin import KINDS, check_request, write_plugin

    kind = KIND_ALIASES.get(args.kind.lower(), args.kind)
    target = Path(args.out) / args.name
    check_request(args.name, kind, target)  # before loading plugins: bad input fails fast
    plugins = _plugins(args)
    taken = {
        "plugin": list(plugins.info),
        kind.replace("_", " "): [n for e in plugins.registry(kind) for n in (e.name, *e.aliases)],
    }
    written = write_plugin(args.name, kind, args.out, taken=taken)
    for path in written:
        console.print(f"created {path}", highlight=False)
    console.print(
        f"next: pip install -e {target} && pytest {target} && repreval list {KINDS[kind].list_kind}",
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "eval": cmd_eval,
    "validate": cmd_validate,
    "leaderboard": cmd_leaderboard,
    "publish": cmd_publish,
    "export": cmd_export,
    "import": cmd_import,
    "plugins": cmd_plugins,
    "list": cmd_list,
    "layers": cmd_layers,
    "show": cmd_show,
    "bench": cmd_bench,
    "new-plugin": cmd_new_plugin,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
