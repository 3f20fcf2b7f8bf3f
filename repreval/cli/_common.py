"""What every command shares: the consoles, exit codes, loading plugins, reading KEY=VALUE options, and the one
place heavy modules are imported lazily (``--help`` and ``list`` must not import torch)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from rich.console import Console

from ..errors import ReprevalError, suggest
from ..leaderboard import Board
from ..plugins import Plugins, load_plugins
from ..render import rich_table, summary_table
from ..suite import load_yaml, split_model_spec

EXIT_OK, EXIT_UNITS_FAILED, EXIT_BAD_INPUT = 0, 1, 2

console = Console(width=None if sys.stdout.isatty() else 160)  # wide tables when piped to a file
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)


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


def plugins_of(args: argparse.Namespace) -> Plugins:
    """Every installed plugin except those ``--block``ed (and ``main``'s in-process plugins); one warning line
    per plugin that failed to load."""
    plugins = load_plugins(block=args.block, extra_plugins=args.extra_plugins)
    for info in plugins.broken.values():  # skipped; everything else works
        errors.print(
            f"[yellow]warning:[/] plugin {info.name!r} (distribution {info.distribution} {info.version}) failed to "
            f"load and is skipped: {info.broken}; skip it quietly with --block {info.name}",
            highlight=False,
            soft_wrap=True,
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
    errors.print(f"[bold red]error:[/] {problem.one_line()}", highlight=False, soft_wrap=True)
