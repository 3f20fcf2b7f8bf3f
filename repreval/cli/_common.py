"""What every command shares: the consoles, exit codes, loading plugins, reading KEY=VALUE options, and the one
place heavy modules are imported lazily (``--help`` and ``list`` must not import torch)."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from rich.console import Console
from rich.text import Text

from ..errors import ReprevalError, suggest
from ..leaderboard import Board
from ..plugins import Plugins, load_plugins
from ..render import plain, rich_table, summary_table
from ..suite import load_yaml, split_model_spec

EXIT_OK, EXIT_UNITS_FAILED, EXIT_BAD_INPUT = 0, 1, 2

# wide tables when piped to a file; emoji off: a user's ":x:" stays ":x:" (user text is printed as rich Text,
# never as markup: see say, print_error and print_warning)
console = Console(width=None if sys.stdout.isatty() else 160, emoji=False)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 1000, emoji=False)


def say(*parts: str | Text, to: Console = console) -> None:
    """One line of ``parts`` (plain strings are printed exactly as written, never as markup or emoji)."""
    to.print(Text.assemble(*(plain(part) if isinstance(part, str) else part for part in parts)), soft_wrap=True)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr: one line (a newline in user text shown as ``\n``), as written."""
    say(plain("error:", "bold red"), " ", _one_line(message), to=errors)


def print_warning(message: str) -> None:
    """``warning: MESSAGE`` on stderr, one line, as written."""
    say(plain("warning:", "yellow"), " ", _one_line(message), to=errors)


def _one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")


@dataclass(frozen=True)
class Command:
    """One ``repreval COMMAND``: its one-line help, its arguments and what it does (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace], int]


class lazy:
    """The module ``name``, imported on first attribute access: commands name the modules that import torch (or
    other heavy libraries) this way, so building the parser and ``--help`` import none of them."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


def os_problem(exc: OSError) -> str:
    """``exc`` as words and the path it is about, without the Python exception's ``[Errno N]`` prefix."""
    what = (exc.strerror or type(exc).__name__).lower()
    return f"{what}: {exc.filename!r}" if exc.filename else what


def run_command(command: Command, args: argparse.Namespace) -> int:
    """``command`` on ``args``: bad input as one ``error:`` line (exit 2). Python warnings (torch's, PIL's) are
    held meanwhile and shown after the command as one ``warning:`` line each (once), or dropped when it fails
    on bad input: a library's two-line warning must not turn a one-line error into three lines."""
    held: dict[str, None] = {}

    def hold(message, category, filename, lineno, file=None, line=None) -> None:
        first_line = (str(message).strip().splitlines() or [""])[0][:500]
        held[f"{first_line} ({category.__name__})"] = None

    with warnings.catch_warnings():
        warnings.showwarning = hold
        try:
            code = command.handle(args)
        except ReprevalError as exc:
            print_error(exc.one_line())
            return EXIT_BAD_INPUT
        except OSError as exc:  # a read-only, full or vanished folder: finished units are already saved
            print_error(f"{os_problem(exc)} (fix: check that the path exists and is writable, then run again)")
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            say("interrupted: finished units are saved; run again to continue", to=errors)
            return 130
    for warning in held:
        print_warning(warning)
    return code


def plugins_of(args: argparse.Namespace) -> Plugins:
    """Every installed plugin except those ``--block``ed (and ``main``'s in-process plugins); one warning line
    per plugin that failed to load."""
    plugins = load_plugins(block=args.block, extra_plugins=args.extra_plugins)
    for info in plugins.broken.values():  # skipped; everything else works
        print_warning(
            f"plugin {info.name!r} (distribution {info.distribution} {info.version}) failed to "
            f"load and is skipped: {info.broken}; skip it quietly with --block {info.name}"
        )
    return plugins


def model_source(args: argparse.Namespace):
    """The loaded plugins and the model source ``args.model`` names (one line naming the unknown source)."""
    source_name, _ = split_model_spec(args.model)
    plugins = plugins_of(args)
    if source_name not in plugins.model_source:
        raise ReprevalError(
            f"unknown model source {source_name!r}", fix=suggest(source_name, plugins.model_source.names())
        )
    return plugins, plugins.model_source.create(source_name)


def key_values(items: list[str]) -> dict:
    """``--option KEY=VALUE`` items as a mapping, each value read as YAML."""
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


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--option KEY=VALUE`` (repeatable)."""
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option (YAML value)")


def short_model_name(spec: str) -> str:
    """``hf:/a/b/all-MiniLM/model`` -> ``hf:all-MiniLM_model``: a directory-valued name by its last parts."""
    source, _, name = spec.partition(":")
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    if len(parts) < 2:
        return spec
    generic = parts[-1] in ("model", "models", "weights")
    return f"{source}:{parts[-2]}_{parts[-1]}" if generic else f"{source}:{parts[-1]}"


def print_boards(boards: list[Board], every: bool) -> None:
    """The compact summary (one line per metric), or with ``every`` each board with its layers."""
    if not boards:
        return
    if not every:
        console.print(summary_table(boards))
        return
    for board in boards:
        console.print(rich_table(board))


def report_damaged(problem: ReprevalError) -> None:
    """One line per damaged record; the tables show the others."""
    print_error(problem.one_line())
