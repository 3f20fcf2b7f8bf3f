"""``repreval validate SUITE [--calibrate]``: check a suite completely without computing anything (or time one
group of it for real)."""

from __future__ import annotations

import argparse

from ..errors import ReprevalError
from ..render import plain
from ..suite import load_suite
from ..trust import TRUST_HELP, no_downloads, trusting, user_trust
from ._common import EXIT_OK, Command, lazy, plugins_of, print_warning, say
from .run import prediction_text

plan = lazy("repreval.plan")  # builds every model's architecture: torch
runner = lazy("repreval.runner")
prediction = lazy("repreval.runner.prediction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("suite")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="compute the first group (one model variant) for real, nothing written, and estimate the whole run",
    )
    parser.add_argument(
        "--no-predict", action="store_true", help="skip the predicted duration (it times each model briefly)"
    )
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE", help=TRUST_HELP)


def handle(args: argparse.Namespace) -> int:
    """Parse the suite and plan its units; with ``--calibrate`` also time its first group. Nothing is downloaded
    (published weights that are not cached are refused: ``run`` fetches them); ``torch:`` imports only what
    the user trusts (``--trust``)."""
    with trusting(user_trust(args.trust, suite=args.suite)), no_downloads():
        return _validate(args)


def _validate(args: argparse.Namespace) -> int:
    plugins = plugins_of(args)
    suite = load_suite(args.suite, plugins)
    planned = plan.make_plan(suite, plugins)
    groups: dict[tuple[str, str], list] = {}
    for unit in planned.units:
        groups.setdefault((unit.model, unit.variant.label), []).append(unit)
    say(
        plain("ok", "green"),
        f": suite {suite.name!r}: {len(suite.models)} models, {len(planned.units)} units in "
        f"{len(groups)} groups (a group: one model variant, built once; one task each on Ray)",
    )
    for note in planned.notes:
        print_warning(note)
    if not args.no_predict:
        from ..resources import choose_threads, torch_threads

        try:
            with torch_threads(choose_threads()):  # the threads a run would take here
                say(prediction_text(prediction.predict(planned, plugins)))
        except ReprevalError as exc:  # the suite is valid; only its cost could not be measured here
            print_warning(f"no predicted duration: {exc.problem}")
    if args.calibrate:
        (model_id, variant), units = next(iter(groups.items()))
        _, seconds = runner.dry_run(planned, plugins, units)  # one group for real; nothing kept
        say(
            f"calibration: {model_id} · {variant} ({len(units)} units) took {seconds:.1f} s here (training and "
            f"data loading included); {len(groups)} such groups ≈ {seconds * len(groups) / 60:.1f} min on one "
            f"worker, ≈ {seconds * len(groups) / 60 / 8:.1f} min on 8 (groups differ: a rough guide)"
        )
    return EXIT_OK


COMMANDS = [Command("validate", "check a suite completely without computing anything", add_arguments, handle)]
