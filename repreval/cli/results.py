"""What reads result folders: ``leaderboard``, ``publish``, ``export`` and ``import``."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

from ..errors import ReprevalError
from ..folders import ResultFolder, export_folder, import_folder, merge, read_facts
from ..leaderboard import build_leaderboards
from ..render import to_json
from ..render.report import write_report
from ..render.site import publish
from ..runs import write_summaries
from ..store import ResultStore
from ._common import EXIT_BAD_INPUT, EXIT_OK, Command, errors, print_boards, report_damaged, say


def _one_line(handle: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handle`` with a file it cannot write (read-only folder, full disk) as one line, not a traceback."""

    @functools.wraps(handle)
    def handled(args: argparse.Namespace) -> int:
        try:
            return handle(args)
        except OSError as exc:
            raise ReprevalError(
                f"cannot write {str(exc.filename)!r}: {exc.strerror or type(exc).__name__}",
                fix="make its folder writable, or choose another folder",
            ) from None

    return handled


def add_leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    """``leaderboard``'s arguments."""
    parser.add_argument("directories", nargs="+", metavar="DIR", help="results directories of runs")
    parser.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    parser.add_argument("--boards", action="store_true", help="every board with its layers, not the summary")


def handle_leaderboard(args: argparse.Namespace) -> int:
    """``repreval leaderboard DIR...``: stored results as tables, JSON, or the Markdown report."""
    folders = [ResultFolder.read(directory) for directory in args.directories]
    damaged = [problem for folder in folders for problem in folder.damaged]
    groups = sorted({group for folder in folders for group in read_facts(folder.directory).variant_groups})
    boards = build_leaderboards(merge(folders), groups=groups)
    for problem in damaged:
        report_damaged(problem)
    if args.format == "json":
        print(to_json(boards))
    elif args.format == "markdown":
        if len(folders) > 1:
            raise ReprevalError("a Markdown report is one folder's", fix="give one DIR, or use --format table|json")
        path = write_report(args.directories[0])
        print(path.read_text())
        say(f"report written to {path} (plots in {path.parent / 'plots'})", to=errors)
    else:
        print_boards(boards, every=args.boards)
    return EXIT_BAD_INPUT if damaged else EXIT_OK


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """``publish``'s arguments."""
    parser.add_argument("directories", nargs="+", metavar="DIR", help="results directories of runs")
    parser.add_argument("--out", required=True, metavar="SITE", help="the site's folder (index.html goes there)")
    parser.add_argument("--merge", action="store_true", help="add a page ranking every folder's rows together")
    parser.add_argument(
        "--link", action="store_true", help="reference the folders' PNGs where they are instead of copying them"
    )


def handle_publish(args: argparse.Namespace) -> int:
    """``repreval publish DIR... --out SITE``: a static site of the result folders."""
    index = publish(args.directories, args.out, merged=args.merge, link=args.link)
    say(f"site written to {index} (open it in a browser; no server needed)", to=errors)
    return EXIT_OK


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """``export``'s arguments."""
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--out", required=True, metavar="FILE.zip")


def handle_export(args: argparse.Namespace) -> int:
    """``repreval export DIR --out FILE.zip``."""
    say(f"exported to {export_folder(args.directory, args.out)}", to=errors)
    return EXIT_OK


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    """``import``'s arguments."""
    parser.add_argument("archive", metavar="FILE.zip")
    parser.add_argument("--out", required=True, metavar="DIR")


def handle_import(args: argparse.Namespace) -> int:
    """``repreval import FILE.zip --out DIR``: the records and drawings, then ``leaderboard.json`` and ``report.md``."""
    folder = import_folder(args.archive, args.out)
    with ResultStore(folder.directory).locked():  # as a run ends: the leaderboards and the report, drawn again
        report = write_summaries(folder.directory).report
    say(f"imported {len(folder.records)} records into {folder.directory}; report written to {report}", to=errors)
    return EXIT_OK


COMMANDS = [
    Command(
        "leaderboard",
        "render stored results again (several folders: ranked together)",
        add_leaderboard_arguments,
        _one_line(handle_leaderboard),
    ),
    Command(
        "publish",
        "write a static HTML site of result folders (no server needed)",
        add_publish_arguments,
        _one_line(handle_publish),
    ),  # fmt: skip
    Command(
        "export",
        "write a results folder to one .zip (records, suite, drawings)",
        add_export_arguments,
        _one_line(handle_export),
    ),
    Command("import", "unpack an exported .zip into a results folder", add_import_arguments, _one_line(handle_import)),
]
