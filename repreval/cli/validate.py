"""``repreval validate SUITE [--calibrate]``: check a suite completely without computing anything (or time one
group of it for real)."""

from __future__ import annotations

import argparse

from ..runs import local_modules
from ..suite import load_suite
from ._common import EXIT_OK, Command, console, lazy, plugins_of

plan = lazy("repreval.plan")  # builds every model's architecture: torch
runner = lazy("repreval.runner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("suite")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="compute the first group (one model variant) for real, nothing written, and estimate the whole run",
    )


def handle(args: argparse.Namespace) -> int:
    """Parse the suite and plan its units; with ``--calibrate`` also time its first group."""
    local_modules(args.suite)
    plugins = plugins_of(args)
    suite = load_suite(args.suite, plugins)
    planned = plan.make_plan(suite, plugins)
    groups: dict[tuple[str, str], list] = {}
    for unit in planned.units:
        groups.setdefault((unit.model, unit.variant.label), []).append(unit)
    console.print(
        f"[green]ok[/]: suite {suite.name!r}: {len(suite.models)} models, {len(planned.units)} units in "
        f"{len(groups)} groups (a group: one model variant, built once; one task each on Ray)",
        highlight=False,
    )
    if args.calibrate:
        (model_id, variant), units = next(iter(groups.items()))
        _, seconds = runner.dry_run(planned, plugins, units)  # one group for real; nothing kept
        console.print(
            f"calibration: {model_id} · {variant} ({len(units)} units) took {seconds:.1f} s here (training and "
            f"data loading included); {len(groups)} such groups ≈ {seconds * len(groups) / 60:.1f} min on one "
            f"worker, ≈ {seconds * len(groups) / 60 / 8:.1f} min on 8 (groups differ: a rough guide)",
            highlight=False,
        )
    return EXIT_OK


COMMANDS = [Command("validate", "check a suite completely without computing anything", add_arguments, handle)]
