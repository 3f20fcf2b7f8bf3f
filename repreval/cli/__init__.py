"""Command line: ``repreval run | eval | validate | leaderboard | publish | export | import | plugins | list |
layers | show | bench | new-plugin``. Each command's arguments stand beside its handler in one module of this
package; the commands call the library (:func:`repreval.run` and friends), which does the work.

Exit codes: 0 success; 2 bad input (one line naming file, key and fix); 1 when units failed
during a run (the others finished and were saved); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..resources import exit_now, start_core_window
from . import bench, inspection, plugins, results, run, validate
from ._common import Command, run_command

#: Every command, in the order ``--help`` lists them
COMMANDS: dict[str, Command] = {
    command.name: command
    for module in (run, validate, results, plugins, inspection, bench)
    for command in module.COMMANDS
}
BLOCK_HELP = "do not load this plugin (repeatable; also $REPREVAL_BLOCK_PLUGINS=a,b)"


def parser() -> argparse.ArgumentParser:
    """The whole command line: global options, then one subcommand."""
    top = argparse.ArgumentParser(
        prog="repreval",
        description="Evaluate learned representations through aggregated attributions (noise and variance scores).",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top.add_argument("--block", action="append", default=[], metavar="PLUGIN", help=BLOCK_HELP)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        # --block after the command too (a broken-plugin warning tells users to add it)
        sub.add_argument("--block", action="append", default=[], dest="block_after", metavar="PLUGIN", help=BLOCK_HELP)
    return top


def entry_point() -> NoReturn:
    """The ``repreval`` command: :func:`main`, then :func:`~repreval.resources.exit_now` with its code."""
    exit_now(main())


def main(argv: Sequence[str] | None = None, *, extra_plugins: Sequence[object] = ()) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code. ``extra_plugins``:
    plugin objects registered in-process besides the installed ones (tests, notebooks)."""
    start_core_window()
    args = parser().parse_args(argv)
    args.block = [*args.block, *args.block_after]
    args.extra_plugins = tuple(extra_plugins)
    # Libraries' deprecation notices about their own internals are not the user's to act on; they would
    # interleave with the tables (a run's own problems are reported as warnings and errors, one line each).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return run_command(COMMANDS[args.command], args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
